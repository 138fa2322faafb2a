"""Looking into a built platform: its files, and its root mounted read-only."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Sequence

from hooks.config import load
from hooks.platform_dir import layout


class Platform:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.stamp = path.name.removeprefix("platform-")
        self.paths = {role: path / rel for role, rel in layout(self.stamp, load().arch_dir).items()}
        self.kernel = self.paths["kernel"]
        self.initrd = self.paths["initrd"]
        self.rootfs = self.paths["rootfs"]

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.paths["manifest"].read_text())


class ImageRoot:
    """The squashfs loop-mounted at `mnt/root`, with a writable overlay at
    `mnt/rw` for running the image's own tools (chroot) without changing it."""

    def __init__(self, squashfs: Path, workdir: Path) -> None:
        self.squashfs = squashfs
        self.workdir = workdir
        self.path = workdir / "root"
        self.rw = workdir / "rw"
        self._mounted: list[Path] = []

    def __enter__(self) -> "ImageRoot":
        for d in ("root", "rw", "upper", "work"):
            (self.workdir / d).mkdir(exist_ok=True)
        self._mount(["-t", "squashfs", "-o", "loop,ro", str(self.squashfs)], self.path)
        self._mount(["-t", "overlay", "overlay", "-o",
                     f"lowerdir={self.path},upperdir={self.workdir}/upper,workdir={self.workdir}/work"],
                    self.rw)
        return self

    def _mount(self, args: list[str], target: Path) -> None:
        subprocess.run(["mount", *args, str(target)], check=True)
        self._mounted.append(target)

    def __exit__(self, *exc: object) -> None:
        for target in reversed(self._mounted):
            subprocess.run(["umount", str(target)], check=False)

    def run(self, cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run `cmd` with the image's own binaries, chrooted into the overlay,
        with private /proc, /run and /tmp."""
        script = (
            'mount -t proc proc "$1/proc" && mount -t tmpfs tmpfs "$1/run" && '
            'mount -t tmpfs tmpfs "$1/tmp" && mount --rbind /dev "$1/dev" && '
            'r="$1"; shift; exec chroot "$r" "$@"'
        )
        return subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(self.rw), *cmd],
            capture_output=True, text=True,
        )
