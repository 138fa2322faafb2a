"""bench/boot.py's instruction-counting mode: QEMU's options, the busy loop
it adds to an initrd, and the milestones it reads from a console log."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.lib import node


def bench():
    spec = importlib.util.spec_from_file_location("bench_boot", REPO / "bench/boot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_icount_options_reach_qemu(monkeypatch):
    monkeypatch.setattr(node, "KVM", False)
    monkeypatch.setenv("TRITON_TEST_ICOUNT", "shift=3,sleep=off")
    argv = node.qemu_base(2048)
    assert argv[argv.index("-icount") + 1] == "shift=3,sleep=off"
    monkeypatch.delenv("TRITON_TEST_ICOUNT")
    assert "-icount" not in node.qemu_base(2048)


@pytest.mark.parametrize("bad", ["3", "shift=11", "shift=3,sleep=maybe", "shift=auto", "shift=3;reboot"])
def test_bad_icount_options_are_refused_naming_the_variable(monkeypatch, bad):
    monkeypatch.setattr(node, "KVM", False)
    monkeypatch.setenv("TRITON_TEST_ICOUNT", bad)
    with pytest.raises(ValueError, match="TRITON_TEST_ICOUNT"):
        node.qemu_base(2048)


def test_icount_is_refused_under_kvm(monkeypatch):
    monkeypatch.setattr(node, "KVM", True)
    monkeypatch.setenv("TRITON_TEST_ICOUNT", "shift=3")
    with pytest.raises(ValueError, match="TCG"):
        node.qemu_base(2048)


def test_the_busy_loop_is_a_program_that_runs_and_exits_0(tmp_path: Path):
    b = bench()
    prog = tmp_path / "busy"
    prog.write_bytes(b.busy_loop_elf(2))
    prog.chmod(0o755)
    assert subprocess.run([str(prog)], timeout=30).returncode == 0
    # `mov ecx, imm32` right after the headers: one loop of two instructions
    # per pair of the million instructions asked for.
    code = b.busy_loop_elf(100)[120:]
    assert code[0] == 0xB9 and int.from_bytes(code[1:5], "little") == 50_000_000


def test_milestones_are_read_on_the_guests_clock(tmp_path: Path):
    log = tmp_path / "console.log"
    log.write_text(
        "[    7.559325] Run /init as init process\r\n"
        "[   33.761171] fetch-rootfs[192]: triton-fetch-rootfs: downloaded 146 MiB in 5s (attempt 1)\r\n"
        "[   37.817458] fetch-rootfs[192]: triton-fetch-rootfs: platform X: root verified (sha256 ab) and mounted\r\n"
        "[    4.596655] systemd[1]: systemd 257.13-1~deb13u1 running in system mode (+PAM)\r\n"
        "[   62.464958] systemd[1]: systemd 257.13-1~deb13u1 running in system mode (+PAM)\r\n"
        "[   90.100000] systemd[1]: Reached target multi-user.target - Multi-User System.\r\n"
        "[   90.200000] systemd[1]: Started serial-getty@ttyS1.service - Serial Getty on ttyS1.\r\n")
    assert bench().milestones(log) == {
        "initrd": 7.559325, "downloaded": 33.761171, "verified": 37.817458,
        "switch-root": 62.464958, "multi-user": 90.1, "login": 90.2}


def _results(ours_login: float, live_login: float) -> dict:
    marks = {"initrd": 10.0, "switch-root": 40.0}
    return {
        "ours, PXE": [(80.0, 50.0, {**marks, "login": ours_login}), (82.0, 51.0, {**marks, "login": ours_login + 2})],
        "live-boot, PXE": [(70.0, 30.0, {"initrd": 9.0, "login": live_login}),
                           (71.0, 31.0, {"initrd": 9.0, "login": live_login})],
    }


def test_the_readme_table_holds_the_runs_medians_and_the_ratio_to_live_boot():
    mod = bench()
    table = mod.readme_table(_results(100.0, 80.0), "20261202T000000Z", "QEMU 10.0.2", "shift=2", 2)
    lines = table.splitlines()
    assert lines[0].startswith("Platform 20261202T000000Z, QEMU 10.0.2, TCG; instruction counting: `-icount shift=2`")
    assert "| milestone | ours, PXE | live-boot, PXE |" in lines
    assert "| initrd (guest s) | 10.0 | 9.0 |" in lines
    assert "| switch-root (guest s) | 40.0 | - |" in lines
    assert "| login (guest s) | 101.0 | 80.0 |" in lines
    assert "| login (wall s from QEMU's start) | 81.0 | 70.5 |" in lines
    # 101 / 80: the medians, not one run.
    assert "Ours over PXE, to the login prompt: 1.26x live-boot's guest time." in lines


def test_the_table_replaces_only_what_is_between_the_readmes_markers():
    mod = bench()
    readme = f"# Figures\nbefore\n{mod.BEGIN}\nold table\n{mod.END}\nafter\n"
    out = mod.with_table(readme, "new table\n")
    assert out == f"# Figures\nbefore\n{mod.BEGIN}\nnew table\n{mod.END}\nafter\n"
    assert mod.with_table(out, "new table\n") == out
    # The repository's README has the markers the bench writes between.
    mod.with_table((REPO / "README.md").read_text(), "x\n")
    with pytest.raises(ValueError, match="README.md: needs one"):
        mod.with_table("no markers here\n", "x\n")
    with pytest.raises(ValueError, match="README.md: needs one"):
        mod.with_table(f"{mod.END}\n{mod.BEGIN}\n", "x\n")
