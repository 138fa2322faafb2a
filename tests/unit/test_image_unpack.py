"""imgadm unpacks a tenant's tarball without the host's privileges
(triton_imgadm.spawn_unprivileged + GNU tar): what it makes belongs to the
images' user range, device nodes cannot be made, and a member written
through an earlier symlink does not leave the root. Needs root (to map the
range); `make check` runs as root."""

import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_imgadm as ia  # noqa: E402
import triton_instance as ti  # noqa: E402


def user_namespaces() -> bool:
    """Root outside a chroot can make one (the kernel refuses in a chroot,
    as in ../shared/tools/fresh-machine; a node is never one)."""
    return os.geteuid() == 0 and subprocess.run(["unshare", "--user", "true"]).returncode == 0


pytestmark = pytest.mark.skipif(not user_namespaces(), reason="needs root and user namespaces")
BASE = ti.IMAGE_UID_BASE


def tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as t:
        for info, data in members:
            info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, uid: int = 0, **kw) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = kind, mode, uid, uid
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def unpack(src: Path, root: Path) -> tuple[int, str]:
    root.mkdir()
    os.chown(root, BASE, BASE)
    with tempfile.TemporaryFile() as err:
        fd = os.open(src, os.O_RDONLY)
        pid = ia.spawn_unprivileged(["tar", "-x", "--numeric-owner", "--same-owner", "--same-permissions",
                                     "--anchored", "--exclude=dev/*", "--exclude=./dev/*"],
                                    root, BASE, fd, err.fileno())
        os.close(fd)
        rc = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        err.seek(0)
        return rc, err.read().decode()


def test_files_belong_to_the_range_and_keep_their_modes(tmp_path):
    src = tarball(tmp_path / "ok.tar", [
        (member("etc", tarfile.DIRTYPE, 0o755), b""),
        (member("usr/bin/sudo", mode=0o4755), b"#!/bin/sh\n"),
        (member("home/u/f", mode=0o600, uid=1000), b"x"),
        (member("dev/sda", tarfile.BLKTYPE, 0o660, devmajor=8, devminor=0), b""),
        (member("root/.ssh/authorized_keys", tarfile.SYMTYPE, linkname="/root/.ssh/authorized_keys"), b""),
    ])
    rc, err = unpack(src, tmp_path / "root")
    assert rc == 0, err
    sudo = (tmp_path / "root/usr/bin/sudo").stat()
    assert sudo.st_uid == BASE and sudo.st_mode & 0o7777 == 0o4755
    assert (tmp_path / "root/home/u/f").stat().st_uid == BASE + 1000
    assert not (tmp_path / "root/dev/sda").exists()
    assert os.readlink(tmp_path / "root/root/.ssh/authorized_keys") == "/root/.ssh/authorized_keys"


def test_a_device_node_outside_dev_fails_the_unpack(tmp_path):
    src = tarball(tmp_path / "dev.tar", [(member("etc/disk", tarfile.BLKTYPE, 0o660, devmajor=8, devminor=0), b"")])
    rc, err = unpack(src, tmp_path / "root")
    assert rc != 0 and "etc/disk" in err and not (tmp_path / "root/etc/disk").exists()


def test_writing_through_a_symlink_stays_inside(tmp_path):
    outside = tmp_path / "host"
    outside.mkdir()
    src = tarball(tmp_path / "escape.tar", [
        (member("esc", tarfile.SYMTYPE, linkname=str(outside)), b""),
        (member("esc/pwned"), b"x"),
        (member("../pwned2"), b"x"),
    ])
    rc, err = unpack(src, tmp_path / "root")
    assert rc != 0
    assert list(outside.iterdir()) == [] and not (tmp_path / "pwned2").exists()
