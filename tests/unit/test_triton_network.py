"""From booter's networking.json to networkd files: NIC tags as bridges,
static addresses, VLANs, routes, MTUs, aggregations, and the fallback."""

import hashlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_network as tn  # noqa: E402

ADMIN, EXT, S1, S2 = "52:54:00:12:34:56", "52:54:00:aa:bb:01", "52:54:00:aa:bb:02", "52:54:00:aa:bb:03"
LOCAL = [ADMIN, EXT, S1, S2]

# The shape booter's lib/net-file.js writes.
BOOTER = {
    "nictags": [{"name": "admin", "mac": ADMIN, "mtu": 1500, "uuid": "x"},
                {"name": "external", "mac": EXT.upper(), "mtu": 1450},
                {"name": "storage", "mac": "aggr0"},
                {"name": "unused_tag"}],
    "aggregations": [{"name": "aggr0", "macs": [S1, S2], "lacp_mode": "off", "nic_tags_provided": ["storage"]}],
    "vnics": [{"mac": ADMIN, "nic_tag": "admin", "ip": "10.0.2.15", "netmask": "255.255.255.0",
               "primary": False, "belongs_to_type": "server"},
              {"nic_tag": "external", "ip": "192.168.77.20", "netmask": "255.255.255.0",
               "gateway": "192.168.77.1", "primary": True, "vlan_id": 0},
              {"nic_tag": "external", "ip": "192.168.78.20", "netmask": "255.255.255.0", "vlan_id": 42,
               "mtu": 1400, "mac": "90:b8:d0:00:00:42"},
              {"nic_tag": "storage", "ip": "192.168.79.20", "netmask": "255.255.255.0"}],
    "routes": {"198.51.100.0/24": "192.168.77.1", "203.0.113.9": "10.0.2.2"},
    "resolvers": ["10.0.2.3"],
    "hostname": "cn-test-1",
    "dns_domain": "test.example",
}


def plan(data=BOOTER, local=LOCAL, bootif=ADMIN):
    return tn.settle(tn.parse(json.loads(json.dumps(data)), "n.json", "0"), local, bootif, "0")


def test_booters_file_becomes_tags_addresses_and_routes():
    p = plan()
    assert p.problems == []
    assert {t: (v.bridge, v.port, v.mtu) for t, v in p.tags.items()} == {
        "admin": ("admin0", ADMIN, 1500), "external": ("external0", EXT, 1450), "storage": ("storage0", "aggr0", None)}
    f = tn.files(p)
    assert p.problems == []
    admin = f["10-triton-admin0.network"]
    assert "Address=10.0.2.15/24" in admin and "DHCP" not in admin
    ext = f["10-triton-external0.network"]
    assert "Address=192.168.77.20/24" in ext and "VLAN=external0.42" in ext
    # The primary vnic's gateway is the default route; routes go where their gateway is.
    assert "[Route]\nGateway=192.168.77.1\n" in ext
    assert "Destination=198.51.100.0/24\nGateway=192.168.77.1" in ext
    assert "Destination=203.0.113.9/32\nGateway=10.0.2.2" in admin
    vlan = f["10-triton-external0.42.netdev"]
    assert "Kind=vlan" in vlan and "Id=42" in vlan
    assert "MTUBytes=1400" in vlan and "MACAddress=90:b8:d0:00:00:42" in vlan
    assert "Address=192.168.78.20/24" in f["10-triton-external0.42.network"]
    assert "MTUBytes=1450" in f["10-triton-external0.netdev"]
    assert "MTUBytes=1450" in f["10-triton-external0-port.network"]
    assert f"PermanentMACAddress={EXT}" in f["10-triton-external0-port.network"]
    # Only the admin tag holds up network-online.target.
    assert "RequiredForOnline=no" in ext and "RequiredForOnline" not in admin


def test_aggregation_is_a_bond_port_of_its_tags_bridge():
    f = tn.files(plan())
    bond = f["10-triton-aggr0.netdev"]
    assert "Kind=bond" in bond and "Mode=balance-xor" in bond and f"MACAddress={S1}" in bond
    for mac in (S1, S2):
        member = f[f"10-triton-aggr0-{mac.replace(':', '')}.network"]
        assert f"PermanentMACAddress={mac}" in member and "Bond=aggr0" in member
    assert "Name=aggr0" in f["10-triton-storage0-port.network"]
    assert "Bridge=storage0" in f["10-triton-storage0-port.network"]
    assert f"MACAddress={S1}" in f["10-triton-storage0.netdev"]
    lacp = dict(BOOTER, aggregations=[dict(BOOTER["aggregations"][0], lacp_mode="active")])
    assert "Mode=802.3ad" in tn.files(plan(lacp))["10-triton-aggr0.netdev"]


def test_without_static_address_admin_gets_dhcp():
    p = plan({"nictags": [{"name": "admin", "mac": ADMIN}]})
    f = tn.files(p)
    assert "DHCP=ipv4" in f["10-triton-admin0.network"] and "PXEClient" in f["10-triton-admin0.network"]


def test_bad_entries_are_named_and_skipped_the_rest_applies():
    data = json.loads(json.dumps(BOOTER))
    data["vnics"][1]["ip"] = "192.168.77.300"
    data["vnics"].append({"nic_tag": "nosuch", "ip": "10.9.9.9", "netmask": "255.0.0.0"})
    data["nictags"].append({"name": "Bad Tag", "mac": EXT})
    data["routes"]["10.0.0.0/8"] = "not-an-ip"
    data["resolvers"].append("dns.example")
    p = plan(data)
    text = "\n".join(p.problems)
    assert "vnics[1]: ip '192.168.77.300'" in text
    assert "vnics[4]: nic_tag 'nosuch' is not one of this node's NIC tags" in text
    assert "nictags[4].name 'Bad Tag'" in text
    assert "routes['10.0.0.0/8']: gateway 'not-an-ip'" in text
    assert "'dns.example' is not an IP address" in text
    assert "Address=10.0.2.15/24" in tn.files(p)["10-triton-admin0.network"]


@pytest.mark.parametrize("data, message", [
    ([1, 2], "not a JSON object"),
    ({"nictags": "admin"}, "nictags is not a list"),
])
def test_a_file_of_the_wrong_shape_is_malformed(data, message):
    with pytest.raises(tn.Malformed, match=message):
        tn.parse(data, "n.json", "0")


def test_load_checks_json_and_booters_hash():
    raw = json.dumps(BOOTER, indent=2).encode()
    assert tn.load(raw, "n.json", "0", hashlib.sha1(raw).hexdigest() + "\n").hostname == "cn-test-1"
    with pytest.raises(tn.Malformed, match=r"does not match its \.hash"):
        tn.load(raw[:-10], "n.json", "0", hashlib.sha1(raw).hexdigest())
    with pytest.raises(tn.Malformed, match="not valid JSON"):
        tn.load(b"{nictags: [", "n.json", "0")


def test_nics_this_node_lacks_are_reported_and_admin_falls_back_to_the_boot_nic():
    data = dict(BOOTER, nictags=[{"name": "admin", "mac": "00:11:22:33:44:55"},
                                 {"name": "external", "mac": EXT}])
    p = plan(data, local=[ADMIN, EXT, S1])
    text = "\n".join(p.problems)
    assert "aggregation aggr0: no NIC with MAC 52:54:00:aa:bb:03 on this node; made without it" in text
    assert "NIC tag admin: no NIC with MAC 00:11:22:33:44:55 on this node" in text
    assert "the boot NIC 52:54:00:12:34:56 is admin, with DHCP" in text
    assert p.tags["admin"].port == ADMIN
    # Its static address went with the tag; the boot NIC gets DHCP.
    assert "DHCP=ipv4" in tn.files(p)["10-triton-admin0.network"]


def test_fallback_without_networking_json():
    p = tn.settle(tn.from_kernel_args({}, "0"), LOCAL, ADMIN, "0")
    assert list(p.tags) == ["admin"] and p.problems == []
    f = tn.files(p)
    assert sorted(f) == ["10-triton-admin0-port.network", "10-triton-admin0.netdev", "10-triton-admin0.network"]
    assert "DHCP=ipv4" in f["10-triton-admin0.network"]
    assert tn.settle(tn.from_kernel_args({}, "0"), LOCAL, None, "0").tags == {}


def test_booters_kernel_arguments_when_networking_json_is_missing():
    """booter falls back to its boot parameters when it cannot write
    networking.json; it passes them on the kernel command line."""
    args = {"admin_nic": ADMIN, "external_nic": EXT.replace(":", "-"), "storage_nic": "aggr0",
            "aggr0_aggr": f'"{S1},{S2}"', "aggr0_lacp_mode": "active", "bogus_nic": "zz",
            "ip": "10.0.2.15:::255.255.255.0::", "rabbitmq": "guest:guest:10.0.0.1:5672"}
    p = tn.settle(tn.from_kernel_args(args, "0"), LOCAL, ADMIN, "0")
    assert {t: v.port for t, v in p.tags.items()} == {"admin": ADMIN, "external": EXT, "storage": "aggr0"}
    assert p.aggregations["aggr0"].macs == [S1, S2] and p.aggregations["aggr0"].lacp_mode == "active"
    assert p.problems == ["kernel argument bogus_nic=zz: not a NIC tag and a MAC address or aggregation"]
    tn.static_admin(p, args["ip"])
    f = tn.files(p)
    assert "Address=10.0.2.15/24" in f["10-triton-admin0.network"] and "DHCP" not in f["10-triton-admin0.network"]
    assert "Mode=802.3ad" in f["10-triton-aggr0.netdev"]
    dhcp = tn.settle(tn.from_kernel_args({}, "0"), LOCAL, ADMIN, "0")
    tn.static_admin(dhcp, "dhcp")
    assert "DHCP=ipv4" in tn.files(dhcp)["10-triton-admin0.network"]


def test_state_is_what_sysinfo_reads():
    s = tn.state(plan())
    assert s["nic_tags"]["storage"] == {"link": "storage0", "port": "aggr0", "mtu": None}
    assert s["aggregations"]["aggr0"]["macs"] == [S1, S2]
    assert {"nic_tag": "external", "link": "external0.42", "vlan_id": 42, "ip": "192.168.78.20",
            "netmask": "255.255.255.0", "gateway": "", "mtu": 1400, "primary": False} in s["vnics"]
