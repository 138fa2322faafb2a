"""Last steps inside the image, with the image's own tools (mkosi.finalize).

A stateless node would otherwise redo them at every boot: systemd rebuilds
the hardware database (systemd-hwdb-update.service) and runs ldconfig when
/etc or /var look older than /usr (ConditionNeedsUpdate=). The build host's
systemd is too old to compile trixie's hwdb, so the image's systemd does it.

First, every kernel module loses its signature and xz for zstd
(hooks/kmodsig.py), and depmod indexes the new names, before mkosi builds
the initrd's modules from this tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hooks.kernel import KernelError, depmod_command
from hooks.kmodsig import ModuleSignatureError, strip_tree


def main() -> int:
    root = Path(os.environ["BUILDROOT"])
    try:
        count, signed = strip_tree(root / "usr/lib/modules")
    except ModuleSignatureError as e:
        print(f"mkosi.finalize: kernel modules: {e}", file=sys.stderr)
        return 1
    print(f"kernel modules: {signed} of {count} had a signature, left behind; xz now zstd")
    try:
        subprocess.run(depmod_command(root), check=True)
        subprocess.run(["mkosi-chroot", "systemd-hwdb", "update", "--usr"], check=True)
        # Writes /etc/.updated and /var/.updated from /usr's mtime.
        subprocess.run(["mkosi-chroot", "/usr/lib/systemd/systemd-update-done"], check=True)
    except subprocess.CalledProcessError as e:
        print(f"mkosi.finalize: {' '.join(map(str, e.cmd))} failed ({e.returncode})", file=sys.stderr)
        return 1
    except KernelError as e:
        print(f"mkosi.finalize: {e}", file=sys.stderr)
        return 1
    return 0
