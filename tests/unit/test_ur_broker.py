"""The ur agent against a real RabbitMQ: Debian's rabbitmq-server, started
as a private instance (its own directories, node name, ports on 127.0.0.1,
its own epmd; `channel_max = 0`, the one setting Triton's agents need).
The test plays the headnode with its own AMQP client, as CNAPI and
urclient do (amq.topic, JSON bodies, the routing keys of
shared/research/ur-protocol.md); it never calls the agent's code. The
agents run as processes, as the unit runs them, with a sysinfo of the
test's (--sysinfo-command), the broker on their kernel command line
(--cmdline), a reboot command that only leaves a file
(TRITON_UR_REBOOT_COMMAND) and a 1 s announcement period."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid as uuidlib
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import pytest

pika = pytest.importorskip("pika", reason="python3-pika is not installed (hooks/hostsetup.py installs it)")

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "mkosi.extra/usr/lib/triton/triton_ur.py"
from tests.lib.rabbitmq import RABBITMQ, Broker, Headnode  # noqa: E402


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    if not RABBITMQ.exists():
        pytest.skip(f"{RABBITMQ} missing: apt-get install rabbitmq-server (hooks/hostsetup.py installs it)")
    b = Broker(tmp_path_factory.mktemp("rabbitmq"))
    b.start()
    yield b
    b.close()


def node_sysinfo(uuid: str, mac: str) -> dict[str, Any]:
    return {"UUID": uuid, "Setup": "false", "System Type": "Linux", "Admin NIC Tag": "admin",
            "Network Interfaces": {"eth0": {"MAC Address": mac, "NIC Names": ["admin"], "ip4addr": "10.0.2.15"},
                                   "eth1": {"MAC Address": "52:54:00:aa:bb:01", "NIC Names": ["external"]}},
            "Boot Params": {"rabbitmq": "guest:guest:127.0.0.1:5672"}}


class Agent:
    def __init__(self, base: Path, broker: Broker, uuid: str, mac: str = "52:54:00:12:34:56"):
        self.base, self.uuid, self.mac = base, uuid, mac
        base.mkdir(parents=True, exist_ok=True)
        self.sysinfo = node_sysinfo(uuid, mac)
        (base / "sysinfo.json").write_text(json.dumps(self.sysinfo))
        (base / "cmdline").write_text(f"BOOTIF=01-52-54-00-12-34-56 rabbitmq={broker.url()} console=ttyS0\n")
        self.setup_state = base / "triton-setup-state.json"
        self.rebooted = base / "rebooted"
        self.log = base / "agent.log"
        self.first_head: Optional[Headnode] = None
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "AGENT_ONLY": "yes",
               "TRITON_UR_REBOOT_COMMAND": f"touch {self.rebooted}"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(AGENT), "--sysinfo-command", f"cat {base / 'sysinfo.json'}", "--cmdline", str(base / "cmdline"),
                 "--startup-marker", str(base / "ur-startup"), "--setup-state", str(self.setup_state),
                 "--sysinfo-period", "1"], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def agent(broker, tmp_path_factory):
    first = Headnode(broker)      # listening before the agent starts: it sees the first message
    a = Agent(tmp_path_factory.mktemp("agent"), broker, "564d9a3c-1b2c-4d5e-8f70-0123456789ab")
    a.first_head = first
    yield a
    first.close()
    a.stop()
    assert a.proc.returncode == 0, a.log.read_text()


@pytest.fixture
def head(broker):
    h = Headnode(broker)
    yield h
    h.close()


def test_the_node_announces_itself(agent, broker):
    """The first sysinfo, then ur.startup (once per boot), then the periodic
    sysinfo; every body is the node's sysinfo."""
    head = agent.first_head
    try:
        key, body, t_sysinfo = head.wait(lambda k, _: k.startswith(f"ur.sysinfo.{agent.uuid}."), 15, "sysinfo")
        assert body == agent.sysinfo
        assert len(key.split(".")) == 4 and int(key.split(".")[3], 16) >= 0
        _, body, t_startup = head.wait(lambda k, _: k == f"ur.startup.{agent.uuid}", 5, "ur.startup")
        assert body == agent.sysinfo and t_startup >= t_sysinfo
        head.wait(lambda k, _: k.startswith(f"ur.sysinfo.{agent.uuid}."), 5, "a periodic sysinfo")
        head.wait(lambda k, _: k.startswith(f"ur.sysinfo.{agent.uuid}."), 5, "another periodic sysinfo")
    finally:
        head.close()
    assert (agent.base / "ur-startup").exists()
    assert any("connected to guest@127.0.0.1" in line and "kernel command line" in line and
               "admin NIC 52:54:00:12:34:56 (eth0, NIC tag admin)" in line for line in agent.lines())


def test_scripts_run_with_args_env_and_outputs(agent, head):
    script = "#!/bin/bash\necho \"out $# $1|$2\"\necho err >&2\nexit 3\n"
    t0 = time.monotonic()
    reply = head.execute(agent.uuid, {"type": "script", "script": script, "args": ["a b", "c"], "env": {}})
    elapsed = time.monotonic() - t0
    assert reply == {"exit_status": 3, "stdout": "out 2 a b|c\n", "stderr": "err\n"}
    print(f"\nexecute request to reply: {elapsed * 1000:.0f} ms")
    # env is the whole environment: exactly what was sent.
    env = {"A": "1", "B": "two words", "LC_ALL": "C.UTF-8"}
    reply = head.execute(agent.uuid, {"type": "script", "args": [], "env": env, "script":
                                      "#!/usr/bin/python3\nimport json, os\nprint(json.dumps(dict(os.environ)))\n"})
    assert reply["exit_status"] == 0 and json.loads(reply["stdout"]) == env, reply
    reply = head.execute(agent.uuid, {"type": "file", "file": "/usr/bin/env", "env": {"X": "y"}})
    assert reply == {"exit_status": 0, "stdout": "X=y\n", "stderr": ""}
    # No env: the agent's own passes through; the <uuid>-<mac> key works too.
    reply = head.execute(f"{agent.uuid}-{agent.mac}", {"type": "script", "script": "#!/bin/sh\necho $AGENT_ONLY\n"})
    assert reply == {"exit_status": 0, "stdout": "yes\n", "stderr": ""}
    # No #! line: the error, and a nonzero status.
    reply = head.execute(agent.uuid, {"type": "script", "script": "echo hi\n", "env": {}})
    assert reply["exit_status"] == 126 and "ENOEXEC" in reply["stderr"] and reply["stdout"] == "", reply
    rss = int(next(line.split()[1] for line in Path(f"/proc/{agent.proc.pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:")))
    print(f"agent RSS: {rss / 1024:.1f} MiB")


def test_a_long_script_holds_up_nothing(agent, head):
    slow = uuidlib.uuid4().hex[:8]
    head.publish(f"ur.execute.{agent.uuid}.{slow}", {"type": "script", "script": "#!/bin/sh\nsleep 3\necho slow\n"})
    t0 = time.monotonic()
    assert head.execute(agent.uuid, {"type": "script", "script": "#!/bin/sh\necho quick\n"})["stdout"] == "quick\n"
    head.ping(agent.uuid, "c1", "p1")
    head.key(f"ur.ackc1.{agent.uuid}")
    assert time.monotonic() - t0 < 2.5
    assert head.key(f"ur.execute-reply.{agent.uuid}.{slow}")["stdout"] == "slow\n"


def test_ping_is_acked(agent, head):
    head.ping(agent.uuid, "8f3a2b1c", "42")
    ack = head.key(f"ur.ack8f3a2b1c.{agent.uuid}")
    assert ack["req_id"] == "42" and set(ack) == {"req_id", "timestamp"}
    assert abs(datetime.fromisoformat(ack["timestamp"].replace("Z", "+00:00")).timestamp() - time.time()) < 10
    assert ack["timestamp"].endswith("Z")


def test_broadcast_sysinfo(agent, head):
    head.publish("ur.broadcast.sysinfo.b0000001", {})
    assert head.key(f"ur.execute-reply.{agent.uuid}.b0000001") == agent.sysinfo
    head.publish("ur.broadcast.reboot.b0000002", {})
    head.pump(1)
    assert not any(k.endswith(".b0000002") for k, _, _ in head.seen)
    assert any("only 'sysinfo' is known" in line for line in agent.lines())


@pytest.mark.parametrize("raw, why", [
    (b"\xff not json", "not JSON"),
    (b"[1, 2]", "not an object"),
    (b'{"type": "shell", "script": "x"}', "neither 'script' nor 'file'"),
    (b'{"type": "script"}', "needs 'script'"),
    (b'{"type": "script", "script": "#!/bin/sh\\n", "args": "a"}', "'args'"),
])
def test_a_malformed_request_gets_an_error_reply(agent, head, raw, why):
    reply = head.execute(agent.uuid, None, raw=raw)
    assert reply["exit_status"] != 0 and why in reply["stderr"] and reply["stdout"] == "", reply


def test_the_agent_keeps_working_after_garbage(agent, head):
    head.publish(f"ur.ping.{agent.uuid}", None, raw=b"garbage")
    head.publish(f"ur.ping.{agent.uuid}", {"id": 1})
    head.pump(0.5)
    assert head.execute(agent.uuid, {"type": "script", "script": "#!/bin/sh\necho ok\n"})["stdout"] == "ok\n"
    assert any("ping: the body is not JSON" in line for line in agent.lines())
    assert agent.proc.poll() is None


def test_broker_restart_and_an_agent_started_before_the_broker(agent, broker, tmp_path):
    """The broker goes away under a running agent, and a second node boots
    while it is away: both connect once it is back, and each logged its
    failure once, not at every retry."""
    Headnode(broker, durable="ur-test-head").close()
    broker.stop()
    late = Agent(tmp_path / "late", broker, "564d9a3c-1b2c-4d5e-8f70-00000000beef", "52:54:00:00:be:ef")
    try:
        time.sleep(4)                      # retries at 1, 2 (and 4) s
        assert late.proc.poll() is None and agent.proc.poll() is None
        broker.start()
        head = Headnode(broker, durable="ur-test-head")
        try:
            for node in (agent, late):
                # The first sysinfo comes before the request queue is bound
                # (as Triton's agent): the next one (1 s) after.
                for _ in range(2):
                    head.wait(lambda k, _: k.startswith(f"ur.sysinfo.{node.uuid}."), 40, f"{node.uuid}'s sysinfo")
                assert head.execute(node.uuid, {"type": "script", "script": "#!/bin/sh\necho back\n"},
                                    timeout=10)["stdout"] == "back\n"
            head.key(f"ur.startup.{late.uuid}")          # its first connection in this boot
        finally:
            head.ch.queue_delete("ur-test-head")
            head.close()
        failures = [line for line in late.lines() if "cannot connect" in line]
        assert len(failures) == 1, late.lines()
        assert "Connection refused" in failures[0]
        assert sum("cannot connect" in line for line in agent.lines()) <= 1, agent.lines()
    finally:
        late.stop()


def test_set_up_node_stops_announcing_and_113_reboots(broker, tmp_path):
    """A malformed setup state is logged once and the node keeps announcing;
    complete: true, one more sysinfo, then none; exit 113: reply 0, then the
    reboot command."""
    head = Headnode(broker)
    node = Agent(tmp_path / "setup", broker, "564d9a3c-1b2c-4d5e-8f70-0000005e7c0d", "52:54:00:00:5e:7c")
    try:
        node.setup_state.write_text("{not json")
        sysinfo = f"ur.sysinfo.{node.uuid}."
        for _ in range(3):
            head.wait(lambda k, _: k.startswith(sysinfo), 10, "sysinfo")
        assert sum("not JSON" in line for line in node.lines()) == 1, node.lines()
        node.setup_state.write_text(json.dumps({"complete": True}))
        head.pump(2.5)
        head.seen.clear()
        head.pump(3.5)
        assert not [k for k, _, _ in head.seen if k.startswith(sysinfo)], head.seen
        assert any("no more periodic announcements" in line for line in node.lines())
        reply = head.execute(node.uuid, {"type": "script", "script": "#!/bin/sh\necho bye\nexit 113\n", "env": {}})
        assert reply == {"exit_status": 0, "stdout": "bye\n", "stderr": ""}
        deadline = time.monotonic() + 10
        while not node.rebooted.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert node.rebooted.exists(), node.lines()
        assert any(f"rebooting the node: touch {node.rebooted}" in line for line in node.lines())
    finally:
        head.close()
        node.stop()


def test_a_set_up_node_announces_only_at_connect(broker, tmp_path):
    node_dir = tmp_path / "done"
    node_dir.mkdir()
    (node_dir / "triton-setup-state.json").write_text('{"complete": true}')
    head = Headnode(broker)
    node = Agent(node_dir, broker, "564d9a3c-1b2c-4d5e-8f70-00000000d0de", "52:54:00:00:d0:de")
    try:
        head.wait(lambda k, _: k.startswith(f"ur.sysinfo.{node.uuid}."), 10, "sysinfo")
        head.key(f"ur.startup.{node.uuid}")
        head.pump(3)
        assert not [k for k, _, _ in head.seen if k.startswith(f"ur.sysinfo.{node.uuid}.")]
    finally:
        head.close()
        node.stop()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-s"]))
