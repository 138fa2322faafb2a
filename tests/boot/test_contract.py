"""Triton's Linux compute-node contract on a booted node: what booter
delivers and how (its kernel arguments, both forms of its ip=, serial
"none", root's keys as /etc/triton-root_authorized_keys), /usr/triton and
/usr/node as Triton's agents and setup scripts expect them, and an agent
package installed the way Triton's agents install themselves, running
again after a reboot.

Two boots of one node with a blank disk (set up into the pool `zones` from
an answers file at the first boot):

1. booter's arguments as its master branch writes them: serial console
   ttyS1, ip=<ip>:::<mask>::. The test drives the serial console, checks
   the contract and installs the agent.
2. booter's Debian 12 branch's ip=<ip>:::<mask>:::none, and the serial
   console "none" (console=ttyS-1): there is no serial console, so the test
   logs in over ssh (QEMU forwards a port of the host's loopback) with the
   key booter delivered; the node is up on its VGA console and the agent
   runs again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pexpect
import pytest

from hooks.bootfiles import Module
from tests.boot.conftest import PASSWORD, ROOT_SHADOW, pxe_script
from tests.lib.node import SCALE, Node, Ssh

SYSTEM_UUID = "5a1c0e2d-3b4f-4a6e-9c8d-7f6e5d4c3b2a"
ANSWERS = json.dumps({"pool": {"layout": "single", "disks": ["/dev/disk/by-id/virtio-contract1"]}})
BOOT_TIMEOUT = 480
ADMIN_IP = "10.0.2.15"
# booter's ip= (lib/menulst.js): master, and its Debian 12 branch (LINUXCN-27).
IP_MASTER = f"ip={ADMIN_IP}:::255.255.255.0::"
IP_DEBIAN12 = f"ip={ADMIN_IP}:::255.255.255.0:::none"

NODE_CONFIG = (
    "# node.config as headnode.sh writes it\n"
    f"root_shadow='{ROOT_SHADOW}'\n"
    "datacenter_name='contract-dc'\n"
    "dns_domain='contract.example'\n"
    "sapi_domain='sapi.contract-dc.contract.example'\n"
    "imgapi_domain='imgapi.contract-dc.contract.example'\n"
    "ntp_hosts='10.0.2.2'\n"
    "swap='0.25x'\n"
    # Data, never code: sourcing config.sh runs none of these.
    "hostile_quoted='$(touch /var/tmp/pwned-quoted)'\n"
    "hostile_bare=$(touch /var/tmp/pwned-bare)\n"
    "hostile_tick=`touch /var/tmp/pwned-tick`\n"
    "hostile_semicolon='x'; touch /var/tmp/pwned-semicolon\n"
)
NETWORKING = json.dumps({
    "nictags": [{"name": "admin", "mac": Node.MAC, "mtu": 1500}],
    "admin_tag": "admin",
    "resolvers": ["10.0.2.3"],
    "vnics": [{"mac": Node.MAC, "nic_tag": "admin", "ip": ADMIN_IP, "netmask": "255.255.255.0",
               "belongs_to_type": "server", "belongs_to_uuid": SYSTEM_UUID}],
    "hostname": "cn-contract",
    "dns_domain": "contract.example",
}, indent=2)

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


def write_file(node: Node, path: str, text: str) -> None:
    encoded = base64.b64encode(text.encode()).decode()
    node.succeed(f"mkdir -p $(dirname {path}) && echo {encoded} | base64 -d > {path}")


def agent_lines(shell: Node | Ssh) -> list[str]:
    """The agent's journal lines of this boot, once its node has started."""
    shell.succeed(f"for i in $(seq 90); do journalctl -b -o cat -u {UNIT} | grep -q '^contract-agent: up' "
                  f"&& break; sleep 2; done", timeout=240)
    return [line for line in shell.succeed(f"journalctl -b -o cat -u {UNIT}").splitlines()
            if line.startswith("contract-agent: up")]


# -- the node ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dc(http):
    http.routes["/contract/node.config"] = NODE_CONFIG.encode()
    http.routes["/contract/networking.json"] = NETWORKING.encode()
    http.routes["/contract/networking.json.hash"] = hashlib.sha1(NETWORKING.encode()).hexdigest().encode()
    http.routes["/contract/answers.json"] = ANSWERS.encode()
    return "/contract"


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> Path:
    """root's ssh key, as an operator gives it to CNAPI (a boot_module
    root_authorized_keys, which booter delivers as /etc/triton-root_authorized_keys)."""
    d = tmp_path_factory.mktemp("ssh")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator@contract-test",
                    "-f", str(d / "id")], check=True)
    return d / "id"


@pytest.fixture(scope="module")
def disk(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("contract-disk") / "contract1.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(d), "2G"], check=True)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def boot_script(http, platform, dc: str, key: Path, ip: str, serial_none: bool) -> str:
    """booter's boot.ipxe for this node: its kernel arguments and modules."""
    http.routes[f"{dc}/root_authorized_keys"] = key.with_suffix(".pub").read_bytes()
    modules = [Module(http.guest_url(f"{dc}/root_authorized_keys"), "/etc/triton-root_authorized_keys"),
               Module(http.guest_url(f"{dc}/answers.json"), "/etc/triton/answers.json")]
    text = pxe_script(http, platform, [ip], modules, inject=dc)
    if serial_none:
        # booter's getConsoleConfig for CNAPI serial "none": unit -1.
        assert "console=ttyS1,115200n8" in text
        text = text.replace("console=ttyS1,115200n8", "console=ttyS-1,115200n8")
    return text


@pytest.fixture(scope="module")
def cn(platform, http, logs, tmp_path_factory, disk, dc, key):
    tftp = tmp_path_factory.mktemp("tftp-contract-1")
    (tftp / "boot.ipxe").write_text(boot_script(http, platform, dc, key, IP_MASTER, serial_none=False))
    node = Node.pxe(tftp, "boot.ipxe", logs / "contract-first.log", extra=Node.hardware(SYSTEM_UUID, [disk]))
    state = SimpleNamespace(node=node, ssh=None)

    def reboot() -> None:
        """Power off, and boot again with the Debian 12 ip= and serial "none"."""
        state.node.child.sendline("systemctl poweroff")
        state.node.child.expect(pexpect.EOF, timeout=240 * SCALE)
        state.node.close()
        tftp2 = tmp_path_factory.mktemp("tftp-contract-2")
        (tftp2 / "boot.ipxe").write_text(boot_script(http, platform, dc, key, IP_DEBIAN12, serial_none=True))
        port = free_port()
        state.node = Node.pxe(tftp2, "boot.ipxe", logs / "contract-second.log",
                              extra=Node.hardware(SYSTEM_UUID, [disk]), hostfwd=[f"tcp:127.0.0.1:{port}-:22"])
        state.ssh = Ssh(state.node, port, key)
        state.node.seconds_to_login = state.ssh.wait_until_up(BOOT_TIMEOUT)
        state.ssh.succeed("systemctl is-system-running --wait", timeout=300)

    state.reboot = reboot
    try:
        node.seconds_to_login = node.wait_for_login(BOOT_TIMEOUT)
        node.login(PASSWORD)
        node.execute("systemctl is-system-running --wait", timeout=300)
        yield state
    finally:
        state.node.close()


# -- first boot: booter's master arguments, serial console ----------------------------------

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
    log = n.succeed("journalctl -b -o cat -u triton-config-dir")
    assert "/usr/triton/config is a link to /opt/triton/config (kept on the system pool)" in log
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
    assert out.split("|")[:6] == ["sapi.contract-dc.contract.example", "contract-dc",
                                  "$(touch /var/tmp/pwned-quoted)", "$(touch /var/tmp/pwned-bare)",
                                  "/usr/triton/config", "/usr/triton/config/node.config"]
    data = json.loads(n.succeed("bash /usr/triton/bin/config.sh -json 2>/dev/null"))
    assert data["sapi_domain"] == "sapi.contract-dc.contract.example"
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
    assert "sapi.contract-dc.contract.example" in n.succeed(f"cat {AGENT_DIR}/systemd/{UNIT}")
    boot_id = n.succeed("cat /proc/sys/kernel/random/boot_id")
    lines = agent_lines(n)
    assert len(lines) == 1 and f"boot={boot_id} " in lines[0], lines
    assert " dc=contract-dc sapi=sapi.contract-dc.contract.example config=/usr/triton/config " in lines[0]
    assert " agents=/opt/smartdc/agents/lib/node_modules path=/usr/node/bin:/usr/triton/bin:" in lines[0]
    assert n.succeed(f"systemctl is-active {UNIT}") == "active"
    n.fails("ls /var/tmp/pwned-*")


# -- second boot: booter's Debian 12 ip=, serial "none", ssh -------------------------------

def test_after_a_reboot_with_serial_none_the_node_is_up_over_ssh(cn):
    cn.reboot()
    s = cn.ssh
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
    print(f"\nfigure: serial none, ssh up {cn.node.seconds_to_login:.1f} s after QEMU started")


def test_after_the_reboot_the_agent_runs_again(cn):
    s = cn.ssh
    boot_id = s.succeed("cat /proc/sys/kernel/random/boot_id")
    lines = agent_lines(s)
    assert len(lines) == 1 and f"boot={boot_id} " in lines[0], lines
    assert " dc=contract-dc sapi=sapi.contract-dc.contract.example " in lines[0]
    assert s.succeed(f"systemctl is-active {UNIT}") == "active"
    # The platform is fresh: the agent's unit comes from its package on the pool.
    assert s.succeed(f"systemctl show -p FragmentPath --value {UNIT}") == f"/run/systemd/generator/{UNIT}"
    assert s.succeed(f"readlink /run/systemd/generator/{UNIT}") == f"{AGENT_DIR}/systemd/{UNIT}"


def test_after_the_reboot_usr_triton_config_is_this_boots(cn):
    s = cn.ssh
    assert s.succeed("readlink /usr/triton/config") == "/opt/triton/config"
    assert s.succeed("cat /usr/triton/config/node.config") == NODE_CONFIG.rstrip("\n")
    assert s.succeed("cat /usr/triton/config/triton-networking.json") == NETWORKING
    assert s.succeed("hostname") == "cn-contract"
    s.fails("ls /var/tmp/pwned-*")
