"""node.config: parsing, and what triton-node-config takes from it."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_network as tn  # noqa: E402
import triton_nodeconfig as nc  # noqa: E402

ADMIN = "52:54:00:12:34:56"


def test_node_config_values():
    values, problems = nc.parse_node_config(
        "# booter\nroot_shadow='$6$salt$hash'\nhostname=cn1\ndns_domain='example.com'\n\n"
        "ntp_hosts='10.0.0.1 10.0.0.2'\n")
    assert values == {"root_shadow": "$6$salt$hash", "hostname": "cn1", "dns_domain": "example.com",
                      "ntp_hosts": "10.0.0.1 10.0.0.2"}
    assert problems == []


def test_malformed_lines_are_reported_not_fatal():
    values, problems = nc.parse_node_config("good='1'\nthis is not config\nbad='unterminated\n-x=1\n")
    assert values == {"good": "1"}
    assert len(problems) == 3 and "line 2" in problems[0] and "line 3" in problems[1] and "line 4" in problems[2]


def test_hostname_networking_json_then_node_config_then_admin_mac():
    problems = []
    plan = tn.Plan(source="n.json", hostname="cn-from-cnapi")
    assert nc.choose_hostname(plan, {"hostname": "cn-from-config"}, ADMIN, problems) == "cn-from-cnapi"
    assert nc.choose_hostname(tn.Plan(source="n.json"), {"hostname": "cn-from-config"}, ADMIN, problems) \
        == "cn-from-config"
    assert nc.choose_hostname(tn.Plan(source="n.json"), {"hostname": "cn-from-config"}, ADMIN, problems,
                              {"hostname": "cn-from-booter"}) == "cn-from-booter"
    assert nc.choose_hostname(tn.Plan(source="n.json"), {}, ADMIN, problems) == "52-54-00-12-34-56"
    assert problems == []
    assert nc.choose_hostname(tn.Plan(source="n.json", hostname="bad name!"), {}, ADMIN, problems) \
        == "52-54-00-12-34-56"
    assert problems == ["n.json: hostname 'bad name!' is not a valid host name; not used"]


def test_resolvers_domains_and_ntp():
    problems = []
    cfg = {"dns_resolvers": "10.0.2.3, 192.0.2.53,nope", "dns_domain": "test.example",
           "dns_search": "a.example b.example", "ntp_hosts": "192.0.2.123,ntp.test.example,bad_host!",
           "compute_node_ntp_hosts": ""}
    resolvers, domains = nc.resolvers_and_domains(tn.Plan(source="n.json"), cfg, problems)
    assert resolvers == ["10.0.2.3", "192.0.2.53"]
    assert domains == ["test.example", "a.example", "b.example"]
    assert nc.ntp_servers(cfg, problems) == ["192.0.2.123", "ntp.test.example"]
    assert any("'nope' is not an IP address" in p for p in problems)
    assert any("'bad_host!'" in p for p in problems)
    # networking.json's resolvers and domain win over node.config's.
    plan = tn.Plan(source="n.json", resolvers=["10.99.0.1"], dns_domain="dc.example")
    assert nc.resolvers_and_domains(plan, cfg, []) == (["10.99.0.1"], ["dc.example", "a.example", "b.example"])
    assert nc.ntp_servers({"ntp_hosts": "a", "compute_node_ntp_hosts": "b"}, []) == ["b"]
    assert "DNS=10.0.2.3 192.0.2.53\nDomains=test.example" in nc.resolved_conf(resolvers, ["test.example"])
    assert nc.timesyncd_conf(["192.0.2.123"]).endswith("[Time]\nNTP=192.0.2.123\n")


def test_admin_nic_hint_kernel_then_node_config_then_bootif():
    local = [ADMIN, "52:54:00:aa:bb:01"]
    problems = []
    cmd = "BOOTIF=01-52-54-00-12-34-56"
    assert nc.admin_mac_hint(cmd + " admin_nic=52:54:00:AA:BB:01", {}, local, problems) == "52:54:00:aa:bb:01"
    assert nc.admin_mac_hint(cmd, {"admin_nic": "52-54-00-aa-bb-01"}, local, problems) == "52:54:00:aa:bb:01"
    assert problems == []
    # A shared node.config naming another machine's NIC does not cut this one off.
    assert nc.admin_mac_hint(cmd, {"admin_nic": "00:11:22:33:44:55"}, local, problems) == ADMIN
    assert problems == [f"{nc.NODE_CONFIG}: admin_nic 00:11:22:33:44:55: no NIC with that MAC on this node; not used"]


@pytest.fixture
def networking(tmp_path, monkeypatch) -> Path:
    """Where network_plan looks for booter's networking.json (not written yet)."""
    path = tmp_path / "triton-networking.json"
    monkeypatch.setattr(nc, "NETWORKING", path)
    return path


def test_network_plan_without_networking_json_uses_kernel_args(networking):
    local = [ADMIN, "52:54:00:aa:bb:01"]
    cmd = "BOOTIF=01-52-54-00-12-34-56 ip=10.99.99.7:::255.255.255.0:: external_nic=52:54:00:aa:bb:01"
    plan = nc.network_plan(cmd, {}, "0", local)
    assert not plan.from_file
    assert plan.tags["admin"].port == ADMIN and plan.tags["external"].port == "52:54:00:aa:bb:01"
    assert [str(v.address) for v in plan.vnics] == ["10.99.99.7/24"]
    assert plan.problems == []


def test_network_plan_with_unusable_networking_json_falls_back_and_says_why(networking):
    networking.write_text("{not json")
    plan = nc.network_plan("BOOTIF=01-52-54-00-12-34-56", {}, "0", [ADMIN])
    assert not plan.from_file and plan.tags["admin"].port == ADMIN
    assert len(plan.problems) == 1
    assert "not valid JSON" in plan.problems[0] and "the boot NIC is admin" in plan.problems[0]


def test_network_plan_with_networking_json_uses_it(networking):
    networking.write_text('{"nictags": [{"name": "admin", "mac": "%s"}], "vnics": '
                          '[{"nic_tag": "admin", "ip": "10.0.2.15", "netmask": "255.255.255.0"}]}' % ADMIN)
    plan = nc.network_plan("BOOTIF=01-52-54-00-12-34-56 ip=10.99.99.7:::255.255.255.0::", {}, "0", [ADMIN])
    assert plan.from_file and [str(v.address) for v in plan.vnics] == ["10.0.2.15/24"]


def test_root_keys_as_booter_delivers_them_and_from_etc_triton(monkeypatch, tmp_path):
    """booter's per-node files arrive as /etc/triton-<name> (a CNAPI
    boot_module root_authorized_keys is /etc/triton-root_authorized_keys);
    /etc/triton/root_authorized_keys and a TRITONCFG stick's are
    root_authorized_keys. Both are added to what the pool kept, once each."""
    boot, ssh = tmp_path / "boot", tmp_path / "root/.ssh"
    boot.mkdir()
    ssh.mkdir(parents=True)
    (ssh / "authorized_keys").write_text("ssh-ed25519 AAAAkept kept\n")
    (boot / "triton-root_authorized_keys").write_text("ssh-ed25519 AAAAbooter booter\nssh-ed25519 AAAAkept kept\n")
    (boot / "root_authorized_keys").write_text("ssh-ed25519 AAAAbooter booter\nssh-ed25519 AAAAstick stick\n\n")
    monkeypatch.setattr(nc, "BOOT", boot)
    monkeypatch.setattr(nc, "ROOT_SSH", ssh)
    nc.apply_credentials({})
    assert (ssh / "authorized_keys").read_text().splitlines() == [
        "ssh-ed25519 AAAAkept kept", "ssh-ed25519 AAAAbooter booter", "ssh-ed25519 AAAAstick stick"]
    assert (ssh / "authorized_keys").stat().st_mode & 0o777 == 0o600
