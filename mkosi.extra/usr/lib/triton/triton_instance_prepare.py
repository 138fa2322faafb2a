#!/usr/bin/python3
"""triton-instance@.service's ExecStartPre and ExecStopPost: before an
instance starts, check its dataset is mounted and write its systemd-nspawn
settings (/run/systemd/nspawn/<uuid>.nspawn), its NICs' network configs,
their ports' layer-2 filters (nftables) and the host's bridge configs; when
it has stopped, remove what it put on the host.

  triton_instance_prepare.py prepare UUID   (ExecStartPre)
  triton_instance_prepare.py cleanup UUID   (ExecStopPost)
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triton_common import is_uuid  # noqa: E402
from triton_instance import (  # noqa: E402
    NSPAWN_DIR, RUN_DIR, InstanceError, check_bridges, load_settings, read_config, run,
)
from triton_settings import InstanceSettings  # noqa: E402

HOST_NETWORK_DIR = Path("/run/systemd/network")


def nspawn_settings(vm: dict[str, Any], settings: InstanceSettings) -> str:
    uuid = vm["uuid"]
    run_dir = RUN_DIR / uuid
    lines = [
        f"# Generated from {settings.config_file(uuid)} when the instance starts: do not edit.",
        "[Exec]",
        "Boot=yes",
        # Each instance its own UID range, picked from the machine name.
        "PrivateUsers=pick",
        f"Hostname={vm.get('hostname') or uuid}",
        "ResolvConf=off",
        "LinkJournal=try-guest",
        # Ready (for systemctl start, vmadm) once the instance's own systemd is.
        "NotifyReady=yes",
        "",
        "[Files]",
        "PrivateUsersOwnership=auto",
        f"BindReadOnly={run_dir}/resolv.conf:/etc/resolv.conf",
        "",
        "[Network]",
    ]
    # The host side of each NIC's veth gets a name of ours (port_name), so
    # its filter (port_rules) and its bridge (port_network) are in place
    # before it exists; the instance sees host0.
    lines.append("Private=yes")
    lines += [f"VirtualEthernetExtra={port_name(uuid, i)}:host{i}" for i, _ in enumerate(vm["nics"])]
    return "\n".join(lines) + "\n"


def port_name(uuid: str, i: int) -> str:
    """The host side of an instance NIC's veth: tv + 12 hex digits + index."""
    return f"tv{uuid.replace('-', '')[:12]}{i}"


def port_table(uuid: str) -> str:
    return f"triton_{uuid.replace('-', '')[:12]}"


def port_network(port: str, bridge: str) -> str:
    """The host's networkd puts the port on the tag's bridge when nspawn makes it."""
    return (f"# An instance's port (triton-instance@.service): do not edit.\n[Match]\nName={port}\n\n"
            f"[Link]\nRequiredForOnline=no\n\n[Network]\nBridge={bridge}\nLinkLocalAddressing=no\n"
            f"IPv6AcceptRA=no\nLLDP=no\nEmitLLDP=no\n")


def port_rules(vm: dict[str, Any]) -> str:
    """nftables (bridge family): what each instance port lets into the
    bridge. Loaded before the port exists, removed when the instance stops."""
    table = port_table(vm["uuid"])
    rules = []
    for i, nic in enumerate(vm["nics"]):
        port = f'iifname "{port_name(vm["uuid"], i)}"'
        if not nic.get("allow_mac_spoofing"):
            rules += [f"{port} ether saddr != {nic['mac']} drop",
                      f"{port} ether type arp arp saddr ether != {nic['mac']} drop"]
        if not nic.get("allow_ip_spoofing"):
            if nic["ip"] != "dhcp":
                rules += [f"{port} ether type arp arp saddr ip != {nic['ip']} drop",
                          f"{port} ether type ip ip saddr != {nic['ip']} drop"]
            # Instance NICs here are IPv4 only.
            rules.append(f"{port} ether type ip6 drop")
        if not nic.get("allow_dhcp_spoofing"):
            # Protocols by number: nft would resolve names through /etc/protocols.
            rules += [f"{port} ether type ip ip protocol 17 udp sport {{ 67, 4011 }} drop",
                      f"{port} ether type ip6 ip6 nexthdr 17 udp sport 547 drop",
                      f"{port} ether type ip6 ip6 nexthdr 58 icmpv6 type nd-router-advert drop"]
        if not nic.get("allow_restricted_traffic"):
            rules.append(f"{port} ether type != {{ ip, arp, ip6 }} drop")
    body = "\n".join(f"        {r}" for r in rules)
    return (f"table bridge {table}\ndelete table bridge {table}\n"
            f"table bridge {table} {{\n    chain ports {{\n"
            f"        type filter hook prerouting priority -200; policy accept;\n{body}\n    }}\n}}\n")


def nspawn_args(vm: dict[str, Any]) -> str:
    """What .nspawn files cannot say, as the unit's $TRITON_NSPAWN_ARGS: the
    instance's networkd reads each NIC's config from a credential."""
    run_dir = RUN_DIR / vm["uuid"]
    args = [f"--load-credential=network.network.50-{n['interface']}:{run_dir}/{n['interface']}.network"
            for n in vm["nics"]]
    return f"TRITON_NSPAWN_ARGS={' '.join(args)}\n"


def network_file(nic: dict[str, Any], resolvers: Sequence[str]) -> str:
    """The instance's .network for a NIC (nspawn names the port host0 inside)."""
    lines = ["[Match]", "Name=host0", "", "[Link]", f"MACAddress={nic['mac']}"]
    if "mtu" in nic:
        lines.append(f"MTUBytes={nic['mtu']}")
    lines += ["", "[Network]", "LinkLocalAddressing=no", "IPv6AcceptRA=no"]
    if nic["ip"] == "dhcp":
        lines.append("DHCP=ipv4")
    else:
        prefix = ipaddress.IPv4Network(f"{nic['ip']}/{nic['netmask']}", strict=False).prefixlen
        lines.append(f"Address={nic['ip']}/{prefix}")
        if nic.get("primary") and nic.get("gateway"):
            lines.append(f"Gateway={nic['gateway']}")
    lines += [f"DNS={r}" for r in resolvers]
    return "\n".join(lines) + "\n"


def resolv_conf(vm: dict[str, Any]) -> str:
    lines = ["# From the instance's resolvers (vmadm)."]
    if vm.get("dns_domain"):
        lines.append(f"search {vm['dns_domain']}")
    lines += [f"nameserver {r}" for r in vm.get("resolvers", [])]
    return "\n".join(lines) + "\n"


def prepare(uuid: str, settings: InstanceSettings) -> None:
    """Check the instance's dataset is mounted and write its nspawn settings."""
    if not is_uuid(uuid):
        raise InstanceError(f"{uuid!r} is not an instance UUID")
    # No zfs here: the unit's device policy keeps /dev/zfs from it (and from
    # the instance). The initrd mounts instances' datasets at boot, vmadm
    # whenever it creates or starts one.
    if not os.path.ismount(settings.mountpoint(uuid)):
        raise InstanceError(f"instance {uuid}: its dataset {settings.dataset(uuid)} is not mounted on "
                            f"{settings.mountpoint(uuid)} (`vmadm start {uuid}` mounts it)")
    vm = read_config(uuid, settings)
    root = settings.root(uuid)
    if not (root / "etc").is_dir():
        raise InstanceError(f"instance {uuid}: {root} holds no root filesystem")
    try:
        check_bridges(vm, settings)
    except InstanceError as e:
        raise InstanceError(f"instance {uuid}: {e}")
    run_dir = RUN_DIR / uuid
    run_dir.mkdir(parents=True, exist_ok=True)
    for nic in vm["nics"]:
        (run_dir / f"{nic['interface']}.network").write_text(network_file(nic, vm.get("resolvers", [])))
    if vm["nics"]:
        run("nft", "-f", "-", input=port_rules(vm))
        HOST_NETWORK_DIR.mkdir(parents=True, exist_ok=True)
        for i, nic in enumerate(vm["nics"]):
            port = port_name(uuid, i)
            (HOST_NETWORK_DIR / f"05-{port}.network").write_text(port_network(port, settings.bridge(nic["nic_tag"])))
        run("networkctl", "reload")
    (run_dir / "resolv.conf").write_text(resolv_conf(vm))
    (run_dir / "nspawn.env").write_text(nspawn_args(vm))
    NSPAWN_DIR.mkdir(parents=True, exist_ok=True)
    (NSPAWN_DIR / f"{uuid}.nspawn").write_text(nspawn_settings(vm, settings))


def cleanup(uuid: str) -> None:
    """What prepare set up on the host for the instance's ports (ExecStopPost)."""
    if not is_uuid(uuid):
        raise InstanceError(f"{uuid!r} is not an instance UUID")
    ports = sorted(HOST_NETWORK_DIR.glob(f"05-{port_name(uuid, 0)[:-1]}*.network"))
    for p in ports:
        p.unlink(missing_ok=True)
    if ports:
        run("networkctl", "reload", check=False)
    run("nft", "delete", "table", "bridge", port_table(uuid), check=False)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(args) == 2 and args[0] == "prepare":
            prepare(args[1], load_settings())
            return 0
        if len(args) == 2 and args[0] == "cleanup":
            cleanup(args[1])
            return 0
    except InstanceError as e:
        print(f"triton-instance: {e}", file=sys.stderr)
        return 1
    print("usage: triton_instance_prepare.py prepare UUID | cleanup UUID", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
