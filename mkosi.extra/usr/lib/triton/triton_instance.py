#!/usr/bin/python3
"""Container instances on the system pool: what vmadm, imgadm, the unit
generator and triton-instance@.service share. Standard library only.

An instance is the dataset <pool>/<uuid>, a clone of an image's
<pool>/<image>@final, mounted on /zones/<uuid>:

    /zones/<uuid>/root/             the instance's root filesystem
    /zones/<uuid>/config/vm.json    its config (what vmadm create was given,
                                    with defaults filled in)

While vmadm creates it (and while imgadm imports an image) the dataset is
<pool>/<uuid>-partial, mounted on /zones/<uuid>-partial; renaming it to
<pool>/<uuid> is the last step. A power cut leaves either the finished
dataset or a -partial one, which the next boot destroys (`leftovers`,
triton-pool restore) before anything mounts or starts it.

Nothing else about an instance is kept anywhere. At boot and on every change
(`systemctl daemon-reload`) the generator turns each vm.json into the unit's
resource limits and, for autoboot instances, a want from machines.target;
when the unit starts, `prepare` writes its systemd-nspawn settings
(/run/systemd/nspawn/<uuid>.nspawn) and network config into /run.

  triton_instance.py prepare UUID   (triton-instance@.service ExecStartPre)
  triton_instance.py generate DIR   (the systemd generator)
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import triton_settings
from triton_settings import PARTIAL, InstanceSettings

SETTINGS = triton_settings.INSTANCES_JSON
NSPAWN_DIR = Path("/run/systemd/nspawn")
RUN_DIR = triton_settings.RUNTIME.instances
UNIT = "triton-instance@{}.service"
TEMPLATE = "/usr/lib/systemd/system/triton-instance@.service"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
HOSTNAME_RE = re.compile(r"(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?")
NIC_TAG_RE = re.compile(r"[a-z][a-z0-9_]{0,12}")
DOMAIN_RE = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)
MTU_MIN, MTU_MAX = 576, 9216
# SmartOS's per-NIC switches that turn off one of the port's protections
# (all off by default: an instance's port passes only its own MAC and IPs,
# no DHCP or router advertisement answers, only IPv4, ARP and IPv6 frames).
SPOOFING = ("allow_ip_spoofing", "allow_mac_spoofing", "allow_dhcp_spoofing", "allow_restricted_traffic")
HOST_NETWORK_DIR = Path("/run/systemd/network")
# imgadm unpacks images as this 64K range of host users (see
# triton_imgadm.spawn_unprivileged), never as the host's root. It is the top
# of systemd-nspawn's container range: an instance's systemd-nspawn takes the
# range its root is owned by when no running instance has it, else picks
# another and re-owns (chowns) the instance's files to it.
IMAGE_UID_BASE = 0x6FFF0000
# Limits vmadm can set, and how each becomes a systemd resource-control
# property of the instance's unit (the ZFS quota is set on the dataset).
LIMITS = ("max_physical_memory", "cpu_cap", "cpu_shares", "max_lwps", "quota")


class InstanceError(Exception):
    """Bad input or a state the operator must fix; the message names it."""


def load_settings() -> InstanceSettings:
    try:
        return triton_settings.load_instances(SETTINGS)
    except triton_settings.SettingsError as e:
        raise InstanceError(str(e)) from None


# -- running things ------------------------------------------------------------------

def run(*argv: str, check: bool = True, input: Optional[str] = None) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, text=True, capture_output=True, input=input)
    if check and p.returncode != 0:
        detail = (p.stderr or p.stdout).strip()
        raise InstanceError(f"`{' '.join(argv)}` failed: {detail}")
    return p


def zfs_exists(name: str) -> bool:
    return run("zfs", "list", "-H", "-o", "name", name, check=False).returncode == 0


def require_pool(settings: InstanceSettings) -> None:
    if not zfs_exists(settings.pool):
        raise InstanceError(f"this node has no system pool {settings.pool!r} imported "
                            f"(see `triton-pool status`; `triton-pool setup` creates it)")


def zfs_get(name: str, prop: str) -> str:
    return run("zfs", "get", "-H", "-p", "-o", "value", prop, name).stdout.strip()


def write_durable(path: Path, text: str, mode: int = 0o600) -> None:
    """The whole new file or the old one, on disk when this returns: written
    beside it, synced, renamed over it, and the rename synced."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def finish(uuid: str, settings: InstanceSettings) -> None:
    """The last step of making a dataset: <pool>/<uuid>-partial becomes
    <pool>/<uuid>, in one transaction (a mounted one is mounted again at
    its new mountpoint)."""
    run("zfs", "rename", settings.partial(uuid), settings.dataset(uuid))
    remove_mountpoint(Path("/") / settings.partial(uuid))


def discard(uuid: str, settings: InstanceSettings) -> None:
    """An unfinished <pool>/<uuid>-partial, if there is one."""
    if zfs_exists(settings.partial(uuid)):
        run("zfs", "destroy", "-r", settings.partial(uuid))
    remove_mountpoint(Path("/") / settings.partial(uuid))


# -- what a power cut left ----------------------------------------------------------------

# What `leftovers` reads: each top-level dataset's origin (a clone's image
# snapshot, or "-") and exec, and their snapshots.
LEFTOVERS_LISTING = ("zfs", "list", "-H", "-o", "name,origin,exec", "-t", "filesystem,snapshot", "-d", "2")


@dataclasses.dataclass(frozen=True)
class Leftover:
    dataset: str
    why: str
    image: Optional[str] = None  # an image that was never installed: its manifest goes too


def leftovers(listing: str, pool: str) -> list[Leftover]:
    """From `zfs list -H -o name,origin,exec -t filesystem,snapshot -d 2
    <pool>`: what interrupted `vmadm create`s and `imgadm import`s left,
    to be destroyed at boot before anything mounts or starts it.

    - <pool>/<uuid>-partial: never finished (a clone: an instance; else an
      image). The rename that finishes one was never made, so the command
      never reported success either; whatever it had written (even its
      vm.json) is not a whole instance or image, and goes.
    - <pool>/<uuid> that is no clone, has no snapshot and has exec=off: an
      image import by an earlier imgadm (which unpacked under the final name
      and snapshotted it @final last) that never finished. Instances are
      clones; a finished image has its snapshot."""
    rows = [line.split("\t") for line in listing.splitlines()]
    snapshotted = {r[0].partition("@")[0] for r in rows if "@" in r[0]}
    datasets = {r[0]: r for r in rows if len(r) == 3 and "@" not in r[0]}
    out = []
    for name, (_, origin, exec_) in sorted(datasets.items()):
        parent, _, child = name.rpartition("/")
        if parent != pool:
            continue
        uuid = child.removesuffix(PARTIAL)
        if child.endswith(PARTIAL) and is_uuid(uuid):
            if origin != "-":
                out.append(Leftover(name, "a `vmadm create` cut short (a power cut or crash) that never finished"))
            else:
                out.append(Leftover(name, "an `imgadm import` cut short (a power cut or crash) that never finished",
                                    None if f"{pool}/{uuid}" in datasets else uuid))
        elif is_uuid(child) and origin == "-" and exec_ == "off" and name not in snapshotted:
            out.append(Leftover(name, "an image import by an earlier imgadm that never finished (no @final snapshot)",
                                child))
    return out


# -- payloads -------------------------------------------------------------------------

def is_uuid(value: Any) -> bool:
    return isinstance(value, str) and UUID_RE.fullmatch(value) is not None


def _positive_int(payload: dict[str, Any], field: str, allow_zero: bool = False) -> int:
    value = payload[field]
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and re.fullmatch(r"[0-9]{1,12}", value, re.ASCII):
            value = int(value)
        else:
            raise InstanceError(f"{field}: must be a whole number, got {value!r}")
    if value < (0 if allow_zero else 1):
        raise InstanceError(f"{field}: must be {'0 or more' if allow_zero else 'at least 1'}, got {value}")
    return value


# Upper bounds that catch unit mistakes (bytes or KiB given for MiB).
MAXIMA = {"max_physical_memory": 16 * 2**20, "cpu_cap": 100 * 1024, "cpu_shares": 10000,
          "max_lwps": 4 * 2**20, "quota": 2**20}
UNITS = {"max_physical_memory": "MiB", "cpu_cap": "percent of one CPU", "cpu_shares": "shares",
         "max_lwps": "processes", "quota": "GiB"}


def check_limits(payload: dict[str, Any]) -> dict[str, int]:
    out = {}
    for field in LIMITS:
        if field not in payload:
            continue
        value = _positive_int(payload, field, allow_zero=field in ("cpu_cap", "quota"))
        if value > MAXIMA[field]:
            raise InstanceError(f"{field}: {value} is more than {MAXIMA[field]} ({UNITS[field]})")
        out[field] = value
    return out


def check_nic(nic: Any, i: int, settings: InstanceSettings) -> dict[str, Any]:
    where = f"nics[{i}]"
    if not isinstance(nic, dict):
        raise InstanceError(f"{where}: must be an object with nic_tag and ip, got {nic!r}")
    unknown = set(nic) - {"nic_tag", "ip", "netmask", "gateway", "gateways", "mac", "primary", "interface",
                          "vlan_id", "mtu", *SPOOFING}
    if unknown:
        raise InstanceError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    tag = nic.get("nic_tag")
    if not isinstance(tag, str) or not NIC_TAG_RE.fullmatch(tag):
        raise InstanceError(f"{where}.nic_tag: must name a NIC tag (like admin or external), got {tag!r}")
    out: dict[str, Any] = {"nic_tag": tag, "interface": f"net{i}"}
    ip = nic.get("ip", "dhcp")
    if ip == "dhcp":
        out["ip"] = "dhcp"
    else:
        try:
            addr = ipaddress.IPv4Address(ip)
        except (ipaddress.AddressValueError, ValueError):
            raise InstanceError(f"{where}.ip: not an IPv4 address or \"dhcp\": {ip!r}")
        netmask = nic.get("netmask")
        if netmask is None:
            raise InstanceError(f"{where}.netmask: required with a static ip (like 255.255.255.0)")
        try:
            net = ipaddress.IPv4Network(f"{addr}/{netmask}", strict=False)
        except (ipaddress.NetmaskValueError, ValueError):
            raise InstanceError(f"{where}.netmask: not an IPv4 netmask: {netmask!r}")
        out.update(ip=str(addr), netmask=str(net.netmask))
        gateways = nic.get("gateways") or ([nic["gateway"]] if nic.get("gateway") else [])
        if not isinstance(gateways, list):
            raise InstanceError(f"{where}.gateways: must be a list of IPv4 addresses, got {gateways!r}")
        for g in gateways:
            try:
                ipaddress.IPv4Address(g)
            except (ipaddress.AddressValueError, ValueError):
                raise InstanceError(f"{where}.gateway: not an IPv4 address: {g!r}")
        if gateways:
            canonical = [str(ipaddress.IPv4Address(g)) for g in gateways]
            out["gateway"] = canonical[0]
            out["gateways"] = canonical
    mac = nic.get("mac")
    if mac is not None:
        if not isinstance(mac, str) or not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac.lower()):
            raise InstanceError(f"{where}.mac: not a MAC address (aa:bb:cc:dd:ee:ff): {mac!r}")
        if int(mac[:2], 16) & 1:
            raise InstanceError(f"{where}.mac: {mac} is a multicast address")
        out["mac"] = mac.lower()
    else:
        out["mac"] = random_mac()
    if "mtu" in nic:
        out["mtu"] = _positive_int(nic, "mtu")
        if not MTU_MIN <= out["mtu"] <= MTU_MAX:
            raise InstanceError(f"{where}.mtu: must be {MTU_MIN} to {MTU_MAX}, got {out['mtu']}")
    out["primary"] = bool(nic.get("primary", i == 0))
    for flag in SPOOFING:
        value = nic.get(flag, False)
        if not isinstance(value, bool):
            raise InstanceError(f"{where}.{flag}: must be true or false, got {value!r}")
        if value:
            out[flag] = True
    return out


def random_mac() -> str:
    # Locally administered, unicast: what vmadm does when a payload has none.
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFC) | 0x02
    return ":".join(f"{x:02x}" for x in b)


# Fields vmadm create applies, and Triton fields it keeps in vm.json as given.
APPLIED = {"uuid", "alias", "image_uuid", "hostname", "nics", "autoboot", "resolvers",
           "customer_metadata", "internal_metadata", *LIMITS}
# (What Triton's provisioner sends that has no meaning here is kept, not
# refused, so its payloads pass unchanged.)
KEPT = {"owner_uuid", "billing_id", "package_name", "package_version", "tags", "brand", "dns_domain",
        "server_uuid", "kernel_version", "max_swap", "max_locked_memory", "zfs_io_priority",
        "firewall_enabled", "creator_uuid", "origin"}


def check_payload(payload: Any, settings: InstanceSettings) -> dict[str, Any]:
    """A vmadm create payload -> the instance's config, defaults filled in.
    Raises InstanceError naming the field; has no side effects."""
    if not isinstance(payload, dict):
        raise InstanceError("payload: must be a JSON object")
    unknown = set(payload) - APPLIED - KEPT
    if unknown:
        raise InstanceError(f"payload: unknown field(s) {', '.join(sorted(unknown))} "
                            f"(this platform applies {', '.join(sorted(APPLIED))})")
    vm: dict[str, Any] = {k: payload[k] for k in KEPT if k in payload}
    if "uuid" in payload:
        if not is_uuid(payload["uuid"]):
            raise InstanceError(f"uuid: not a lower-case UUID: {payload['uuid']!r}")
        vm["uuid"] = payload["uuid"]
    image = payload.get("image_uuid")
    if image is None:
        raise InstanceError("image_uuid: required (see `imgadm list`)")
    if not is_uuid(image):
        raise InstanceError(f"image_uuid: not a lower-case UUID: {image!r}")
    vm["image_uuid"] = image
    alias = payload.get("alias")
    if alias is not None:
        if not isinstance(alias, str) or not alias or len(alias) > 100 or not alias.isprintable() or "\\" in alias:
            raise InstanceError(f"alias: must be up to 100 printable characters (no control characters "
                                f"or backslash), got {alias!r}")
        vm["alias"] = alias
    if "dns_domain" in payload:
        domain = payload["dns_domain"]
        if not isinstance(domain, str) or not DOMAIN_RE.fullmatch(domain):
            raise InstanceError(f"dns_domain: not a DNS domain (like example.com), got {domain!r}")
    hostname = payload.get("hostname")
    if hostname is not None:
        if not isinstance(hostname, str) or not HOSTNAME_RE.fullmatch(hostname):
            raise InstanceError(f"hostname: not a valid host name (letters, digits, '-', up to 63): {hostname!r}")
        vm["hostname"] = hostname
    limits = {**{k: getattr(settings.defaults, k) for k in LIMITS}, **check_limits(payload)}
    vm.update(limits)
    autoboot = payload.get("autoboot", settings.defaults.autoboot)
    if not isinstance(autoboot, bool):
        raise InstanceError(f"autoboot: must be true or false, got {autoboot!r}")
    vm["autoboot"] = autoboot
    nics = payload.get("nics", [])
    if not isinstance(nics, list):
        raise InstanceError("nics: must be a list of NICs")
    if len(nics) > 1:
        raise InstanceError(f"nics: {len(nics)} NICs given; an instance here has at most one "
                            f"(systemd-nspawn's bridge port)")
    vm["nics"] = [check_nic(n, i, settings) for i, n in enumerate(nics)]
    resolvers = payload.get("resolvers", [])
    if not isinstance(resolvers, list):
        raise InstanceError("resolvers: must be a list of IP addresses")
    vm["resolvers"] = [_resolver(r) for r in resolvers]
    for field in ("customer_metadata", "internal_metadata"):
        md = payload.get(field, {})
        if not isinstance(md, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in md.items()):
            raise InstanceError(f"{field}: must be an object of string keys and string values")
        vm[field] = dict(md)
    return vm


def _resolver(value: Any) -> str:
    """An IP address, canonical, without an IPv6 scope (which could carry any text)."""
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise InstanceError(f"resolvers: not an IP address: {value!r}")
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        raise InstanceError(f"resolvers: {value!r}: a resolver takes no IPv6 scope (%...)")
    return str(addr)


# Fields `vmadm update` changes; the limits apply to a running instance at once.
UPDATABLE = {"alias", "autoboot", "customer_metadata", "resolvers", *LIMITS}


def check_update(vm: dict[str, Any], update: Any, settings: InstanceSettings) -> dict[str, Any]:
    """The instance's config after `update`; raises InstanceError naming the field."""
    if not isinstance(update, dict) or not update:
        raise InstanceError("update: must be a JSON object of the fields to change")
    unknown = set(update) - UPDATABLE
    if unknown:
        raise InstanceError(f"update: cannot change {', '.join(sorted(unknown))} "
                            f"(this platform updates {', '.join(sorted(UPDATABLE))})")
    merged = {k: v for k, v in vm.items() if k in APPLIED | KEPT and k not in ("nics",)}
    merged.update(update)
    checked = check_payload({**merged, "nics": []}, settings)
    checked["nics"] = vm.get("nics", [])
    for k in ("uuid", "create_timestamp"):
        if k in vm:
            checked[k] = vm[k]
    return checked


# -- what the config becomes ------------------------------------------------------------

def unit_properties(vm: dict[str, Any]) -> dict[str, str]:
    """systemd resource-control properties of the instance's unit."""
    props = {
        "MemoryMax": f"{vm['max_physical_memory']}M",
        "MemorySwapMax": "0",
        "CPUWeight": str(vm["cpu_shares"]),
        "TasksMax": str(vm["max_lwps"]),
        # An empty CPUQuota= is "no cap".
        "CPUQuota": f"{vm['cpu_cap']}%" if vm["cpu_cap"] else "",
    }
    return props


def unit_escape(text: str) -> str:
    """A value for a unit file line: specifiers escaped; anything that could
    end or continue the line (control characters, a backslash) refused."""
    if not text.isprintable() or "\\" in text:
        raise InstanceError(f"{text!r}: not a one-line value for a unit file")
    return text.replace("%", "%%")


def unit_dropin(vm: dict[str, Any]) -> str:
    name = unit_escape(str(vm.get("alias") or vm["uuid"]))
    lines = ["# Generated by triton-instance-generator from", f"# {vm['uuid']}'s vm.json: do not edit.",
             "[Unit]", f"Description=Triton instance {name} ({vm['uuid']})", "", "[Service]"]
    lines += [f"{k}={v}" for k, v in unit_properties(vm).items()]
    return "\n".join(lines) + "\n"


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


# -- reading instances ------------------------------------------------------------------

def read_config(uuid: str, settings: InstanceSettings) -> dict[str, Any]:
    path = settings.config_file(uuid)
    try:
        vm = json.loads(path.read_text())
    except FileNotFoundError:
        raise InstanceError(f"instance {uuid}: no such instance (no {path}; see `vmadm list`)")
    except (OSError, ValueError) as e:
        raise InstanceError(f"instance {uuid}: cannot read {path}: {e}")
    if vm.get("uuid") != uuid:
        raise InstanceError(f"instance {uuid}: {path} names another uuid ({vm.get('uuid')!r})")
    return vm


def instance_uuids(settings: InstanceSettings) -> list[str]:
    """Instances whose config is on the pool (their datasets are mounted)."""
    top = Path("/") / settings.pool
    try:
        names = sorted(p.name for p in top.iterdir())
    except OSError:
        return []
    return [n for n in names if is_uuid(n) and settings.config_file(n).is_file()]


# -- the generator and the unit's ExecStartPre --------------------------------------------

def generate(out: Path, settings: InstanceSettings) -> None:
    """Unit drop-ins (limits) and machines.target wants (autoboot), from the pool."""
    for uuid in instance_uuids(settings):
        try:
            vm = read_config(uuid, settings)
            dropin = unit_dropin(vm)
        except (InstanceError, KeyError, TypeError) as e:
            print(f"triton-instance-generator: {uuid}: skipped: {e}", file=sys.stderr)
            continue
        d = out / (UNIT.format(uuid) + ".d")
        d.mkdir(parents=True, exist_ok=True)
        (d / "50-instance.conf").write_text(dropin)
        if vm.get("autoboot"):
            wants = out / "machines.target.wants"
            wants.mkdir(exist_ok=True)
            link = wants / UNIT.format(uuid)
            if not link.is_symlink():
                link.symlink_to(TEMPLATE)


def mount(uuid: str, settings: InstanceSettings) -> None:
    dataset = settings.dataset(uuid)
    if not zfs_exists(dataset):
        raise InstanceError(f"instance {uuid}: no such instance (no dataset {dataset}; see `vmadm list`)")
    if zfs_get(dataset, "mounted") != "yes":
        run("zfs", "mount", dataset)


def check_bridges(vm: dict[str, Any], settings: InstanceSettings) -> None:
    """Each NIC's tag must be a bridge on this node (triton-network makes them)."""
    for i, nic in enumerate(vm["nics"]):
        bridge = settings.bridge(nic["nic_tag"])
        if not Path(f"/sys/class/net/{bridge}/bridge").is_dir():
            raise InstanceError(f"nics[{i}].nic_tag: this node has no NIC tag {nic['nic_tag']!r} "
                                f"(no bridge {bridge}; see `networkctl list`)")


def remove_mountpoint(path: Path) -> None:
    """ZFS leaves a destroyed or unmounted dataset's empty directory behind."""
    try:
        path.rmdir()
    except OSError:
        pass


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
    prog = Path(sys.argv[0]).name
    try:
        settings = load_settings()
        if prog.endswith("generator"):
            # systemd calls generators with normal, early and late dirs.
            generate(Path(args[0]), settings)
            return 0
        if len(args) == 2 and args[0] == "prepare":
            prepare(args[1], settings)
            return 0
        if len(args) == 2 and args[0] == "cleanup":
            cleanup(args[1])
            return 0
        if len(args) == 2 and args[0] == "generate":
            generate(Path(args[1]), settings)
            return 0
    except InstanceError as e:
        print(f"triton-instance: {e}", file=sys.stderr)
        return 1
    print("usage: triton_instance.py prepare UUID | cleanup UUID | generate DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
