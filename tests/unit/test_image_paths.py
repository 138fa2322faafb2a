"""The platform's own programs that units, generators and links run by path
are where they say, executable: a module moved or renamed cannot leave a
unit pointing at nothing (the boot tests would find it only on a node)."""

import os
from pathlib import Path

import pytest

from hooks import bootfiles, postinst
from hooks.config import load

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "mkosi.extra"
INITRD = REPO / "mkosi.initrd/mkosi.extra"
OURS = ("/usr/lib/triton/", "/usr/sbin/", "/usr/triton/bin/")


def units(tree: Path, rendered: dict[str, str]) -> dict[str, str]:
    found = {str(p): p.read_text() for p in (tree / "usr/lib/systemd/system").glob("*.service")}
    return {**found, **rendered}


def commands(text: str) -> list[str]:
    """The programs a unit's Exec lines run (each word that is one of ours)."""
    out = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("Exec"):
            out += [w.lstrip("-@:+!") for w in value.split() if w.lstrip("-@:+!").startswith(OURS)]
    return out


def executable(tree: Path, path: str) -> bool:
    target = tree / path.lstrip("/")
    while target.is_symlink():
        link = os.readlink(target)
        target = (tree / link.lstrip("/")) if link.startswith("/") else target.parent / link
    return target.is_file() and os.access(target, os.X_OK)


@pytest.mark.parametrize("tree,rendered", [
    (ROOT, lambda: postinst.unit_files(load())),
    (INITRD, lambda: bootfiles.initrd_units(load())),
], ids=["root", "initrd"])
def test_every_program_a_unit_runs_is_there(tree, rendered):
    found = {name: commands(text) for name, text in units(tree, rendered()).items()}
    assert any(found.values())
    for name, programs in found.items():
        for program in programs:
            # The initrd runs the root's triton-pool inside /sysroot (in-sysroot).
            where = ROOT if tree == INITRD and program.endswith(".py") else tree
            assert executable(where, program), f"{name} runs {program}, which is not an executable in {where}"


def test_every_link_to_our_programs_leads_to_one():
    links = [p for p in ROOT.rglob("*") if p.is_symlink() and "triton" in os.readlink(p)]
    assert len(links) >= 8
    for link in links:
        assert executable(ROOT, "/" + str(link.relative_to(ROOT))), f"{link} -> {os.readlink(link)}"
