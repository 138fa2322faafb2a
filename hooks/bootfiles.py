"""What the build writes for booting: the iPXE script, and the facts bound
into the initrd (the root's hash and size, the stamp)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from hooks.config import PlatformConfig
from hooks.render import render

ROOTFS_ENV = "/usr/lib/triton/rootfs.env"


@dataclasses.dataclass(frozen=True)
class Module:
    """A file iPXE delivers with the boot: fetched from `url`, placed at `path`."""
    url: str
    path: str


def rootfs_env(stamp: str, sha256: str, size: int, settings: PlatformConfig) -> str:
    """Sourced by the initrd's fetch-rootfs: which root it may boot."""
    return (
        f"TRITON_PLATFORM={stamp}\n"
        f"TRITON_ROOTFS_SHA256={sha256}\n"
        f"TRITON_ROOTFS_SIZE={size}\n"
        f"TRITON_RESERVE_MIB={settings.boot.reserve_mib}\n"
        f"TRITON_FETCH_TIMEOUT={settings.boot.fetch_timeout}\n"
    )


def boot_ipxe(stamp: str, paths: dict[str, str], settings: PlatformConfig,
              modules: Sequence[Module] = (), extra_args: Sequence[str] = ()) -> str:
    args = [*settings.boot.args, *extra_args]
    return render("boot.ipxe.j2", stamp=stamp, paths=paths, args=args, modules=modules)
