"""A compute node in a Triton datacenter, booted by booter, as Triton's own
agents and setup scripts find it: booter's kernel arguments (both forms of
its ip=, serial "none"), its files (node.config, networking.json, root's
ssh keys as /etc/triton-root_authorized_keys); networking.json applied
(host name, DNS, NTP, NIC tags with static addresses, a VLAN, an
aggregation, routes, MTUs); /usr/triton and /usr/node as Triton's agents
expect them; an agent package installed the way Triton's agents install
themselves and an operator's /opt/custom/systemd unit, both running again
after a reboot; sysinfo. Then a node given malformed files: reported, and
still reachable.

One node, two boots (issue 17: one node, many checks):

1. booter's arguments as its master branch writes them: serial console
   ttyS1, ip=<ip>:::<mask>::; two blank disks and no broker. The test
   drives the serial console; it starts the broker, finds the node on it
   as a headnode does, and sets the node up through ur (the pool `zones`,
   a mirror of the two disks; then the setup state), no reboot needed.
2. booter's Debian 12 branch's ip=<ip>:::<mask>:::none, and the serial
   console "none" (console=ttyS-1): there is no serial console, so the test
   logs in over ssh (QEMU forwards a port of the host's loopback) with the
   key booter delivered.

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
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.lib.pxe import PASSWORD, ROOT_SHADOW, pxe_script
from tests.lib.booter import Booter, BootParams, script_name
from tests.lib.netns import Netns
from tests.lib.node import SCALE, Node, Shell, Ssh
from tests.lib.rabbitmq import RABBITMQ, Broker, Headnode, free_port
from tools import hostsetup

SYSTEM_UUID = "3e4f5a6b-7c8d-4e9f-8a0b-1c2d3e4f5a6b"
# SYSTEM_UUID (QEMU -uuid, what dmidecode prints) in SmartOS's byte order:
# sysinfo's UUID.
SYSINFO_UUID = "6b5a4f3e-8d7c-9f4e-8a0b-1c2d3e4f5a6b"
ADMIN = Node.MAC
EXT, S1, S2 = "52:54:00:aa:bb:01", "52:54:00:aa:bb:02", "52:54:00:aa:bb:03"
BOOT_TIMEOUT = 480
ADMIN_IP = "10.0.2.15"
# booter's ip= (lib/menulst.js): master, and its Debian 12 branch (LINUXCN-27).
IP_MASTER = f"ip={ADMIN_IP}:::255.255.255.0::"
IP_DEBIAN12 = f"ip={ADMIN_IP}:::255.255.255.0:::none"
NTP = "192.168.77.1"

NODE_CONFIG = (
    "# node.config as headnode.sh writes it for every compute node\n"
    f"root_shadow='{ROOT_SHADOW}'\n"
    "datacenter_name='test-dc'\n"
    "dns_domain='test.example'\n"
    "dns_resolvers='192.0.2.53'\n"
    # The headnode's NTP server (on the external network here): joysetup.sh
    # sets the clock from it before it sets the node up.
    f"ntp_hosts='{NTP}'\n"
    "sapi_domain='sapi.test-dc.test.example'\n"
    "imgapi_domain='imgapi.test-dc.test.example'\n"
    "swap='0.25x'\n"
    "coal=false\n"
    # Data, never code: sourcing config.sh runs none of these.
    "hostile_quoted='$(touch /var/tmp/pwned-quoted)'\n"
    "hostile_bare=$(touch /var/tmp/pwned-bare)\n"
    "hostile_tick=`touch /var/tmp/pwned-tick`\n"
    "hostile_semicolon='x'; touch /var/tmp/pwned-semicolon\n"
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
    "admin_tag": "admin",
    "hostname": "cn-test-1",
    "dns_domain": "test.example",
}, indent=2)

SAMPLE_DIR = "/opt/smartdc/agents/lib/node_modules/sample-agent"
# A small agent as a real one ships it: code and its own systemd unit under
# its node_modules directory. It answers HTTP on the node's addresses.
AGENT_UNIT = f"""[Unit]
Description=Triton sample agent (test)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/bin/python3 -m http.server 5309 --directory {SAMPLE_DIR}/www
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


# -- an agent as Triton ships one ---------------------------------------------------------

AGENT = "contract-agent"
AGENT_DIR = f"/opt/smartdc/agents/lib/node_modules/{AGENT}"
UNIT = f"triton-{AGENT}.service"
# PATH as agentsetup.sh runs the agents' installers.
AGENTSETUP_PATH = "/usr/bin:/usr/sbin:/bin:/sbin:/opt/triton/bin:/usr/node/bin:/usr/triton/bin"
AGENT_FILES = {
    "package.json": json.dumps({"name": AGENT, "version": "1.0.0", "main": "lib/agent.js",
                                "scripts": {"postinstall": "./npm/postinstall.sh"}}, indent=2) + "\n",
    "image_uuid": "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9\n",
    # As sdc-cn-agent's systemd/*.service.in: the environment file, node, the agent's path.
    f"systemd/{UNIT}.in": """[Unit]
Description=Triton contract test agent
After=network.target

[Service]
EnvironmentFile=/usr/triton/config/systemd.env
Type=simple
ExecStart=/usr/node/bin/node ${TRITON_AGENT_NODE_DIR}/contract-agent/lib/agent.js @@DATACENTER@@ @@SAPI@@
Restart=on-failure

[Install]
WantedBy=multi-user.target
""",
    "lib/agent.js": """'use strict';
// Says who it is, where it runs and what it was given, then keeps running.
const fs = require('fs');
const os = require('os');
const bootId = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
console.log(`contract-agent: up boot=${bootId} node=${process.version} host=${os.hostname()} ` +
    `dc=${process.argv[2]} sapi=${process.argv[3]} config=${process.env.TRITON_CONFIG_DIR} ` +
    `agents=${process.env.TRITON_AGENT_NODE_DIR} path=${process.env.PATH}`);
setInterval(() => {}, 1 << 30);
""",
    # As sdc-cn-agent's npm/postinstall.sh does it on Linux: node.config
    # through config.sh, the unit rendered from its template with CONFIG_
    # values into /usr/lib/systemd/system, enabled and started, a copy kept
    # in systemd/; an instance UUID; config-agent's registration.
    "npm/postinstall.sh": """#!/bin/bash
. /usr/triton/bin/config.sh
load_sdc_config
set -o errexit -o nounset -o pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
AGENT=$(json name < "$ROOT/package.json")
ETC_DIR=/opt/smartdc/agents/etc
[[ -n ${CONFIG_sapi_domain:-} ]] || { echo '"sapi_domain" was not found in "node.config".' >&2; exit 1; }
in="$ROOT/systemd/triton-$AGENT.service.in"
out="/usr/lib/systemd/system/triton-$AGENT.service"
sed -e "s#@@DATACENTER@@#${CONFIG_datacenter_name}#g" -e "s#@@SAPI@@#${CONFIG_sapi_domain}#g" "$in" > "$out"
systemctl enable "triton-$AGENT"
systemctl start "triton-$AGENT"
cp "$out" "$ROOT/systemd/triton-$AGENT.service"
mkdir -p "$ETC_DIR/config-agent.d"
[[ -s "$ETC_DIR/$AGENT" ]] || uuid -v4 > "$ETC_DIR/$AGENT"
printf '{"instance": "%s", "localManifestDirs": ["%s"]}' "$(<"$ETC_DIR/$AGENT")" "$ROOT" \\
    | json > "$ETC_DIR/config-agent.d/$AGENT.json"
echo "postinstall: $AGENT installed in $(zonename) as instance $(<"$ETC_DIR/$AGENT")"
""",
}


def write_file(node: Shell, path: str, text: str) -> None:
    encoded = base64.b64encode(text.encode()).decode()
    node.succeed(f"mkdir -p $(dirname {path}) && echo {encoded} | base64 -d > {path}")


POOL_MOUNTS = {"/zones": "zones", "/zones/config": "zones/config", "/opt": "zones/opt", "/var": "zones/var"}


def assert_pool_mounts(shell: Shell, *paths: str) -> None:
    """Each of these paths is mounted from its dataset of the pool."""
    for where in paths:
        assert shell.succeed(f"findmnt -n -o SOURCE {where}") == POOL_MOUNTS[where], where


def agent_lines(shell: Shell) -> list[str]:
    """The agent's journal lines of this boot, once its node has started."""
    shell.succeed(f"for i in $(seq 90); do journalctl -b -o cat -u {UNIT} | grep -q '^contract-agent: up' "
                  f"&& break; sleep 2; done", timeout=240)
    return [line for line in shell.succeed(f"journalctl -b -o cat -u {UNIT}").splitlines()
            if line.startswith("contract-agent: up")]


# -- the node ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def net():
    with Netns() as n:
        n.switch("ext", "192.168.77.1/24")
        n.switch("sto", "192.168.79.1/24")
        yield n


@pytest.fixture(scope="module")
def ntp(net, tmp_path_factory):
    """The headnode's NTP server, Debian's chronyd (unpacked by `make
    setup`), serving this host's clock on the external network without
    touching it (-x)."""
    chronyd = hostsetup.unpacked("chrony") / "usr/sbin/chronyd"
    if not chronyd.exists():
        pytest.fail(f"{chronyd} is missing: `make setup` unpacks Debian's chrony for this test")
    d = tmp_path_factory.mktemp("ntp")
    # No command port, no command socket (the host's /run/chrony is left alone).
    (d / "chrony.conf").write_text(f"local stratum 10\nallow all\nbindaddress {NTP}\nport 123\ncmdport 0\n"
                                   f"bindcmdaddress /\npidfile {d / 'chronyd.pid'}\n")
    with (d / "chronyd.log").open("w") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", net.name, str(chronyd), "-x", "-d", "-u", "root",
                                 "-f", str(d / "chrony.conf")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while NTP + ":123 " not in net.run("ss", "-lun").stdout:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chronyd did not start: {(d / 'chronyd.log').read_text()}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> Path:
    """root's ssh key, as an operator gives it to CNAPI (a boot_module
    root_authorized_keys, which booter delivers as /etc/triton-root_authorized_keys)."""
    d = tmp_path_factory.mktemp("ssh")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator@cn-test",
                    "-f", str(d / "id")], check=True)
    return d / "id"


@pytest.fixture(scope="module")
def disks(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("cn-disk")
    for name in ("zones1", "zones2"):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(d / f"{name}.qcow2"), "8G"], check=True)
    return [d / "zones1.qcow2", d / "zones2.qcow2"]


def booter_script_name() -> str:
    return script_name(ADMIN)


def boot_params(key: Path, debian12: bool, serial: str, broker_port: int) -> BootParams:
    """What CNAPI and booter give this node: its admin address, the
    broker, the host name, NIC-tag arguments; networking.json and root's
    ssh keys (a CNAPI
    boot_module) in its bootfs directory."""
    return BootParams(
        mac=ADMIN, ip=ADMIN_IP, debian12=debian12, serial=serial,
        kernel_args={"rabbitmq": f"guest:guest:10.0.2.2:{broker_port}", "hostname": "cn-test-1",
                     "admin_nic": ADMIN, "external_nic": EXT},
        bootfs={"networking.json": NETWORKING.encode(),
                "networking.json.hash": hashlib.sha1(NETWORKING.encode()).hexdigest().encode(),
                "root_authorized_keys": key.with_suffix(".pub").read_bytes()})


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """The headnode's RabbitMQ: made now (its port goes on the kernel
    command line), started by the test (the node boots before it is up)."""
    if not RABBITMQ.exists():
        pytest.fail(f"{RABBITMQ} is missing: `make setup` installs Debian's rabbitmq-server")
    b = Broker(tmp_path_factory.mktemp("rabbitmq"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def cn(platform, http, logs, tmp_path_factory, net, disks, key, broker):
    """The node: `cn.node` its QEMU, `cn.shell` where the test types (the
    serial console at the first boot, ssh after the reboot)."""
    booter = Booter(http, platform, tmp_path_factory.mktemp("tftpboot"))
    booter.set_node_config(NODE_CONFIG)

    def boot(name: str, debian12: bool, serial: str, hostfwd: list[str]) -> Node:
        net.taps.clear()
        extra = [*Node.hardware(SYSTEM_UUID, disks), *net.nic("ext", EXT), *net.nic("sto", S1), *net.nic("sto", S2)]
        script = booter.add(boot_params(key, debian12, serial, broker.port))
        node = Node.pxe(booter.tftp, script, logs / f"cn-{name}.log", extra=extra, preexec_fn=net.preexec,
                        hostfwd=hostfwd)
        net.plug()
        return node

    def reboot() -> None:
        """The headnode reboots the node through ur (a script that exits
        113, as CNAPI's server-setup does), and booter has the Debian 12
        ip= and serial "none" for the next boot."""
        reply = state.head.execute(SYSINFO_UUID, {"type": "script", "script": "#!/bin/sh\nexit 113\n",
                                                  "args": [], "env": {}}, timeout=60 * SCALE)
        assert reply == {"exit_status": 0, "stdout": "", "stderr": ""}, reply
        # -no-reboot: the node's reboot ends QEMU; booter boots the next one.
        state.node.ended()
        port = free_port()
        state.node = boot("second", True, "none", [f"tcp:127.0.0.1:{port}-:22"])
        state.shell = Ssh(state.node, port, key)
        state.node.seconds_to_login = state.shell.wait_until_up(BOOT_TIMEOUT)
        state.shell.system_ready()

    state = SimpleNamespace(node=boot("first", False, "ttyb", []), reboot=reboot, head=None)
    state.shell = state.node
    try:
        state.node.seconds_to_login = state.node.up(PASSWORD, BOOT_TIMEOUT)
        yield state
    finally:
        if state.head:
            state.head.close()
        state.node.close()


def reachable(net: Netns, ip: str) -> bool:
    return net.run("ping", "-c", "1", "-W", "5", ip).returncode == 0


# -- first boot: booter's master arguments, serial console ----------------------------------

def test_booters_script_booted_it_as_booter_wrote_it(cn, platform, http):
    """The kernel over TFTP by the script's relative path, the rest over
    HTTP, every argument of booter's kernel line on the kernel's command
    line in booter's order, booter's files where booter puts them."""
    n = cn.node
    # iPXE talks on the VGA console only; the HTTP server's log shows what
    # came over HTTP. The kernel did not: iPXE took it from TFTP, relative
    # to the script (the TFTP directory holds it at booter's path).
    base = f"/os/{platform.stamp}/platform/x86_64"
    assert f"GET {base}/initrd 200" in http.log and "GET /extra/joysetup/node.config 200" in http.log
    assert not [line for line in http.log if line.startswith(f"GET {base}/vmlinuz")], http.log
    script = (n.argv[n.argv.index("-netdev") + 1].split("tftp=")[1].split(",")[0])
    kernel_line = next(line for line in (Path(script) / booter_script_name()).read_text().splitlines()
                       if line.startswith("kernel "))
    expected = kernel_line.split()[2:]
    cmdline = n.succeed("cat /proc/cmdline").split()
    assert [a for a in cmdline if a in expected] == expected, (cmdline, expected)
    assert any(a.startswith("rabbitmq=guest:guest:10.0.2.2:") for a in cmdline) and "hostname=cn-test-1" in cmdline
    got = n.succeed("cd /run/triton/boot && sha256sum node.config triton-networking.json "
                    "triton-networking.json.hash triton-root_authorized_keys")
    assert f"{hashlib.sha256(NODE_CONFIG.encode()).hexdigest()}  node.config" in got
    assert f"{hashlib.sha256(NETWORKING.encode()).hexdigest()}  triton-networking.json" in got


# -- ur: the headnode finds the node on RabbitMQ, and runs its scripts -----------------------

def test_ur_finds_a_broker_that_comes_up_after_the_boot(cn, broker):
    """Booted with no broker: the agent says so once and retries; once the
    broker is up it connects, announces sysinfo and ur.startup with the
    node's UUID (SmartOS byte order), its admin NIC's MAC in the queue name."""
    n = cn.shell
    n.wait_until_succeeds("journalctl -b -o cat -u triton-ur-agent | grep -q 'cannot connect to the broker'", 120)
    lines = n.succeed("journalctl -b -o cat -u triton-ur-agent | grep -c 'cannot connect to the broker'")
    assert lines == "1", f"the agent logged its failure {lines} times, not once"
    # A headnode's queues exist before any node connects. Here the broker
    # starts while the agent retries, and an agent that connected before the
    # test's queue was bound would announce ur.startup (once per connection)
    # to nobody: it waits, stopped, until the queue is there.
    n.succeed("systemctl kill --signal=STOP triton-ur-agent")
    broker.start()
    cn.head = Headnode(broker)
    started = time.monotonic()
    n.succeed("systemctl kill --signal=CONT triton-ur-agent")
    _, info, _ = cn.head.wait(lambda k, _: k.startswith(f"ur.sysinfo.{SYSINFO_UUID}."), 90 * SCALE, "ur.sysinfo")
    assert info["UUID"] == SYSINFO_UUID and info["Boot Params"]["rabbitmq"].endswith(f":{broker.port}")
    startup = cn.head.key(f"ur.startup.{SYSINFO_UUID}", 60 * SCALE)
    seconds = time.monotonic() - started
    assert startup["UUID"] == SYSINFO_UUID and startup["Setup"] == "false"
    assert f"admin NIC {ADMIN}" in n.succeed("journalctl -b -o cat -u triton-ur-agent | grep connected")
    print(f"\nfigure: ur: broker up to ur.startup {seconds:.1f} s (agent back-off at most 30 s)")


def test_ur_runs_a_script_with_its_args_and_only_the_given_environment(cn):
    script = "#!/bin/bash\necho \"out $1 $2\"\necho err >&2\nenv | sort\nexit 3\n"
    started = time.monotonic()
    reply = cn.head.execute(SYSINFO_UUID, {"type": "script", "script": script, "args": ["a b", "c"],
                                           "env": {"ONLY": "this"}}, timeout=60 * SCALE)
    seconds = time.monotonic() - started
    assert reply["exit_status"] == 3 and reply["stderr"] == "err\n", reply
    out = reply["stdout"].splitlines()
    assert out[0] == "out a b c"
    env = dict(line.split("=", 1) for line in out[1:])
    assert env.pop("ONLY") == "this" and set(env) <= {"PWD", "SHLVL", "_"}, env
    # As root, with the <uuid>-<mac> key too, and a file on the node.
    key = f"{SYSINFO_UUID}-{ADMIN}"
    reply = cn.head.execute(key, {"type": "script", "script": "#!/bin/sh\nid -u; hostname\n", "args": [], "env": {}},
                            timeout=60 * SCALE)
    assert reply == {"exit_status": 0, "stdout": "0\ncn-test-1\n", "stderr": ""}, reply
    reply = cn.head.execute(SYSINFO_UUID, {"type": "file", "file": "/usr/triton/bin/zonename", "args": [], "env": {}},
                            timeout=60 * SCALE)
    assert reply["exit_status"] == 0 and reply["stdout"] == "global\n", reply
    memory = cn.shell.succeed("systemctl show -p MemoryCurrent --value triton-ur-agent")
    print(f"\nfigure: ur: execute request to reply {seconds:.2f} s (TCG); agent memory {int(memory) >> 20} MiB")


def test_ur_ping_broadcast_and_garbage(cn):
    cn.head.ping(SYSINFO_UUID, "c0ffee00", "ping-1")
    ack = cn.head.wait(lambda k, _: k == f"ur.ackc0ffee00.{SYSINFO_UUID}", 60 * SCALE, "ping ack")[1]
    assert ack["req_id"] == "ping-1" and "timestamp" in ack
    cn.head.publish("ur.broadcast.sysinfo.b0b0b0b0", {})
    assert cn.head.key(f"ur.execute-reply.{SYSINFO_UUID}.b0b0b0b0", 60 * SCALE)["UUID"] == SYSINFO_UUID
    # A request that is not JSON gets an error reply; the agent goes on.
    reply = cn.head.execute(SYSINFO_UUID, None, raw=b"\xff not json", timeout=60 * SCALE)
    assert reply["exit_status"] != 0 and "JSON" in reply["stderr"], reply
    reply = cn.head.execute(SYSINFO_UUID, {"type": "script", "script": "#!/bin/sh\necho still here\n",
                                           "args": [], "env": {}}, timeout=60 * SCALE)
    assert reply["stdout"] == "still here\n"


def test_ur_reconnects_after_a_broker_restart(cn, broker):
    cn.head.close()
    broker.stop()
    broker.start()
    cn.head = Headnode(broker)
    deadline = time.monotonic() + 120 * SCALE
    while True:
        try:
            reply = cn.head.execute(SYSINFO_UUID, {"type": "script", "script": "#!/bin/sh\necho back\n",
                                                   "args": [], "env": {}}, timeout=10)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    assert reply["stdout"] == "back\n"
    assert cn.shell.succeed("systemctl is-active triton-ur-agent") == "active"


# CNAPI's server-setup workflow (sdc-cnapi lib/workflows/server-setup.js),
# step by step as it sends them through ur: fetch (the disk layout the
# operator chose, put before the datacenter's node.config; Triton's own
# setup scripts from the headnode's assets), joysetup.sh, agentsetup.sh.
FETCH_SETUP_FILES = f"""#!/bin/bash
set -o xtrace
cd /var/tmp
mkdir /var/tmp/node.config
mkdir /var/tmp/config-{SYSINFO_UUID}
(echo "layout='mirror'"; curl $1/extra/joysetup/node.config) | \\
    tee config-{SYSINFO_UUID}/node.config node.config/node.config >&-
curl -O $1/extra/joysetup/joysetup.sh
curl -O $1/extra/joysetup/agentsetup.sh
chmod +x *.sh"""
JOYSETUP = "#!/bin/bash\nset -o xtrace\ncd /var/tmp\n./joysetup.sh"
AGENTSETUP = "#!/bin/bash\nset -o xtrace\ncd /var/tmp\necho ASSETS_URL = $ASSETS_URL\n./agentsetup.sh"
TRITON_SCRIPTS = Path(__file__).resolve().parents[1] / "triton"
SETUP_STATES = ["zpool_created", "datasets_setup", "pkgsrc_tools", "configs_installed", "swap_created",
                "filesystems_setup", "imgadm_setup", "agents_installed", "setup_complete"]


def test_triton_sets_the_node_up_through_ur_with_its_own_joysetup_and_agentsetup(cn, http, ntp):
    """Triton's own joysetup.sh (sdc-headnode's, unchanged) checks the clock
    against node.config's NTP server, lays out the operator's mirror with
    disklayout and makes it with mkzpool, makes the datasets (zones/var
    copied from the live /var and mounted over it), has triton-lxd.service
    put the pool to use, moves /usr/triton/config onto it, makes swap and
    dump, and points imgadm at the datacenter's IMGAPI; agentsetup.sh
    installs the platform's agents and marks the node set up. No reboot is
    needed for the pool to be in use."""
    n = cn.shell
    assert json.loads(n.succeed("sysinfo"))["Setup"] == "false"
    cn.host_key = n.succeed("cat /etc/ssh/ssh_host_ed25519_key.pub")
    for name in ("joysetup.sh", "agentsetup.sh"):
        http.routes[f"/extra/joysetup/{name}"] = (TRITON_SCRIPTS / name).read_bytes()
    assets = http.guest_url("")
    steps = [("fetch", {"script": FETCH_SETUP_FILES, "args": [assets]}, 120),
             ("joysetup.sh", {"script": JOYSETUP}, 900),
             ("agentsetup.sh", {"script": AGENTSETUP, "env": {"ASSETS_URL": assets}}, 600)]
    for what, payload, seconds in steps:
        reply = cn.head.execute(SYSINFO_UUID, {"type": "script", **payload}, timeout=seconds * SCALE)
        assert reply["exit_status"] == 0, f"{what}: {reply['stdout'][-4000:]}\n{reply['stderr'][-2000:]}"
    # Their console lines (joysetup.sh writes its progress to /dev/console)
    # pass before the test reads its own commands' output.
    n.run("sleep 2")
    # Setup read the operator's layout from the fetched node.config, and
    # the clock from the headnode's NTP server.
    assert "Clock OK" in n.succeed("cat /var/log/joysetup.log")
    assert f"check_ntp(): ntpdate -b {NTP}" in n.succeed("cat /var/log/joysetup.log")
    status = n.succeed("zpool status zones")
    assert re.search(r"mirror-0\s+ONLINE.*\n\s+vda\s+ONLINE.*\n\s+vdb\s+ONLINE", status), status
    assert n.succeed("zfs list -H -o name -r zones").split() == \
        ["zones", "zones/config", "zones/cores", "zones/cores/global", "zones/dump", "zones/opt", "zones/swap",
         "zones/var"]
    assert n.succeed("cat /zones/.system_pool") == ""
    assert_pool_mounts(n, "/zones", "/zones/config", "/opt", "/var")
    # triton-lxd.service put the pool to use, and kept the node's identity on it.
    lxd = n.succeed("journalctl -b -o cat -u triton-lxd")
    assert "in use now: nothing more to mount\n" in lxd, lxd
    assert "kept on the pool: machine-id, " in lxd and "ssh ed25519 host key" in lxd, lxd
    assert json.loads(n.succeed("triton-pool status --json"))["state"] == "imported"
    assert n.succeed("readlink /usr/triton/config") == "/opt/triton/config"
    assert n.succeed("cat /usr/triton/config/node.config") == NODE_CONFIG.rstrip("\n")
    assert "Pool zones: imported, ONLINE." in n.succeed("cat /run/issue.d/50-triton-pool.issue")
    # imgadm: the datacenter's IMGAPI is its only source.
    assert n.succeed("imgadm sources") == "http://imgapi.test-dc.test.example"
    conf = json.loads(n.succeed("cat /usr/triton/config/imgadm/imgadm.conf"))
    assert conf["userAgentExtra"] == f"server/{SYSINFO_UUID}"
    assert "the platform carries no agents" in n.succeed("cat /var/log/triton-agent-install.log")
    state = json.loads(n.succeed("cat /opt/triton/config/triton-setup-state.json"))
    assert state["complete"] is True and state["seen_states"] == SETUP_STATES, state
    assert json.loads(n.succeed("sysinfo"))["Setup"] == "true"
    assert n.succeed("systemctl --failed --no-legend --plain") == ""
    # The agent looks at the setup state every 60 s: once more, set up.
    _, info, _ = cn.head.wait(lambda k, b: k.startswith(f"ur.sysinfo.{SYSINFO_UUID}.") and b["Setup"] == "true",
                              150 * SCALE, "a sysinfo with Setup true")
    assert info["Zpool"] == "zones"
    assert "no more periodic announcements" in n.succeed("journalctl -b -o cat -u triton-ur-agent")


def test_booters_ip_configured_the_boot_nic_and_nothing_else(cn):
    n = cn.node
    assert IP_MASTER in n.succeed("cat /proc/cmdline").split()
    boot = n.succeed("cat /run/systemd/network/10-triton-boot.network")
    assert f"Address={ADMIN_IP}/24" in boot and f"MACAddress={Node.MAC}" in boot
    # systemd-network-generator is off: it fails on this ip= form.
    n.fails("ls /run/systemd/network/71-default.network")
    assert n.succeed("systemctl is-enabled systemd-network-generator || true") in ("disabled", "masked")
    assert n.succeed("systemctl --failed --no-legend --plain") == ""
    assert f"{ADMIN_IP}/24" in n.succeed("ip -color=never -br -4 addr show admin0")


def test_usr_triton_config_holds_this_boots_files_on_the_pool(cn):
    n = cn.node
    assert n.succeed("readlink /usr/triton/config") == "/opt/triton/config"
    assert n.succeed("findmnt -n -o SOURCE --target /opt/triton/config") == "zones/opt"
    assert n.succeed("cat /usr/triton/config/node.config") == NODE_CONFIG.rstrip("\n")
    assert n.succeed("cat /usr/triton/config/triton-networking.json") == NETWORKING
    assert n.succeed("cat /usr/triton/config/triton-networking.json.hash") == \
        hashlib.sha1(NETWORKING.encode()).hexdigest()
    assert n.succeed("stat -c %a /usr/triton/config/node.config") == "600"
    env = n.succeed("cat /usr/triton/config/systemd.env")
    assert "PATH=/usr/node/bin:/usr/triton/bin:" in env
    assert "TRITON_AGENT_NODE_DIR=/opt/smartdc/agents/lib/node_modules" in env
    # It was laid out before setup, in RAM; joysetup.sh moved it onto the pool.
    log = n.succeed("journalctl -b -o cat -u triton-config-dir")
    assert "/usr/triton/config is a directory in RAM (no system pool is mounted)" in log
    assert "node.config from /run/triton/boot/node.config" in log
    assert "triton-networking.json from /run/triton/boot/triton-networking.json (matches its .hash)" in log
    assert "PROBLEM" not in log
    # In place before multi-user.target's units (the agents) start.
    assert n.succeed("systemctl show -p Before --value triton-config-dir").split().count("sysinit.target") == 1


def test_node_and_the_commands_triton_runs(cn):
    n = cn.node
    assert n.succeed("readlink -f /usr/node/bin/node") in ("/usr/bin/node", "/usr/bin/nodejs")
    assert n.succeed("/usr/node/bin/node -e 'console.log(process.versions.node)'").split(".")[0].isdigit()
    assert n.succeed("/usr/triton/bin/zonename") == "global"
    assert n.succeed("sysinfo | /usr/triton/bin/json 'MiB of Memory'").isdigit()
    assert n.succeed("echo '{\"a\": {\"b\": 1}}' | /usr/node/bin/json a.b") == "1"
    assert len(n.succeed("uuid -v4")) == 36
    n.succeed("test -x /usr/sbin/ntpdate && test -x /usr/bin/ntpdig")
    assert "import" in n.succeed("/usr/triton/bin/imgadm --help")
    assert "create" in n.succeed("/usr/triton/bin/vmadm --help")
    n.succeed("test -x /usr/triton/bin/sdc-factoryreset")


def test_config_sh_gives_node_configs_values_and_runs_none(cn):
    n = cn.node
    out = n.succeed("bash -c '. /usr/triton/bin/config.sh; load_sdc_config; "
                    "printf \"%s|\" \"$CONFIG_sapi_domain\" \"$CONFIG_datacenter_name\" \"$CONFIG_hostile_quoted\" "
                    "\"$CONFIG_hostile_bare\" \"$CONFIG_config_inc_dir\" \"$SDC_CONFIG_FILENAME\"'")
    assert out.split("|")[:6] == ["sapi.test-dc.test.example", "test-dc",
                                  "$(touch /var/tmp/pwned-quoted)", "$(touch /var/tmp/pwned-bare)",
                                  "/usr/triton/config", "/usr/triton/config/node.config"]
    data = json.loads(n.succeed("bash /usr/triton/bin/config.sh -json 2>/dev/null"))
    assert data["sapi_domain"] == "sapi.test-dc.test.example"
    n.fails("ls /var/tmp/pwned-*")


def test_root_key_booter_delivered_as_etc_triton_root_authorized_keys(cn, key):
    n = cn.node
    assert key.with_suffix(".pub").read_text().strip() in n.succeed("cat /root/.ssh/authorized_keys")
    assert "root ssh key(s) added from triton-root_authorized_keys" in \
        n.succeed("journalctl -b -o cat -u triton-node-config")


def test_an_agent_package_installs_and_runs(cn):
    n = cn.node
    for rel, text in AGENT_FILES.items():
        write_file(n, f"{AGENT_DIR}/{rel}", text)
    n.succeed(f"chmod +x {AGENT_DIR}/npm/postinstall.sh")
    out = n.succeed(f"cd {AGENT_DIR} && PATH={AGENTSETUP_PATH} ./npm/postinstall.sh", timeout=120)
    assert f"postinstall: {AGENT} installed in global as instance " in out
    instance = n.succeed(f"cat /opt/smartdc/agents/etc/{AGENT}")
    assert json.loads(n.succeed(f"cat /opt/smartdc/agents/etc/config-agent.d/{AGENT}.json")) == \
        {"instance": instance, "localManifestDirs": [AGENT_DIR]}
    assert "sapi.test-dc.test.example" in n.succeed(f"cat {AGENT_DIR}/systemd/{UNIT}")
    boot_id = n.succeed("cat /proc/sys/kernel/random/boot_id")
    lines = agent_lines(n)
    assert len(lines) == 1 and f"boot={boot_id} " in lines[0], lines
    assert " dc=test-dc sapi=sapi.test-dc.test.example config=/usr/triton/config " in lines[0]
    assert " agents=/opt/smartdc/agents/lib/node_modules path=/usr/node/bin:/usr/triton/bin:" in lines[0]
    assert n.succeed(f"systemctl is-active {UNIT}") == "active"
    n.fails("ls /var/tmp/pwned-*")


def test_the_console_says_what_was_applied_and_no_problems(cn):
    log = cn.node.succeed("journalctl -b -o cat -u triton-node-config")
    assert "network from /run/triton/boot/triton-networking.json: NIC tags admin on admin0" in log
    assert "storage on storage0 (aggr0)" in log and "192.168.78.20/24 on external0.42" in log
    assert f"host name cn-test-1; DNS 10.0.2.3 search test.example; NTP {NTP}" in log
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
    assert n.succeed("timedatectl show-timesync -p SystemNTPServers --value") == NTP


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
    # Set up through ur, its setup state complete: set up for CNAPI.
    assert info["Datacenter Name"] == "test-dc" and info["Setup"] == "true"
    assert info["Boot Parameters"]["boot"] == "live" and info["UUID"] == SYSINFO_UUID


def test_an_agent_and_an_operator_hook_on_the_pool(cn, net):
    n = cn.node
    write_file(n, f"{SAMPLE_DIR}/www/index.html", "sample-agent here\n")
    write_file(n, f"{SAMPLE_DIR}/systemd/triton-sample-agent.service", AGENT_UNIT)
    write_file(n, "/opt/custom/systemd/triton-test-hook.service", HOOK_UNIT)
    # A hook may not replace the platform's own units.
    write_file(n, "/opt/custom/systemd/ssh.service", "[Service]\nExecStart=/bin/false\n")
    # What an agent's installer does after copying its files in.
    n.succeed("systemctl daemon-reload && systemctl start triton-sample-agent triton-test-hook")
    assert n.succeed("systemctl is-active triton-sample-agent") == "active"
    out = net.run("python3", "-c", "import urllib.request as u, time; time.sleep(3);"
                  "print(u.urlopen('http://192.168.77.20:5309/', timeout=20).read().decode())")
    assert "sample-agent here" in out.stdout, out.stderr


# -- second boot: booter's Debian 12 ip=, serial "none", ssh -------------------------------

def test_after_a_reboot_with_serial_none_the_node_is_up_over_ssh(cn):
    cn.reboot()
    s = cn.shell
    cmdline = s.succeed("cat /proc/cmdline").split()
    assert "console=ttyS-1,115200n8" in cmdline and IP_DEBIAN12 in cmdline
    # No serial console: the kernel's console is the VGA one, with its getty.
    assert s.succeed("cat /sys/class/tty/console/active") == "tty0"
    assert s.succeed("systemctl list-units --all --plain --no-legend 'serial-getty@*'") == ""
    assert s.succeed("systemctl is-active getty@tty1") == "active"
    assert s.succeed("systemctl --failed --no-legend --plain") == ""
    assert s.succeed("systemctl is-system-running") == "running"
    assert f"Address={ADMIN_IP}/24" in s.succeed("cat /run/systemd/network/10-triton-boot.network")
    s.fails("ls /run/systemd/network/71-default.network")
    # The node announced itself again after the reboot ur asked for.
    assert cn.head.key(f"ur.startup.{SYSINFO_UUID}", 120 * SCALE)["UUID"] == SYSINFO_UUID
    print(f"\nfigure: serial none, ssh up {cn.node.seconds_to_login:.1f} s after QEMU started")


def test_after_the_reboot_the_agent_runs_again(cn):
    s = cn.shell
    boot_id = s.succeed("cat /proc/sys/kernel/random/boot_id")
    lines = agent_lines(s)
    assert len(lines) == 1 and f"boot={boot_id} " in lines[0], lines
    assert " dc=test-dc sapi=sapi.test-dc.test.example " in lines[0]
    assert s.succeed(f"systemctl is-active {UNIT}") == "active"
    # The platform is fresh: the agent's unit comes from its package on the pool.
    assert s.succeed(f"systemctl show -p FragmentPath --value {UNIT}") == f"/run/systemd/generator/{UNIT}"
    assert s.succeed(f"readlink /run/systemd/generator/{UNIT}") == f"{AGENT_DIR}/systemd/{UNIT}"


def test_after_the_reboot_the_pool_joysetup_made_is_the_nodes_own(cn):
    """The initrd imports the pool Triton's joysetup.sh made (the marker it
    wrote, its datasets' own mountpoints) and restores what triton-lxd kept
    on it: the node is the same one, set up."""
    s = cn.shell
    assert_pool_mounts(s, "/zones", "/zones/config", "/opt", "/var")
    assert json.loads(s.succeed("triton-pool status --json"))["state"] == "imported"
    # Imported clean, with every disk and no answers file (test_pool's own
    # next import is its degraded one).
    assert "pool 'zones' is healthy" in s.succeed("zpool status -x zones")
    assert "Pool zones: imported, ONLINE." in s.succeed("cat /run/issue.d/50-triton-pool.issue")
    assert s.succeed("cat /etc/ssh/ssh_host_ed25519_key.pub") == cn.host_key
    assert json.loads(s.succeed("sysinfo"))["Setup"] == "true"
    assert s.succeed("imgadm sources") == "http://imgapi.test-dc.test.example"
    # What setup logged on the pool's /var is still there.
    assert "mark_as_setup" in s.succeed("cat /var/log/agent-setup.log")


def test_after_the_reboot_usr_triton_config_is_this_boots(cn):
    s = cn.shell
    assert s.succeed("readlink /usr/triton/config") == "/opt/triton/config"
    assert "/usr/triton/config is a link to /opt/triton/config (kept on the system pool)" in \
        s.succeed("journalctl -b -o cat -u triton-config-dir")
    assert s.succeed("cat /usr/triton/config/node.config") == NODE_CONFIG.rstrip("\n")
    assert s.succeed("cat /usr/triton/config/triton-networking.json") == NETWORKING
    assert s.succeed("hostname") == "cn-test-1"
    s.fails("ls /var/tmp/pwned-*")


def test_after_a_reboot_the_agent_runs_and_the_hook_ran_again(cn, net):
    n = cn.shell
    assert n.succeed("systemctl is-active triton-sample-agent") == "active"
    assert n.succeed("systemctl show -p FragmentPath --value triton-sample-agent") == \
        "/run/systemd/generator/triton-sample-agent.service"
    assert n.succeed("cat /run/custom-hook-ran") == n.succeed("cat /proc/sys/kernel/random/boot_id")
    assert n.succeed("systemctl show -p FragmentPath --value ssh") == "/usr/lib/systemd/system/ssh.service"
    units = json.loads(n.succeed("/usr/lib/triton/triton_units.py list"))
    assert {u["unit"] for u in units} == {"triton-sample-agent.service", "triton-test-hook.service", "ssh.service",
                                          UNIT}
    assert "ssh.service: skipped: a unit named ssh.service already exists" in \
        n.succeed("journalctl -b -o cat -t triton-units-generator")
    out = net.run("python3", "-c", "import urllib.request as u;"
                  "print(u.urlopen('http://192.168.77.20:5309/', timeout=20).read().decode())")
    assert "sample-agent here" in out.stdout, out.stderr
    assert n.succeed("hostname") == "cn-test-1" and reachable(net, "192.168.79.20")
    print(f"\nfigure: node with 4 NICs, pool, agent: QEMU start to ssh up {cn.node.seconds_to_login:.1f} s")


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
    disk = tmp_path_factory.mktemp("bad-disk") / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "2G"], check=True)
    node = Node.pxe(tftp, "boot.ipxe", logs / "cn-malformed.log",
                    extra=Node.hardware("0d7e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a", [disk]))
    try:
        node.wait_for_console(r"triton-node-config: PROBLEM: /run/triton/boot/triton-networking.json: "
                              r"not valid JSON", BOOT_TIMEOUT)
        node.console_at_login = node.expect(r"Boot configuration: \d+ problem\(s\)[^\r\n]*", BOOT_TIMEOUT).group(0)
        node.up(PASSWORD, BOOT_TIMEOUT)
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


def test_an_operator_sets_the_running_node_up_by_hand(bad_node):
    """Without a headnode: `triton-pool setup` on the running node puts the
    pool to use at once (/zones, /zones/config, /opt from it; the pool
    recorded as this boot's), moves /usr/triton/config onto it (laid out
    again, the malformed file still left out), and keeps the node's
    identity on it."""
    n = bad_node
    out = n.succeed("triton-pool setup --yes --layout single /dev/disk/by-id/virtio-blank", timeout=300)
    assert "created pool 'zones' (single of /dev/vda)" in out, out
    in_use = re.search(r"in use now: ([^;\n]*); /var moves to the pool at the next boot", out)
    assert in_use and sorted(in_use.group(1).split(", ")) == \
        ["zones/config on /zones/config", "zones/opt on /opt"], out
    assert "kept on the pool: machine-id, " in out, out
    assert_pool_mounts(n, "/zones", "/zones/config", "/opt")
    assert json.loads(n.succeed("triton-pool status --json"))["state"] == "imported"
    assert n.succeed("readlink /usr/triton/config") == "/opt/triton/config"
    assert n.succeed("cat /usr/triton/config/node.config") == BAD_NODE_CONFIG.rstrip("\n")
    n.fails("ls /usr/triton/config/triton-networking.json")
    assert json.loads(n.succeed("sysinfo"))["Setup"] == "false"
    assert n.succeed("systemctl --failed --no-legend --plain") == ""
