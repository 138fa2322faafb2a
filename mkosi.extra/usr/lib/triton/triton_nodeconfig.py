#!/usr/bin/python3 -IS
"""triton-node-config: apply what booter delivered with the boot, before the
network and logins start (triton-node-config.service, early in sysinit).

Booter's iPXE script places the files into the initramfs, and the initrd keeps
them in /run/triton/boot/:

- node.config (shell-style key='value' lines, the same on every compute node):
  hostname, dns_resolvers, dns_domain (and dns_search), ntp_hosts (or
  compute_node_ntp_hosts), admin_nic, root_shadow. Unknown keys are ignored;
  malformed lines are reported and skipped.
- triton-networking.json (and its .hash): NIC tags, the node's addresses,
  routes, MTUs, aggregations, resolvers, hostname, DNS domain; made into
  networkd files by triton_network. Without a usable one, booter's boot
  parameters on the kernel command line (<tag>_nic=, <aggr>_aggr=, ip=,
  hostname=), which booter itself falls back to.
- root's ssh keys: root_authorized_keys as booter delivers it (a CNAPI
  boot_module, /etc/triton-root_authorized_keys in the initramfs, kept as
  triton-root_authorized_keys), from /etc/triton/root_authorized_keys, or
  from a TRITONCFG stick.

It writes /run/systemd/network/10-triton-*, /run/systemd/resolved.conf.d/
and /run/systemd/timesyncd.conf.d/ drop-ins, the kernel host name and
/etc/hostname, root's password and keys, and /run/triton/network.json (what
sysinfo reports). Every problem is printed on the console and listed above
the login prompt; none stops the boot: the admin NIC falls back to DHCP.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import triton_network as tn  # noqa: E402
from triton_common import bootif_mac, kernel_args, normal_mac  # noqa: E402
import triton_settings  # noqa: E402

BOOT = triton_settings.RUNTIME.boot_files
NODE_CONFIG = BOOT / "node.config"
NETWORKING = BOOT / "triton-networking.json"
NETWORK_DIR = Path("/run/systemd/network")
RESOLVED = Path("/run/systemd/resolved.conf.d/50-triton.conf")
TIMESYNCD = Path("/run/systemd/timesyncd.conf.d/50-triton.conf")
STATE = triton_settings.RUNTIME.network_state
CMDLINE = Path("/proc/cmdline")
ETC_HOSTNAME = Path("/etc/hostname")
ISSUE = Path("/run/issue.d/40-triton-config.issue")
INSTANCES = triton_settings.INSTANCES_JSON
# Root's keys as booter delivers them (its per-node files arrive as
# /etc/triton-<name>), and as /etc/triton/ or a TRITONCFG stick carries them.
KEY_FILES = ("triton-root_authorized_keys", "root_authorized_keys")
ROOT_SSH = Path("/root/.ssh")
HOSTNAME_RE = re.compile(r"(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
                         r"(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*")
PROG = "triton-node-config"


def say(msg: str) -> None:
    print(f"{PROG}: {msg}", flush=True)


def parse_node_config(text: str) -> tuple[dict[str, str], list[str]]:
    """node.config's key='value' lines -> ({key: value}, [problems])."""
    values: dict[str, str] = {}
    problems: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, rest = stripped.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            problems.append(f"line {n}: not key='value': {line!r}")
            continue
        try:
            parts = shlex.split(rest, comments=False, posix=True)
        except ValueError as e:
            problems.append(f"line {n}: {key}: {e}")
            continue
        values[key] = " ".join(parts)
    return values, problems


def split_list(value: str) -> list[str]:
    """node.config lists: 'a,b' or 'a b'."""
    return [v for v in re.split(r"[,\s]+", value) if v]


def valid_hostname(name: Optional[str]) -> bool:
    return bool(name) and bool(HOSTNAME_RE.fullmatch(name or ""))


def choose_hostname(plan: tn.Plan, cfg: dict[str, str], admin_mac: Optional[str],
                    problems: list[str], args: Optional[dict[str, str]] = None) -> Optional[str]:
    """networking.json's hostname (CNAPI's), else booter's hostname= kernel
    argument, else node.config's, else the admin NIC's MAC with dashes: the
    name an unset-up node has on SmartOS, which booter looks servers up by."""
    for source, name in ((plan.source, plan.hostname), ("kernel argument", (args or {}).get("hostname")),
                         (str(NODE_CONFIG), cfg.get("hostname"))):
        if name is None or name == "":
            continue
        if valid_hostname(name):
            return name
        problems.append(f"{source}: hostname {name!r} is not a valid host name; not used")
    return admin_mac.replace(":", "-") if admin_mac else None


def resolved_conf(resolvers: list[str], domains: list[str]) -> str:
    text = "# From booter's networking.json / node.config (triton-node-config)\n[Resolve]\n"
    if resolvers:
        text += "DNS=" + " ".join(resolvers) + "\n"
    if domains:
        text += "Domains=" + " ".join(domains) + "\n"
    return text


def timesyncd_conf(servers: list[str]) -> str:
    return ("# From node.config (triton-node-config)\n[Time]\nNTP=" + " ".join(servers) + "\n")


def resolvers_and_domains(plan: tn.Plan, cfg: dict[str, str], problems: list[str]) -> tuple[list[str], list[str]]:
    resolvers = list(plan.resolvers)
    if not resolvers:
        for r in split_list(cfg.get("dns_resolvers", "")):
            try:
                resolvers.append(str(ipaddress.ip_address(r)))
            except ValueError:
                problems.append(f"{NODE_CONFIG}: dns_resolvers: {r!r} is not an IP address; not used")
    domains = []
    for d in [plan.dns_domain or cfg.get("dns_domain", ""), *split_list(cfg.get("dns_search", ""))]:
        if not d or d in domains:
            continue
        if valid_hostname(d):
            domains.append(d)
        else:
            problems.append(f"{NODE_CONFIG}: DNS domain {d!r} is not a domain name; not used")
    return resolvers, domains


def ntp_servers(cfg: dict[str, str], problems: list[str]) -> list[str]:
    out = []
    for s in split_list(cfg.get("compute_node_ntp_hosts") or cfg.get("ntp_hosts") or ""):
        if valid_hostname(s) or re.fullmatch(r"[0-9a-fA-F:.]+", s):
            out.append(s)
        else:
            problems.append(f"{NODE_CONFIG}: ntp_hosts: {s!r} is not a host name or address; not used")
    return out


def local_macs() -> list[str]:
    """Permanent MACs of the node's Ethernet NICs."""
    out = []
    for dev in Path("/sys/class/net").iterdir():
        if not (dev / "device").exists():
            continue
        try:
            out.append((dev / "address").read_text().strip().lower())
        except OSError:
            continue
    return out


def admin_mac_hint(cmdline: str, cfg: dict[str, str], local: list[str], problems: list[str]) -> Optional[str]:
    """The admin NIC when networking.json does not name one: admin_nic= on the
    kernel command line (booter's boot parameter), node.config's admin_nic,
    then the boot NIC (BOOTIF=)."""
    args = kernel_args(cmdline)
    for source, value in (("kernel argument admin_nic", args.get("admin_nic")),
                          (f"{NODE_CONFIG}: admin_nic", cfg.get("admin_nic"))):
        if not value:
            continue
        mac = normal_mac(value)
        if mac is None:
            problems.append(f"{source} {value!r} is not a MAC address; not used")
        elif mac not in local:
            problems.append(f"{source} {mac}: no NIC with that MAC on this node; not used")
        else:
            return mac
    return bootif_mac(cmdline)


def network_plan(cmdline: str, cfg: dict[str, str], suffix: str, local: list[str],
                 use_file: bool = True) -> tn.Plan:
    """networking.json if it is there and usable (and use_file); else booter's
    kernel arguments (<tag>_nic=, <aggr>_aggr=, ip=), with the boot NIC as admin."""
    problems: list[str] = []
    args = kernel_args(cmdline)
    admin = admin_mac_hint(cmdline, cfg, local, problems)
    plan: Optional[tn.Plan] = None
    if use_file and NETWORKING.is_file():
        hash_file = NETWORKING.with_name(NETWORKING.name + ".hash")
        # Not text we trust: a .hash that is not UTF-8 is one that does not match.
        expected = hash_file.read_bytes().decode(errors="replace") if hash_file.is_file() else None
        try:
            plan = tn.load(NETWORKING.read_bytes(), str(NETWORKING), suffix, expected)
        except tn.Malformed as e:
            problems.append(f"{e}; not used: the boot NIC is admin")
    if plan is None:
        plan = tn.from_kernel_args(args, suffix)
    plan.problems[:0] = problems
    plan = tn.settle(plan, local, admin, suffix)
    if not plan.from_file:
        tn.static_admin(plan, args.get("ip"))
    return plan


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def apply_credentials(cfg: dict[str, str]) -> None:
    """No password is baked into the image: node.config's root_shadow (as on
    SmartOS and linux-live), and ssh keys delivered with the boot."""
    shadow = cfg.get("root_shadow")
    if shadow:
        subprocess.run(["usermod", "--password", shadow, "root"], check=True)
        say("root password set from node.config root_shadow")
    delivered = [BOOT / name for name in KEY_FILES if (BOOT / name).is_file()]
    if delivered:
        ssh = ROOT_SSH
        ssh.mkdir(mode=0o700, exist_ok=True)
        # Keys kept on the system pool (restored by the initrd) stay; the
        # delivered ones are added.
        target = ssh / "authorized_keys"
        # Bytes that are not UTF-8 are kept as they are, not a reason to fail.
        have = target.read_text(errors="surrogateescape").splitlines() if target.is_file() else []
        added: list[str] = []
        for keys in delivered:
            for k in keys.read_text(errors="surrogateescape").splitlines():
                if k.strip() and k not in have and k not in added:
                    added.append(k)
        target.write_text("".join(line + "\n" for line in have + added), errors="surrogateescape")
        target.chmod(0o600)
        say(f"{len(added)} root ssh key(s) added from {', '.join(k.name for k in delivered)}")


def main() -> int:
    problems: list[str] = []
    cfg: dict[str, str] = {}
    if NODE_CONFIG.is_file():
        cfg, bad = parse_node_config(NODE_CONFIG.read_bytes().decode(errors="replace"))
        problems += [f"{NODE_CONFIG}: {p}; skipped" for p in bad]
    # First, whatever the network config does: on a node without a pool
    # these are the only way to log in.
    try:
        apply_credentials(cfg)
    except (OSError, ValueError, subprocess.CalledProcessError) as e:
        problems.append(f"root credentials not applied: {e}")
    suffix = triton_settings.load_instances(INSTANCES).bridge_suffix
    cmdline = CMDLINE.read_text()

    local = local_macs()
    try:
        plan = network_plan(cmdline, cfg, suffix, local)
        generated = tn.files(plan)
    except Exception as e:
        # A fault of ours, not booter's file: the same fallback as without
        # networking.json, so the host name and the rest still apply.
        problems.append(f"{NETWORKING}: not used: planning the network from it failed "
                        f"({type(e).__name__}: {e}); the boot NIC is admin")
        plan = network_plan(cmdline, cfg, suffix, local, use_file=False)
        generated = tn.files(plan)
    NETWORK_DIR.mkdir(parents=True, exist_ok=True)
    if plan.from_file:
        generated["90-triton-unused.network"] = tn.unused_nics_file()
    for name, text in generated.items():
        write(NETWORK_DIR / name, text)
    problems += plan.problems

    admin = plan.tags.get("admin")
    admin_mac = None
    if admin:
        admin_mac = plan.aggregations[admin.port].macs[0] if admin.port in plan.aggregations else admin.port
    hostname = choose_hostname(plan, cfg, admin_mac, problems, kernel_args(cmdline))
    if hostname:
        socket.sethostname(hostname)
        write(ETC_HOSTNAME, hostname + "\n")

    resolvers, domains = resolvers_and_domains(plan, cfg, problems)
    if resolvers or domains:
        write(RESOLVED, resolved_conf(resolvers, domains))
    ntp = ntp_servers(cfg, problems)
    if ntp:
        write(TIMESYNCD, timesyncd_conf(ntp))

    write(STATE, json.dumps({**tn.state(plan), "hostname": hostname, "resolvers": resolvers,
                             "dns_domains": domains, "ntp_hosts": ntp, "problems": problems}, indent=2) + "\n")
    tags = ", ".join(f"{t.name} on {t.bridge} ({t.port})" for t in sorted(plan.tags.values(), key=lambda t: t.name))
    static = ", ".join(f"{v.address} on {v.link}" for v in plan.vnics if v.address)
    say(f"network from {plan.source}: NIC tags {tags or 'none (DHCP on every NIC)'}"
        + (f"; addresses {static}" if static else "; admin by DHCP" if admin else ""))
    say(f"host name {hostname}; DNS {' '.join(resolvers) or 'from DHCP'}"
        + (f" search {' '.join(domains)}" if domains else "") + f"; NTP {' '.join(ntp) or 'default'}")

    for p in problems:
        say(f"PROBLEM: {p}")
    if problems:
        write(ISSUE, f"Boot configuration: {len(problems)} problem(s); see "
                     f"`journalctl -b -u {PROG}` or {STATE}.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
