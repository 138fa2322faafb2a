"""Delivering files with the boot the way iPXE does: a cpio archive appended
to the initrd (iPXE builds one per `module <url> <path>` line)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Mapping

from hooks.cpio import newc_archive


def initrd_with_files(initrd: Path, out: Path, files: Mapping[str, bytes]) -> Path:
    shutil.copyfile(initrd, out)
    with out.open("ab") as f:
        f.write(newc_archive(files))
    return out
