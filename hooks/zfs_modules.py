"""Compile the OpenZFS kernel modules for the image's kernel, with a cache.

ZFS ships as source only (zfs-dkms, Debian contrib). Compiling it takes
minutes, so the compiled modules are kept in mkosi's build directory under a
key made of the kernel version and the ZFS version: a rebuild with neither
changed copies them instead of compiling. On a miss, zfs-dkms is installed
into mkosi's throw-away build overlay, whose DKMS compiles against the
image's kernel headers; only the .ko files reach the image.

The modules are compiled without ftrace's entry hooks (MAKE_OVERRIDES). The
image's kernel (6.12) checks each hooked function of a module it loads with
a kallsyms lookup that walks the module's whole symbol table: for zfs.ko,
6,576 hooked functions against 22,954 symbols, about 14 of the 20 guest
seconds its load took on every boot that imports the pool (bench/boot.py
--icount). The price: ftrace's function tracer and BPF fentry programs do not
reach ZFS's functions; kprobes (bpftrace's kprobe:) and ZFS's own
tracepoints still do.

The patches in hooks/zfs_patches/ are applied to OpenZFS's source by DKMS
(its PATCH[] directives, given in /etc/dkms/zfs-<version>.conf of the build
overlay); each patch's header says why. The build checks DKMS's make.log
that each was applied, and the cache key includes them.

DKMS signs the modules with a key it makes in the throw-away overlay, which
no node knows; mkosi.finalize strips that signature with every other module's
(hooks/kmodsig.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Optional

from hooks import dpkg, kernel
from hooks.config import PlatformConfig, load
from hooks.files import sha256_file
from hooks.kmodsig import module_elf, module_files

ZFS_PACKAGE = "zfsutils-linux"

# Kbuild variables set on DKMS's make command lines (through MAKEFLAGS, which
# dpkg and DKMS pass on): no ftrace entry hooks in the modules (see above).
MAKE_OVERRIDES = {"CC_FLAGS_FTRACE": ""}
# The section in which a module lists its ftrace entry hooks, 8 bytes each.
FTRACE_SECTION = "__mcount_loc"
# Patches to OpenZFS's source, applied in name order.
PATCH_DIR = Path(__file__).resolve().parent / "zfs_patches"


class ZfsBuildError(Exception):
    pass


def makeflags(overrides: dict[str, str]) -> str:
    """MAKEFLAGS that set `overrides` as if given on every make command line."""
    return " -- " + " ".join(f"{k}={v}" for k, v in sorted(overrides.items()))


def read_patches(directory: Path) -> dict[str, str]:
    """The patches in `directory` (*.patch), by file name, in name order."""
    return {p.name: p.read_text() for p in sorted(directory.glob("*.patch"))}


def patches_digest(patches: dict[str, str]) -> str:
    """A short digest of the patches' names and texts ("" without patches)."""
    if not patches:
        return ""
    h = hashlib.sha256()
    for name, text in patches.items():
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()[:12]


def patched_files(text: str) -> list[str]:
    """The files a -p1 unified diff changes ("+++ b/<path>" lines)."""
    return [line.split()[1].split("/", 1)[1] for line in text.splitlines()
            if line.startswith("+++ ") and "/" in line.split()[1]]


def dkms_patch_conf(patches: dict[str, str]) -> str:
    """DKMS's per-module config (/etc/dkms/<module>-<version>.conf) that
    applies these patches, from the source's patches/ directory."""
    lines = ["# Written by hooks/zfs_modules.py: OpenZFS patches DKMS applies before it builds."]
    lines += [f'PATCH[{i}]="{name}"' for i, name in enumerate(patches)]
    return "\n".join(lines) + "\n"


def check_patches_applied(make_log: str, patches: dict[str, str]) -> None:
    """DKMS's make.log shows `patch` at work on every file each patch changes."""
    for name, text in patches.items():
        files = patched_files(text)
        if not files:
            raise ZfsBuildError(f"{PATCH_DIR / name}: no '+++ b/<file>' line: not a -p1 unified diff")
        missing = [f for f in files if f"patching file {f}" not in make_log]
        if missing:
            raise ZfsBuildError(
                f"DKMS did not apply {PATCH_DIR / name} (its make.log has no 'patching file' line for "
                f"{', '.join(missing)}): check the PATCH[] config the build writes under /etc/dkms")


@dataclasses.dataclass(frozen=True)
class ModuleKey:
    kernel: str
    zfs: str
    overrides: str = makeflags(MAKE_OVERRIDES).removeprefix(" -- ")
    patches: str = ""

    @property
    def name(self) -> str:
        """A directory name for this key: readable and safe on any filesystem."""
        safe = lambda s: re.sub(r"[^A-Za-z0-9.+_-]", "_", s)  # noqa: E731
        name = f"zfs-{safe(self.zfs)}_linux-{safe(self.kernel)}_{safe(self.overrides)}"
        return name + (f"_patches-{self.patches}" if self.patches else "")


def elf_section_size(elf: bytes, name: str) -> Optional[int]:
    """The size of section `name` in a 64-bit little-endian ELF file (a
    kernel module), or None when it has none."""
    if elf[:6] != b"\x7fELF\x02\x01":
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    for sh_name, _type, _flags, _addr, _offset, size in headers:
        end = elf.index(b"\0", names_at + sh_name)
        if elf[names_at + sh_name:end].decode() == name:
            return size
    return None


def module_bytes(path: Path) -> bytes:
    """A module file's ELF image, xz-decompressed if DKMS compressed it."""
    try:
        return module_elf(path)
    except lzma.LZMAError as e:
        raise ZfsBuildError(f"{path}: not a valid xz-compressed module ({e}); "
                            f"remove the cache entry {path.parent} and rebuild") from e


def ftrace_hooks(path: Path) -> int:
    """How many ftrace entry hooks the module at `path` carries."""
    try:
        return (elf_section_size(module_bytes(path), FTRACE_SECTION) or 0) // 8
    except (struct.error, ValueError, IndexError) as e:
        raise ZfsBuildError(f"{path}: not a readable kernel module ({e})") from e


def check_no_ftrace_hooks(built: Iterable[Path]) -> None:
    for p in built:
        if count := ftrace_hooks(p):
            raise ZfsBuildError(
                f"{p} has {count} ftrace entry hooks: the make overrides "
                f"{makeflags(MAKE_OVERRIDES).strip()!r} did not reach Kbuild (see DKMS's make.log), "
                "and every pool import would pay for them")


def upstream_version(debian_version: str) -> str:
    """'2.3.9-0+deb13u1' -> '2.3.9' (the version DKMS knows the module by)."""
    version = debian_version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


def missing_modules(files: Iterable[Path], wanted: Iterable[str]) -> list[str]:
    have = {p.name.split(".ko")[0] for p in files}
    return [m for m in wanted if m not in have]


def cache_valid(entry: Path, key: ModuleKey, wanted: Iterable[str]) -> bool:
    """A cache entry is used only if it is complete and unmodified."""
    try:
        meta = json.loads((entry / "cache.json").read_text())
    except (OSError, ValueError):
        return False
    if {field: meta.get(field) for field in dataclasses.asdict(key)} != dataclasses.asdict(key):
        return False
    files = meta.get("files", {})
    if missing_modules([Path(f) for f in files], wanted):
        return False
    for name, digest in files.items():
        p = entry / name
        if not p.is_file() or sha256_file(p) != digest:
            return False
    return True


def store(entry: Path, key: ModuleKey, built: list[Path]) -> None:
    tmp = entry.with_name(entry.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = {}
    for src in built:
        shutil.copy2(src, tmp / src.name)
        files[src.name] = sha256_file(tmp / src.name)
    (tmp / "cache.json").write_text(
        json.dumps({**dataclasses.asdict(key), "files": files}, indent=2) + "\n"
    )
    shutil.rmtree(entry, ignore_errors=True)
    tmp.rename(entry)


def stage_patches(root: Path, version: str, patches: dict[str, str]) -> None:
    """Put the patches where DKMS looks (the source's patches/, which the
    package's files join when it is unpacked) and the config naming them."""
    if not patches:
        return
    source = root / f"usr/src/zfs-{version}/patches"
    source.mkdir(parents=True, exist_ok=True)
    for name, text in patches.items():
        (source / name).write_text(text)
    conf = root / f"etc/dkms/zfs-{version}.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(dkms_patch_conf(patches))


def dkms_make_log(built_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(built_dir.rglob("make.log")))


def compile_in_overlay(root: Path, key: ModuleKey, patches: dict[str, str]) -> list[Path]:
    """Install zfs-dkms into the build overlay and return the compiled modules."""
    version = upstream_version(key.zfs)
    print(f"zfs: compiling OpenZFS {version} for kernel {key.kernel} with "
          f"{len(patches)} patch(es) (cache miss)", flush=True)
    stage_patches(root, version, patches)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", MAKEFLAGS=makeflags(MAKE_OVERRIDES))
    # zfs-dkms's postinst runs DKMS for every kernel whose headers are
    # present: in the overlay that is the image's kernel only.
    subprocess.run(["mkosi-install", f"zfs-dkms={key.zfs}"], check=True, env=env)
    built_dir = root / f"var/lib/dkms/zfs/{version}/{key.kernel}"
    if not module_files(built_dir):
        subprocess.run(
            ["mkosi-chroot", "dkms", "build", "-m", "zfs", "-v", version, "-k", key.kernel],
            check=True,
            env=env,
        )
    built = [p for p in module_files(built_dir) if "/module/" in str(p) or p.parent.name == "module"]
    built = built or module_files(built_dir)
    if not built:
        raise ZfsBuildError(
            f"DKMS produced no modules for kernel {key.kernel} under {built_dir}; "
            "see the DKMS make.log above"
        )
    check_patches_applied(dkms_make_log(built_dir), patches)
    return built


def install(entry: Path, destdir: Path, kver: str, settings: PlatformConfig) -> list[Path]:
    target = destdir / "usr/lib/modules" / kver / settings.zfs.module_dir
    target.mkdir(parents=True, exist_ok=True)
    # A fresh mtime, not the cache's: mkosi skips depmod when no module is
    # newer than modules.dep.
    return [install_module(src, target) for src in module_files(entry)]


def install_module(src: Path, target: Path) -> Path:
    """Copy one module into `target`, xz-decompressed if DKMS compressed it
    (as the kernel's own are): the squashfs compresses it anyway, and every
    boot that imports the pool loads ZFS, which the kernel need not xz-decode
    each time (12 MB for zfs.ko)."""
    if src.name.endswith(".ko.xz"):
        dst = target / src.name.removesuffix(".xz")
        dst.write_bytes(module_bytes(src))
        return dst
    shutil.copy(src, target / src.name)
    return target / src.name


def build(root: Path, destdir: Path, cache_dir: Path, settings: PlatformConfig) -> list[Path]:
    packages = dpkg.installed(root)
    if ZFS_PACKAGE not in packages:
        raise ZfsBuildError(
            f"{ZFS_PACKAGE} is not installed in the image; add it to mkosi.conf.d/30-zfs.conf"
        )
    patches = read_patches(PATCH_DIR)
    key = ModuleKey(kernel=kernel.image_kernel(root), zfs=packages[ZFS_PACKAGE], patches=patches_digest(patches))
    entry = cache_dir / key.name
    if cache_valid(entry, key, settings.zfs.modules):
        print(f"zfs: using cached modules {entry.name}", flush=True)
    else:
        built = compile_in_overlay(root, key, patches)
        if missing := missing_modules(built, settings.zfs.modules):
            raise ZfsBuildError(f"DKMS did not build {', '.join(missing)} for {key.kernel}")
        check_no_ftrace_hooks(built)
        store(entry, key, built)
    return install(entry, destdir, key.kernel, settings)


def main() -> int:
    """mkosi.build entry point (runs on the host side of mkosi's sandbox)."""
    try:
        root = Path(os.environ["BUILDROOT"])
        destdir = Path(os.environ["DESTDIR"])
        builddir = os.environ.get("BUILDDIR")
        if not builddir:
            raise ZfsBuildError("mkosi gave no BUILDDIR: set BuildDirectory= in mkosi.conf")
        installed = build(root, destdir, Path(builddir) / "zfs-modules", load())
    except (ZfsBuildError, kernel.KernelError, subprocess.CalledProcessError) as e:
        print(f"mkosi.build: ZFS modules: {e}", file=sys.stderr)
        return 1
    for p in installed:
        print(f"zfs: installed {p.relative_to(destdir)}")
    return 0
