"""Assemble platform-<stamp>/ and platform-<stamp>.tgz from mkosi's output.

Runs as mkosi.postoutput. mkosi leaves in $OUTPUTDIR the image tree
(<Output>/), the kernel (<Output>.vmlinuz), the initrd (<Output>.initrd) and
its package manifest (<Output>.manifest). From them this writes the layout
that `sdcadm platform install` and booter use:

    platform-<stamp>/
        etc/version/platform          <stamp>
        etc/version/os-release        the image's os-release
        etc/version/manifest.json     what is inside, and what built it
        x86_64/vmlinuz(.sha256)
        x86_64/initrd(.sha256)
        x86_64/filesystem.squashfs(.sha256)
        x86_64/filesystem.squashfs.verity(.sha256)   its dm-verity hash tree
        x86_64/filesystem.packages    name<TAB>version, one a line
        boot.ipxe                     boots this platform over HTTP
    platform-<stamp>.tgz              top directory platform-<stamp>/
    platform-latest -> platform-<stamp>
    boot.ipxe -> platform-<stamp>/boot.ipxe

The tree itself is replaced by a small file naming the platform directory,
and the kernel and initrd are moved into it, so nothing is stored twice.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from hooks import bootfiles, cpio, dpkg, inputs, kernel, osrelease, verity
from hooks.config import PlatformConfig, SquashfsSettings, load
from hooks.files import sha256_file
from hooks.stamp import is_stamp
from hooks.zfs_modules import ZFS_PACKAGE

LATEST = "platform-latest"
# What a build writes beside platform-<stamp>/: the tarball and the live media.
SUFFIXES = (".tgz", ".iso", "-usb.img")


class PlatformError(Exception):
    pass


def platform_name(stamp: str) -> str:
    return f"platform-{stamp}"


def layout(stamp: str, arch_dir: str) -> dict[str, str]:
    """Relative paths of the files in a platform directory, by role."""
    arch = arch_dir
    return {
        "kernel": f"{arch}/vmlinuz",
        "initrd": f"{arch}/initrd",
        "rootfs": f"{arch}/filesystem.squashfs",
        # The initrd finds it beside the squashfs on a medium, by this name.
        "verity": f"{arch}/filesystem.squashfs.verity",
        "packages": f"{arch}/filesystem.packages",
        "version": "etc/version/platform",
        "os-release": "etc/version/os-release",
        "manifest": "etc/version/manifest.json",
        "ipxe": "boot.ipxe",
    }


def mksquashfs_command(
    tree: Path, out: Path, settings: SquashfsSettings, epoch: Optional[int]
) -> list[str]:
    cmd = [
        "mksquashfs", str(tree), str(out),
        "-noappend", "-quiet", "-no-progress",
        "-comp", settings.compression,
        "-b", settings.block_size,
    ]
    if settings.compression in ("zstd", "gzip"):
        cmd += ["-Xcompression-level", str(settings.level)]
    elif settings.compression == "lz4" and settings.level > 0:
        cmd += ["-Xhc"]
    if settings.exclude:
        cmd += ["-wildcards", "-e", *settings.exclude]
    if epoch is not None:
        # Reproducible: fixed filesystem and file times.
        cmd += ["-mkfs-time", str(epoch), "-all-time", str(epoch)]
    return cmd


def tar_command(outdir: Path, name: str, epoch: Optional[int]) -> list[str]:
    cmd = [
        "tar", "-C", str(outdir), "--sort=name",
        "--owner=0", "--group=0", "--numeric-owner",
        "-cf", "-", name,
    ]
    if epoch is not None:
        cmd[1:1] = [f"--mtime=@{epoch}", "--clamp-mtime"]
    return cmd


def sha256_line(digest: str, name: str) -> str:
    """The format `sha256sum -c` reads."""
    return f"{digest}  {name}\n"


def packages_text(packages: Mapping[str, str]) -> str:
    return "".join(f"{name}\t{version}\n" for name, version in sorted(packages.items()))


def build_manifest(
    *,
    stamp: str,
    kver: str,
    packages: Mapping[str, str],
    files: Mapping[str, dict[str, Any]],
    host_tools: Mapping[str, str],
    source: Mapping[str, str],
    squashfs: SquashfsSettings,
    verity: Mapping[str, Any],
    base: str,
) -> dict[str, Any]:
    return {
        "platform": stamp,
        "base": base,
        "kernel": kver,
        "zfs": packages.get(ZFS_PACKAGE, ""),
        "systemd": packages.get("systemd", ""),
        "squashfs": {
            "compression": squashfs.compression,
            "level": squashfs.level,
            "block_size": squashfs.block_size,
        },
        "verity": dict(verity),
        "files": dict(files),
        "packages": dict(sorted(packages.items())),
        "build": {"host_tools": dict(host_tools), "source": dict(source)},
    }


def first_line(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def host_tools() -> dict[str, str]:
    return {
        "mkosi": first_line(["mkosi", "--version"]),
        "mksquashfs": first_line(["mksquashfs", "-version"]),
        "veritysetup": first_line(["veritysetup", "--version"]),
        "systemd": first_line(["systemctl", "--version"]),
        "python": sys.version.split()[0],
    }


def source_info(srcdir: Path) -> dict[str, str]:
    info = {"digest": inputs.source_digest(srcdir)}
    git = ["git", "-c", f"safe.directory={srcdir}", "-C", str(srcdir)]
    commit = first_line([*git, "rev-parse", "HEAD"])
    if len(commit) == 40:
        info["commit"] = commit
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
        info["dirty"] = "yes" if dirty.stdout.strip() else "no"
    return info


def image_stamp(tree: Path) -> tuple[str, str]:
    fields = osrelease.parse_os_release((tree / "usr/lib/os-release").read_text())
    stamp = fields.get("TRITON_RELEASE", "")
    if not is_stamp(stamp):
        raise PlatformError(
            f"{tree}/usr/lib/os-release has no valid TRITON_RELEASE ({stamp!r}); "
            "mkosi.postinst should have written it"
        )
    return stamp, fields.get("PRETTY_NAME", "")


def write_checked(path: Path, digest: str) -> None:
    path.with_name(path.name + ".sha256").write_text(sha256_line(digest, path.name))


def assemble(
    outdir: Path, output: str, srcdir: Path, settings: PlatformConfig, epoch: Optional[int]
) -> Path:
    tree = outdir / output
    stamp, base = image_stamp(tree)
    paths = layout(stamp, settings.arch_dir)
    pdir = outdir / platform_name(stamp)
    if pdir.exists():
        shutil.rmtree(pdir)
    for rel in paths.values():
        (pdir / rel).parent.mkdir(parents=True, exist_ok=True)

    print(f"platform: squashing the root ({settings.squashfs.compression} "
          f"level {settings.squashfs.level})", flush=True)
    rootfs = pdir / paths["rootfs"]
    subprocess.run(mksquashfs_command(tree, rootfs, settings.squashfs, epoch), check=True)
    rootfs_sha256, rootfs_size = sha256_file(rootfs), rootfs.stat().st_size
    # The squashfs's dm-verity hash tree, for a medium booted with
    # triton.toram=0 (the initrd reads the medium only through dm-verity).
    print("platform: writing the root's dm-verity hash tree", flush=True)
    hash_tree = verity.write_hash_tree(rootfs, pdir / paths["verity"], verity.params(rootfs_sha256, rootfs_size))
    for role, suffix in (("kernel", "vmlinuz"), ("initrd", "initrd")):
        src = outdir / f"{output}.{suffix}"
        if not src.is_file():
            raise PlatformError(f"mkosi produced no {src.name}: is Bootable=yes set?")
        shutil.move(src, pdir / paths[role])

    # Bind the root into the initrd: its fetch-rootfs boots only a root
    # with this hash and dm-verity root hash (an appended cpio adds the file
    # to mkosi's initrd).
    env = bootfiles.rootfs_env(stamp, rootfs_sha256, rootfs_size, hash_tree, settings,
                               f"{platform_name(stamp)}/{paths['rootfs']}")
    # The same archive carries the initrd's pool units, rendered from
    # platform.yaml (they run the root's own triton-pool and ZFS).
    appended = {bootfiles.ROOTFS_ENV: env.encode()}
    appended.update({path: text.encode() for path, text in bootfiles.initrd_units(settings).items()})
    with (pdir / paths["initrd"]).open("ab") as f:
        # /etc/triton exists, so booter can place files there (iPXE
        # `module <url> /etc/triton/answers.json`; Linux creates no parents).
        f.write(cpio.newc_archive(appended, mtime=epoch or 0, directories=[bootfiles.BOOT_FILES_DIR]))
    (pdir / paths["ipxe"]).write_text(bootfiles.boot_ipxe(stamp, paths, settings))

    files = {}
    for role in ("kernel", "initrd", "rootfs", "verity"):
        path = pdir / paths[role]
        digest = sha256_file(path)
        write_checked(path, digest)
        files[paths[role]] = {"sha256": digest, "size": path.stat().st_size}

    packages = dpkg.installed(tree)
    (pdir / paths["version"]).write_text(stamp + "\n")
    shutil.copyfile(tree / "usr/lib/os-release", pdir / paths["os-release"])
    (pdir / paths["packages"]).write_text(packages_text(packages))
    manifest = build_manifest(
        stamp=stamp, kver=kernel.image_kernel(tree), packages=packages, files=files,
        host_tools=host_tools(), source=source_info(srcdir), squashfs=settings.squashfs,
        verity=verity.manifest_entry(hash_tree, paths["verity"]), base=base,
    )
    (pdir / paths["manifest"]).write_text(json.dumps(manifest, indent=2) + "\n")

    print("platform: writing the tarball", flush=True)
    tgz = outdir / f"{platform_name(stamp)}.tgz"
    gzip = ["pigz", "-1", "-n"] if shutil.which("pigz") else ["gzip", "-1", "-n"]
    with tgz.open("wb") as f:
        tar = subprocess.Popen(tar_command(outdir, pdir.name, epoch), stdout=subprocess.PIPE)
        subprocess.run(gzip, stdin=tar.stdout, stdout=f, check=True)
        if tar.wait() != 0:
            raise PlatformError(f"tar failed writing {tgz.name}")

    # The tree has served its purpose. mkosi's own output becomes a small file
    # naming the platform directory (so mkosi, seeing it, does not rebuild
    # without --force, as usual). Never a link: `mkosi --force` deletes what
    # its outputs link to, which would take the previous platform with it.
    shutil.rmtree(tree)
    tree.write_text(pdir.name + "\n")
    latest = outdir / LATEST
    latest.unlink(missing_ok=True)
    latest.symlink_to(pdir.name)
    ipxe = outdir / "boot.ipxe"
    ipxe.unlink(missing_ok=True)
    ipxe.symlink_to(Path(pdir.name) / paths["ipxe"])
    return pdir


def prune(outdir: Path, keep: int) -> list[Path]:
    """Remove all but the `keep` newest platform-<stamp> directories, tarballs and media."""
    def stamp_of(name: str) -> str:
        for suffix in SUFFIXES:
            name = name.removesuffix(suffix)
        return name.removeprefix("platform-")

    stamps = sorted({stamp_of(p.name) for p in outdir.glob("platform-*") if is_stamp(stamp_of(p.name))},
                    reverse=True)
    removed: list[Path] = []
    for stamp in stamps[max(keep, 1):]:
        for p in (outdir / platform_name(stamp), *(outdir / f"{platform_name(stamp)}{s}" for s in SUFFIXES)):
            if p.is_dir():
                shutil.rmtree(p)
                removed.append(p)
            elif p.exists():
                p.unlink()
                removed.append(p)
    return removed


def main() -> int:
    """mkosi.postoutput entry point."""
    outdir = Path(os.environ["OUTPUTDIR"])
    config = json.loads(Path(os.environ["MKOSI_CONFIG"]).read_text())
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    try:
        pdir = assemble(
            outdir, config["Output"], Path(os.environ["SRCDIR"]), load(),
            int(sde) if sde and sde.isdigit() else None,
        )
    except (PlatformError, kernel.KernelError, verity.VerityError, subprocess.CalledProcessError) as e:
        print(f"mkosi.postoutput: {e}", file=sys.stderr)
        return 1
    print(f"platform: {pdir.name} and {pdir.name}.tgz written")
    return 0


if __name__ == "__main__":
    # `python3 -m hooks.platform_dir prune DIR` (used by make).
    if sys.argv[1:2] == ["prune"] and len(sys.argv) == 3:
        for p in prune(Path(sys.argv[2]), load().keep):
            print(f"removed old {p.name}")
        sys.exit(0)
    print("usage: python3 -m hooks.platform_dir prune OUTPUT_DIR", file=sys.stderr)
    sys.exit(2)
