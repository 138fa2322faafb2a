"""A vmadm payload (create) or update, checked field by field into an
instance's config (vm.json), SmartOS's defaults filled in from
platform.yaml. Every string that lands in a file another program parses is
checked; each error names the field. No side effects."""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any

from triton_common import is_uuid
from triton_instance import InstanceError
from triton_settings import InstanceSettings

HOSTNAME_RE = re.compile(r"(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?")
NIC_TAG_RE = re.compile(r"[a-z][a-z0-9_]{0,12}")
DOMAIN_RE = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)
MTU_MIN, MTU_MAX = 576, 9216
# SmartOS's per-NIC switches that turn off one of the port's protections
# (all off by default: an instance's port passes only its own MAC and IPs,
# no DHCP or router advertisement answers, only IPv4, ARP and IPv6 frames).
SPOOFING = ("allow_ip_spoofing", "allow_mac_spoofing", "allow_dhcp_spoofing", "allow_restricted_traffic")
# Limits vmadm can set, and how each becomes a systemd resource-control
# property of the instance's unit (the ZFS quota is set on the dataset).
LIMITS = ("max_physical_memory", "cpu_cap", "cpu_shares", "max_lwps", "quota")


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
