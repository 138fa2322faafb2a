"""sysinfo as Triton reads it: the keys and JSON types CNAPI, its allocator
(DAPI) and the agents read, SmartOS's UUID byte order, Setup from Triton's
setup state, the agents list, both boot-parameter keys, the options, and
no failure on missing or malformed input files."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_network as tn  # noqa: E402
import triton_sysinfo as si  # noqa: E402

ADMIN, EXT, S1, S2 = "52:54:00:12:34:56", "52:54:00:aa:bb:01", "52:54:00:aa:bb:02", "52:54:00:aa:bb:03"

# ---- What Triton reads, written from its sources (not from our output).
# cnapi = sdc-cnapi@linuxcn, dapi = sdc-designation (the commit CNAPI pins),
# netconfig = node-triton-netconfig (CNAPI's and ur-agent's admin NIC/IP),
# smartos = smartos-live src/sysinfo and man/.../sysinfo.8.md.
# key: (JSON type, who reads it and how)
CNAPI_READS = {
    "UUID": (str, "cnapi updateFromSysinfo: assert.uuid; app.js: must equal the ur routing key's UUID"),
    "Zpool Creation": (int, "cnapi updateFromSysinfo: created = new Date(Number(v) * 1000)"),
    "Live Image": (str, "cnapi updateFromSysinfo: current_platform; dapi platform-versions"),
    "Boot Parameters": (dict, "cnapi updateFromSysinfo: headnode = (v.headnode === 'true')"),
    "Hostname": (str, "cnapi updateFromSysinfo: hostname"),
    "System Type": (str, "cnapi updateFromSysinfo: system_type; server-setup skips SmartOS steps on 'Linux'; "
                         "dapi hard-filter-os: lxd images only on 'Linux'"),
    "Boot Time": (str, "cnapi updateFromSysinfo: last_boot = new Date(Number(v) * 1000)"),
    "MiB of Memory": (str, "cnapi updateFromSysinfo: ram = parseInt(v); memory_provisionable_bytes = v * 2^20"),
    "Setup": (str, "cnapi updateFromSysinfo: setup = (v === 'true' || v === true); "
                   "app.js: Setup.toString() (must be present)"),
    "Network Interfaces": (dict, "cnapi doNapiSysinfoUpdate: every NIC Names entry becomes a NAPI NIC tag; "
                                 "netconfig adminNicFromSysinfo; dapi hard-filter-vlans (NIC Names, Link Status)"),
    "SDC Agents": (list, "cnapi _attemptUpsert: agents = sysinfo['SDC Agents'] while none are known"),
    "Admin IP": (str, "netconfig adminIpFromSysinfo: used when a valid IP (cn-agent task routing)"),
    "Admin NIC Tag": (str, "netconfig adminNicFromSysinfo: the NIC Names entry of the admin NIC"),
    "SDC Version": (str, "cnapi vms.js: Number(v) < 7.0 is a 6.5 node; nicsUpdate refuses a node without it; "
                         "dapi platform-versions"),
    "Zpool Encrypted": (bool, "cnapi servers.js: server.sysinfo['Zpool Encrypted'] || false; dapi Boolean(v)"),
    "CPU Total Cores": (int, "dapi calculate-server-unreserved: unreserved_cpu = v * 100; hard-filter-hvm"),
    "CPU Online Count": (int, "dapi hard-filter-hvm: Number(v) when present"),
    "Bhyve Capable": (bool, "dapi hard-filter-hvm: bhyve VMs only where true"),
    "Bhyve Max Vcpus": (int, "dapi hard-filter-hvm: Number(v)"),
    "HVM API": (bool, "dapi hard-filter-hvm"),
    "Virtual Network Interfaces": (dict, "dapi hard-filter-vlans: Link Status, Overlay Nic Tags"),
}
# SmartOS's sysinfo(8) keys of a global zone (ZFS Quota is a zone's only), and
# the ones its script prints beyond the manual.
SMARTOS_KEYS = {
    "Bhyve Capable": bool, "Bhyve Max Vcpus": int, "Boot Parameters": dict, "Boot Time": str,
    "CPU Socket Count": int, "CPU Core Count": int, "CPU Online Count": int, "CPU Count": int,
    "CPU Physical Cores": int, "CPU Total Cores": int, "CPU Type": str, "CPU Virtualization": str,
    "Datacenter Name": str, "Disks": dict, "Hostname": str, "Link Aggregations": dict, "Live Image": str,
    "Manufacturer": str, "MiB of Memory": str, "Network Interfaces": dict, "Product": str, "SDC Agents": list,
    "SDC Version": str, "Serial Number": str, "Setup": str, "System Type": str, "UUID": str,
    "Virtual Network Interfaces": dict, "VM Capable": bool, "Zpool": str, "Zpool Disks": str,
    "Zpool Profile": str, "Zpool Size in GiB": int,
    # src/sysinfo beyond the manual
    "Admin IP": str, "Admin NIC Tag": str, "Zpool Creation": int, "Zpool Encrypted": bool,
    "SKU Number": str, "HW Version": str, "HW Family": str, "HVM API": bool,
}
# The Linux agents' own (sdc-cn-agent@linuxcn lib/backends/linux/sysinfo.js):
# ur-agent takes the broker from Boot Params.rabbitmq.
LINUX_AGENT_KEYS = {"Boot Params": dict, "DNS Domain": str}
# This platform's: what an operator reads.
OUR_KEYS = {"Kernel Version": str, "Linux Distribution": str, "Bridges": dict, "Zpool Health": str,
            "Sysinfo Problems": list}
# Present only when known, as on SmartOS: the pool's keys once a pool is
# imported, the admin address once configured, node.config's values.
WHEN_KNOWN = {"Zpool", "Zpool Disks", "Zpool Profile", "Zpool Size in GiB", "Zpool Creation", "Zpool Encrypted",
              "Zpool Health", "Admin IP", "Datacenter Name", "DNS Domain"}
# Overrides for mock servers CNAPI honours; a real node must not send them.
NEVER = {"CN Agent IP", "CN Agent Port"}

# ---- A set-up compute node, as booter configured it.
NETWORKING = {
    "admin_tag": "admin",
    "nictags": [{"name": "admin", "mac": ADMIN, "mtu": 1500}, {"name": "external", "mac": EXT, "mtu": 1500},
                {"name": "storage", "mac": "aggr0", "mtu": 1500}],
    "aggregations": [{"name": "aggr0", "macs": [S1, S2], "lacp_mode": "off", "nic_tags_provided": ["storage"]}],
    "vnics": [{"mac": ADMIN, "nic_tag": "admin", "ip": "10.0.2.15", "netmask": "255.255.255.0"},
              {"nic_tag": "external", "ip": "192.168.77.20", "netmask": "255.255.255.0",
               "gateway": "192.168.77.1", "primary": True},
              {"nic_tag": "external", "ip": "192.168.78.20", "netmask": "255.255.255.0", "vlan_id": 42},
              {"nic_tag": "storage", "ip": "192.168.79.20", "netmask": "255.255.255.0"}],
    "resolvers": ["10.0.2.3"],
}
CMDLINE = ("boot=live console=tty0 console=ttyS1,115200n8 BOOTIF=01-52-54-00-12-34-56 "
           "ip=10.0.2.15:::255.255.255.0:: rabbitmq=guest:guest:10.0.2.2:5672 "
           "rabbitmq_dns=guest:guest:rabbitmq.test-dc.example:5672 hostname=cn-test-1 smt_enabled=true "
           'storage_aggr="52:54:00:aa:bb:02,52:54:00:aa:bb:03" triton.toram=0 quiet '
           "fetch=http://10.0.2.2/os/20261201T000000Z/platform/x86_64/filesystem.squashfs")
CPUINFO = "\n\n".join(
    f"processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\n"
    f"physical id\t: {n // 4}\ncore id\t\t: {n % 4 // 2}\nflags\t\t: fpu vme msr vmx ept\n"
    for n in range(8)) + "\n"
ZFS_GET = "used\t1073741824\navailable\t20401094656\ncreation\t1764547200\nencryption\toff\n"
ZPOOL_STATUS = """  pool: zones
 state: ONLINE
config:

\tNAME                                       STATE     READ WRITE CKSUM
\tzones                                      ONLINE       0     0     0
\t  mirror-0                                 ONLINE       0     0     0
\t    /dev/disk/by-id/virtio-zones0-part1    ONLINE       0     0     0
\t    /dev/disk/by-id/virtio-zones1-part1    ONLINE       0     0     0

errors: No known data errors
"""
LINKS = [
    si.Link("ens3", ADMIN, "up", "nic", "admin0"), si.Link("ens4", EXT, "up", "nic", "external0"),
    si.Link("ens5", S1, "up", "nic", "aggr0"), si.Link("ens6", S2, "up", "nic", "aggr0"),
    si.Link("aggr0", S1, "up", "bond", "storage0"),
    si.Link("admin0", ADMIN, "up", "bridge"), si.Link("external0", EXT, "up", "bridge"),
    si.Link("storage0", S1, "up", "bridge"), si.Link("external0.42", "90:b8:d0:00:00:42", "up", "other"),
]
IP_ADDR = json.dumps([{"ifname": name, "addr_info": [{"family": "inet", "local": ip, "prefixlen": 24}]}
                      for name, ip in [("admin0", "10.0.2.15"), ("external0", "192.168.77.20"),
                                       ("external0.42", "192.168.78.20"), ("storage0", "192.168.79.20")]])
NODE_CONFIG = "datacenter_name='test-dc'\ndns_domain='test-dc.example'\nrabbitmq='guest:guest:10.0.2.2:5672'\n"
SETUP_DONE = {"node_type": "computenode", "start_time": "2026-12-01T10:00:00Z", "current_state": "setup_complete",
              "seen_states": ["zpool_created", "agents_installed", "setup_complete"], "complete": True,
              "last_updated": "2026-12-01T10:20:00.000Z"}


def network_state() -> str:
    plan = tn.settle(tn.parse(json.loads(json.dumps(NETWORKING)), "n.json", "0"), [ADMIN, EXT, S1, S2], ADMIN, "0")
    return json.dumps({**tn.state(plan), "problems": []})


def f(path: str, data) -> si.File:
    return si.File(path, data if isinstance(data, str) or data is None else json.dumps(data),
                   "missing" if data is None else "")


def set_up_node(**changes) -> si.Facts:
    facts = si.Facts(
        cmdline=CMDLINE, os_release={"TRITON_RELEASE": "20261201T000000Z", "PRETTY_NAME": "Debian GNU/Linux 13"},
        uname=("Linux", "cn-test-1", "6.12.57+deb13-amd64"), uptime="120.5 230.1", now=1764590000.0,
        dmi={"product_uuid": "4c4c4544-0054-5910-804a-b8c04f524432", "sys_vendor": "Dell Inc.",
             "product_name": "PowerEdge R640", "product_serial": "5TYRLM2", "product_sku": "SKU=0716",
             "product_version": "", "product_family": ""},
        cpuinfo=CPUINFO, cpus_present="0-7", cpus_online="0-7", meminfo="MemTotal:       32768000 kB\n",
        block={"sda": 1953525168, "sdb": 1953525168, "loop0": 100, "zd0": 100, "sr0": 100},
        links=LINKS, ip_addr_json=IP_ADDR, network_state=f("/run/triton/network.json", network_state()),
        networking=f("/usr/triton/config/triton-networking.json", NETWORKING),
        node_config=f("/usr/triton/config/node.config", NODE_CONFIG),
        setup_state=f("/opt/triton/config/triton-setup-state.json", SETUP_DONE),
        agents=[f("/opt/smartdc/agents/lib/node_modules/vm-agent/package.json",
                  {"name": "vm-agent", "version": "3.2.0"}),
                f("/opt/smartdc/agents/lib/node_modules/cn-agent/package.json",
                  {"name": "cn-agent", "version": "2.15.1", "main": "x"})],
        pool="zones", pool_props=ZFS_GET, pool_status=ZPOOL_STATUS)
    for k, v in changes.items():
        setattr(facts, k, v)
    return facts


def as_sent(facts: si.Facts) -> dict:
    """The object as CNAPI receives it (JSON)."""
    return json.loads(json.dumps(si.describe(facts)))


# ---- The key set and types

def test_every_key_cnapi_reads_has_the_type_it_expects():
    info = as_sent(set_up_node())
    for key, (kind, _use) in CNAPI_READS.items():
        assert key in info, key
        assert type(info[key]) is kind, (key, info[key])
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", info["UUID"])
    assert info["Boot Time"].isdigit() and info["MiB of Memory"].isdigit()
    assert info["Setup"] in ("true", "false") and float(info["SDC Version"]) >= 7.0
    assert info["System Type"] == "Linux"
    assert all(isinstance(v, str) for v in info["Boot Parameters"].values())
    for nic in info["Network Interfaces"].values():
        assert isinstance(nic["NIC Names"], list) and all(isinstance(t, str) for t in nic["NIC Names"])
        assert isinstance(nic["MAC Address"], str) and isinstance(nic["ip4addr"], str)
        assert nic["Link Status"] in ("up", "down")
    assert all(set(a) == {"name", "version"} for a in info["SDC Agents"])
    assert not NEVER & set(info)


def test_the_key_set_is_smartos_plus_the_linux_agents_and_ours():
    info = as_sent(set_up_node())
    expected = {**SMARTOS_KEYS, **LINUX_AGENT_KEYS, **OUR_KEYS}
    assert set(info) == set(expected)
    for key, kind in expected.items():
        assert type(info[key]) is kind, (key, info[key])
    assert info["CPU Virtualization"] in ("none", "vmx", "svm")
    assert info["Zpool Profile"] in ("mirror", "raidz3", "raidz2", "raidz", "striped")


def test_a_node_that_knows_nothing_still_answers_every_key_but_the_optional_ones():
    info = as_sent(si.Facts())
    assert set(info) == set({**SMARTOS_KEYS, **LINUX_AGENT_KEYS, **OUR_KEYS}) - WHEN_KNOWN
    assert info["Setup"] == "false" and info["SDC Agents"] == [] and info["Admin NIC Tag"] == "admin"
    assert info["Network Interfaces"] == {} and info["Boot Parameters"] == {} == info["Boot Params"]


def test_values_of_a_set_up_node():
    info = si.describe(set_up_node())
    assert info["UUID"] == "44454c4c-5400-1059-804a-b8c04f524432"
    assert info["Setup"] == "true" and info["Live Image"] == "20261201T000000Z"
    assert info["Boot Time"] == "1764589879" and info["MiB of Memory"] == "32000"
    assert info["Datacenter Name"] == "test-dc" and info["DNS Domain"] == "test-dc.example"
    assert info["SDC Agents"] == [{"name": "cn-agent", "version": "2.15.1"}, {"name": "vm-agent", "version": "3.2.0"}]
    assert info["Disks"] == {"sda": {"Size in GB": 1000}, "sdb": {"Size in GB": 1000}}
    assert (info["CPU Socket Count"], info["CPU Core Count"], info["CPU Count"]) == (2, 4, 8)
    assert info["CPU Physical Cores"] == 2 and info["CPU Total Cores"] == 8 and info["CPU Virtualization"] == "vmx"
    assert info["Zpool"] == "zones" and info["Zpool Size in GiB"] == 20 and info["Zpool Creation"] == 1764547200
    assert info["Zpool Profile"] == "mirror" and info["Zpool Encrypted"] is False
    assert info["Zpool Disks"] == "/dev/disk/by-id/virtio-zones0-part1,/dev/disk/by-id/virtio-zones1-part1"
    assert info["Sysinfo Problems"] == []


# ---- UUID: SmartOS's byte order

@pytest.mark.parametrize("linux,smartos", [
    # Dell: dmidecode prints 4C4C4544-... ("DELL" little-endian), SmartOS's
    # smbios and sysinfo 44454c4c-... (the table's byte order).
    ("4C4C4544-0054-5910-804A-B8C04F524432", "44454c4c-5400-1059-804a-b8c04f524432"),
    # QEMU: illumos smbios prints "UUID: ee850d94-5288-714f-b992-0a71f8df356f"
    # and "UUID (Endian-corrected): 940d85ee-8852-4f71-b992-0a71f8df356f".
    ("940d85ee-8852-4f71-b992-0a71f8df356f", "ee850d94-5288-714f-b992-0a71f8df356f"),
    ("66d5aafa-bfde-11d3-01a6-9c6b00871b75", "faaad566-debf-d311-01a6-9c6b00871b75"),
    # The boot tests' QEMU -uuid values (tests/boot/test_instances.py NODE,
    # tests/boot/test_compute_node.py SYSTEM_UUID).
    ("7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f", "3f2e1d7c-5b4a-6d4c-8e7f-9a0b1c2d3e4f"),
    ("3e4f5a6b-7c8d-4e9f-8a0b-1c2d3e4f5a6b", "6b5a4f3e-8d7c-9f4e-8a0b-1c2d3e4f5a6b"),
])
def test_uuid_is_smartos_byte_order(linux, smartos):
    assert si.smartos_uuid(linux) == smartos
    assert si.smartos_uuid(smartos) == linux.lower()          # the same swap back
    assert si.smartos_uuid(linux + "\n") == smartos           # as read from product_uuid


def test_uuid_swap_is_cn_agents():
    """cn-agent's swapUuidBytes: each of the first three fields' hex pairs reversed."""
    def cn_agent(uuid: str) -> str:
        x = uuid.split("-")
        return "-".join(["".join(reversed(re.findall("..", p))) for p in x[:3]] + x[3:])
    for u in ("0123456789abcdef0123456789abcdef", "00112233445566778899aabbccddeeff"):
        uuid = f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}"
        assert si.smartos_uuid(uuid) == cn_agent(uuid)


@pytest.mark.parametrize("bad", ["", "Not Settable", "4c4c4544-0054-5910-804a", "4c4c4544005459108 04ab8c04f524432",
                                 "zzzzzzzz-0054-5910-804a-b8c04f524432"])
def test_a_missing_or_bad_system_uuid_is_reported(bad):
    assert si.smartos_uuid(bad) is None
    info = si.describe(set_up_node(dmi={"product_uuid": bad}))
    assert info["UUID"] == "" and any("product_uuid" in p and "not a UUID" in p for p in info["Sysinfo Problems"])


# ---- Setup

def test_setup_is_true_only_when_setup_completed():
    def setup(data) -> str:
        return si.describe(set_up_node(setup_state=f("/opt/triton/config/triton-setup-state.json", data)))["Setup"]
    assert setup(SETUP_DONE) == "true"
    # joysetup.sh's file before agentsetup.sh marks it complete.
    assert setup({**SETUP_DONE, "complete": False, "current_state": "imgadm_setup"}) == "false"
    assert setup(None) == "false"                      # not set up (a pool alone is not setup)
    assert setup({"current_state": "zpool_created"}) == "false"


@pytest.mark.parametrize("text,says", [("{not json", "not JSON"), ("[true]", "not a JSON object")])
def test_a_malformed_setup_state_is_false_and_reported(text, says):
    info = si.describe(set_up_node(setup_state=f("/opt/triton/config/triton-setup-state.json", text)))
    assert info["Setup"] == "false"
    assert any(p.startswith("/opt/triton/config/triton-setup-state.json: " + says) for p in info["Sysinfo Problems"])


def test_setup_state_is_in_opt_once_it_exists(tmp_path):
    opt, usr = tmp_path / "opt/triton/config", tmp_path / "usr/triton/config"
    assert si.setup_state_path((opt, usr)) == usr / "triton-setup-state.json"
    opt.mkdir(parents=True)
    assert si.setup_state_path((opt, usr)) == opt / "triton-setup-state.json"


# ---- SDC Agents

def test_agents_are_listed_from_their_package_json(tmp_path):
    for name, version in [("net-agent", "2.2.0"), ("cn-agent", "2.15.1")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "package.json").write_text(json.dumps({"name": name, "version": version, "x": 1}))
    (tmp_path / "broken-agent").mkdir()
    (tmp_path / "broken-agent/package.json").write_text("{")
    (tmp_path / "empty-agent").mkdir()
    (tmp_path / ".bin").mkdir()
    problems: list = []
    assert si.sdc_agents(si.agent_packages(tmp_path), problems) == [
        {"name": "cn-agent", "version": "2.15.1"}, {"name": "net-agent", "version": "2.2.0"}]
    assert len(problems) == 2 and all("agent not listed" in p for p in problems)
    assert si.agent_packages(tmp_path / "absent") == []


# ---- Boot Parameters (SmartOS) and Boot Params (the Linux agents)

def test_boot_parameters_are_smartos_shaped():
    bp = si.boot_parameters(CMDLINE)
    assert bp["boot"] == "live" and bp["console"] == "ttyS1,115200n8" and bp["smt_enabled"] == "true"
    assert bp["rabbitmq"] == "guest:guest:10.0.2.2:5672" and bp["ip"] == "10.0.2.15:::255.255.255.0::"
    assert bp["BOOTIF"] == "01-52-54-00-12-34-56" and bp["triton_toram"] == "0"
    assert bp["storage_aggr"] == '"52:54:00:aa:bb:02,52:54:00:aa:bb:03"'
    assert "quiet" not in bp and "headnode" not in bp       # CNAPI: headnode false


def test_boot_params_are_cn_agents_and_give_ur_agent_the_broker():
    bp = si.boot_params(CMDLINE)
    assert bp["admin_ip"] == "10.0.2.15" and bp["admin_netmask"] == "255.255.255.0"
    assert bp["admin_mac"] == "52-54-00-12-34-56" and "ip" not in bp and "BOOTIF" not in bp
    assert bp["triton.toram"] == "0" and "quiet" not in bp
    login, password, host, port = bp["rabbitmq"].split(":")        # what ur-agent does
    assert (login, password, host, port) == ("guest", "guest", "10.0.2.2", "5672")
    # booter's Debian 12 form, and DHCP
    assert si.boot_params("ip=10.0.2.15:::255.255.255.0:::none")["admin_netmask"] == "255.255.255.0"
    assert si.boot_params("ip=dhcp") == {"admin_ip": "dhcp"}


# ---- Network keys, read as CNAPI, DAPI and ur-agent read them

def admin_nic_from_sysinfo(info: dict):
    """node-triton-netconfig's adminNicFromSysinfo."""
    tag = info.get("Admin NIC Tag") or "admin"
    return next((n for n in info["Network Interfaces"].values() if tag in n["NIC Names"]), None)


def test_network_interfaces_carry_every_nic_tag():
    info = as_sent(set_up_node())
    nics = info["Network Interfaces"]
    assert list(nics) == ["ens3", "ens4", "ens5", "ens6", "aggr0"]    # physical first, then aggregations
    assert nics["ens3"]["NIC Names"] == ["admin"] and nics["ens3"]["ip4addr"] == "10.0.2.15"
    assert nics["ens4"]["NIC Names"] == ["external"] and nics["ens4"]["ip4addr"] == "192.168.77.20"
    assert nics["ens5"]["NIC Names"] == [] and nics["ens5"]["Aggregation"] == "aggr0"
    assert nics["ens6"]["MAC Address"] == S2
    assert nics["aggr0"]["NIC Names"] == ["storage"] and nics["aggr0"]["ip4addr"] == "192.168.79.20"
    # CNAPI's doNapiSysinfoUpdate: the tags NAPI learns for this server.
    assert {t for n in nics.values() for t in n["NIC Names"]} == {"admin", "external", "storage"}
    # ur-agent's queue ur.request.<UUID>.<admin MAC>; cn-agent's address.
    assert admin_nic_from_sysinfo(info)["MAC Address"] == ADMIN and info["Admin IP"] == "10.0.2.15"
    aggr = info["Link Aggregations"]["aggr0"]
    assert aggr["LACP mode"] == "off" and aggr["Interfaces"] == ["ens5", "ens6"] and aggr["NIC Names"] == ["storage"]
    vnics = info["Virtual Network Interfaces"]
    assert vnics["external0.42"]["VLAN"] == "42" and vnics["external0.42"]["ip4addr"] == "192.168.78.20"
    assert vnics["external0.42"]["Host Interface"] == "ens4" and vnics["storage0"]["Host Interface"] == "aggr0"
    assert all(v["Link Status"] == "up" for v in vnics.values())


def test_admin_nic_tag_comes_from_networking_json():
    info = si.describe(set_up_node(networking=f("n.json", {**NETWORKING, "admin_tag": "admin_rack1"})))
    assert info["Admin NIC Tag"] == "admin_rack1"
    assert si.describe(set_up_node(networking=f("n.json", None)))["Admin NIC Tag"] == "admin"


# ---- Missing and malformed input files

@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\x00\xff garbage"])
def test_a_malformed_networking_json_is_reported_not_fatal(text):
    info = si.describe(set_up_node(networking=f("/usr/triton/config/triton-networking.json", text)))
    assert info["Admin NIC Tag"] == "admin" and info["UUID"]
    assert any(p.startswith("/usr/triton/config/triton-networking.json: ") and 'Admin NIC Tag is "admin"' in p
               for p in info["Sysinfo Problems"])


def test_a_malformed_node_config_is_reported_not_fatal():
    info = si.describe(set_up_node(node_config=f("/usr/triton/config/node.config",
                                                 "datacenter_name='test-dc'\nthis is not config\nx='open\n")))
    assert info["Datacenter Name"] == "test-dc"
    assert sum(p.startswith("/usr/triton/config/node.config: line ") for p in info["Sysinfo Problems"]) == 2


def test_a_missing_node_config_and_network_state_are_reported():
    info = si.describe(set_up_node(node_config=f("/usr/triton/config/node.config or /run/triton/boot/node.config",
                                                 None),
                                   network_state=f("/run/triton/network.json", None)))
    assert "Datacenter Name" not in info and info["Network Interfaces"]["ens3"]["NIC Names"] == []
    problems = info["Sysinfo Problems"]
    assert any("node.config: not found" in p for p in problems)
    assert any(p.startswith("/run/triton/network.json: missing") for p in problems)


def test_boot_configuration_problems_are_pointed_at():
    state = json.loads(network_state())
    state["problems"] = ["n.json: NIC tag x: no NIC ..."]
    info = si.describe(set_up_node(network_state=f("/run/triton/network.json", json.dumps(state))))
    assert "boot configuration: 1 problem(s), listed in /run/triton/network.json" in info["Sysinfo Problems"]


def test_a_state_of_another_shape_costs_only_the_tags():
    info = si.describe(set_up_node(network_state=f("/run/triton/network.json", '{"nic_tags": {"admin": 5}, '
                                                   '"vnics": [7, {"link": "admin0", "vlan_id": null}]}')))
    assert info["UUID"] and info["Network Interfaces"]["ens3"]["NIC Names"] == []
    assert info["Virtual Network Interfaces"]["admin0"]["VLAN"] == "0"


def test_a_fault_in_one_part_costs_only_that_part(monkeypatch):
    def broken(*args):
        raise IndexError("unexpected cpuinfo")
    monkeypatch.setattr(si, "cpu_keys", broken)
    info = si.describe(set_up_node())
    assert "CPU Type" not in info and info["UUID"] and info["Network Interfaces"]
    assert "CPU: not determined (IndexError: unexpected cpuinfo)" in info["Sysinfo Problems"]


def test_sysinfo_runs_on_this_host_with_broken_files(tmp_path, monkeypatch, capsys):
    """The real reading path (/proc, /sys, commands that may be missing) with
    booter's files malformed and no pool: exit 0, JSON, problems named."""
    (tmp_path / "node.config").write_bytes(b"datacenter_name='dc\n\xff\xfe\n")
    (tmp_path / "triton-networking.json").write_text("{")
    (tmp_path / "network.json").write_text("[")
    monkeypatch.setattr(si, "NODE_CONFIGS", (tmp_path / "absent", tmp_path / "node.config"))
    monkeypatch.setattr(si, "NETWORKING", (tmp_path / "triton-networking.json",))
    monkeypatch.setattr(si, "NETWORK_STATE", tmp_path / "network.json")
    monkeypatch.setattr(si, "SETUP_DIRS", (tmp_path / "opt", tmp_path / "usr"))
    monkeypatch.setattr(si, "AGENTS", tmp_path / "agents")
    assert si.main([]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["Setup"] == "false" and info["System Type"] == "Linux"
    assert any(str(tmp_path / "triton-networking.json") in p for p in info["Sysinfo Problems"])
    assert any(str(tmp_path / "network.json") in p for p in info["Sysinfo Problems"])
    assert any(str(tmp_path / "node.config") in p for p in info["Sysinfo Problems"])


# ---- Options

@pytest.mark.parametrize("argv,opts", [
    ([], si.Options()), (["-f"], si.Options()), (["-p"], si.Options(parseable=True)),
    (["-fp"], si.Options(parseable=True)), (["-f", "-p"], si.Options(parseable=True)),
    (["-u"], si.Options(update_only=True)), (["-pu"], si.Options(parseable=True, update_only=True)),
    (["--help"], si.Options(help=True)),
])
def test_options_are_smartos(argv, opts):
    assert si.parse_args(argv) == opts


@pytest.mark.parametrize("argv", [["-x"], ["-?"], ["--json"], ["UUID"], ["-p", "extra"]])
def test_anything_else_is_a_usage_error(argv, capsys):
    assert si.main(argv) == 2
    out = capsys.readouterr()
    assert out.out == "" and "usage: sysinfo [-f] [-p] [-u]" in out.err


def test_u_updates_nothing_and_prints_nothing(monkeypatch, capsys):
    """agentsetup.sh runs `sysinfo -u` under errexit; there is no cache."""
    monkeypatch.setattr(si, "gather", lambda: pytest.fail("-u reads nothing"))
    assert si.main(["-u"]) == 0 and si.main(["-pu"]) == 0
    assert capsys.readouterr() == ("", "")


def test_f_prints_what_no_option_prints(monkeypatch, capsys):
    monkeypatch.setattr(si, "gather", set_up_node)
    assert si.main([]) == 0
    plain = capsys.readouterr().out
    assert si.main(["-f"]) == 0
    assert capsys.readouterr().out == plain and json.loads(plain)["UUID"] == "44454c4c-5400-1059-804a-b8c04f524432"


def test_p_prints_key_value_lines_a_shell_can_eval(monkeypatch, capsys):
    monkeypatch.setattr(si, "gather", lambda: set_up_node(uname=("Linux", "it's-a-node", "6.12")))
    assert si.main(["-p"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "UUID='44454c4c-5400-1059-804a-b8c04f524432'" in lines and "Setup='true'" in lines
    assert "Boot_Parameters_console='ttyS1,115200n8'" in lines and "VM_Capable='false'" in lines
    assert "Network_Interfaces_ens3_NIC_Names='admin'" in lines
    assert "SDC_Agents_0_name='cn-agent'" in lines and "SDC_Agents_0_version='2.15.1'" in lines
    assert all(re.fullmatch(r"[A-Za-z0-9_]+=.*", line) for line in lines)
    values = dict(shlex.split(line)[0].split("=", 1) for line in lines)
    assert values["Hostname"] == "it's-a-node"
    res = subprocess.run(["sh", "-c", 'eval "$1"; printf %s "$Hostname"', "sh", out], capture_output=True, text=True)
    assert res.stdout == "it's-a-node", res.stderr


# ---- Where the agents find it

@pytest.mark.parametrize("path", ["usr/sbin/sysinfo", "usr/bin/sysinfo", "usr/triton/bin/sysinfo"])
def test_sysinfo_is_on_every_path_triton_runs_it_from(path):
    link = REPO / "mkosi.extra" / path
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    assert link.resolve() == (REPO / "mkosi.extra/usr/lib/triton/triton_sysinfo.py").resolve()
