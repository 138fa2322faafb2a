"""Finding the image's kernel (never the build host's `uname -r`)."""

from __future__ import annotations

from pathlib import Path


class KernelError(Exception):
    pass


def image_kernel(root: Path) -> str:
    """The one kernel version installed in the image rooted at `root`."""
    moddir = root / "usr/lib/modules"
    versions = sorted(
        p.name for p in moddir.iterdir() if p.is_dir() and (p / "kernel").is_dir()
    ) if moddir.is_dir() else []
    if not versions:
        raise KernelError(
            f"no kernel in the image ({moddir} has no <version>/kernel); "
            "is linux-image-amd64 in mkosi.conf.d/20-kernel.conf?"
        )
    if len(versions) > 1:
        raise KernelError(
            f"more than one kernel in the image ({', '.join(versions)}); the platform "
            "image boots exactly one: pin a single linux-image package"
        )
    return versions[0]


def depmod_command(root: Path) -> list[str]:
    """Index the image's modules with the image's own depmod."""
    return ["mkosi-chroot", "depmod", "--all", image_kernel(root)]
