#!/usr/bin/python3
"""sysinfo: this compute node described as JSON, in the key names Triton's
sysinfo uses (booter, CNAPI and the agents read them). Standard library
only; it reads /sys, /proc, DMI, ZFS and the boot files, and keeps nothing.

  sysinfo            the whole description
  sysinfo -p         key=value lines (SmartOS's parseable form)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triton_nodeconfig import parse_node_config  # noqa: E402
from triton_network import kernel_args  # noqa: E402
from triton_pool import _os_release as os_release  # noqa: E402

BOOT_FILES = Path("/run/triton/boot")
POOL_STATE = Path("/run/triton/pool/state.json")
DMI = Path("/sys/class/dmi/id")
NETWORK_STATE = Path("/run/triton/network.json")


def entries(path: Path) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except OSError:
        return []


def read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def run(*argv: str) -> str:
    try:
        p = subprocess.run(argv, text=True, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return p.stdout if p.returncode == 0 else ""


def node_config() -> dict[str, str]:
    return parse_node_config(read(BOOT_FILES / "node.config"))[0]


def cpu_info() -> dict[str, Any]:
    text = read(Path("/proc/cpuinfo"))
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags: list[str] = next((line.split(":", 1)[1].split() for line in text.splitlines()
                             if line.startswith("flags")), [])
    sockets = {line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("physical id")}
    cores = {tuple(x) for x in re.findall(r"physical id\s*:\s*(\d+).*?core id\s*:\s*(\d+)", text, re.S)}
    virt = "vmx" if "vmx" in flags else "svm" if "svm" in flags else "none"
    return {"CPU Type": model, "CPU Virtualization": virt, "CPU Physical Cores": max(len(sockets), 1),
            "CPU Core Count": len(cores) or os.cpu_count() or 1, "CPU Total Cores": os.cpu_count() or 1}


def memory_mib() -> int:
    m = re.search(r"MemTotal:\s+(\d+) kB", read(Path("/proc/meminfo")))
    return int(m.group(1)) // 1024 if m else 0


def network_state() -> dict[str, Any]:
    """What triton-node-config applied at boot (/run/triton/network.json)."""
    try:
        return json.loads(read(NETWORK_STATE) or "{}")
    except ValueError:
        return {}


def addresses() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    try:
        data = json.loads(run("ip", "-j", "-4", "addr", "show") or "[]")
    except ValueError:
        data = []
    for link in data:
        out[link.get("ifname", "")] = [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])]
    return out


def interfaces() -> dict[str, Any]:
    """Triton's sysinfo network keys: physical NICs with the NIC tags they
    provide, the node's own addresses (its vnics, here bridges and VLAN
    links), aggregations, and the bridges instances attach to."""
    state = network_state()
    tags = state.get("nic_tags", {})
    aggrs = state.get("aggregations", {})
    addrs = addresses()
    physical: dict[str, Any] = {}
    bridges: dict[str, Any] = {}
    for dev in entries(Path("/sys/class/net")):
        name = dev.name
        if name == "lo":
            continue
        # A NIC in an aggregation carries the bond's MAC; report its own.
        mac = (read(dev / "bonding_slave/perm_hwaddr") or read(dev / "address")).lower()
        ip4 = addrs.get(name, [])
        entry: dict[str, Any] = {"MAC Address": mac, "ip4addr": ip4[0].split("/")[0] if ip4 else "",
                 "Link Status": "up" if read(dev / "operstate") == "up" else "down"}
        if (dev / "device").exists():
            master = dev / "master"
            bridge = master.resolve().name if master.exists() else ""
            if bridge in aggrs:
                entry["Aggregation"] = bridge
                up = Path(f"/sys/class/net/{bridge}/master")
                bridge = up.resolve().name if up.exists() else ""
            if bridge:
                # The NIC's address is its tag's, on the bridge it is a port of.
                ip4 = addrs.get(bridge, [])
                entry["ip4addr"] = ip4[0].split("/")[0] if ip4 else ""
            entry["NIC Names"] = sorted(t for t, v in tags.items() if v.get("port") == mac)
            entry["Bridge"] = bridge
            physical[name] = entry
        elif (dev / "bridge").is_dir():
            bridges[name] = {**entry, "NIC Names": sorted(t for t, v in tags.items() if v.get("link") == name)}
    aggregations = {}
    for name, a in aggrs.items():
        slaves = read(Path(f"/sys/class/net/{name}/bonding/slaves")).split()
        aggregations[name] = {"LACP mode": a.get("lacp_mode", ""), "Interfaces": slaves,
                              "MAC Addresses": a.get("macs", []),
                              "NIC Names": sorted(t for t, v in tags.items() if v.get("port") == name)}
    vnics: dict[str, Any] = {}
    for v in state.get("vnics", []):
        link = v.get("link", "")
        tag = tags.get(v.get("nic_tag", ""), {})
        port = tag.get("port", "")
        ip4 = addrs.get(link, [])
        vnics[link] = {
            "MAC Address": read(Path(f"/sys/class/net/{link}/address")).lower(),
            "ip4addr": ip4[0].split("/")[0] if ip4 else "",
            "ip4netmask": v.get("netmask", ""),
            "ip4gateway": v.get("gateway", ""),
            "Link Status": "up" if read(Path(f"/sys/class/net/{link}/operstate")) in ("up", "unknown") else "down",
            "Host Interface": port if port in aggrs else next(
                (n for n, e in physical.items() if e["MAC Address"] == port), port),
            "VLAN": str(v.get("vlan_id", 0)),
            "NIC Names": [v.get("nic_tag", "")],
        }
    admin = tags.get("admin", {}).get("link")
    admin_ip = addrs.get(admin, [""])[0].split("/")[0] if admin else ""
    return {"Network Interfaces": physical, "Bridges": bridges, "Virtual Network Interfaces": vnics,
            "Link Aggregations": aggregations, **({"Admin IP": admin_ip} if admin_ip else {})}


def disks() -> dict[str, Any]:
    out = {}
    for dev in entries(Path("/sys/block")):
        if dev.name.startswith(("loop", "ram", "zram", "sr", "zd", "dm-")):
            continue
        sectors = int(read(dev / "size", "0") or 0)
        out[dev.name] = {"Size in GB": round(sectors * 512 / 1e9)}
    return out


def zpool() -> dict[str, Any]:
    try:
        state = json.loads(read(POOL_STATE) or "{}")
    except ValueError:
        state = {}
    pool = state.get("pool") or "zones"
    out: dict[str, Any] = {"Setup": "true" if state.get("state") == "imported" else "false"}
    line = run("zpool", "list", "-H", "-p", "-o", "name,size,health", pool).split()
    if len(line) == 3:
        out["Zpool"] = line[0]
        out["Zpool Size in GiB"] = int(line[1]) // 2**30
        out["Zpool Health"] = line[2]
        status = run("zpool", "status", "-P", pool)
        out["Zpool Disks"] = ",".join(re.findall(r"^\s+(/dev/\S+)", status, re.M))
        profile = re.search(r"^\s+(mirror|raidz1|raidz2|raidz3|raidz)-\d+", status, re.M)
        out["Zpool Profile"] = profile.group(1) if profile else "striped"
        created = run("zfs", "get", "-H", "-p", "-o", "value", "creation", pool).strip()
        if created.isdigit():
            out["Zpool Creation"] = int(created)
    return out


def sysinfo() -> dict[str, Any]:
    osr = os_release()
    cfg = node_config()
    boot_time = int(time.time() - float(read(Path("/proc/uptime"), "0 0").split()[0]))
    system_uuid = read(DMI / "product_uuid").lower()
    info: dict[str, Any] = {
        "Live Image": osr.get("TRITON_RELEASE", ""),
        "System Type": "Linux",
        "Boot Time": str(boot_time),
        "Datacenter Name": cfg.get("datacenter_name", ""),
        "Hostname": os.uname().nodename,
        "UUID": system_uuid,
        "Manufacturer": read(DMI / "sys_vendor"),
        "Product": read(DMI / "product_name"),
        "Serial Number": read(DMI / "product_serial"),
        "SKU Number": read(DMI / "product_sku"),
        "HW Version": read(DMI / "product_version"),
        "HW Family": read(DMI / "product_family"),
        "Kernel Version": os.uname().release,
        "Linux Distribution": osr.get("PRETTY_NAME", ""),
        **cpu_info(),
        "MiB of Memory": str(memory_mib()),
        "Disks": disks(),
        "Boot Parameters": kernel_args(read(Path("/proc/cmdline"))),
        **interfaces(),
        **zpool(),
    }
    return info


def flatten(prefix: str, value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            key = re.sub(r"[^A-Za-z0-9]+", "_", k).strip("_")
            flatten(f"{prefix}{'_' if prefix else ''}{key}", v, out)
    elif isinstance(value, list):
        out.append(f"{prefix}='{','.join(map(str, value))}'")
    else:
        out.append(f"{prefix}='{value}'")


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    info = sysinfo()
    if args == ["-p"]:
        lines: list[str] = []
        flatten("", info, lines)
        print("\n".join(lines))
    elif not args:
        print(json.dumps(info, indent=2))
    else:
        print("usage: sysinfo [-p]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
