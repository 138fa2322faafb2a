"""A digest of everything that decides what the build produces.

Recorded in the platform manifest so two builds can be compared, and used by
the test suite to reuse a platform built from the current sources instead of
building again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Paths under the repository root that are build inputs.
INPUTS = (
    "mkosi.conf",
    "mkosi.conf.d",
    "mkosi.extra",
    "mkosi.pkgmngr",
    "mkosi.initrd",
    "mkosi.build",
    "mkosi.postinst",
    "mkosi.finalize",
    "mkosi.postoutput",
    "hooks",
    "platform.yaml",
)

IGNORED_PARTS = {"__pycache__"}


def input_files(top: Path) -> list[Path]:
    files: list[Path] = []
    for name in INPUTS:
        p = top / name
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(
                f for f in p.rglob("*")
                if (f.is_file() or f.is_symlink())
                and not IGNORED_PARTS.intersection(f.relative_to(top).parts)
                and not f.name.endswith(".pyc")
            )
    return sorted(files, key=lambda f: f.relative_to(top).as_posix())


def source_digest(top: Path) -> str:
    h = hashlib.sha256()
    for f in input_files(top):
        rel = f.relative_to(top).as_posix()
        h.update(rel.encode() + b"\0")
        if f.is_symlink():
            h.update(b"L" + str(f.readlink()).encode())
        else:
            h.update(b"X" if f.stat().st_mode & 0o111 else b"F")
            h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()
