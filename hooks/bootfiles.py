"""What the build writes for booting: the iPXE script, and the facts bound
into the initrd (the root's hash and size, the stamp, the runtime paths its
shell shares with the root: triton_settings.RUNTIME)."""

from __future__ import annotations

import dataclasses
import shlex
from typing import Sequence

from hooks import verity
from hooks.config import RUNTIME, PlatformConfig
from hooks.render import render

ROOTFS_ENV = "/usr/lib/triton/rootfs.env"
# Where booter's files for the platform go in the initramfs (answers file,
# keys); the initrd keeps them in RUNTIME.boot_files (/run/triton/boot).
BOOT_FILES_DIR = "/etc/triton"


@dataclasses.dataclass(frozen=True)
class Module:
    """A file iPXE delivers with the boot: fetched from `url`, placed at `path`."""
    url: str
    path: str


def rootfs_env(stamp: str, sha256: str, size: int, tree: verity.HashTree, settings: PlatformConfig,
               rootfs_path: str) -> str:
    """Sourced by the initrd's scripts (fetch-rootfs: which root it may boot,
    and where; save-boot-files, boot-network: the runtime paths and names).
    `rootfs_path`: the root's path on a medium (platform-<stamp>/<arch>/...)."""
    return (
        f"TRITON_PLATFORM={stamp}\n"
        f"TRITON_ROOTFS_PATH={shlex.quote(rootfs_path)}\n"
        f"TRITON_ROOTFS_SHA256={sha256}\n"
        f"TRITON_ROOTFS_SIZE={size}\n"
        # A root left on its medium (triton.toram=0) is read through
        # dm-verity (hooks/verity.py): the tree's root hash, and veritysetup's
        # options, so nothing about the tree is taken from the medium.
        f"TRITON_ROOTFS_VERITY_ROOTHASH={tree.root_hash}\n"
        f"TRITON_ROOTFS_VERITY_OPTIONS={shlex.quote(' '.join(verity.options(tree.params)))}\n"
        f"TRITON_RESERVE_MIB={settings.boot.reserve_mib}\n"
        f"TRITON_FETCH_TIMEOUT={settings.boot.fetch_timeout}\n"
        f"TRITON_FETCH_FAILURE={settings.boot.fetch_failure}\n"
        f"TRITON_FETCH_FAILURE_DELAY={settings.boot.fetch_failure_delay}\n"
        # Live media (hooks/media.py): the volume that holds this build, the
        # label of a config filesystem, and whether to copy the root to RAM.
        f"TRITON_MEDIA_LABEL={settings.media.volume_label(stamp)}\n"
        f"TRITON_CONFIG_LABEL={settings.media.config_label}\n"
        f"TRITON_TORAM={1 if settings.media.toram else 0}\n"
        # Shared with the root's Python and units (triton_settings.RUNTIME).
        f"TRITON_ROOTFS_DIR={shlex.quote(str(RUNTIME.rootfs))}\n"
        f"TRITON_BOOT_FILES={shlex.quote(str(RUNTIME.boot_files))}\n"
        f"TRITON_DHCP_VENDOR_CLASS={shlex.quote(RUNTIME.dhcp_vendor_class)}\n"
    )


def boot_ipxe(stamp: str, paths: dict[str, str], settings: PlatformConfig,
              modules: Sequence[Module] = (), extra_args: Sequence[str] = ()) -> str:
    args = [*settings.boot.args, *extra_args]
    return render("boot.ipxe.j2", stamp=stamp, paths=paths, args=args, modules=modules)


UNIT_DIR = "/usr/lib/systemd/system"
# triton-pool (in the root) writes this when it found the node's system pool.
MOUNT_FLAG = str(RUNTIME.mount_flag)


def escape_path(path: str) -> str:
    """systemd-escape --path: the unit name of a mount point."""
    trimmed = "/".join(p for p in path.split("/") if p)
    if not trimmed:
        return "-"
    out = []
    for i, ch in enumerate(trimmed):
        if ch == "/":
            out.append("-")
        elif ch.isascii() and (ch.isalnum() or ch in ":_" or (ch == "." and i > 0)):
            out.append(ch)
        else:
            out.append("".join(f"\\x{b:02x}" for b in ch.encode()))
    return "".join(out)


def mount_unit(where: str) -> str:
    return escape_path(where) + ".mount"


def initrd_units(settings: PlatformConfig) -> dict[str, str]:
    """The initrd's units that import the system pool and mount its datasets
    on /sysroot, rendered from platform.yaml's pool section. They travel in
    the cpio appended to the initrd, beside rootfs.env."""
    pool = settings.pool
    mounts = {}
    for d in sorted(pool.datasets, key=lambda d: d.mountpoint):
        where = "/sysroot" + d.mountpoint
        mounts[mount_unit(where)] = render("initrd/dataset.mount.j2", dataset=d.full_name(pool.name),
                                           mountpoint=d.mountpoint, where=where, flag=MOUNT_FLAG)
    var = pool.dataset("var") if any(d.name == "var" for d in pool.datasets) else None
    scratch = []
    for rel in pool.image_var if var is not None else ():
        assert var is not None
        where = f"/sysroot{var.mountpoint}/{rel}"
        upper = f"{RUNTIME.pool}/image-var/{rel.replace('/', '_')}"
        scratch += [f"{upper}/upper", f"{upper}/work"]
        mounts[mount_unit(where)] = render("initrd/image-var.mount.j2", rel=rel, where=where, upper=upper,
                                           lower=f"{RUNTIME.rootfs_lower}{var.mountpoint}/{rel}",
                                           var_unit=mount_unit("/sysroot" + var.mountpoint), flag=MOUNT_FLAG)
    names = list(mounts)
    common = dict(pool=pool, mount_units=names, flag=MOUNT_FLAG, scratch=scratch, runtime=RUNTIME)
    units = {
        f"{UNIT_DIR}/triton-pool-import.service": render("initrd/triton-pool-import.service.j2", **common),
        f"{UNIT_DIR}/triton-pool-restore.service": render("initrd/triton-pool-restore.service.j2", **common),
        f"{UNIT_DIR}/initrd-fs.target.d/triton-pool.conf": render("initrd/initrd-fs.target.conf.j2", **common),
    }
    units.update({f"{UNIT_DIR}/{name}": text for name, text in mounts.items()})
    return units
