#!/usr/bin/python3
"""triton-network: the node's NIC tags as bridges, before networkd starts.

Each NIC tag names a bridge, <tag>0 (admin -> admin0), with the tagged NIC
as its port and the NIC's MAC address, so the node keeps the address booter's
DHCP gives that MAC, and instances' NICs (veth ports, vmadm nic_tag) share
the tag's network with the node and with each other.

Where the tags come from: booter's networking.json (`nictags`: name and
mac), and otherwise the boot NIC (BOOTIF=01-<mac>) as `admin`. The admin
bridge gets its address by DHCP, as the boot NIC did in the initrd; other
tags' bridges carry no address of the node's. A NIC no tag names keeps the
fallback (99-triton-dhcp.network). Writes /run/systemd/network/10-triton-*;
standard library only.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

BOOT_FILES = Path("/run/triton/boot")
NETWORKING = BOOT_FILES / "triton-networking.json"
OUT = Path("/run/systemd/network")
# platform.yaml's instances.bridge_suffix: vmadm attaches nic_tag T to T + it.
INSTANCES = Path("/usr/lib/triton/instances.json")
MAC_RE = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")
TAG_RE = re.compile(r"[a-z][a-z0-9_]{0,12}")
PROG = "triton-network"

DHCP = """[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
VendorClassIdentifier=PXEClient.Linux.x86_64
ClientIdentifier=mac
"""


def say(msg: str) -> None:
    print(f"{PROG}: {msg}", flush=True)


def bootif_mac(cmdline: str) -> Optional[str]:
    for arg in cmdline.split():
        if arg.startswith("BOOTIF="):
            value = arg.split("=", 1)[1].lower()
            # BOOTIF=01-aa-bb-cc-dd-ee-ff (01: Ethernet)
            parts = value.split("-")
            if len(parts) == 7:
                parts = parts[1:]
            mac = ":".join(parts)
            if MAC_RE.fullmatch(mac):
                return mac
    return None


def nic_tags(networking: Any, source: str) -> tuple[dict[str, str], list[str]]:
    """networking.json -> ({tag: mac}, [problems])."""
    problems: list[str] = []
    tags: dict[str, str] = {}
    if not isinstance(networking, dict):
        return {}, [f"{source}: not a JSON object"]
    entries = networking.get("nictags", [])
    if not isinstance(entries, list):
        return {}, [f"{source}: nictags is not a list"]
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"{source}: nictags[{i}] is not an object")
            continue
        name, mac = entry.get("name"), str(entry.get("mac", "")).lower()
        if not isinstance(name, str) or not TAG_RE.fullmatch(name):
            problems.append(f"{source}: nictags[{i}].name {name!r} is not a NIC tag name")
            continue
        if not MAC_RE.fullmatch(mac):
            problems.append(f"{source}: nictags[{i}] ({name}): mac {entry.get('mac')!r} is not a MAC address")
            continue
        tags[name] = mac
    return tags, problems


def files(tags: dict[str, str], suffix: str) -> dict[str, str]:
    """networkd files for these tags: a bridge per tag, the NIC its port."""
    out = {}
    for tag, mac in sorted(tags.items()):
        bridge = tag + suffix
        out[f"10-triton-{bridge}.netdev"] = (
            f"# NIC tag {tag} (triton-network)\n[NetDev]\nName={bridge}\nKind=bridge\nMACAddress={mac}\n\n"
            "[Bridge]\nSTP=no\nForwardDelaySec=0\n")
        out[f"10-triton-{bridge}-port.network"] = (
            f"# The NIC tagged {tag}: a port of {bridge}\n[Match]\nPermanentMACAddress={mac}\nType=ether\n\n"
            f"[Network]\nBridge={bridge}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n")
        body = DHCP if tag == "admin" else "[Network]\nLinkLocalAddressing=no\nIPv6AcceptRA=no\nConfigureWithoutCarrier=yes\n"
        out[f"10-triton-{bridge}.network"] = f"# NIC tag {tag}\n[Match]\nName={bridge}\n\n{body}"
    return out


def main() -> int:
    tags: dict[str, str] = {}
    if NETWORKING.is_file():
        try:
            data = json.loads(NETWORKING.read_text())
        except ValueError as e:
            data = None
            say(f"{NETWORKING}: not valid JSON ({e}); using the boot NIC as admin")
        if data is not None:
            tags, problems = nic_tags(data, str(NETWORKING))
            for p in problems:
                say(p)
    if "admin" not in tags:
        mac = bootif_mac(Path("/proc/cmdline").read_text())
        if mac and mac not in tags.values():
            tags["admin"] = mac
    suffix = json.loads(INSTANCES.read_text())["bridge_suffix"]
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in files(tags, suffix).items():
        (OUT / name).write_text(text)
    if tags:
        say("NIC tags: " + ", ".join(f"{t} ({m}) on bridge {t}{suffix}" for t, m in sorted(tags.items())))
    else:
        say("no NIC tags (no networking.json, no BOOTIF=): DHCP on every NIC")
    return 0


if __name__ == "__main__":
    sys.exit(main())
