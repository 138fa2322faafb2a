"""A minimal newc cpio writer, for archives appended to the initrd.

Linux unpacks every archive in a concatenated initramfs in turn, so a small
uncompressed archive appended after mkosi's initrd adds (or replaces) files
in it. The build uses this to bind the root's hash into the initrd; the tests
use it the way iPXE does, to deliver files with the boot.
"""

from __future__ import annotations

from typing import Iterable, Mapping

TRAILER = "TRAILER!!!"


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _entry(name: str, data: bytes, mode: int, ino: int, mtime: int) -> bytes:
    encoded = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, mtime, len(data), 0, 0, 0, 0, len(encoded), 0]
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = header + encoded
    out += b"\0" * _pad4(len(out))
    out += data + b"\0" * _pad4(len(data))
    return out


def newc_archive(files: Mapping[str, bytes], mtime: int = 0, mode: int = 0o644,
                 directories: Iterable[str] = ()) -> bytes:
    """An archive holding `files` ({'/etc/x': b'...'}), their parent
    directories and the (empty) `directories`."""
    dirs: set[str] = set()
    for path in [*files, *(d.rstrip("/") + "/." for d in directories)]:
        parts = path.strip("/").split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    out = b""
    ino = 1
    for d in sorted(dirs):
        out += _entry(d, b"", 0o040755, ino, mtime)
        ino += 1
    for path in sorted(files):
        out += _entry(path.strip("/"), files[path], 0o100000 | mode, ino, mtime)
        ino += 1
    out += _entry(TRAILER, b"", 0, 0, 0)
    return out + b"\0" * _pad4(len(out))
