"""The test suite's initrd reader, against archives laid out the way mkosi
and the build lay out an initrd: zstd frames, zero padding, a plain cpio."""

import os
import subprocess

import pytest

from hooks.cpio import newc_archive
from tests.lib.cpio_initrd import unpack_initrd, zstd_frames, zstd_frames_end


def zstd(data: bytes, *args: str) -> bytes:
    return subprocess.run(["zstd", "-q", "-c", *args], input=data, check=True,
                          capture_output=True).stdout


def pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


# Random bytes do not compress, so zstd stores them in raw blocks; the
# archive inside such a block shows its newc headers in the clear.
NOISE = os.urandom(200_000)


def first_frame(len_mod4: int, *args: str, mode: int = 0o644) -> bytes:
    """A frame holding /init and /noise whose length is len_mod4 modulo 4."""
    for extra in range(64):
        script = b"#!/bin/sh\n" + "".join(f"echo {i}\n" for i in range(extra * 10)).encode()
        frame = zstd(newc_archive({"/init": script, "/noise": NOISE}, mode=mode), *args)
        if len(frame) % 4 == len_mod4:
            return frame
    raise AssertionError(f"no frame of length {len_mod4} modulo 4")


@pytest.mark.parametrize("first_len_mod4", [0, 1, 2, 3])
def test_frames_padded_to_four_bytes_are_all_found(first_len_mod4):
    first = first_frame(first_len_mod4, "--check")
    second = zstd(newc_archive({"/usr/lib/modules/m.ko": b"module" * 100}), "--no-check")
    plain = newc_archive({"/etc/extra": b"appended"})
    data = pad4(first) + pad4(second) + plain
    assert zstd_frames(data) == [(0, len(first)),
                                 (len(pad4(first)), len(pad4(first)) + len(second))]
    assert data[zstd_frames_end(data):].lstrip(b"\0").startswith(b"070701")


def test_unpack_reads_every_frame_and_the_appended_archive(tmp_path):
    first = first_frame(3, mode=0o755)
    second = zstd(newc_archive({"/usr/lib/modules/m.ko": b"module"}))
    initrd = tmp_path / "initrd"
    initrd.write_bytes(first + bytes(-len(first) % 4) + pad4(second)
                       + newc_archive({"/etc/extra": b"appended"}))
    tree = tmp_path / "tree"
    unpack_initrd(initrd, tree)
    assert (tree / "init").read_bytes().startswith(b"#!/bin/sh\n")
    assert os.access(tree / "init", os.X_OK)
    assert (tree / "noise").read_bytes() == NOISE
    assert (tree / "usr/lib/modules/m.ko").read_bytes() == b"module"
    assert (tree / "etc/extra").read_bytes() == b"appended"


def test_unpack_refuses_a_file_that_is_not_a_zstd_initrd(tmp_path):
    initrd = tmp_path / "initrd"
    initrd.write_bytes(newc_archive({"/init": b""}))
    with pytest.raises(ValueError, match="no zstd-compressed archive"):
        unpack_initrd(initrd, tmp_path / "tree")
