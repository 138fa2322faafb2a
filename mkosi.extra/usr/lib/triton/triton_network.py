"""The node's network, from booter's networking.json, as systemd-networkd files.

Booter delivers /etc/triton-networking.json with the boot (kept in
/run/triton/boot/): `nictags` (name, mac, mtu; the mac may name an
aggregation instead), `vnics` (the node's own addresses: nic_tag, ip,
netmask, gateway, vlan_id, mtu, primary), `routes` ({destination: gateway}),
`resolvers`, `hostname`, `dns_domain`, `default_gateway` and `aggregations`
(name, macs, lacp_mode). This module turns it into a plan and the plan into
networkd files, before networkd starts:

- each NIC tag T is a bridge T0 (platform.yaml instances.bridge_suffix), with
  the tagged NIC (or aggregation) as its port and that NIC's MAC, so
  instances' NICs (veth ports, vmadm nic_tag) share the tag's network with
  the node and with each other;
- an aggregation is a bond of its NICs (LACP when lacp_mode is active or
  passive, a static balance-xor aggregation when it is off);
- a vnic's address goes on its tag's bridge, or on a VLAN link <bridge>.<vid>
  on it; routes go on the link whose subnet holds their gateway;
- the admin tag without a static address gets DHCP, as in the initrd.

Without networking.json, booter's boot parameters on the kernel command line
(<tag>_nic=, <aggr>_aggr=, ip=) say the same in brief; the boot NIC
(BOOTIF=01-<mac>, or admin_nic= / node.config admin_nic) is the admin tag,
with ip='s address or DHCP, and every other NIC gets DHCP
(99-triton-dhcp.network). A file that is not valid JSON, does not match
its .hash, or names no usable admin NIC is reported, and the node falls back
to exactly that, so it stays reachable. Standard library only.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from typing import Any, Iterable, Iterator, Optional

from triton_common import MAC_RE, normal_mac
from triton_settings import RUNTIME

TAG_RE = re.compile(r"[a-z][a-z0-9_]{0,12}")
AGGR_RE = re.compile(r"[a-z][a-z0-9_]{0,14}")
IFNAMSIZ = 15
LACP_MODES = {"active": "802.3ad", "passive": "802.3ad", "off": "balance-xor"}

DHCP = f"""DHCP=ipv4

[DHCPv4]
VendorClassIdentifier={RUNTIME.dhcp_vendor_class}
ClientIdentifier=mac
"""
QUIET = "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"


@dataclasses.dataclass
class Tag:
    name: str
    port: str            # a NIC's MAC, or an aggregation's name
    bridge: str
    mtu: Optional[int] = None


@dataclasses.dataclass
class Aggregation:
    name: str
    macs: list[str]
    lacp_mode: str


@dataclasses.dataclass
class Vnic:
    tag: str
    link: str            # the bridge, or the VLAN link on it
    address: Optional[ipaddress.IPv4Interface]   # None: DHCP
    gateway: Optional[ipaddress.IPv4Address] = None
    vlan: int = 0
    mtu: Optional[int] = None
    primary: bool = False
    mac: str = ""


@dataclasses.dataclass
class Plan:
    source: str
    tags: dict[str, Tag] = dataclasses.field(default_factory=dict)
    aggregations: dict[str, Aggregation] = dataclasses.field(default_factory=dict)
    vnics: list[Vnic] = dataclasses.field(default_factory=list)
    routes: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    default_gateway: Optional[str] = None
    resolvers: list[str] = dataclasses.field(default_factory=list)
    hostname: Optional[str] = None
    dns_domain: Optional[str] = None
    problems: list[str] = dataclasses.field(default_factory=list)
    # Files from booter were used (False: the boot NIC fallback).
    from_file: bool = False

    def links(self) -> dict[str, list[Vnic]]:
        out: dict[str, list[Vnic]] = {}
        for v in self.vnics:
            out.setdefault(v.link, []).append(v)
        return out


class Malformed(Exception):
    """networking.json cannot be used at all; the node falls back to DHCP."""


# -- reading networking.json ----------------------------------------------------------------

def check_hash(raw: bytes, expected: Optional[str], source: str) -> None:
    """booter writes networking.json.hash: the SHA-1 of the file it serves."""
    if expected is None:
        return
    # Imported here: hashlib loads libcrypto, which costs every boot's
    # triton-node-config (early in sysinit) even when booter sent no .hash.
    import hashlib

    expected = expected.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{40}", expected):
        raise Malformed(f"{source}: its .hash {expected[:60]!a} is not a SHA-1 (40 hex digits)")
    actual = hashlib.sha1(raw).hexdigest()
    if actual != expected:
        raise Malformed(f"{source}: does not match its .hash (SHA-1 {actual}, the .hash says {expected}): "
                        "damaged or truncated on the way")


def load(raw: bytes, source: str, suffix: str, expected_hash: Optional[str] = None) -> Plan:
    check_hash(raw, expected_hash, source)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:   # RecursionError: nested too deep
        raise Malformed(f"{source}: not valid JSON ({e})")
    return parse(data, source, suffix)


def _int(value: Any, what: str, low: int, high: int) -> Optional[int]:
    if value is None or value == "":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):   # OverflowError: 1e400 is read as inf
        raise ValueError(f"{what} {value!r} is not a number")
    if not low <= n <= high:
        raise ValueError(f"{what} {n} is not between {low} and {high}")
    return n


def _list(data: dict[str, Any], key: str, source: str) -> list[Any]:
    value = data.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise Malformed(f"{source}: {key} is not a list")
    return value


def _named(data: dict[str, Any], key: str, source: str, pattern: re.Pattern[str], what: str,
           problems: list[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, name, entry) for each usable entry of a list of named objects."""
    for i, entry in enumerate(_list(data, key, source)):
        where = f"{source}: {key}[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} is not an object")
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not pattern.fullmatch(name):
            problems.append(f"{where}.name {name!r} is not {what}")
            continue
        yield where, name, entry


def parse(data: Any, source: str, suffix: str) -> Plan:
    """networking.json -> Plan. Entries that cannot be used are skipped and
    named in plan.problems; a file whose shape is wrong raises Malformed.
    Nothing else is raised, whatever the JSON holds."""
    if not isinstance(data, dict):
        raise Malformed(f"{source}: not a JSON object")
    plan = Plan(source=source, from_file=True)
    p = plan.problems

    for where, name, entry in _named(data, "aggregations", source, AGGR_RE, "an aggregation name (like aggr0)", p):
        macs = [normal_mac(m) for m in entry.get("macs") or []] if isinstance(entry.get("macs"), list) else [None]
        if not macs or None in macs:
            p.append(f"{where} ({name}): macs {entry.get('macs')!r} is not a list of MAC addresses")
            continue
        mode = str(entry.get("lacp_mode") or "off").lower()
        if mode not in LACP_MODES:
            p.append(f"{where} ({name}): lacp_mode {mode!r} is not one of {', '.join(LACP_MODES)}")
            continue
        plan.aggregations[name] = Aggregation(name, [m for m in macs if m], mode)

    for where, name, entry in _named(data, "nictags", source, TAG_RE, "a NIC tag name", p):
        raw_port = entry.get("mac")
        if raw_port in (None, ""):
            # A tag NAPI knows but no NIC of this node provides.
            continue
        port = raw_port if isinstance(raw_port, str) and raw_port in plan.aggregations else normal_mac(raw_port)
        if port is None:
            p.append(f"{where} ({name}): mac {raw_port!r} is neither a MAC address nor an aggregation")
            continue
        try:
            mtu = _int(entry.get("mtu"), "mtu", 576, 9000)
        except ValueError as e:
            p.append(f"{where} ({name}): {e}")
            continue
        plan.tags[name] = Tag(name, port, name + suffix, mtu)

    for i, entry in enumerate(_list(data, "vnics", source)):
        where = f"{source}: vnics[{i}]"
        if not isinstance(entry, dict):
            p.append(f"{where} is not an object")
            continue
        try:
            plan.vnics.append(_vnic(entry, plan))
        except ValueError as e:
            p.append(f"{where}: {e}")

    routes = data.get("routes") or {}
    if not isinstance(routes, dict):
        p.append(f"{source}: routes is not an object ({{destination: gateway}})")
        routes = {}
    for dest, gw in routes.items():
        try:
            plan.routes.append(_route(dest, gw))
        except ValueError as e:
            p.append(f"{source}: routes[{dest!r}]: {e}")

    gw = data.get("default_gateway")
    if gw:
        try:
            plan.default_gateway = str(ipaddress.IPv4Address(gw))
        except ValueError:
            p.append(f"{source}: default_gateway {gw!r} is not an IPv4 address")

    for r in _list(data, "resolvers", source):
        try:
            plan.resolvers.append(str(ipaddress.ip_address(r)))
        except ValueError:
            p.append(f"{source}: resolvers: {r!r} is not an IP address")
    plan.hostname = data.get("hostname") if isinstance(data.get("hostname"), str) else None
    plan.dns_domain = data.get("dns_domain") if isinstance(data.get("dns_domain"), str) else None
    if data.get("nictag_rules"):
        p.append(f"{source}: nictag_rules (overlay networks) are not supported on this platform; ignored")
    return plan


def _vnic(entry: dict[str, Any], plan: Plan) -> Vnic:
    tag = entry.get("nic_tag")
    if not isinstance(tag, str) or tag not in plan.tags:
        raise ValueError(f"nic_tag {tag!r} is not one of this node's NIC tags "
                         f"({', '.join(sorted(plan.tags)) or 'none'})")
    vlan = _int(entry.get("vlan_id"), "vlan_id", 0, 4094) or 0
    mtu = _int(entry.get("mtu"), "mtu", 576, 9000)
    bridge = plan.tags[tag].bridge
    link = f"{bridge}.{vlan}" if vlan else bridge
    if len(link) > IFNAMSIZ:
        raise ValueError(f"VLAN link name {link} is longer than {IFNAMSIZ} characters")
    ip, netmask = entry.get("ip"), entry.get("netmask")
    address = None
    if ip not in (None, "", "dhcp"):
        try:
            address = ipaddress.IPv4Interface(f"{ip}/{netmask}")
        except ValueError:
            raise ValueError(f"ip {ip!r} with netmask {netmask!r} is not an IPv4 address and netmask")
    gateway = None
    if entry.get("gateway"):
        try:
            gateway = ipaddress.IPv4Address(entry["gateway"])
        except ValueError:
            raise ValueError(f"gateway {entry['gateway']!r} is not an IPv4 address")
    return Vnic(tag=tag, link=link, address=address, gateway=gateway, vlan=vlan, mtu=mtu,
                primary=entry.get("primary") is True, mac=normal_mac(entry.get("mac")) or "")


def _route(dest: Any, gw: Any) -> tuple[str, str]:
    if dest == "default":
        dest = "0.0.0.0/0"
    try:
        net = ipaddress.IPv4Network(dest, strict=False)
    except (TypeError, ValueError):
        raise ValueError("the destination is not an IPv4 address or network")
    try:
        gateway = ipaddress.IPv4Address(gw)
    except (TypeError, ValueError):
        raise ValueError(f"gateway {gw!r} is not an IPv4 address")
    return str(net), str(gateway)


# -- the admin NIC, and NICs that are not there ---------------------------------------------

def settle(plan: Plan, local_macs: Iterable[str], fallback_admin: Optional[str],
           suffix: str) -> Plan:
    """Drop what names NICs this node does not have, and make sure the admin
    tag is on a NIC it does have (else the boot NIC, with DHCP)."""
    local = set(local_macs)
    for name, aggr in list(plan.aggregations.items()):
        missing = [m for m in aggr.macs if m not in local]
        if missing:
            plan.problems.append(f"{plan.source}: aggregation {name}: no NIC with MAC {', '.join(missing)} "
                                 "on this node" + ("; made without it" if len(missing) < len(aggr.macs) else ""))
            aggr.macs = [m for m in aggr.macs if m in local]
            if not aggr.macs:
                del plan.aggregations[name]
    for name, tag in list(plan.tags.items()):
        if tag.port in plan.aggregations or tag.port in local:
            continue
        what = "NIC with MAC" if MAC_RE.fullmatch(tag.port) else "aggregation"
        plan.problems.append(f"{plan.source}: NIC tag {name}: no {what} {tag.port} on this node; tag not made")
        del plan.tags[name]
    kept = [v for v in plan.vnics if v.tag in plan.tags]
    for v in plan.vnics:
        if v.tag not in plan.tags:
            plan.problems.append(f"{plan.source}: the address {v.address} on NIC tag {v.tag} is not configured: "
                                 "that tag has no NIC here")
    plan.vnics = kept
    if "admin" not in plan.tags:
        if fallback_admin and fallback_admin in local:
            plan.tags["admin"] = Tag("admin", fallback_admin, "admin" + suffix)
            if plan.from_file:
                plan.problems.append(f"{plan.source}: no usable admin NIC tag; the boot NIC {fallback_admin} "
                                     "is admin, with DHCP")
        elif plan.from_file or fallback_admin:
            plan.problems.append("no admin NIC: neither networking.json nor BOOTIF=/admin_nic= names a NIC "
                                 "of this node; every NIC gets DHCP")
    return plan


def from_kernel_args(args: dict[str, str], suffix: str) -> Plan:
    """Booter's boot parameters, which it also passes on the kernel command
    line and which it falls back to when it cannot write networking.json:
    <tag>_nic=<mac|aggr> (admin_nic is left to the caller), <aggr>_aggr=
    "<mac>,<mac>", <aggr>_lacp_mode=, and ip=<ip>::<gw>:<netmask> for the
    admin NIC."""
    plan = Plan(source="the kernel command line")
    for key, value in sorted(args.items()):
        if not key.endswith("_aggr"):
            continue
        name = key[: -len("_aggr")]
        macs = [normal_mac(m) for m in value.strip('"').split(",") if m]
        mode = args.get(f"{name}_lacp_mode", "off").strip('"').lower()
        if not AGGR_RE.fullmatch(name) or not macs or None in macs or mode not in LACP_MODES:
            plan.problems.append(f"kernel arguments {key}={value} {name}_lacp_mode={mode}: not an aggregation")
            continue
        plan.aggregations[name] = Aggregation(name, [m for m in macs if m], mode)
    for key, value in sorted(args.items()):
        if not key.endswith("_nic") or key == "admin_nic":
            continue
        tag, raw = key[: -len("_nic")], value.strip('"')
        port = raw if raw in plan.aggregations else normal_mac(raw)
        if not TAG_RE.fullmatch(tag) or port is None:
            plan.problems.append(f"kernel argument {key}={value}: not a NIC tag and a MAC address or aggregation")
            continue
        plan.tags[tag] = Tag(tag, port, tag + suffix)
    return plan


def static_admin(plan: Plan, ip_arg: Optional[str]) -> None:
    """The admin address from ip=<ip>:<server>:<gw>:<netmask>:..., as booter
    passes it (ip=10.99.99.7:::255.255.255.0::), instead of DHCP."""
    if not ip_arg or "admin" not in plan.tags:
        return
    fields = ip_arg.split(":")
    if len(fields) < 4 or not fields[0] or fields[0] in ("dhcp", "on", "any", "off", "none"):
        return
    try:
        address = ipaddress.IPv4Interface(f"{fields[0]}/{fields[3] or '255.255.255.0'}")
        gateway = ipaddress.IPv4Address(fields[2]) if fields[2] else None
    except ValueError:
        plan.problems.append(f"kernel argument ip={ip_arg}: not <ip>::<gateway>:<netmask>; admin uses DHCP")
        return
    plan.vnics.append(Vnic(tag="admin", link=plan.tags["admin"].bridge, address=address, gateway=gateway))


# -- networkd files -------------------------------------------------------------------------

def _mtu_line(mtu: Optional[int]) -> str:
    return f"MTUBytes={mtu}\n" if mtu else ""


def _containing(plan: Plan, gateway: str) -> Optional[str]:
    gw = ipaddress.IPv4Address(gateway)
    for v in plan.vnics:
        if v.address and gw in v.address.network:
            return v.link
    return None


def route_links(plan: Plan) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
    """{link: [(destination, gateway)]}: each route on the link whose subnet
    holds its gateway; the default route from default_gateway, else the
    primary vnic's gateway, else the admin vnic's."""
    out: dict[str, list[tuple[str, str]]] = {}
    problems: list[str] = []
    routes = list(plan.routes)
    default = plan.default_gateway
    if not default:
        primary = [v for v in plan.vnics if v.primary and v.gateway]
        admin = [v for v in plan.vnics if v.tag == "admin" and v.gateway]
        chosen = (primary or admin or [v for v in plan.vnics if v.gateway])
        default = str(chosen[0].gateway) if chosen else None
    if default and not any(d == "0.0.0.0/0" for d, _ in routes):
        routes.insert(0, ("0.0.0.0/0", default))
    admin_link = plan.tags["admin"].bridge if "admin" in plan.tags else None
    for dest, gw in routes:
        link = _containing(plan, gw) or admin_link
        if link is None:
            problems.append(f"{plan.source}: route to {dest} via {gw}: no link reaches {gw}; not added")
            continue
        out.setdefault(link, []).append((dest, gw))
    return out, problems


def files(plan: Plan) -> dict[str, str]:
    """networkd files for the plan, by name (for /run/systemd/network)."""
    out: dict[str, str] = {}
    links = plan.links()
    routes, problems = route_links(plan)
    plan.problems.extend(p for p in problems if p not in plan.problems)
    ports_of_aggr = {m: a.name for a in plan.aggregations.values() for m in a.macs}

    for aggr in sorted(plan.aggregations.values(), key=lambda a: a.name):
        tag = next((t for t in plan.tags.values() if t.port == aggr.name), None)
        mtu = tag.mtu if tag else None
        mode = LACP_MODES[aggr.lacp_mode]
        bond = f"[Bond]\nMode={mode}\nTransmitHashPolicy=layer3+4\nMIIMonitorSec=100ms\n"
        if mode == "802.3ad":
            bond += "LACPTransmitRate=fast\n"
        out[f"10-triton-{aggr.name}.netdev"] = (
            f"# Aggregation {aggr.name} (lacp_mode {aggr.lacp_mode}) of {', '.join(aggr.macs)}\n"
            f"[NetDev]\nName={aggr.name}\nKind=bond\nMACAddress={aggr.macs[0]}\n{_mtu_line(mtu)}\n{bond}")
        for mac in aggr.macs:
            out[f"10-triton-{aggr.name}-{mac.replace(':', '')}.network"] = (
                f"# A NIC of aggregation {aggr.name}\n[Match]\nPermanentMACAddress={mac}\nType=ether\n\n"
                f"[Link]\n{_mtu_line(mtu)}RequiredForOnline=no\n\n[Network]\nBond={aggr.name}\n{QUIET}")
        if tag is None:
            out[f"10-triton-{aggr.name}.network"] = (
                f"# Aggregation {aggr.name}: no NIC tag on it\n[Match]\nName={aggr.name}\n\n"
                f"[Link]\nRequiredForOnline=no\n\n[Network]\n{QUIET}")

    for tag in sorted(plan.tags.values(), key=lambda t: t.name):
        bridge = tag.bridge
        mac = plan.aggregations[tag.port].macs[0] if tag.port in plan.aggregations else tag.port
        mtu = tag.mtu or next((v.mtu for v in links.get(bridge, []) if v.mtu), None)
        out[f"10-triton-{bridge}.netdev"] = (
            f"# NIC tag {tag.name}\n[NetDev]\nName={bridge}\nKind=bridge\nMACAddress={mac}\n{_mtu_line(mtu)}\n"
            "[Bridge]\nSTP=no\nForwardDelaySec=0\n")
        if tag.port in plan.aggregations:
            match = f"Name={tag.port}"
        else:
            if tag.port in ports_of_aggr:
                plan.problems.append(f"{plan.source}: NIC tag {tag.name}: NIC {tag.port} is in aggregation "
                                     f"{ports_of_aggr[tag.port]}")
            match = f"PermanentMACAddress={tag.port}\nType=ether"
        required = "" if tag.name == "admin" else "RequiredForOnline=no\n"
        out[f"10-triton-{bridge}-port.network"] = (
            f"# The {'aggregation' if tag.port in plan.aggregations else 'NIC'} tagged {tag.name}: "
            f"a port of {bridge}\n[Match]\n{match}\n\n[Link]\n{_mtu_line(mtu)}{required}\n"
            f"[Network]\nBridge={bridge}\n{QUIET}")
        out[f"10-triton-{bridge}.network"] = _link_network(
            bridge, f"NIC tag {tag.name}", links.get(bridge, []), routes.get(bridge, []),
            vlans=sorted({v.link for v in plan.vnics if v.tag == tag.name and v.vlan}),
            admin=tag.name == "admin", mtu=None)

    for link, vnics in sorted(links.items()):
        first = vnics[0]
        if not first.vlan:
            continue
        mtu = next((v.mtu for v in vnics if v.mtu), None)
        out[f"10-triton-{link}.netdev"] = (
            f"# VLAN {first.vlan} on NIC tag {first.tag}\n[NetDev]\nName={link}\nKind=vlan\n"
            + (f"MACAddress={first.mac}\n" if first.mac else "") + _mtu_line(mtu)
            + f"\n[VLAN]\nId={first.vlan}\n")
        out[f"10-triton-{link}.network"] = _link_network(
            link, f"NIC tag {first.tag}, VLAN {first.vlan}", vnics, routes.get(link, []),
            vlans=[], admin=False, mtu=mtu)
    return out


def _link_network(link: str, what: str, vnics: list[Vnic], routes: list[tuple[str, str]],
                  vlans: list[str], admin: bool, mtu: Optional[int]) -> str:
    addresses = [v.address for v in vnics if v.address]
    text = f"# {what}\n[Match]\nName={link}\n\n[Link]\n{_mtu_line(mtu)}"
    if not admin:
        text += "RequiredForOnline=no\n"
    text += "\n[Network]\n" + QUIET + "ConfigureWithoutCarrier=yes\n"
    text += "".join(f"VLAN={v}\n" for v in vlans)
    text += "".join(f"Address={a.with_prefixlen}\n" for a in addresses)
    dhcp = admin and not addresses
    for dest, gw in routes:
        text += "\n[Route]\n" + ("" if dest == "0.0.0.0/0" else f"Destination={dest}\n") + f"Gateway={gw}\n"
    if dhcp:
        text += DHCP
    return text


def unused_nics_file() -> str:
    """With networking.json, NICs it does not name come up without addresses
    (no DHCP on networks booter did not assign)."""
    return ("# NICs networking.json does not name: up, no address (triton-network)\n"
            "[Match]\nType=ether\nKind=!*\n\n[Link]\nRequiredForOnline=no\n\n[Network]\n" + QUIET)


def state(plan: Plan) -> dict[str, Any]:
    """What sysinfo, vmadm and operators read: /run/triton/network.json."""
    return {
        "source": plan.source,
        "from_networking_json": plan.from_file,
        "nic_tags": {t.name: {"link": t.bridge, "port": t.port, "mtu": t.mtu} for t in plan.tags.values()},
        "aggregations": {a.name: {"macs": a.macs, "lacp_mode": a.lacp_mode} for a in plan.aggregations.values()},
        "vnics": [{"nic_tag": v.tag, "link": v.link, "vlan_id": v.vlan,
                   "ip": str(v.address.ip) if v.address else "dhcp",
                   "netmask": str(v.address.netmask) if v.address else "",
                   "gateway": str(v.gateway) if v.gateway else "", "mtu": v.mtu, "primary": v.primary}
                  for v in plan.vnics],
        "resolvers": plan.resolvers,
        "problems": plan.problems,
    }
