"""/usr/triton/bin/install-default-agents, which Triton's agentsetup.sh runs
on a Linux compute node: the agents the platform carries, installed as npm
would (copied whole, npm/postinstall.sh run in place); none carried is said
and is not a failure."""

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "mkosi.extra/usr/triton/bin/install-default-agents"


def run(tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TOOL)], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "TRITON_DEFAULT_AGENTS": str(tmp / "defaults"),
                               "TRITON_AGENT_DIR": str(tmp / "agents")})


def agent(tmp: Path, name: str, postinstall: str) -> None:
    d = tmp / "defaults" / name
    (d / "npm").mkdir(parents=True)
    (d / "package.json").write_text(f'{{"name": "{name}"}}\n')
    (d / "npm/postinstall.sh").write_text(f"#!/bin/bash\n{postinstall}\n")


def test_none_carried_is_said_and_succeeds(tmp_path):
    res = run(tmp_path)
    assert res.returncode == 0, res.stderr
    assert "the platform carries no agents" in res.stdout
    assert not (tmp_path / "agents").exists()


def test_each_carried_agent_is_installed_and_its_postinstall_runs_in_place(tmp_path):
    agent(tmp_path, "a-agent", 'echo "$(pwd) $npm_config_prefix $npm_config_etc $npm_package_name '
                               '$npm_package_version" > ran')
    (tmp_path / "defaults/a-agent/package.json").write_text('{"name": "a-agent", "version": "1.2.3"}\n')
    agent(tmp_path, "b-agent", "true")
    (tmp_path / "defaults/not-an-agent").mkdir()
    res = run(tmp_path)
    assert res.returncode == 0, res.stderr
    modules = tmp_path / "agents/lib/node_modules"
    assert sorted(p.name for p in modules.iterdir()) == ["a-agent", "b-agent"]
    prefix = tmp_path / "agents"
    want = [str(modules / "a-agent"), str(prefix), str(prefix / "etc"), "a-agent", "1.2.3"]
    assert (modules / "a-agent/ran").read_text().split() == want
    assert "installed a-agent in" in res.stdout and "installed b-agent in" in res.stdout
    # Again: replaced whole, nothing left of the last one.
    (modules / "a-agent/stale").write_text("x")
    assert run(tmp_path).returncode == 0
    assert not (modules / "a-agent/stale").exists()


def test_the_agent_dir_comes_from_systemd_env_when_not_in_the_environment(tmp_path):
    agent(tmp_path, "a-agent", "true")
    (tmp_path / "config").mkdir()
    (tmp_path / "config/systemd.env").write_text(f"PATH=/x\nTRITON_AGENT_DIR={tmp_path / 'elsewhere'}\n")
    res = subprocess.run([str(TOOL)], capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "TRITON_DEFAULT_AGENTS": str(tmp_path / "defaults"),
                              "TRITON_CONFIG_DIR": str(tmp_path / "config")})
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "elsewhere/lib/node_modules/a-agent/package.json").exists()


def test_a_failing_postinstall_fails_and_names_the_agent(tmp_path):
    agent(tmp_path, "bad-agent", "exit 3")
    res = run(tmp_path)
    assert res.returncode == 1
    assert "bad-agent: npm/postinstall.sh failed" in res.stderr


def test_no_systemd_env_and_no_agent_dir_in_the_environment_is_fine(tmp_path):
    res = subprocess.run([str(TOOL)], capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "TRITON_DEFAULT_AGENTS": str(tmp_path / "defaults"),
                              "TRITON_CONFIG_DIR": str(tmp_path / "absent")})
    assert res.returncode == 0 and "the platform carries no agents" in res.stdout, res.stderr
