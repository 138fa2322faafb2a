"""What is inside the initrd: everything it runs can load its libraries."""

import subprocess
from pathlib import Path

import pytest

from tests.lib.cpio_initrd import unpack_initrd


@pytest.fixture(scope="module")
def initrd_tree(platform, tmp_path_factory) -> Path:
    tree = tmp_path_factory.mktemp("initrd")
    unpack_initrd(platform.initrd, tree)
    return tree


def elf_files(tree: Path) -> list[Path]:
    out = []
    for p in tree.rglob("*"):
        if p.is_file() and not p.is_symlink() and p.stat().st_size > 4:
            with p.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    out.append(p)
    return out


def needed(elf: Path) -> list[str]:
    dyn = subprocess.run(["readelf", "-d", str(elf)], capture_output=True, text=True).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in dyn.splitlines() if "(NEEDED)" in line]


def test_the_initrd_has_its_fetch_tools(initrd_tree):
    for tool in ("usr/bin/curl", "usr/bin/sha256sum", "usr/lib/triton/fetch-rootfs",
                 "usr/lib/systemd/systemd-networkd", "usr/bin/udevadm"):
        assert (initrd_tree / tool).exists(), tool
    assert list(initrd_tree.glob("usr/lib/modules/*/kernel/drivers/net/virtio_net.ko*"))


def test_every_program_and_library_in_the_initrd_finds_its_libraries(initrd_tree):
    """Trimming the initrd (RemoveFiles= in mkosi.initrd/mkosi.conf) must not
    take a library that something left in it links."""
    libdirs = [initrd_tree / d for d in ("usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/lib",
                                         "usr/lib/x86_64-linux-gnu/systemd")]
    elves = elf_files(initrd_tree)
    assert len(elves) > 100
    missing = []
    for elf in elves:
        if "/modules/" in str(elf):
            continue
        for lib in needed(elf):
            if not any((d / lib).exists() for d in libdirs):
                missing.append(f"{elf.relative_to(initrd_tree)} needs {lib}")
    assert not missing, "\n".join(missing)
