#!/usr/bin/python3
"""sysinfo: this compute node described as JSON, in the keys and types
SmartOS's sysinfo(8) prints and Triton reads: CNAPI (UUID, Setup, Boot Time,
MiB of Memory, Network Interfaces' NIC Names, SDC Agents, Admin IP and NIC
Tag, ...), its allocator, and the agents (ur-agent takes the broker from
`Boot Params`.rabbitmq). Standard library only; it reads /sys, /proc, DMI,
ZFS and the boot files, keeps nothing (no cache), and never fails for a
missing or malformed input file: it says so in `Sysinfo Problems`.

  sysinfo        the whole description
  sysinfo -p     key='value' lines (nested keys joined with _)
  sysinfo -f     the same as sysinfo: there is no cache to refresh
  sysinfo -u     update the cache: there is none, so nothing to do (exit 0;
                 Triton's agentsetup.sh runs it)

Installed as /usr/sbin/sysinfo, /usr/bin/sysinfo (cn-agent's installer,
node-imgadm) and /usr/triton/bin/sysinfo (net-agent, vm-agent).
"""

from __future__ import annotations

import dataclasses
import getopt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triton_common import UUID_RE, kernel_args, os_release  # noqa: E402
from triton_nodeconfig import parse_node_config  # noqa: E402
from triton_settings import RUNTIME  # noqa: E402

BOOT_FILES = RUNTIME.boot_files
# The Linux agents read /usr/triton/config; booter's copies stay in /run.
NODE_CONFIGS = (Path("/usr/triton/config/node.config"), BOOT_FILES / "node.config")
NETWORKING = (Path("/usr/triton/config/triton-networking.json"), BOOT_FILES / "triton-networking.json")
# joysetup.sh writes the setup state to /opt/triton/config once that exists,
# to /usr/triton/config before (cn-agent's sysinfo reads it the same way).
SETUP_DIRS = (Path("/opt/triton/config"), Path("/usr/triton/config"))
SETUP_STATE = "triton-setup-state.json"
AGENTS = Path("/opt/smartdc/agents/lib/node_modules")
POOL_STATE = RUNTIME.pool_state
NETWORK_STATE = RUNTIME.network_state
DMI = Path("/sys/class/dmi/id")
SDC_VERSION = "7.0"   # what the Linux cn-agent reports; CNAPI treats < 7.0 as a 6.5 node
USAGE = """usage: sysinfo [-f] [-p] [-u]
  -f  force a refresh (there is no cache: the same as no option)
  -p  key='value' lines instead of JSON
  -u  update the cache only, print nothing (there is no cache)"""


@dataclasses.dataclass(frozen=True)
class File:
    """An input file as read: text None when it could not be read (why: error)."""
    path: str
    text: Optional[str]
    error: str = ""


@dataclasses.dataclass(frozen=True)
class Link:
    """A network link as /sys/class/net shows it."""
    name: str
    mac: str            # its own (a bond port's permanent MAC, not the bond's)
    operstate: str
    kind: str           # nic (has a device), bridge, bond or other
    master: str = ""    # the bridge or bond it is a port of


@dataclasses.dataclass
class Facts:
    """Everything sysinfo reads, as read; describe() makes the keys of it."""
    cmdline: str = ""
    os_release: dict[str, str] = dataclasses.field(default_factory=dict)
    uname: tuple[str, str, str] = ("Linux", "", "")       # sysname, nodename, release
    uptime: str = "0 0"
    now: float = 0.0
    dmi: dict[str, str] = dataclasses.field(default_factory=dict)
    cpuinfo: str = ""
    cpus_present: str = ""
    cpus_online: str = ""
    meminfo: str = ""
    block: dict[str, int] = dataclasses.field(default_factory=dict)   # name -> 512-byte sectors
    links: list[Link] = dataclasses.field(default_factory=list)
    ip_addr_json: str = "[]"
    network_state: File = File(str(NETWORK_STATE), None, "missing")
    networking: File = File(str(NETWORKING[-1]), None, "missing")
    node_config: File = File(str(NODE_CONFIGS[-1]), None, "missing")
    setup_state: File = File(str(SETUP_DIRS[-1] / SETUP_STATE), None, "missing")
    agents: list[File] = dataclasses.field(default_factory=list)      # each agent's package.json
    pool: str = ""
    pool_props: str = ""     # zfs get -Hp -o property,value used,available,creation,encryption <pool>
    pool_status: str = ""    # zpool status -P <pool>


# ---- The keys, from what was read (pure)

def smartos_uuid(dmi_uuid: str) -> Optional[str]:
    """The SMBIOS system UUID as SmartOS prints it. Linux (dmidecode, the
    kernel's product_uuid) reads the first three fields little-endian, as
    SMBIOS 2.6 says; SmartOS prints the bytes in table order. Reversing the
    bytes of those fields, as the Linux cn-agent's sysinfo does, gives a
    server that ran SmartOS the UUID CNAPI knows it by (a pre-2.6 SMBIOS,
    which Linux prints in table order, is swapped all the same: every agent
    on the node must give the same UUID, and cn-agent's swap knows no
    versions). None: not a UUID."""
    u = dmi_uuid.strip().lower()
    if not UUID_RE.fullmatch(u):
        return None
    fields = u.split("-")
    return "-".join([bytes.fromhex(f)[::-1].hex() for f in fields[:3]] + fields[3:])


def assignments(cmdline: str) -> dict[str, str]:
    """The kernel command line's key=value words (the last of a key wins)."""
    keys = {word.partition("=")[0] for word in cmdline.split() if "=" in word}
    return {k: v for k, v in kernel_args(cmdline).items() if k in keys}


def boot_parameters(cmdline: str) -> dict[str, str]:
    """SmartOS's `Boot Parameters`: the kernel command line's key=value
    words, with characters other than [A-Za-z0-9_] in a key made _ (as
    SmartOS's sysinfo does). CNAPI reads `headnode` from it."""
    return {re.sub(r"[^A-Za-z0-9_]", "_", k): v for k, v in assignments(cmdline).items()}


def boot_params(cmdline: str) -> dict[str, str]:
    """The Linux agents' `Boot Params` (cn-agent's getBootParams): key=value
    words as they are, but booter's ip=<ip>:::<netmask>:: becomes admin_ip and
    admin_netmask, BOOTIF=01-<mac> becomes admin_mac. ur-agent takes
    rabbitmq=<login>:<password>:<host>:<port> from it."""
    args = assignments(cmdline)
    if "ip" in args:
        fields = args.pop("ip").split(":")
        args["admin_ip"] = fields[0]
        if len(fields) > 3:
            args["admin_netmask"] = fields[3]
    if "BOOTIF" in args:
        args["admin_mac"] = args.pop("BOOTIF")[3:]
    return args


def load_json(f: File, what: str, problems: list[str]) -> Any:
    """The file's JSON; None (and a problem naming what is lost) when it is
    missing or not JSON."""
    if f.text is None:
        if f.error != "missing":
            problems.append(f"{f.path}: cannot be read ({f.error}); {what}")
        return None
    try:
        return json.loads(f.text)
    except ValueError as e:
        problems.append(f"{f.path}: not JSON ({e}); {what}")
        return None


def setup_value(f: File, problems: list[str]) -> str:
    """`Setup`: "true" once Triton's setup completed (agentsetup.sh sets
    `complete: true` in triton-setup-state.json), else "false"."""
    state = load_json(f, "Setup is false", problems)
    if state is None:
        return "false"
    if not isinstance(state, dict):
        problems.append(f"{f.path}: not a JSON object; Setup is false")
        return "false"
    return "true" if state.get("complete") in (True, "true") else "false"


def sdc_agents(packages: Sequence[File], problems: list[str]) -> list[dict[str, str]]:
    """`SDC Agents`: name and version from each installed agent's package.json."""
    out = []
    for f in packages:
        pkg = load_json(f, "agent not listed", problems)
        if pkg is None:
            if f.error == "missing":
                problems.append(f"{f.path}: missing; agent not listed")
            continue
        if not (isinstance(pkg, dict) and isinstance(pkg.get("name"), str) and isinstance(pkg.get("version"), str)):
            problems.append(f"{f.path}: has no name and version; agent not listed")
            continue
        out.append({"name": pkg["name"], "version": pkg["version"]})
    return sorted(out, key=lambda a: a["name"])


def admin_nic_tag(f: File, problems: list[str]) -> str:
    """`Admin NIC Tag`: networking.json's admin_tag, else "admin" (also
    without networking.json: booter writes none for a node it knows no
    admin NIC of, and a node booted from media may have none)."""
    conf = load_json(f, 'Admin NIC Tag is "admin"', problems)
    if conf is not None and not isinstance(conf, dict):
        problems.append(f'{f.path}: not a JSON object; Admin NIC Tag is "admin"')
    tag = conf.get("admin_tag") if isinstance(conf, dict) else None
    return tag if isinstance(tag, str) and tag else "admin"


def node_config_keys(f: File, problems: list[str]) -> dict[str, str]:
    """`Datacenter Name` and `DNS Domain` from node.config."""
    if f.text is None:
        why = "not found" if f.error == "missing" else f"cannot be read ({f.error})"
        problems.append(f"{f.path}: {why}; no Datacenter Name")
        return {}
    cfg, bad = parse_node_config(f.text)
    problems += [f"{f.path}: {p}; skipped" for p in bad]
    names = {"datacenter_name": "Datacenter Name", "dns_domain": "DNS Domain"}
    return {key: cfg[k] for k, key in names.items() if cfg.get(k)}


def network_state(f: File, problems: list[str]) -> dict[str, Any]:
    """What triton-node-config applied at boot (/run/triton/network.json)."""
    state = load_json(f, "NIC tags unknown", problems)
    if state is None and f.error == "missing":
        problems.append(f"{f.path}: missing (triton-node-config did not run); NIC tags unknown")
    if state is not None and not isinstance(state, dict):
        problems.append(f"{f.path}: not a JSON object; NIC tags unknown")
    if not isinstance(state, dict):
        return {}
    if state.get("problems"):
        problems.append(f"boot configuration: {len(state['problems'])} problem(s), listed in {f.path}")
    return state


def cpu_count(ranges: str) -> int:
    """CPUs in a kernel CPU list: '0-3,6' -> 5."""
    n = 0
    for part in ranges.strip().split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            n += int(hi) - int(lo) + 1 if hi.isdigit() else 1
    return n


def cpu_keys(cpuinfo: str, present: str, online: str) -> dict[str, Any]:
    """SmartOS's CPU keys. `CPU Physical Cores` counts sockets and `CPU Total
    Cores` CPUs (threads): legacy names, kept because readers use them."""
    cpus = [dict(re.findall(r"^([^:\n]+?)\s*:\s*(.*)$", block, re.M)) for block in cpuinfo.split("\n\n")]
    cpus = [c for c in cpus if "processor" in c]
    flags = cpus[0].get("flags", "").split() if cpus else []
    sockets = max(len({c["physical id"] for c in cpus if "physical id" in c}), 1)
    cores = len({(c["physical id"], c["core id"]) for c in cpus if "physical id" in c and "core id" in c})
    n_online = cpu_count(online) or len(cpus) or 1
    n_all = max(cpu_count(present), n_online)
    return {"CPU Type": cpus[0].get("model name", "") if cpus else "",
            "CPU Virtualization": "vmx" if "vmx" in flags else "svm" if "svm" in flags else "none",
            "CPU Socket Count": sockets, "CPU Core Count": cores or n_online,
            "CPU Online Count": n_online, "CPU Count": n_all,
            "CPU Physical Cores": sockets, "CPU Total Cores": n_all}


def memory_mib(meminfo: str) -> str:
    """`MiB of Memory`, a string of digits as SmartOS prints it."""
    m = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.M)
    return str(int(m.group(1)) // 1024 if m else 0)


def boot_time(uptime: str, now: float) -> str:
    """`Boot Time`: seconds since the epoch, a string as SmartOS prints it."""
    try:
        up = float(uptime.split()[0])
    except (IndexError, ValueError):
        up = 0.0
    return str(int(now - up))


def disk_keys(block: dict[str, int]) -> dict[str, Any]:
    """`Disks`: every disk (not loop, RAM, optical, zvol or device-mapper
    devices) with its size in GB (10^9 bytes, rounded down, as SmartOS)."""
    skip = ("loop", "ram", "zram", "sr", "zd", "dm-", "nbd")
    return {name: {"Size in GB": sectors * 512 // 10**9}
            for name, sectors in sorted(block.items()) if not name.startswith(skip)}


def zpool_keys(pool: str, props: str, status: str) -> dict[str, Any]:
    """The system pool's keys from `zfs get` and `zpool status -P`; none
    when the pool is not imported."""
    values = dict(line.split("\t", 1) for line in props.splitlines() if "\t" in line)
    if not pool or not values.get("used", "").isdigit() or not values.get("available", "").isdigit():
        return {}
    profile = re.search(r"^\s+(mirror|raidz[123]?|draid\d?)\S*-\d+\s", status, re.M)
    health = re.search(r"^\s*state:\s*(\S+)", status, re.M)
    out: dict[str, Any] = {
        "Zpool": pool,
        "Zpool Size in GiB": (int(values["used"]) + int(values["available"])) // 2**30,
        "Zpool Disks": ",".join(re.findall(r"^\s+(/dev/\S+)", status, re.M)),
        # SmartOS's names: raidz (not raidz1), striped for plain disks.
        "Zpool Profile": {"raidz1": "raidz"}.get(profile.group(1), profile.group(1)) if profile else "striped",
        "Zpool Encrypted": values.get("encryption", "off") not in ("off", "-"),
        "Zpool Health": health.group(1) if health else "",
    }
    if values.get("creation", "").isdigit():
        out["Zpool Creation"] = int(values["creation"])
    return out


def addresses(ip_addr_json: str) -> dict[str, list[str]]:
    """`ip -j -4 addr show` -> {link: [address/prefix, ...]}."""
    try:
        data = json.loads(ip_addr_json or "[]")
    except ValueError:
        return {}
    return {link.get("ifname", ""): [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                                     if "local" in a and "prefixlen" in a]
            for link in data if isinstance(link, dict)}


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def network_keys(links: Sequence[Link], addrs: dict[str, list[str]], state: dict[str, Any],
                 admin_tag: str) -> dict[str, Any]:
    """Triton's network keys. `Network Interfaces`: the physical NICs, then
    the aggregations (as SmartOS lists them), each with the NIC tags it
    provides in `NIC Names` (CNAPI makes NAPI's tags of them, the allocator
    matches networks to them, ur-agent finds the admin NIC by them);
    `Virtual Network Interfaces`: the node's own addresses on a tag (its
    bridge, or a VLAN link on it); `Link Aggregations`; `Bridges`, the links
    instances attach to; `Admin IP`."""
    tags = {name: _obj(t) for name, t in _obj(state.get("nic_tags")).items()}
    aggrs = {name: _obj(a) for name, a in _obj(state.get("aggregations")).items()}
    by_name = {link.name: link for link in links}

    def ip(name: str) -> str:
        a = addrs.get(name) or [""]
        return a[0].split("/")[0]

    def names(key: str, value: str) -> list[str]:
        return sorted(t for t, v in tags.items() if v.get(key) == value)

    def entry(link: Link, address: str, nic_names: list[str], up: tuple[str, ...] = ("up",)) -> dict[str, Any]:
        # A bridge or VLAN link without carrier detection says "unknown".
        return {"MAC Address": link.mac, "ip4addr": address,
                "Link Status": "up" if link.operstate in up else "down", "NIC Names": nic_names}

    nics: dict[str, Any] = {}
    for link in links:
        if link.kind != "nic":
            continue
        master = by_name.get(link.master)
        if master and (master.kind == "bond" or master.name in aggrs):
            nics[link.name] = {**entry(link, "", names("port", link.mac)), "Aggregation": master.name}
        else:
            bridge = master.name if master else ""
            nics[link.name] = {**entry(link, ip(bridge or link.name), names("port", link.mac)), "Bridge": bridge}
    aggregations: dict[str, Any] = {}
    for name, a in aggrs.items():
        aggregations[name] = {"LACP mode": a.get("lacp_mode") or "off",
                              "Interfaces": sorted(n for n, x in by_name.items() if x.master == name),
                              "MAC Addresses": a.get("macs", []), "NIC Names": names("port", name)}
        if name in by_name:
            bond = by_name[name]
            nics[name] = {**entry(bond, ip(bond.master or name), names("port", name)), "Bridge": bond.master}
    bridges = {link.name: entry(link, ip(link.name), names("link", link.name), ("up", "unknown"))
               for link in links if link.kind == "bridge"}
    vnics: dict[str, Any] = {}
    for v in state.get("vnics") or []:
        if not isinstance(v, dict):
            continue
        name = str(v.get("link", ""))
        port = str(tags.get(str(v.get("nic_tag", "")), {}).get("port", ""))
        link = by_name.get(name, Link(name, "", "down", "other"))
        vnics[name] = {
            **entry(link, ip(name), [str(v.get("nic_tag", ""))], ("up", "unknown")),
            "ip4netmask": str(v.get("netmask") or ""), "ip4gateway": str(v.get("gateway") or ""),
            "Host Interface": port if port in aggrs else next(
                (n for n, e in nics.items() if e["MAC Address"] == port), port),
            "VLAN": str(v.get("vlan_id") or 0),
        }
    out: dict[str, Any] = {"Network Interfaces": nics, "Virtual Network Interfaces": vnics,
                           "Link Aggregations": aggregations, "Bridges": bridges}
    admin_ip = ip(str(tags.get(admin_tag, {}).get("link", "")))
    if admin_ip:
        out["Admin IP"] = admin_ip
    return out


def guarded(problems: list[str], what: str, make: Callable[[], dict[str, Any]],
            default: dict[str, Any]) -> dict[str, Any]:
    """One part of the description; a fault in it costs only that part."""
    try:
        return make()
    except Exception as e:  # noqa: BLE001 - sysinfo must answer whatever the node looks like
        problems.append(f"{what}: not determined ({type(e).__name__}: {e})")
        return default


def describe(f: Facts) -> dict[str, Any]:
    """The sysinfo object."""
    problems: list[str] = []
    uuid = smartos_uuid(f.dmi.get("product_uuid", ""))
    if uuid is None:
        problems.append(f"{DMI / 'product_uuid'}: {f.dmi.get('product_uuid', '')!r} is not a UUID; UUID unknown")
    admin_tag = admin_nic_tag(f.networking, problems)
    state = network_state(f.network_state, problems)
    info: dict[str, Any] = {
        "Live Image": f.os_release.get("TRITON_RELEASE", ""),
        "System Type": f.uname[0],
        "Boot Time": boot_time(f.uptime, f.now),
        **node_config_keys(f.node_config, problems),
        "SDC Version": SDC_VERSION,
        "Manufacturer": f.dmi.get("sys_vendor", ""),
        "Product": f.dmi.get("product_name", ""),
        "Serial Number": f.dmi.get("product_serial", ""),
        "SKU Number": f.dmi.get("product_sku", ""),
        "HW Version": f.dmi.get("product_version", ""),
        "HW Family": f.dmi.get("product_family", ""),
        "Setup": setup_value(f.setup_state, problems),
        # Linux runs no KVM or bhyve VMs; instances are containers.
        "VM Capable": False, "Bhyve Capable": False, "Bhyve Max Vcpus": 0, "HVM API": False,
        **guarded(problems, "CPU", lambda: cpu_keys(f.cpuinfo, f.cpus_present, f.cpus_online), {}),
        "Admin NIC Tag": admin_tag,
        "UUID": uuid or "",
        "Hostname": f.uname[1],
        "MiB of Memory": memory_mib(f.meminfo),
        **guarded(problems, "Zpool", lambda: zpool_keys(f.pool, f.pool_props, f.pool_status), {}),
        "Disks": disk_keys(f.block),
        "Boot Parameters": boot_parameters(f.cmdline),
        "Boot Params": boot_params(f.cmdline),
        "SDC Agents": sdc_agents(f.agents, problems),
        **guarded(problems, "Network", lambda: network_keys(f.links, addresses(f.ip_addr_json), state, admin_tag),
                  {"Network Interfaces": {}, "Virtual Network Interfaces": {}, "Link Aggregations": {}}),
        "Kernel Version": f.uname[2],
        "Linux Distribution": f.os_release.get("PRETTY_NAME", ""),
    }
    info["Sysinfo Problems"] = problems
    return info


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _scalar(value: Any) -> str:
    return "" if value is None else json.dumps(value) if isinstance(value, bool) else str(value)


def parseable(value: Any, prefix: str = "") -> list[str]:
    """`sysinfo -p`: key='value' lines, nested keys joined with _, lists
    comma-separated (lists of objects numbered), quoted so that a shell can
    eval them."""
    if isinstance(value, dict):
        keys = {k: re.sub(r"[^A-Za-z0-9]+", "_", str(k)).strip("_") for k in value}
        return [line for k, v in value.items() for line in parseable(v, f"{prefix}_{keys[k]}" if prefix else keys[k])]
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        return [line for i, v in enumerate(value) for line in parseable(v, f"{prefix}_{i}")]
    if isinstance(value, list):
        return [f"{prefix}={_quote(','.join(map(_scalar, value)))}"]
    return [f"{prefix}={_quote(_scalar(value))}"]


@dataclasses.dataclass(frozen=True)
class Options:
    parseable: bool = False
    update_only: bool = False
    help: bool = False


def parse_args(argv: Sequence[str]) -> Options:
    """SmartOS's options: -f (refresh the cache), -p, -u (update the cache
    only). Raises ValueError for anything else."""
    try:
        opts, rest = getopt.getopt(list(argv), "fpuh", ["help"])
    except getopt.GetoptError as e:
        raise ValueError(str(e)) from None
    if rest:
        raise ValueError(f"unexpected argument {rest[0]!r}")
    given = {o for o, _ in opts}
    return Options(parseable="-p" in given, update_only="-u" in given, help=bool(given & {"-h", "--help"}))


# ---- Reading the node (thin I/O)

def read(path: Path, default: str = "") -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return default


def read_file(path: Path) -> File:
    try:
        return File(str(path), path.read_bytes().decode(errors="replace"))
    except FileNotFoundError:
        return File(str(path), None, "missing")
    except OSError as e:
        return File(str(path), None, e.strerror or type(e).__name__)


def first_file(paths: Sequence[Path]) -> File:
    """The first of these files that exists."""
    return next((read_file(p) for p in paths if p.exists()), File(" or ".join(map(str, paths)), None, "missing"))


def sectors(path: Path) -> int:
    size = read(path)
    return int(size) if size.isdigit() else 0


def run(*argv: str) -> str:
    # zpool and zfs are in /usr/sbin, which a caller's PATH may lack.
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin:/bin"}
    try:
        p = subprocess.run(argv, text=True, capture_output=True, timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return p.stdout if p.returncode == 0 else ""


def entries(path: Path) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except OSError:
        return []


def read_links(root: Path = Path("/sys/class/net")) -> list[Link]:
    links = []
    for dev in entries(root):
        if dev.name == "lo":
            continue
        kind = ("nic" if (dev / "device").exists() else "bridge" if (dev / "bridge").is_dir()
                else "bond" if (dev / "bonding").is_dir() else "other")
        master = (dev / "master").resolve().name if (dev / "master").exists() else ""
        mac = (read(dev / "bonding_slave/perm_hwaddr") or read(dev / "address")).lower()
        links.append(Link(dev.name, mac, read(dev / "operstate"), kind, master))
    return links


def setup_state_path(dirs: Sequence[Path] = SETUP_DIRS) -> Path:
    """joysetup.sh's setup state: in /opt/triton/config once that exists."""
    return next((d for d in dirs if d.is_dir()), dirs[-1]) / SETUP_STATE


def agent_packages(root: Path = AGENTS) -> list[File]:
    """Each installed agent's package.json (as SmartOS's sysinfo lists them)."""
    return [read_file(d / "package.json") for d in entries(root) if d.is_dir() and not d.name.startswith(".")]


def system_pool() -> str:
    try:
        state = json.loads(read(POOL_STATE) or "{}")
    except ValueError:
        state = {}
    return str(state.get("pool") or "zones") if isinstance(state, dict) else "zones"


def gather() -> Facts:
    u = os.uname()
    pool = system_pool()
    return Facts(
        cmdline=read(Path("/proc/cmdline")), os_release=os_release(),
        uname=(u.sysname, u.nodename, u.release), uptime=read(Path("/proc/uptime"), "0 0"), now=time.time(),
        dmi={f: read(DMI / f) for f in ("product_uuid", "sys_vendor", "product_name", "product_serial",
                                        "product_sku", "product_version", "product_family")},
        cpuinfo=read(Path("/proc/cpuinfo")), cpus_present=read(Path("/sys/devices/system/cpu/present")),
        cpus_online=read(Path("/sys/devices/system/cpu/online")), meminfo=read(Path("/proc/meminfo")),
        block={d.name: sectors(d / "size") for d in entries(Path("/sys/block"))},
        links=read_links(), ip_addr_json=run("ip", "-j", "-4", "addr", "show") or "[]",
        network_state=read_file(NETWORK_STATE), networking=first_file(NETWORKING),
        node_config=first_file(NODE_CONFIGS), setup_state=read_file(setup_state_path(SETUP_DIRS)),
        agents=agent_packages(AGENTS),
        pool=pool,
        pool_props=run("zfs", "get", "-Hp", "-o", "property,value", "used,available,creation,encryption", pool),
        pool_status=run("zpool", "status", "-P", pool),
    )


def main(argv: Optional[list[str]] = None) -> int:
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        print(f"sysinfo: {e}\n{USAGE}", file=sys.stderr)
        return 2
    if opts.help:
        print(USAGE)
        return 0
    if opts.update_only:
        return 0
    info = describe(gather())
    print("\n".join(parseable(info)) if opts.parseable else json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
