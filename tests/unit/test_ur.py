"""The ur agent's parts, without a broker and without root: where it finds
the broker, who it says the node is, the routing keys and bodies of
shared/research/ur-protocol.md, how it reads requests (and refuses
malformed ones), how it runs programs, the setup state, its back-off and
its once-per-change logging. The whole agent against a real RabbitMQ is
test_ur_broker.py."""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
pytest.importorskip("pika", reason="python3-pika is not installed (hooks/hostsetup.py installs it)")
import triton_sysinfo as si  # noqa: E402
import triton_ur as ur  # noqa: E402
import triton_urexec as ux  # noqa: E402

UUID = "564d9a3c-1b2c-4d5e-8f70-0123456789ab"
MAC = "52:54:00:12:34:56"


def node_config(text: str) -> si.File:
    return si.File("/usr/triton/config/node.config", text)


# ---- The broker

def test_the_kernel_command_line_names_the_broker():
    b, problems = ur.broker_from("BOOTIF=01-52-54-00-12-34-56 rabbitmq=guest:s3cret:10.99.99.20:5672 console=ttyS0",
                                 node_config("rabbitmq='other:pw:10.0.0.1:5673'\n"), {})
    assert (b.login, b.password, b.host, b.port, b.vhost) == ("guest", "s3cret", "10.99.99.20", 5672, "/")
    assert b.source == "kernel command line" and problems == []


def test_node_config_when_the_command_line_has_none():
    b, problems = ur.broker_from("console=ttyS0",
                                 node_config("# headnode.sh's line\nrabbitmq='guest:guest:10.0.0.9:5672'\n"), {})
    assert (b.host, b.port, b.source) == ("10.0.0.9", 5672, "/usr/triton/config/node.config")
    assert problems == []


def test_defaults_without_either():
    b, problems = ur.broker_from("", None, {})
    assert (b.host, b.port, b.login, b.password, b.vhost, b.source) == (
        "localhost", 5672, "guest", "guest", "/", "defaults")
    assert ur.broker_from("", si.File("/x/node.config", None, "missing"), {})[0] == b


def test_the_environment_wins_field_by_field():
    env = {"AMQP_HOST": "127.0.0.1", "AMQP_PORT": "25672", "AMQP_VHOST": "ur"}
    b, problems = ur.broker_from("rabbitmq=admin:pw:10.0.0.1:5672", None, env)
    assert (b.login, b.password, b.host, b.port, b.vhost) == ("admin", "pw", "127.0.0.1", 25672, "ur")
    assert b.source == "kernel command line, AMQP_HOST, AMQP_PORT, AMQP_VHOST" and problems == []
    b, problems = ur.broker_from("", None, {"AMQP_PORT": "http", "AMQP_LOGIN": "x", "AMQP_PASSWORD": "y"})
    assert (b.port, b.login, b.password) == (5672, "x", "y")
    assert problems == ["AMQP_PORT='http' is not a port number; ignored"]


@pytest.mark.parametrize("value, fields", [
    ("guest:guest:10.0.0.1:5672", ("guest", "guest", "10.0.0.1", 5672)),
    ("guest:pa:ss:word:rabbit.example.com:5671", ("guest", "pa:ss:word", "rabbit.example.com", 5671)),
    ("guest::10.0.0.1:5672", ("guest", "", "10.0.0.1", 5672)),
])
def test_rabbitmq_values(value, fields):
    assert ur.parse_rabbitmq(value) == fields


@pytest.mark.parametrize("value, why", [
    ("guest:s3cret:10.0.0.1", "3 ':'-separated fields"),
    ("guest:s3cret:10.0.0.1:amqp", "port 'amqp'"),
    ("guest:s3cret:10.0.0.1:70000", "port '70000'"),
    (":s3cret:10.0.0.1:5672", "empty login or host"),
    ("guest:s3cret::5672", "empty login or host"),
])
def test_malformed_rabbitmq_values_are_refused_without_showing_the_password(value, why):
    with pytest.raises(ValueError, match=why) as e:
        ur.parse_rabbitmq(value)
    assert "s3cret" not in str(e.value)


def test_a_malformed_value_falls_through_to_the_next_source():
    b, problems = ur.broker_from("rabbitmq=guest:s3cret:10.0.0.1", node_config("rabbitmq=guest:guest:10.0.0.2:5672\n"),
                                 {})
    assert b.host == "10.0.0.2"
    assert problems == ["rabbitmq= on the kernel command line has 3 ':'-separated fields, not "
                        "login:password:host:port; ignored"]
    assert "s3cret" not in str(b) and "s3cret" not in repr(b)


# ---- Who the node is

def sysinfo(**nics):
    return {"UUID": UUID, "Admin NIC Tag": "admin", "Network Interfaces": nics, "Boot Params": {}}


def test_the_admin_nic_is_the_one_with_the_admin_tag():
    info = sysinfo(eth0={"MAC Address": "52:54:00:aa:bb:01", "NIC Names": ["external"]},
                   eth1={"MAC Address": MAC, "NIC Names": ["admin"]})
    assert ur.identity(info) == ur.Identity(UUID, MAC, "eth1, NIC tag admin")
    info["Admin NIC Tag"] = "external"
    assert ur.identity(info).mac == "52:54:00:aa:bb:01"


def test_without_a_tagged_nic_the_boot_nic_then_the_only_nic():
    info = sysinfo(eth0={"MAC Address": "52:54:00:aa:bb:01", "NIC Names": []},
                   eth1={"MAC Address": MAC, "NIC Names": []})
    info["Boot Params"] = {"admin_mac": "52-54-00-12-34-56"}          # sysinfo's form of BOOTIF
    mac, how = ur.admin_nic(info)
    assert mac == MAC and "BOOTIF" in how
    info["Boot Params"] = {}
    assert ur.admin_nic(info)[0] == "52:54:00:aa:bb:01"                # the first by name, said so
    assert "first NIC, eth0" in ur.admin_nic(info)[1]
    only = sysinfo(eth0={"MAC Address": MAC})
    assert ur.admin_nic(only) == (MAC, "no NIC has NIC tag admin: the only NIC, eth0")


def test_no_uuid_or_no_nic_is_a_failure_to_retry_not_a_crash():
    with pytest.raises(ur.Failure, match="no UUID .*product_uuid"):
        ur.identity({"UUID": "", "Sysinfo Problems": ["/sys/class/dmi/id/product_uuid: '' is not a UUID; "
                                                      "UUID unknown"]})
    with pytest.raises(ur.Failure, match="no NIC"):
        ur.identity({"UUID": UUID, "Network Interfaces": "garbage"})


def test_our_sysinfo_gives_the_identity():
    """triton_sysinfo's own keys: UUID in SmartOS byte order, Network
    Interfaces' NIC Names, Admin NIC Tag."""
    facts = si.Facts(dmi={"product_uuid": "3c9a4d56-2c1b-5e4d-8f70-0123456789ab"},
                     cmdline="BOOTIF=01-52-54-00-12-34-56 rabbitmq=guest:guest:10.0.2.2:5672",
                     links=[si.Link("eth0", MAC, "up", "nic")],
                     network_state=si.File("/run/triton/network.json",
                                           json.dumps({"nic_tags": {"admin": {"port": MAC, "link": "eth0"}}})))
    info = si.describe(facts)
    assert ur.identity(info) == ur.Identity(UUID, MAC, "eth0, NIC tag admin")
    assert ur.broker_from(facts.cmdline, None, {})[0].host == "10.0.2.2"


# ---- Routing keys and bodies (ur-protocol.md §3, §4)

def test_routing_keys():
    ident = ur.Identity(UUID, MAC, "")
    assert ur.request_queue(ident) == f"ur.request.{UUID}.{MAC}"
    assert ur.request_bindings(ident) == (f"ur.execute.{UUID}-{MAC}.*", f"ur.execute.{UUID}.*", "ur.broadcast.*.*")
    assert ur.ping_queue(UUID) == f"ur.ping.{UUID}"
    assert ur.sysinfo_key(UUID, "1f2e3d4c") == f"ur.sysinfo.{UUID}.1f2e3d4c"
    assert ur.startup_key(UUID) == f"ur.startup.{UUID}"
    assert ur.reply_key(UUID, "ab12cd34") == f"ur.execute-reply.{UUID}.ab12cd34"
    assert ur.ack_key("c0ffee", UUID) == f"ur.ackc0ffee.{UUID}"


def test_timestamps_are_javascripts_iso_strings():
    assert ur.timestamp(1700000000.1234) == "2023-11-14T22:13:20.123Z"
    datetime.fromisoformat(ur.timestamp().replace("Z", "+00:00"))


def test_execute_requests():
    body = json.dumps({"type": "script", "script": "#!/bin/bash\necho hi\n", "args": ["a", 2, True], "env": {},
                       "origin": {"user": "root"}, "timestamp": "x"}).encode()
    assert ur.parse_request(f"ur.execute.{UUID}.ab12cd34", body) == ur.Execute(
        "ab12cd34", "script", "#!/bin/bash\necho hi\n", ("a", "2", "true"), {})
    req = ur.parse_request(f"ur.execute.{UUID}-{MAC}.r1", b'{"type": "file", "file": "/usr/bin/id", '
                                                          b'"env": {"PATH": "/usr/bin", "N": 1}}')
    assert req == ur.Execute("r1", "file", "/usr/bin/id", (), {"PATH": "/usr/bin", "N": "1"})
    no_env = ur.parse_request(f"ur.execute.{UUID}.r2", b'{"type": "script", "script": "#!/bin/sh\\n"}')
    assert isinstance(no_env, ur.Execute) and no_env.env is None and no_env.args == ()


@pytest.mark.parametrize("body, why", [
    (b"", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[" * 100000, "not JSON (RecursionError"),
    (b"null", "JSON NoneType, not an object"),
    (b'"script"', "JSON str, not an object"),
    (b"{}", "type None is neither"),
    (b'{"type": "exec", "script": "x"}', "type 'exec' is neither"),
    (b'{"type": "script", "script": ""}', "needs 'script'"),
    (b'{"type": "file", "script": "/bin/true"}', "needs 'file'"),
    (b'{"type": "script", "script": "#!/bin/sh\\n", "args": [{"a": 1}]}', "'args'"),
    (b'{"type": "script", "script": "#!/bin/sh\\n", "args": "a b"}', "'args'"),
    (b'{"type": "script", "script": "#!/bin/sh\\n", "env": ["A=1"]}', "'env' is not an object"),
    (b'{"type": "script", "script": "#!/bin/sh\\n", "env": {"A=B": "1"}}', "'env' entry 'A=B'"),
    (b'{"type": "script", "script": "#!/bin/sh\\n", "env": {"A": null}}', "'env' entry 'A'"),
    (b'{"type": "file", "file": "/bin/true\\u0000"}', "NUL"),
])
def test_malformed_execute_requests_get_a_reason(body, why):
    req = ur.parse_request(f"ur.execute.{UUID}.bad1", body)
    assert isinstance(req, ur.BadRequest) and req.reqid == "bad1" and why in req.why, req
    reply = ur.bad_request(req.why).reply()
    assert reply["exit_status"] == ur.BAD_REQUEST != 0 and why in reply["stderr"] and reply["stdout"] == ""


def test_broadcasts_and_other_keys():
    assert ur.parse_request("ur.broadcast.sysinfo.abc", b"anything, not even JSON") == ur.SysinfoRequest("abc")
    assert "only 'sysinfo'" in ur.parse_request("ur.broadcast.reboot.abc", b"{}").why
    assert isinstance(ur.parse_request("ur.execute.x", b"{}"), ur.Ignored)
    assert isinstance(ur.parse_request("ur.other.x.y", b"{}"), ur.Ignored)
    assert isinstance(ur.parse_request(f"ur.execute.{UUID}.", b"{}"), ur.Ignored)


def test_pings():
    assert ur.parse_ping(b'{"client_id": "c0ffee", "id": "42"}') == ur.Ping("c0ffee", "42")
    assert ur.parse_ping(b'{"client_id": "c0ffee", "id": 7}') == ur.Ping("c0ffee", 7)
    for bad in (b"garbage", b"{" * 100000, b"[]", b'{"id": 1}', b'{"client_id": "c"}', b'{"client_id": true, "id": 1}'):
        assert isinstance(ur.parse_ping(bad), ur.Ignored), bad


# ---- Running programs

def script(tmp_path, text, args=(), env=None, cap=ux.MAX_OUTPUT):
    return ux.run_script(text, args, env, tmpdir=str(tmp_path), cap=cap)


def test_a_script_runs_with_its_args_and_outputs(tmp_path):
    r = script(tmp_path, '#!/bin/bash\necho "$# [$1] [$2]"\necho oops >&2\nexit 3\n', ["a b", "*"], {})
    assert r.reply() == {"exit_status": 3, "stdout": "2 [a b] [*]\n", "stderr": "oops\n"}
    assert not r.reboot and list(tmp_path.iterdir()) == []           # the script file is gone


def test_env_replaces_the_whole_environment(tmp_path):
    env = {"A": "1", "B": "two words", "LC_ALL": "C.UTF-8"}
    r = script(tmp_path, "#!/usr/bin/python3\nimport json, os\nprint(json.dumps(dict(os.environ)))\n", [], env)
    assert json.loads(r.stdout) == env
    assert ux.run_program(["/usr/bin/env"], {}).stdout == ""


def test_without_env_the_agents_environment_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("UR_TEST_MARK", "here")
    assert script(tmp_path, "#!/bin/sh\necho $UR_TEST_MARK\n").stdout == "here\n"


def test_the_script_file_is_private_and_executable(tmp_path):
    r = script(tmp_path, '#!/bin/sh\nstat -c %a "$0"\n', [], {})
    assert r.stdout == "700\n"


def test_a_script_without_a_shebang_is_an_error_not_a_crash(tmp_path):
    r = script(tmp_path, "echo hi\n", [], {})
    assert r.exit_status == ux.CANNOT_EXECUTE and r.stdout == ""
    assert r.stderr.startswith("ENOEXEC: ") and "#! line" in r.stderr


def test_a_missing_or_unexecutable_file(tmp_path):
    r = ux.run_program([str(tmp_path / "nope")], {}, what=str(tmp_path / "nope"))
    assert r.exit_status == ux.NOT_FOUND and r.stderr.startswith("ENOENT: ") and "nope" in r.stderr
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    r = ur.run_execute(ur.Execute("r", "file", str(plain)))
    assert r.exit_status == ux.CANNOT_EXECUTE and r.stderr.startswith("EACCES: ")


def test_exit_113_replies_0_and_asks_for_a_reboot(tmp_path):
    r = script(tmp_path, "#!/bin/sh\necho bye\nexit 113\n", [], {})
    assert r.reply() == {"exit_status": 0, "stdout": "bye\n", "stderr": ""} and r.reboot


def test_a_signal_is_128_plus_its_number(tmp_path):
    assert script(tmp_path, "#!/bin/sh\nkill -9 $$\n").exit_status == 137


def test_output_is_capped_and_the_program_runs_to_its_end(tmp_path):
    end = tmp_path / "out" / "ran-to-the-end"
    end.parent.mkdir()
    r = script(tmp_path, "#!/bin/sh\nhead -c 3000 /dev/zero | tr '\\0' o\nhead -c 50 /dev/zero | tr '\\0' e >&2\n"
                         f"echo done > {end}\n", cap=1000)
    assert r.stdout == "o" * 1000 and end.read_text() == "done\n"
    assert r.stderr.startswith("e" * 50) and "output cut at 1000 bytes" in r.stderr
    assert len(r.stderr.encode()) <= 1000


def test_stderr_over_the_cap_keeps_the_note_within_it(tmp_path):
    r = script(tmp_path, "#!/bin/sh\nhead -c 5000 /dev/zero | tr '\\0' e >&2\n", cap=1000)
    assert len(r.stderr.encode()) <= 1000 and r.stderr.endswith("(stdout and stderr each)\n")
    assert r.stdout == ""


def test_capped_text():
    assert ux.capped(b"abc", 5) == "abc"
    assert ux.capped("é".encode() * 3, 5) == "éé"                     # a cut character is dropped
    assert ux.capped(b"a\xffb", 10) == "a\ufffdb"                      # as Node.js decodes
    assert ux.MAX_OUTPUT == 5 * 2**20


def test_scripts_run_side_by_side(tmp_path):
    """Concurrent scripts in threads (as the agent runs them): none fails
    with ETXTBSY and each gets its own output."""
    results: dict[int, ux.Result] = {}

    def one(n: int) -> None:
        results[n] = script(tmp_path, f"#!/bin/sh\necho {n}\n", [], {})

    threads = [threading.Thread(target=one, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {n: r.stdout for n, r in results.items()} == {n: f"{n}\n" for n in range(16)}


# ---- Setup state, back-off, logging

def test_setup_state(tmp_path):
    path = tmp_path / "triton-setup-state.json"
    assert ur.setup_complete(path) == (False, [])
    path.write_text('{"complete": true, "current_state": "setup_complete"}')
    assert ur.setup_complete(path) == (True, [])
    path.write_text('{"complete": false}')
    assert ur.setup_complete(path) == (False, [])
    path.write_text("{half")
    done, problems = ur.setup_complete(path)
    assert not done and len(problems) == 1 and "not JSON" in problems[0]
    path.write_text("[true]")
    assert ur.setup_complete(path)[0] is False
    path.unlink()
    path.mkdir()
    assert ur.setup_complete(path)[0] is False


def test_the_setup_state_is_sysinfos():
    """One place for the path: joysetup.sh's /opt/triton/config when it
    exists, else /usr/triton/config."""
    agent = ur.Agent(ur.Settings())
    assert agent.setup_state() == si.setup_state_path()
    assert agent.setup_state().name == "triton-setup-state.json"


def test_backoff_doubles_to_30_seconds():
    b = ur.Backoff()
    assert [b.next() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    b.reset()
    assert b.next() == 1


def test_each_condition_is_logged_once_until_it_changes():
    lines: list[str] = []
    r = ur.Reporter(lines.append)
    for _ in range(5):
        r.report("connection", "cannot connect: Connection refused")
    r.report("connection", "cannot connect: No route to host")
    r.report("connection", "cannot connect: No route to host")
    r.clear("connection")
    r.report("connection", "cannot connect: No route to host")
    assert lines == ["cannot connect: Connection refused", "cannot connect: No route to host",
                     "cannot connect: No route to host"]


def test_amqp_errors_read_the_same_at_every_retry():
    import pika.exceptions as pe
    refused = ConnectionRefusedError(111, "Connection refused")
    assert ur.amqp_error(refused) == "Connection refused"
    assert ur.amqp_error(pe.ConnectionClosedByBroker(320, "CONNECTION_FORCED - shutdown")) == \
        "the broker closed the connection: (320) CONNECTION_FORCED - shutdown"
    assert ur.amqp_error(pe.ChannelClosedByBroker(405, "RESOURCE_LOCKED - queue")) == \
        "the broker refused: (405) RESOURCE_LOCKED - queue"
    assert "refused the login" in ur.amqp_error(pe.ProbableAuthenticationError("ACCESS_REFUSED"))


def test_options_and_the_reboot_command():
    s = ur.parse_args([], {})
    assert s == ur.Settings() and s.reboot_command == ("systemctl", "reboot")
    assert s.startup_marker == Path("/run/triton/ur-startup") and s.sysinfo_period == 60
    s = ur.parse_args(["--sysinfo-command", "cat '/tmp/a b.json'", "--sysinfo-period", "0.5"],
                      {"TRITON_UR_REBOOT_COMMAND": "touch /tmp/rebooted"})
    assert s.sysinfo_command == ("cat", "/tmp/a b.json") and s.sysinfo_period == 0.5
    assert s.reboot_command == ("touch", "/tmp/rebooted")


def test_the_agent_is_executable_with_debians_python():
    agent = REPO / "mkosi.extra/usr/lib/triton/triton_ur.py"
    assert os.access(agent, os.X_OK)
    first = agent.read_text().splitlines()[0]
    # -I, not -S: pika is in dist-packages, which site adds.
    assert first == "#!/usr/bin/python3 -I"
