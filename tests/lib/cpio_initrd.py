"""Delivering files with the boot the way iPXE does: a cpio archive appended
to the initrd (iPXE builds one per `module <url> <path>` line)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Iterator, Mapping

from hooks.cpio import newc_archive


def initrd_with_files(initrd: Path, out: Path, files: Mapping[str, bytes], mode: int = 0o644) -> Path:
    """A copy of `initrd` with `files` (of this mode) appended; `out` may be `initrd`."""
    if out != initrd:
        shutil.copyfile(initrd, out)
    with out.open("ab") as f:
        f.write(newc_archive(files, mode=mode))
    return out


_HEX = frozenset(b"0123456789abcdefABCDEF")


def _next_header(data: bytes, pos: int) -> int:
    """Where the next newc header starts: its magic and 104 hex digits (so
    the magic's bytes inside compressed data do not count)."""
    while (pos := data.find(b"070701", pos)) >= 0:
        if _HEX.issuperset(data[pos + 6:pos + 110]) and len(data) >= pos + 110:
            return pos
        pos += 1
    return -1


def newc_entries(data: bytes, start: int = 0) -> Iterator[tuple[str, int, bytes]]:
    """(name, mode, content) of each entry of the newc archives that follow
    one another from `start` (padding between archives is skipped); a
    symlink's content is its target."""
    pos = _next_header(data, start)
    while 0 <= pos < len(data):
        header = data[pos:pos + 110]
        mode = int(header[14:22], 16)
        size = int(header[54:62], 16)
        namesize = int(header[94:102], 16)
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        at = pos + 110 + namesize
        at += (4 - at % 4) % 4
        if name != "TRAILER!!!":
            yield name, mode, data[at:at + size]
        pos = at + size
        pos += (4 - pos % 4) % 4
        if data[pos:pos + 6] != b"070701":
            pos = _next_header(data, pos)


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def zstd_frames(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each zstd frame at the start of `data` (RFC 8878
    framing). Concatenated archives may have zero bytes between them (mkosi
    pads each to a 4-byte boundary, which the kernel's initramfs reader
    skips); so does this."""
    frames = []
    pos = 0
    while True:
        start = pos
        while start < len(data) and data[start] == 0:
            start += 1
        if data[start:start + 4] != _ZSTD_MAGIC:
            return frames
        fhd = data[start + 4]
        single = fhd >> 5 & 1
        fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
        pos = start + 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs
        while True:
            header = int.from_bytes(data[pos:pos + 3], "little")
            kind, size = header >> 1 & 3, header >> 3
            pos += 3 + (1 if kind == 1 else size)
            if header & 1:
                break
        pos += 4 if fhd >> 2 & 1 else 0
        frames.append((start, pos))


def zstd_frames_end(data: bytes) -> int:
    """Where the zstd frames at the start of `data` end."""
    frames = zstd_frames(data)
    return frames[-1][1] if frames else 0


def unpack_initrd(initrd: Path, tree: Path) -> None:
    """Unpack a mkosi initrd into `tree`: its zstd frames (mkosi's initrd,
    then its kernel modules' cpio), then the plain cpio the build appends."""
    data = initrd.read_bytes()
    frames = zstd_frames(data)
    if not frames:
        raise ValueError(f"{initrd}: no zstd-compressed archive at its start")
    parts = [(subprocess.run(["zstd", "-dc"], input=data[start:end], check=True,
                             capture_output=True).stdout, 0) for start, end in frames]
    parts.append((data, frames[-1][1]))
    for part, start in parts:
        for name, mode, content in newc_entries(part, start):
            path = tree / name
            kind = mode & 0o170000
            if kind == 0o040000:
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or path.exists():
                path.unlink()
            if kind == 0o120000:
                path.symlink_to(content.decode())
            elif kind == 0o100000:
                path.write_bytes(content)
                path.chmod(mode & 0o7777)
