"""triton-config-dir: /usr/triton/config laid out from booter's files (this
boot's, else the pool's kept copies), a link to /opt/triton/config on a node
with a pool, and missing or malformed files left absent, said on the console."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_configdir as cd  # noqa: E402

NODE_CONFIG = b"root_shadow='$6$x$y'\nsapi_domain='sapi.dc.example'\n"
NETWORKING = json.dumps({"nictags": [{"name": "admin", "mac": "52:54:00:12:34:56"}],
                         "resolvers": ["10.0.2.3"]}, indent=2).encode()
ENV = (REPO / "mkosi.extra/usr/triton/defaults/systemd.env").read_bytes()


@pytest.fixture
def layout(tmp_path) -> cd.Layout:
    lay = cd.Layout(usr_config=tmp_path / "usr/triton/config", opt=tmp_path / "opt",
                    pool_config=tmp_path / "opt/triton/config", boot=tmp_path / "run/triton/boot",
                    kept=tmp_path / "zones/config/boot", default_env=tmp_path / "defaults/systemd.env")
    for d in (lay.usr_config.parent, lay.opt, lay.boot, lay.kept, lay.default_env.parent):
        d.mkdir(parents=True)
    lay.default_env.write_bytes(ENV)
    return lay


@pytest.fixture
def pool(monkeypatch, layout):
    """/opt is the pool's zones/opt."""
    monkeypatch.setattr(cd.os.path, "ismount", lambda p: Path(p) == layout.opt)


def deliver(layout: cd.Layout, node_config: bytes = NODE_CONFIG, networking: bytes = NETWORKING,
            with_hash: bool = True) -> None:
    (layout.boot / "node.config").write_bytes(node_config)
    (layout.boot / "triton-networking.json").write_bytes(networking)
    if with_hash:
        (layout.boot / "triton-networking.json.hash").write_text(hashlib.sha1(networking).hexdigest())


def test_without_a_pool_a_directory_in_ram_with_this_boots_files(layout):
    deliver(layout)
    lines = cd.lay_out(layout, "0")
    usr = layout.usr_config
    assert usr.is_dir() and not usr.is_symlink()
    assert (usr / "node.config").read_bytes() == NODE_CONFIG
    assert (usr / "node.config").stat().st_mode & 0o777 == 0o600
    assert (usr / "triton-networking.json").read_bytes() == NETWORKING
    assert (usr / "triton-networking.json.hash").read_text() == hashlib.sha1(NETWORKING).hexdigest()
    assert (usr / "systemd.env").read_bytes() == ENV
    assert lines[0] == f"{usr} is a directory in RAM (no system pool is mounted)"
    assert f"node.config from {layout.boot / 'node.config'}" in lines
    assert f"triton-networking.json from {layout.boot / 'triton-networking.json'} (matches its .hash)" in lines
    assert not any("PROBLEM" in line for line in lines)
    assert not layout.pool_config.exists()


def test_with_a_pool_a_link_to_opt_triton_config(layout, pool):
    deliver(layout, with_hash=False)
    lines = cd.lay_out(layout, "0")
    usr = layout.usr_config
    assert usr.is_symlink() and os.readlink(usr) == str(layout.pool_config)
    assert layout.pool_config.is_dir()
    assert (layout.pool_config / "node.config").read_bytes() == NODE_CONFIG
    assert (layout.pool_config / "triton-networking.json").read_bytes() == NETWORKING
    assert not (layout.pool_config / "triton-networking.json.hash").exists()
    assert lines[0] == f"{usr} is a link to {layout.pool_config} (kept on the system pool)"


def test_a_set_up_nodes_systemd_env_and_setup_state_stay(layout, pool):
    layout.pool_config.mkdir(parents=True)
    (layout.pool_config / "systemd.env").write_text("PATH=/custom\n")
    (layout.pool_config / "triton-setup-state.json").write_text('{"complete": true}')
    (layout.pool_config / "triton-networking.json.hash").write_text("stale")
    deliver(layout, with_hash=False)
    lines = cd.lay_out(layout, "0")
    assert (layout.pool_config / "systemd.env").read_text() == "PATH=/custom\n"
    assert (layout.pool_config / "triton-setup-state.json").read_text() == '{"complete": true}'
    assert not (layout.pool_config / "triton-networking.json.hash").exists()
    assert not any(line.startswith("systemd.env") for line in lines)


def test_a_boot_that_delivers_none_uses_the_pools_kept_copies(layout, pool):
    (layout.kept / "node.config").write_bytes(b"kept='1'\n")
    (layout.kept / "triton-networking.json").write_bytes(NETWORKING)
    lines = cd.lay_out(layout, "0")
    assert (layout.usr_config / "node.config").read_bytes() == b"kept='1'\n"
    assert (layout.usr_config / "triton-networking.json").read_bytes() == NETWORKING
    assert f"node.config from {layout.kept / 'node.config'}" in lines


def test_this_boots_file_wins_over_the_kept_copy(layout):
    (layout.kept / "node.config").write_bytes(b"kept='1'\n")
    deliver(layout)
    cd.lay_out(layout, "0")
    assert (layout.usr_config / "node.config").read_bytes() == NODE_CONFIG


def test_nothing_delivered_nothing_kept_leaves_them_absent_and_says_so(layout):
    lines = cd.lay_out(layout, "0")
    usr = layout.usr_config
    assert not (usr / "node.config").exists() and not (usr / "triton-networking.json").exists()
    assert (usr / "systemd.env").is_file()
    assert (f"PROBLEM: no node.config was delivered with this boot and the pool keeps none: "
            f"{usr / 'node.config'} is absent") in lines
    assert any(line.startswith("PROBLEM: no triton-networking.json was delivered") for line in lines)


@pytest.mark.parametrize("raw,why", [
    (b"", "no key='value' line in it"),
    (b"<html><body>502 Bad Gateway</body></html>\n", "no key='value' line in it"),
    (b"# only comments\n\n", "no key='value' line in it"),
    (b"a='\xff'\n", "not UTF-8 text"),
    (b"a='1'\n\0\0\0", "NUL bytes"),
])
def test_a_malformed_node_config_is_absent_and_said(layout, pool, raw, why):
    layout.pool_config.mkdir(parents=True)
    (layout.pool_config / "node.config").write_bytes(b"from='an earlier boot'\n")
    deliver(layout, node_config=raw)
    lines = cd.lay_out(layout, "0")
    assert not (layout.usr_config / "node.config").exists()
    problem = [line for line in lines if line.startswith(f"PROBLEM: {layout.boot / 'node.config'}: ")]
    assert len(problem) == 1 and why in problem[0] and problem[0].endswith(" is absent"), lines
    # networking.json is placed all the same.
    assert (layout.usr_config / "triton-networking.json").read_bytes() == NETWORKING


@pytest.mark.parametrize("raw,hash_of,why", [
    (NETWORKING[: len(NETWORKING) // 2], None, "not valid JSON"),
    (b"\xff\xfe", None, "not valid JSON"),
    (b"[1, 2]", None, ""),
    (NETWORKING, b"other", "does not match its .hash"),
    (b"[" * 100000, None, "not valid JSON"),
])
def test_a_malformed_networking_json_is_absent_and_said(layout, raw, hash_of, why):
    deliver(layout, networking=raw, with_hash=False)
    if hash_of is not None:
        (layout.boot / "triton-networking.json.hash").write_text(hashlib.sha1(hash_of).hexdigest())
    lines = cd.lay_out(layout, "0")
    usr = layout.usr_config
    assert not (usr / "triton-networking.json").exists() and not (usr / "triton-networking.json.hash").exists()
    problem = [line for line in lines if line.startswith(f"PROBLEM: {layout.boot / 'triton-networking.json'}: ")]
    assert len(problem) == 1 and why in problem[0], lines
    assert (usr / "node.config").read_bytes() == NODE_CONFIG


def test_a_hash_without_networking_json_this_boot_does_not_judge_the_kept_copy(layout):
    (layout.kept / "triton-networking.json").write_bytes(NETWORKING)
    (layout.boot / "triton-networking.json.hash").write_text("0" * 40)
    cd.lay_out(layout, "0")
    assert (layout.usr_config / "triton-networking.json").read_bytes() == NETWORKING
    assert not (layout.usr_config / "triton-networking.json.hash").exists()


def test_a_second_run_keeps_the_directory_it_made(layout, pool):
    deliver(layout)
    cd.lay_out(layout, "0")
    cd.lay_out(layout, "0")
    assert layout.usr_config.is_symlink() and (layout.pool_config / "node.config").is_file()


def test_a_directory_joysetup_replaced_with_its_link_is_kept(layout):
    target = layout.opt / "triton/config"
    target.mkdir(parents=True)
    layout.usr_config.symlink_to(target)
    deliver(layout)
    lines = cd.lay_out(layout, "0")
    assert (target / "node.config").is_file() and "link to" in lines[0]


def test_main_says_what_went_wrong_instead_of_a_traceback(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cd, "INSTANCES", tmp_path / "missing.json")
    assert cd.main() == 1
    out = capsys.readouterr().out
    assert out.startswith(f"triton-config-dir: PROBLEM: /usr/triton/config not laid out: SettingsError: "
                          f"{tmp_path / 'missing.json'}: cannot read the settings the platform build wrote")


def test_a_pool_set_up_after_the_boot_began_takes_over_the_ram_directory(layout, monkeypatch):
    """triton-pool setup on a running node mounts zones/opt and runs this
    again: what the RAM directory holds (a setup script's state, an
    operator's systemd.env) moves onto the pool, and the directory becomes
    the link, as joysetup.sh's install_configs does it."""
    deliver(layout)
    cd.lay_out(layout, "0")
    (layout.usr_config / "triton-setup-state.json").write_text('{"complete": false}')
    assert layout.usr_config.is_dir() and not layout.usr_config.is_symlink()
    monkeypatch.setattr(cd.os.path, "ismount", lambda p: Path(p) == layout.opt)
    lines = cd.lay_out(layout, "0")
    assert layout.usr_config.is_symlink() and os.readlink(layout.usr_config) == str(layout.pool_config)
    assert (layout.pool_config / "triton-setup-state.json").read_text() == '{"complete": false}'
    assert (layout.pool_config / "node.config").read_bytes() == NODE_CONFIG
    assert lines[0] == f"{layout.usr_config} is a link to {layout.pool_config} (kept on the system pool)"
