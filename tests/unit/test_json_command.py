"""/usr/triton/bin/json, run with the host's Node.js (tools/hostsetup.py
installs it): the calls Triton's setup scripts and agents' install scripts
make on a compute node."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
JSON = REPO / "mkosi.extra/usr/triton/bin/json"
SYSINFO = {"UUID": "3e4f5a6b-7c8d-4e9f-8a0b-1c2d3e4f5a6b", "MiB of Memory": 2048,
           "Boot Parameters": {"headnode": "false"}, "Disks": {"vda": {"Size in GB": 2}}}
STATE = {"node_type": "computenode", "current_state": "", "seen_states": [], "complete": False}


def run(args: list[str], stdin: Optional[str] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", str(JSON), *args], input=stdin, capture_output=True, text=True, timeout=60)


def out(args: list[str], stdin: Optional[str] = None) -> str:
    res = run(args, stdin)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_it_is_a_node_script_for_usr_node():
    assert JSON.read_text().startswith("#!/usr/node/bin/node\n")


def test_lookups_as_joysetup_makes_them():
    assert out(["MiB of Memory"], json.dumps(SYSINFO)) == "2048\n"
    assert out(["UUID"], json.dumps(SYSINFO)) == SYSINFO["UUID"] + "\n"
    assert out(["Boot Parameters.headnode"], json.dumps(SYSINFO)) == "false\n"
    assert out(["Disks.vda", "UUID"], json.dumps(SYSINFO)) == '{\n  "Size in GB": 2\n}\n' + SYSINFO["UUID"] + "\n"
    assert out(["no such key"], json.dumps(SYSINFO)) == ""
    assert out(["-j", "UUID"], json.dumps(SYSINFO)) == json.dumps(SYSINFO["UUID"]) + "\n"


def test_a_file_and_an_array_index(tmp_path):
    (tmp_path / "pool.json").write_text('{"capacity": 4294967296, "vdevs": [{"type": "mirror"}]}')
    assert out(["-f", str(tmp_path / "pool.json"), "capacity", "vdevs.0.type"]) == "4294967296\nmirror\n"


def test_update_setup_state_as_joysetup_does():
    code = ("this.current_state = 'zpool_created'; this.last_updated = new Date().toISOString(); "
            "this.seen_states.push('zpool_created');")
    state = json.loads(out(["-e", code], json.dumps(STATE)))
    assert state["current_state"] == "zpool_created" and state["seen_states"] == ["zpool_created"]
    assert state["last_updated"].endswith("Z")


def test_ntpdig_offset_as_joysetup_reads_it():
    assert out(["-e", "this.offset=Math.floor(Math.abs(this.offset))", "offset"], '{"offset": -12.7}') == "12\n"


def test_sapi_answer_with_headers_as_an_agents_postinstall_reads_it():
    answer = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[{"uuid": "s1"}, {"uuid": "s2"}]'
    assert out(["-Ha", "uuid"], answer) == "s1\ns2\n"
    assert out(["-H", "-a", "uuid"], '[{"uuid": "s1"}]') == "s1\n"


def test_pretty_prints_its_input():
    assert out([], '{"instance":"x","localManifestDirs":["/opt"]}') == \
        '{\n  "instance": "x",\n  "localManifestDirs": [\n    "/opt"\n  ]\n}\n'


def test_conditions_keys_and_validate():
    assert out(["-a", "-c", "this.n > 1", "n"], '[{"n": 1}, {"n": 2}, {"n": 3}]') == "2\n3\n"
    assert json.loads(out(["-k"], '{"a": 1, "b": 2}')) == ["a", "b"]
    assert out(["--validate"], "{}") == ""


@pytest.mark.parametrize("args,stdin,error", [
    ([], "not json", "json: input is not JSON"),
    ([], "", "json: input is not JSON"),
    (["-z"], "{}", "json: unknown option -z"),
    (["-f"], "{}", "json: -f needs a value"),
    (["-f", "/nonexistent/file"], None, "json: cannot read /nonexistent/file"),
    (["-a", "x"], '{"x": 1}', "json: -a: the input is not an array"),
    (["-e", "this.a.b.c = 1"], "{}", "json: -e/-c code failed: TypeError"),
    (["-c", "syntax error here"], "{}", "json: -e/-c code failed: SyntaxError"),
])
def test_errors_say_what_and_fail(args, stdin, error):
    res = run(args, stdin)
    assert res.returncode == 1 and res.stderr.startswith(error), res.stderr
