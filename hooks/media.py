"""Live media: the platform directory's kernel, initrd and root on a hybrid
ISO (a DVD, or `dd` to a USB stick) and a USB disk image with a config
partition; both boot under BIOS and UEFI through GRUB.

    python3 -m hooks.media out/platform-<stamp>    (make build runs it)

writes out/platform-<stamp>.iso and out/platform-<stamp>-usb.img. Nothing
is rebuilt per medium: the files are the platform directory's own (hard
links into a staging tree), so the initrd checks a medium's root against
what it carries: the root's SHA-256 when it copies the root to RAM, exactly
as a download; its dm-verity root hash, with the squashfs's hash tree on the
medium, when it reads the root from the medium (triton.toram=0).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from hooks.config import PlatformConfig, load
from hooks.platform_dir import layout, platform_name
from hooks.render import render

CONFIG_README = """This is the config partition of a Triton Linux platform USB stick.

Files placed here are used at boot, as booter would deliver them:
  node.config            shell-style key='value' lines (root_shadow, hostname,
                         dns_resolvers, dns_domain, ntp_hosts, admin_nic, ...)
  networking.json        booter's networking.json (NIC tags, addresses, ...)
  answers.json           sets up the system pool unattended
  root_authorized_keys   ssh keys for root
Files delivered by a boot server win over these.
"""


class MediaError(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Entry:
    title: str
    args: tuple[str, ...]
    # A key that boots this entry at once from the menu (GRUB's --hotkey),
    # shown in its title: on a serial console, easier than the arrow keys.
    hotkey: Optional[str] = None


def menu_entries(stamp: str, settings: PlatformConfig) -> list[Entry]:
    """Serial console first (the default, as Triton's linux-live), VGA, a
    rescue entry that imports no pool, and one that leaves the root on the
    medium (triton.toram=0: less RAM, read through dm-verity)."""
    media = [f"triton.media={settings.media.volume_label(stamp)}"]
    serial = [*settings.boot.args, *media]
    vga = [a for a in settings.boot.args if not a.startswith("console=")] + ["console=ttyS1,115200n8",
                                                                             "console=tty0", *media]
    return [
        Entry(f"Triton Linux {stamp} (serial console)", tuple(serial)),
        keyed("v", f"Triton Linux {stamp} (VGA console)", vga),
        keyed("r", f"Triton Linux {stamp} rescue (no pool import)", [*serial, "noimport=true"]),
        keyed("m", f"Triton Linux {stamp} root left on the medium", [*serial, "triton.toram=0"]),
    ]


def keyed(key: str, title: str, args: Sequence[str]) -> Entry:
    """An entry its key boots, the key shown at the end of its title."""
    return Entry(f"{title} [{key}]", tuple(args), key)


def grub_cfg(stamp: str, settings: PlatformConfig) -> str:
    paths = {k: f"{platform_name(stamp)}/{v}" for k, v in layout(stamp, settings.arch_dir).items()}
    return render("grub.cfg.j2", stamp=stamp, label=settings.media.volume_label(stamp), paths=paths,
                  timeout=settings.media.menu_timeout, entries=menu_entries(stamp, settings))


# What a medium carries of the platform directory.
MEDIA_ROLES = ("kernel", "initrd", "rootfs", "verity", "version", "os-release", "manifest")


def stage(pdir: Path, stamp: str, settings: PlatformConfig, into: Path) -> None:
    """The medium's tree: boot/grub/grub.cfg and platform-<stamp>/ with the
    kernel, initrd, root, its dm-verity hash tree and the version files (hard
    links, not copies)."""
    paths = layout(stamp, settings.arch_dir)
    for role in MEDIA_ROLES:
        src = pdir / paths[role]
        dst = into / platform_name(stamp) / paths[role]
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    (into / "boot/grub").mkdir(parents=True, exist_ok=True)
    (into / "boot/grub/grub.cfg").write_text(grub_cfg(stamp, settings))


def mkrescue_command(tree: Path, out: Path, label: str, config_image: Optional[Path] = None) -> list[str]:
    """grub-mkrescue makes the ISO bootable by BIOS (El Torito, and an MBR
    for USB sticks) and UEFI (an EFI system partition image); what follows
    `--` goes to xorriso."""
    argv = ["grub-mkrescue", "--compress=xz", "-o", str(out), str(tree), "--", "-volid", label]
    if config_image is not None:
        # A FAT partition after the ISO's own, for the node's config.
        argv += ["-append_partition", "3", "0x0c", str(config_image)]
    return argv


def config_image(path: Path, label: str, mib: int) -> None:
    subprocess.run(["mkfs.vfat", "-C", "-n", label, str(path), str(mib * 1024)], check=True,
                   stdout=subprocess.DEVNULL)
    readme = path.with_suffix(".txt")
    readme.write_text(CONFIG_README)
    subprocess.run(["mcopy", "-i", str(path), str(readme), "::README.txt"], check=True)
    readme.unlink()


def build(pdir: Path, settings: PlatformConfig) -> list[Path]:
    stamp = (pdir / layout("", settings.arch_dir)["version"]).read_text().strip()
    if pdir.name != platform_name(stamp):
        raise MediaError(f"{pdir} is not a platform directory (its etc/version/platform says {stamp!r})")
    # xz: grub-mkrescue --compress=xz runs it (and fails without it saying so).
    for tool in ("grub-mkrescue", "xorriso", "xz", "mkfs.vfat", "mcopy"):
        if shutil.which(tool) is None:
            raise MediaError(f"{tool} not found: run `make setup` (it installs the host's tools)")
    label = settings.media.volume_label(stamp)
    iso = pdir.parent / f"{platform_name(stamp)}.iso"
    usb = pdir.parent / f"{platform_name(stamp)}-usb.img"
    with tempfile.TemporaryDirectory(dir=pdir.parent, prefix=".media-") as tmp:
        tree = Path(tmp) / "tree"
        stage(pdir, stamp, settings, tree)
        cfg = Path(tmp) / "config.img"
        config_image(cfg, settings.media.config_label, settings.media.config_mib)
        for out, extra in ((iso, None), (usb, cfg)):
            part = out.with_name(out.name + ".part")
            r = subprocess.run(mkrescue_command(tree, part, label, extra), capture_output=True, text=True)
            if r.returncode != 0:
                part.unlink(missing_ok=True)
                raise MediaError(f"grub-mkrescue failed for {out.name}:\n{r.stderr[-2000:]}")
            part.rename(out)
    return [iso, usb]


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 -m hooks.media out/platform-<stamp>", file=sys.stderr)
        return 2
    try:
        for out in build(Path(argv[0]).resolve(), load()):
            print(f"media: {out.name} written ({out.stat().st_size / 2**20:.1f} MiB)")
    except (MediaError, subprocess.CalledProcessError) as e:
        print(f"media: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
