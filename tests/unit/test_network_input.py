"""Whatever booter's files hold, triton-node-config does not stop: a
networking.json it cannot use is Malformed (and the node falls back to the
boot NIC), and root's credentials and the host name are applied all the same."""

import hashlib
import json
import socket
import sys
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hooks import config

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_network as tn  # noqa: E402
import triton_nodeconfig as nc  # noqa: E402

ADMIN, EXT, S1, S2 = "52:54:00:12:34:56", "52:54:00:aa:bb:01", "52:54:00:aa:bb:02", "52:54:00:aa:bb:03"
LOCAL = [ADMIN, EXT, S1, S2]
BOOTIF = "BOOTIF=01-52-54-00-12-34-56"

# Few examples, always the same ones: the unit suite stays fast and a
# failure is seen again on the next run.
FUZZ = settings(max_examples=300, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
FUZZ_FILES = settings(FUZZ, max_examples=150)

# Any JSON value (floats include inf and nan: `1e400` reads as inf; text
# includes lone surrogates: JSON's "\ud800").
try:
    SURROGATES = st.characters(categories=["Cs"])
except TypeError:  # Debian 12's hypothesis (6.67) names it the old way
    SURROGATES = st.characters(whitelist_categories=["Cs"])
CHARS = st.characters() | SURROGATES
LEAF = st.none() | st.booleans() | st.integers() | st.floats() | st.text(CHARS, max_size=12)
JSON = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(CHARS, max_size=8), inner, max_size=4), max_leaves=10)


# booter's file (lib/net-file.js), whose places the tests fill with anything.
BOOTER = {
    "nictags": [{"name": "admin", "mac": ADMIN, "mtu": 1500}, {"name": "external", "mac": EXT.upper(), "mtu": 1450},
                {"name": "storage", "mac": "aggr0"}],
    "aggregations": [{"name": "aggr0", "macs": [S1, S2], "lacp_mode": "off"}],
    "vnics": [{"mac": ADMIN, "nic_tag": "admin", "ip": "10.0.2.15", "netmask": "255.255.255.0"},
              {"nic_tag": "external", "ip": "192.168.77.20", "netmask": "255.255.255.0", "gateway": "192.168.77.1",
               "primary": True},
              {"nic_tag": "external", "ip": "192.168.78.20", "netmask": "255.255.255.0", "vlan_id": 42, "mtu": 1400}],
    "routes": {"198.51.100.0/24": "192.168.77.1", "default": "10.0.2.2"},
    "resolvers": ["10.0.2.3"],
    "hostname": "cn-test-1",
    "dns_domain": "test.example",
}
FIELDS = {"nictags": ("name", "mac", "mtu"), "aggregations": ("name", "macs", "lacp_mode"),
          "vnics": ("nic_tag", "ip", "netmask", "gateway", "vlan_id", "mtu", "primary", "mac")}
PLACES = ([(k,) for k in (*FIELDS, "routes", "resolvers", "hostname", "dns_domain", "default_gateway", "nictag_rules")]
          + [(k, i) for k in FIELDS for i in range(len(BOOTER[k]))]
          + [(k, i, f) for k, fields in FIELDS.items() for i in range(len(BOOTER[k])) for f in fields]
          + [("routes", d) for d in BOOTER["routes"]] + [("resolvers", 0)])
# Values that broke the parser once, or are near something it takes.
EDGES = st.sampled_from([float("inf"), float("-inf"), float("nan"), [ADMIN], {"name": "admin"}, "", None, True,
                         10**30, -1, 4095, "admin", "aggr0", "dhcp", "\ud800", "1e400", ADMIN.replace(":", "-")])


@st.composite
def networking_json(draw: Any) -> object:
    """booter's file with anything in one to six of its places."""
    doc = json.loads(json.dumps(BOOTER))
    for *parents, key in draw(st.lists(st.sampled_from(PLACES), min_size=1, max_size=6)):
        try:
            target = doc
            for p in parents:
                target = target[p]
            target[key] = draw(EDGES | JSON)
        except (KeyError, IndexError, TypeError):
            continue        # an earlier draw replaced what held this place
    return doc


def usable(plan: tn.Plan) -> None:
    """What triton-node-config does with a plan it got: none of it raises."""
    plan = tn.settle(plan, LOCAL, ADMIN, "0")
    tn.files(plan)
    json.dumps(tn.state(plan))
    # Printed on the console: no lone surrogate from the file may reach it.
    "\n".join(plan.problems).encode("utf-8")


def load(raw: bytes, expected: Optional[str] = None) -> None:
    try:
        plan = tn.load(raw, "n.json", "0", expected)
    except tn.Malformed:
        return
    usable(plan)


@FUZZ
@given(networking_json() | JSON)
def test_any_json_is_used_or_malformed(data):
    load(json.dumps(data).encode())


@FUZZ_FILES
@given(st.binary(max_size=200) | networking_json().map(lambda d: json.dumps(d).encode()),
       st.none() | st.text(CHARS, max_size=50))
def test_any_bytes_and_hash_are_used_or_malformed(raw, expected):
    load(raw, expected)


@pytest.fixture(scope="module")
def networking(tmp_path_factory):
    """Where network_plan looks for booter's networking.json."""
    path = tmp_path_factory.mktemp("boot") / "triton-networking.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nc, "NETWORKING", path)
        yield path


@FUZZ_FILES
@given(st.binary(max_size=200) | networking_json().map(lambda d: json.dumps(d).encode()),
       st.sampled_from(["none", "right", "bytes"]), st.binary(max_size=60))
def test_network_plan_takes_any_file_and_hash(networking, raw, hash_kind, hash_bytes):
    networking.write_bytes(raw)
    hash_file = networking.with_name(networking.name + ".hash")
    hash_file.unlink(missing_ok=True)
    if hash_kind == "right":
        hash_file.write_text(hashlib.sha1(raw).hexdigest() + "\n")
    elif hash_kind == "bytes":
        hash_file.write_bytes(hash_bytes)
    plan = nc.network_plan(BOOTIF, {}, "0", LOCAL)
    tn.files(plan)
    "\n".join(plan.problems).encode("utf-8")
    assert "admin" in plan.tags


# -- the defects of issue 16, one by one --------------------------------------------------

def test_overflowing_numbers_and_lists_are_problems_not_crashes():
    raw = ('{"nictags": [{"name": "admin", "mac": "%s"}, {"name": "external", "mac": "%s", "mtu": 1e400},'
           ' {"name": "storage", "mac": ["%s"]}],'
           ' "vnics": [{"nic_tag": "admin", "ip": "10.0.2.15", "netmask": "255.255.255.0", "vlan_id": 1e400},'
           ' {"nic_tag": ["admin"], "ip": "10.0.2.16", "netmask": "255.255.255.0"},'
           ' {"nic_tag": "admin", "ip": "10.0.2.17", "netmask": "255.255.255.0", "mtu": -1e400}]}'
           % (ADMIN, EXT, S1)).encode()
    plan = tn.load(raw, "n.json", "0")
    text = "\n".join(plan.problems)
    assert "nictags[1] (external): mtu inf is not a number" in text
    assert "nictags[2] (storage): mac ['52:54:00:aa:bb:02'] is neither" in text
    assert "vnics[0]: vlan_id inf is not a number" in text
    assert "vnics[1]: nic_tag ['admin'] is not one of this node's NIC tags" in text
    assert "vnics[2]: mtu -inf is not a number" in text
    assert list(plan.tags) == ["admin"] and plan.vnics == []


def test_json_nested_too_deep_is_malformed():
    with pytest.raises(tn.Malformed, match="not valid JSON"):
        tn.load(b"[" * 100_000, "n.json", "0")


def test_a_hash_file_that_is_not_utf8_is_reported_and_the_boot_nic_is_admin(networking):
    networking.write_text('{"nictags": [{"name": "admin", "mac": "%s"}]}' % ADMIN)
    networking.with_name(networking.name + ".hash").write_bytes(b"\xff\xfe\x00garbage")
    try:
        plan = nc.network_plan(BOOTIF, {}, "0", LOCAL)
    finally:
        networking.with_name(networking.name + ".hash").unlink()
    assert not plan.from_file and plan.tags["admin"].port == ADMIN
    assert "is not a SHA-1" in plan.problems[0] and "the boot NIC is admin" in plan.problems[0]


@pytest.fixture
def node(tmp_path, monkeypatch):
    """triton-node-config's paths in tmp_path; what it would do to the host
    (host name, root's credentials) recorded instead."""
    boot = tmp_path / "run/triton/boot"
    boot.mkdir(parents=True)
    for name in ("NETWORK_DIR", "RESOLVED", "TIMESYNCD", "STATE", "ISSUE", "ETC_HOSTNAME"):
        monkeypatch.setattr(nc, name, tmp_path / getattr(nc, name).relative_to("/"))
    monkeypatch.setattr(nc, "BOOT", boot)
    monkeypatch.setattr(nc, "NODE_CONFIG", boot / "node.config")
    monkeypatch.setattr(nc, "NETWORKING", boot / "triton-networking.json")
    (tmp_path / "instances.json").write_text(json.dumps(config.load().instances.as_json()))
    monkeypatch.setattr(nc, "INSTANCES", tmp_path / "instances.json")
    (tmp_path / "cmdline").write_text(BOOTIF + "\n")
    monkeypatch.setattr(nc, "CMDLINE", tmp_path / "cmdline")
    monkeypatch.setattr(nc, "local_macs", lambda: list(LOCAL))
    done: dict[str, object] = {}
    monkeypatch.setattr(socket, "sethostname", lambda name: done.__setitem__("hostname", name))
    monkeypatch.setattr(nc, "apply_credentials", lambda cfg: done.__setitem__("credentials", cfg))
    return boot, done


def test_a_fault_in_network_planning_still_applies_credentials_and_host_name(node, monkeypatch, capsys):
    boot, done = node
    (boot / "node.config").write_bytes(b"root_shadow='$6$x$y'\nhostname=cn-cfg\nbad=\xff\xfe\n")
    (boot / "triton-networking.json").write_text('{"nictags": [{"name": "admin", "mac": "%s"}]}' % ADMIN)

    def broken(*args):
        raise RuntimeError("a bug in planning")
    monkeypatch.setattr(tn, "parse", broken)
    assert nc.main() == 0
    assert done == {"credentials": {"root_shadow": "$6$x$y", "hostname": "cn-cfg", "bad": "\ufffd\ufffd"},
                    "hostname": "cn-cfg"}
    assert nc.ETC_HOSTNAME.read_text() == "cn-cfg\n"
    assert "DHCP=ipv4" in (nc.NETWORK_DIR / "10-triton-admin0.network").read_text()
    out = capsys.readouterr().out
    assert ("PROBLEM: " + str(nc.NETWORKING) + ": not used: planning the network from it failed "
            "(RuntimeError: a bug in planning); the boot NIC is admin") in out


def test_booters_files_with_bad_bytes_and_numbers_do_not_stop_the_node(node, capsys):
    boot, done = node
    (boot / "node.config").write_bytes(b"hostname=cn-cfg\n\xff\xfe=\x00\n")
    raw = b'{"nictags": [{"name": "admin", "mac": "%s", "mtu": 1e400}], "hostname": "cn-1"}' % ADMIN.encode()
    (boot / "triton-networking.json").write_bytes(raw)
    (boot / "triton-networking.json.hash").write_bytes(b"\x80" * 40)
    assert nc.main() == 0
    assert done["hostname"] == "cn-cfg" and "credentials" in done
    assert "is not a SHA-1" in capsys.readouterr().out
    (boot / "triton-networking.json.hash").write_text(hashlib.sha1(raw).hexdigest())
    assert nc.main() == 0
    assert done["hostname"] == "cn-1"
    assert "nictags[0] (admin): mtu inf is not a number" in capsys.readouterr().out
