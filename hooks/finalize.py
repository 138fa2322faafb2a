"""Last steps inside the image, with the image's own tools (mkosi.finalize).

A stateless node would otherwise redo them at every boot: systemd rebuilds
the hardware database (systemd-hwdb-update.service) and runs ldconfig when
/etc or /var look older than /usr (ConditionNeedsUpdate=). The build host's
systemd is too old to compile trixie's hwdb, so the image's systemd does it.
"""

from __future__ import annotations

import subprocess
import sys


def main() -> int:
    try:
        subprocess.run(["mkosi-chroot", "systemd-hwdb", "update", "--usr"], check=True)
        # Writes /etc/.updated and /var/.updated from /usr's mtime.
        subprocess.run(["mkosi-chroot", "/usr/lib/systemd/systemd-update-done"], check=True)
    except subprocess.CalledProcessError as e:
        print(f"mkosi.finalize: {' '.join(map(str, e.cmd))} failed ({e.returncode})", file=sys.stderr)
        return 1
    return 0
