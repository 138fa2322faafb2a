"""A compute node in a Triton datacenter: booter's node.config and
networking.json applied (host name, DNS, NTP, NIC tags with static
addresses, a VLAN, an aggregation, routes, MTUs), an agent installed on the
pool running again after a reboot, an operator's /opt/custom/systemd unit,
sysinfo; and malformed files reported with the node still reachable.

The node has four NICs: the admin NIC on QEMU's user-mode network (PXE,
booter's DHCP and HTTP), and three on "switches" in a network namespace of
the test's own (tests/lib/netns.py): one tagged external (with VLAN 42 on
it), two aggregated as aggr0 and tagged storage. The test reaches the
node's static addresses from that namespace, as a host on those networks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pexpect
import pytest

from hooks.bootfiles import Module
from tests.boot.conftest import PASSWORD, ROOT_SHADOW, pxe_script
from tests.lib.netns import Netns
from tests.lib.node import SCALE, Node

SYSTEM_UUID = "3e4f5a6b-7c8d-4e9f-8a0b-1c2d3e4f5a6b"
# SYSTEM_UUID (QEMU -uuid, what dmidecode prints) in SmartOS's byte order:
# sysinfo's UUID.
SYSINFO_UUID = "6b5a4f3e-8d7c-9f4e-8a0b-1c2d3e4f5a6b"
ADMIN = Node.MAC
EXT, S1, S2 = "52:54:00:aa:bb:01", "52:54:00:aa:bb:02", "52:54:00:aa:bb:03"
ANSWERS = json.dumps({"pool": {"layout": "single", "disks": ["/dev/disk/by-id/virtio-zones1"]}})
BOOT_TIMEOUT = 480

NODE_CONFIG = (
    "# node.config as booter serves it to every compute node\n"
    f"root_shadow='{ROOT_SHADOW}'\n"
    "datacenter_name='test-dc'\n"
    "dns_domain='test.example'\n"
    "dns_resolvers='192.0.2.53'\n"
    "ntp_hosts='192.0.2.123,ntp.test.example'\n"
    "coal=false\n"
)
# As booter's lib/net-file.js writes it (JSON.stringify(conf, null, 2)).
NETWORKING = json.dumps({
    "nictags": [{"name": "admin", "mac": ADMIN, "mtu": 1500, "uuid": "9c3f2a1b-0000-4000-8000-000000000001"},
                {"name": "external", "mac": EXT, "mtu": 1450, "uuid": "9c3f2a1b-0000-4000-8000-000000000002"},
                {"name": "storage", "mac": "aggr0", "mtu": 1500, "uuid": "9c3f2a1b-0000-4000-8000-000000000003"},
                {"name": "sdc_underlay", "uuid": "9c3f2a1b-0000-4000-8000-000000000004"}],
    "resolvers": ["10.0.2.3"],
    "routes": {"198.51.100.0/24": "192.168.77.1"},
    "vnics": [
        {"mac": ADMIN, "nic_tag": "admin", "nic_tags_provided": ["admin"], "ip": "10.0.2.15",
         "netmask": "255.255.255.0", "vlan_id": 0, "primary": False, "belongs_to_type": "server",
         "belongs_to_uuid": SYSTEM_UUID, "resolvers": ["10.0.2.3"]},
        {"mac": "90:b8:d0:11:22:33", "nic_tag": "external", "ip": "192.168.77.20",
         "netmask": "255.255.255.0", "gateway": "192.168.77.1", "vlan_id": 0, "mtu": 1450, "primary": True},
        {"mac": "90:b8:d0:11:22:42", "nic_tag": "external", "ip": "192.168.78.20",
         "netmask": "255.255.255.0", "vlan_id": 42, "mtu": 1400},
        {"mac": "90:b8:d0:11:22:44", "nic_tag": "storage", "ip": "192.168.79.20", "netmask": "255.255.255.0"},
    ],
    "aggregations": [{"name": "aggr0", "macs": [S1, S2], "lacp_mode": "off",
                      "nic_tags_provided": ["storage"], "belongs_to_uuid": SYSTEM_UUID}],
    "hostname": "cn-test-1",
    "dns_domain": "test.example",
}, indent=2)

AGENT_DIR = "/opt/smartdc/agents/lib/node_modules/sample-agent"
# A small agent as a real one ships it: code and its own systemd unit under
# its node_modules directory. It answers HTTP on the node's addresses.
AGENT_UNIT = f"""[Unit]
Description=Triton sample agent (test)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/bin/python3 -m http.server 5309 --directory {AGENT_DIR}/www
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""
HOOK_UNIT = """[Unit]
Description=Operator hook (test)

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'cat /proc/sys/kernel/random/boot_id > /run/custom-hook-ran'
"""


def write_file(node: Node, path: str, text: str) -> None:
    encoded = base64.b64encode(text.encode()).decode()
    node.succeed(f"mkdir -p $(dirname {path}) && echo {encoded} | base64 -d > {path}")


@pytest.fixture(scope="module")
def net():
    with Netns() as n:
        n.switch("ext", "192.168.77.1/24")
        n.switch("sto", "192.168.79.1/24")
        yield n


@pytest.fixture(scope="module")
def dc(http):
    """booter's files for this node, as booter serves them."""
    http.routes["/cn/node.config"] = NODE_CONFIG.encode()
    http.routes["/cn/networking.json"] = NETWORKING.encode()
    http.routes["/cn/networking.json.hash"] = hashlib.sha1(NETWORKING.encode()).hexdigest().encode()
    http.routes["/cn/answers.json"] = ANSWERS.encode()
    return "/cn"


@pytest.fixture(scope="module")
def disk(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cn-disk") / "zones1.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(d), "2G"], check=True)
    return d


def boot_cn(name: str, platform, http, logs, tmp_path_factory, net: Netns, disk: Path, dc: str) -> Node:
    net.taps.clear()
    extra = [*Node.hardware(SYSTEM_UUID, [disk]), *net.nic("ext", EXT), *net.nic("sto", S1), *net.nic("sto", S2)]
    tftp = tmp_path_factory.mktemp(f"tftp-cn-{name}")
    answers = Module(http.guest_url(f"{dc}/answers.json"), "/etc/triton/answers.json")
    (tftp / "boot.ipxe").write_text(pxe_script(http, platform, [], [answers], inject=dc))
    node = Node.pxe(tftp, "boot.ipxe", logs / f"cn-{name}.log", extra=extra, preexec_fn=net.preexec)
    net.plug()
    node.seconds_to_login = node.wait_for_login(BOOT_TIMEOUT)
    node.login(PASSWORD)
    node.execute("systemctl is-system-running --wait", timeout=300)
    return node


@pytest.fixture(scope="module")
def cn(platform, http, logs, tmp_path_factory, net, disk, dc):
    state = SimpleNamespace(node=boot_cn("first", platform, http, logs, tmp_path_factory, net, disk, dc))

    def reboot() -> None:
        state.node.child.sendline("systemctl poweroff")
        state.node.child.expect(pexpect.EOF, timeout=240 * SCALE)
        state.node.close()
        state.node = boot_cn("second", platform, http, logs, tmp_path_factory, net, disk, dc)

    state.reboot = reboot
    yield state
    state.node.close()


def reachable(net: Netns, ip: str) -> bool:
    return net.run("ping", "-c", "1", "-W", "5", ip).returncode == 0


def test_the_console_says_what_was_applied_and_no_problems(cn):
    log = cn.node.succeed("journalctl -b -o cat -u triton-node-config")
    assert "network from /run/triton/boot/triton-networking.json: NIC tags admin on admin0" in log
    assert "storage on storage0 (aggr0)" in log and "192.168.78.20/24 on external0.42" in log
    assert "host name cn-test-1; DNS 10.0.2.3 search test.example; NTP 192.0.2.123 ntp.test.example" in log
    assert "PROBLEM" not in log
    assert cn.node.fails("ls /run/issue.d/40-triton-config.issue")


def test_hostname_dns_and_ntp_from_booters_files(cn):
    n = cn.node
    assert n.succeed("hostname") == "cn-test-1"
    assert n.succeed("hostnamectl hostname") == "cn-test-1"
    # networking.json's resolvers (the admin network's binder) win over node.config's.
    dns = n.succeed("resolvectl dns")
    assert re.search(r"^Global: 10\.0\.2\.3\s*$", dns, re.M), dns
    assert re.search(r"^Global: test\.example\s*$", n.succeed("resolvectl domain"), re.M)
    assert n.succeed("timedatectl show-timesync -p SystemNTPServers --value") == "192.0.2.123 ntp.test.example"


def test_nics_are_named_by_their_tags_with_the_static_addresses(cn):
    n = cn.node
    links = n.succeed("ip -color=never -br -4 addr")
    assert re.search(r"^admin0\s+UP\s+10\.0\.2\.15/24\s*$", links, re.M), links
    assert re.search(r"^external0\s+UP\s+192\.168\.77\.20/24", links, re.M), links
    assert re.search(r"^external0\.42@external0\s+UP\s+192\.168\.78\.20/24", links, re.M), links
    assert re.search(r"^storage0\s+UP\s+192\.168\.79\.20/24", links, re.M), links
    # Static, not from DHCP: no lease lifetime on the admin address.
    assert "dynamic" not in n.succeed("ip -color=never -4 addr show admin0")
    assert "mtu 1450" in n.succeed("ip link show external0")
    assert "mtu 1400" in n.succeed("ip link show external0.42")
    # The primary vnic's gateway is the default route; networking.json's routes apply.
    assert "default via 192.168.77.1 dev external0" in n.succeed("ip -color=never -4 route")
    assert "via 192.168.77.1 dev external0" in n.succeed("ip -color=never -4 route get 198.51.100.7")
    # The admin network still reaches booter's side (HTTP server on 10.0.2.2).
    n.succeed("ping -c1 -W5 10.0.2.2")


def test_static_addresses_answer_on_their_networks(cn, net):
    assert reachable(net, "192.168.77.20")
    assert reachable(net, "192.168.79.20"), "storage over aggr0"


def test_the_vlan_address_goes_out_tagged_on_the_external_nic(cn, net):
    sniff = net.sniff_arp(0, 25)
    assert sniff.stdout.readline().strip() == "listening", sniff.stderr.read()
    cn.node.execute("ping -c3 -W2 192.168.78.1", timeout=30)
    out, err = sniff.communicate(timeout=60)
    assert "42 192.168.78.20 192.168.78.1" in out.splitlines(), (out, err)
    bond = cn.node.succeed("cat /proc/net/bonding/aggr0")
    assert "Bonding Mode: load balancing (xor)" in bond
    assert bond.count("MII Status: up") == 3, bond
    assert S1 in bond and S2 in bond


def test_sysinfo_reports_tags_aggregation_and_setup(cn):
    info = json.loads(cn.node.succeed("sysinfo"))
    # The physical NICs; aggregations are listed too, as on SmartOS, with
    # their own tags (the bond has its first port's MAC).
    nics = {e["MAC Address"]: e for n, e in info["Network Interfaces"].items() if n not in info["Link Aggregations"]}
    assert info["Network Interfaces"]["aggr0"]["NIC Names"] == ["storage"]
    assert nics[ADMIN]["NIC Names"] == ["admin"] and nics[ADMIN]["ip4addr"] == "10.0.2.15"
    assert nics[EXT]["NIC Names"] == ["external"]
    assert nics[S1]["NIC Names"] == [] and S2 in nics
    aggr = info["Link Aggregations"]["aggr0"]
    assert aggr["LACP mode"] == "off" and len(aggr["Interfaces"]) == 2 and aggr["NIC Names"] == ["storage"]
    vnics = info["Virtual Network Interfaces"]
    assert vnics["external0.42"]["VLAN"] == "42" and vnics["external0.42"]["ip4addr"] == "192.168.78.20"
    assert vnics["storage0"]["Host Interface"] == "aggr0"
    assert info["Admin IP"] == "10.0.2.15" and info["Hostname"] == "cn-test-1"
    # Set up from an answers file, not by Triton's setup scripts: not set up for CNAPI.
    assert info["Datacenter Name"] == "test-dc" and info["Setup"] == "false"
    assert info["Boot Parameters"]["boot"] == "live" and info["UUID"] == SYSINFO_UUID


def test_an_agent_and_an_operator_hook_on_the_pool(cn, net):
    n = cn.node
    write_file(n, f"{AGENT_DIR}/www/index.html", "sample-agent here\n")
    write_file(n, f"{AGENT_DIR}/systemd/triton-sample-agent.service", AGENT_UNIT)
    write_file(n, "/opt/custom/systemd/triton-test-hook.service", HOOK_UNIT)
    # A hook may not replace the platform's own units.
    write_file(n, "/opt/custom/systemd/ssh.service", "[Service]\nExecStart=/bin/false\n")
    # What an agent's installer does after copying its files in.
    n.succeed("systemctl daemon-reload && systemctl start triton-sample-agent triton-test-hook")
    assert n.succeed("systemctl is-active triton-sample-agent") == "active"
    out = net.run("python3", "-c", "import urllib.request as u, time; time.sleep(3);"
                  "print(u.urlopen('http://192.168.77.20:5309/', timeout=20).read().decode())")
    assert "sample-agent here" in out.stdout, out.stderr


def test_after_a_reboot_the_agent_runs_and_the_hook_ran_again(cn, net):
    cn.reboot()
    n = cn.node
    assert n.succeed("systemctl is-active triton-sample-agent") == "active"
    assert n.succeed("systemctl show -p FragmentPath --value triton-sample-agent") == \
        "/run/systemd/generator/triton-sample-agent.service"
    assert n.succeed("cat /run/custom-hook-ran") == n.succeed("cat /proc/sys/kernel/random/boot_id")
    assert n.succeed("systemctl show -p FragmentPath --value ssh") == "/usr/lib/systemd/system/ssh.service"
    units = json.loads(n.succeed("/usr/lib/triton/triton_units.py list"))
    assert {u["unit"] for u in units} == {"triton-sample-agent.service", "triton-test-hook.service", "ssh.service"}
    assert "ssh.service: skipped: a unit named ssh.service already exists" in \
        n.succeed("journalctl -b -o cat -t triton-units-generator")
    out = net.run("python3", "-c", "import urllib.request as u;"
                  "print(u.urlopen('http://192.168.77.20:5309/', timeout=20).read().decode())")
    assert "sample-agent here" in out.stdout, out.stderr
    assert n.succeed("hostname") == "cn-test-1" and reachable(net, "192.168.79.20")
    print(f"\nfigure: node with 4 NICs, pool, agent: QEMU start to login {n.seconds_to_login:.1f} s")


# -- malformed files: reported, and the node stays reachable ----------------------------------

BAD_NODE_CONFIG = (
    f"root_shadow='{ROOT_SHADOW}'\n"
    "hostname='cn-from-node-config'\n"
    "this line is not config\n"
    "dns_domain='unterminated\n"
    "ntp_hosts='192.0.2.123'\n"
)
BAD_NETWORKING = NETWORKING[: len(NETWORKING) // 2]   # cut short on the way


@pytest.fixture(scope="module")
def bad_node(platform, http, logs, tmp_path_factory):
    http.routes["/bad/node.config"] = BAD_NODE_CONFIG.encode()
    http.routes["/bad/networking.json"] = BAD_NETWORKING.encode()
    tftp = tmp_path_factory.mktemp("tftp-bad")
    (tftp / "boot.ipxe").write_text(pxe_script(http, platform, [], inject="/bad"))
    node = Node.pxe(tftp, "boot.ipxe", logs / "cn-malformed.log")
    try:
        node.wait_for_console(r"triton-node-config: PROBLEM: /run/triton/boot/triton-networking.json: "
                              r"not valid JSON", BOOT_TIMEOUT)
        node.console_at_login = node.expect(r"Boot configuration: \d+ problem\(s\)[^\r\n]*", BOOT_TIMEOUT).group(0)
        node.wait_for_login(BOOT_TIMEOUT)
        node.login(PASSWORD)
        node.execute("systemctl is-system-running --wait", timeout=300)
        yield node
    finally:
        node.close()


def test_malformed_files_are_reported_on_the_console(bad_node):
    log = bad_node.succeed("journalctl -b -o cat -u triton-node-config")
    assert "PROBLEM: /run/triton/boot/triton-networking.json: not valid JSON" in log
    assert "not used: the boot NIC is admin" in log
    assert "PROBLEM: /run/triton/boot/node.config: line 3: not key='value': 'this line is not config'" in log
    assert "PROBLEM: /run/triton/boot/node.config: line 4: dns_domain: No closing quotation" in log
    assert "Boot configuration: 3 problem(s)" in bad_node.console_at_login


def test_with_malformed_files_the_node_is_reachable_on_the_admin_nic(bad_node):
    n = bad_node
    # DHCP on the boot NIC as admin0, and what node.config could still give.
    assert "10.0.2.15/24" in n.succeed("ip -color=never -br -4 addr show admin0")
    assert "dynamic" in n.succeed("ip -color=never -4 addr show admin0")
    n.succeed("ping -c1 -W5 10.0.2.2")
    assert n.succeed("hostname") == "cn-from-node-config"
    assert n.succeed("timedatectl show-timesync -p SystemNTPServers --value") == "192.0.2.123"
    assert n.succeed("systemctl --failed --no-legend --plain") == ""


def test_with_malformed_files_usr_triton_config_leaves_the_bad_one_out_and_says_so(bad_node):
    """No pool here: /usr/triton/config is a directory in RAM. Its
    node.config (with lines config.sh skips) is there; the cut-short
    networking.json is not, and the console says why."""
    n = bad_node
    n.succeed("test -d /usr/triton/config && ! test -L /usr/triton/config")
    assert n.succeed("cat /usr/triton/config/node.config") == BAD_NODE_CONFIG.rstrip("\n")
    n.fails("ls /usr/triton/config/triton-networking.json")
    log = n.succeed("journalctl -b -o cat -u triton-config-dir")
    assert ("PROBLEM: /run/triton/boot/triton-networking.json: not valid JSON" in log
            and "/usr/triton/config/triton-networking.json is absent" in log), log
    assert n.succeed("systemctl is-active triton-config-dir") == "active"
