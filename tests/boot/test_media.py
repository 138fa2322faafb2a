"""Live media: the build's hybrid ISO boots as a DVD and its USB image as a
USB stick, each under BIOS (SeaBIOS) and UEFI (OVMF), through GRUB's default
(serial console) entry to a login prompt. The node reports the same platform
and the same verified root as a network boot of the same build, took its
node.config from a FAT filesystem labelled TRITONCFG (the USB image's own
config partition, or a second disk beside the DVD), and no longer needs the
medium (the root was copied to RAM).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hooks.config import load
from tests.boot.conftest import PASSWORD, ROOT_SHADOW
from tests.lib.node import Node, qemu_base

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
MEDIA = load().media
NODE_CONFIG = f"root_shadow='{ROOT_SHADOW}'\nhostname='cn-from-media'\n"
BOOT_TIMEOUT = 480


def fat_label(image: Path, offset: int) -> str:
    """The volume label of a FAT filesystem at this byte offset, or ''."""
    with image.open("rb") as f:
        f.seek(offset)
        boot = f.read(512)
    if boot[510:512] != b"\x55\xaa":
        return ""
    for at in (0x47, 0x2B):    # FAT32, FAT12/16
        if boot[at - 5] == 0x29:   # extended boot signature, then the 4-byte volume ID
            return boot[at:at + 11].decode("ascii", "replace").strip()
    return ""


def config_partition_offset(image: Path) -> int:
    """Where the USB image's config partition starts (found by its label)."""
    import json
    table = json.loads(subprocess.run(["sfdisk", "-J", str(image)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    sector = table.get("sectorsize", 512)
    for p in table["partitions"]:
        if fat_label(image, p["start"] * sector) == MEDIA.config_label:
            return p["start"] * sector
    raise AssertionError(f"{image} has no FAT partition labelled {MEDIA.config_label}: {table['partitions']}")


def put(image: Path, offset: int, name: str, text: str, tmp: Path) -> None:
    src = tmp / name
    src.write_text(text)
    subprocess.run(["mcopy", "-o", "-i", f"{image}@@{offset}", str(src), f"::{name}"], check=True)


@pytest.fixture(scope="module")
def media(platform, tmp_path_factory):
    out = platform.path.parent
    iso, usb = out / f"{platform.path.name}.iso", out / f"{platform.path.name}-usb.img"
    assert iso.is_file() and usb.is_file(), "the build wrote no live media"
    tmp = tmp_path_factory.mktemp("media")
    # A USB stick as an operator prepares it: the image written to it, then
    # node.config dropped onto its config partition.
    stick = tmp / "stick.raw"
    shutil.copyfile(usb, stick)
    put(stick, config_partition_offset(stick), "node.config", NODE_CONFIG, tmp)
    # Beside a DVD, the config comes on another disk with the same label.
    cfg = tmp / "config.raw"
    subprocess.run(["mkfs.vfat", "-C", "-n", MEDIA.config_label, str(cfg), "4096"], check=True,
                   stdout=subprocess.DEVNULL)
    put(cfg, 0, "node.config", NODE_CONFIG, tmp)
    return {"iso": iso, "stick": stick, "config": cfg, "tmp": tmp}


def boot(platform, media, logs, medium: str, firmware: str) -> Node:
    argv = [*qemu_base(2048), *Node.netdev()]
    if firmware == "uefi":
        vars_copy = media["tmp"] / f"vars-{medium}.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
    if medium == "dvd":
        argv += ["-drive", f"file={media['iso']},media=cdrom,if=none,id=dvd,readonly=on",
                 "-device", "ide-cd,drive=dvd,bootindex=0",
                 "-drive", f"file={media['config']},format=raw,if=none,id=cfg",
                 "-device", "virtio-blk-pci,drive=cfg"]
    else:
        argv += ["-device", "qemu-xhci,id=xhci",
                 "-drive", f"file={media['stick']},format=raw,if=none,id=stick,cache=unsafe",
                 "-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"]
    return Node(argv, logs / f"media-{medium}-{firmware}.log")


@pytest.mark.parametrize("medium,firmware", [("dvd", "bios"), ("dvd", "uefi"), ("usb", "bios"), ("usb", "uefi")])
def test_boots_from_live_media(platform, media, logs, medium, firmware):
    if firmware == "uefi" and not OVMF_CODE.is_file():
        pytest.fail(f"{OVMF_CODE} is missing: `make setup` installs Debian's ovmf")
    with boot(platform, media, logs, medium, firmware) as node:
        node.wait_for_console(r"triton-fetch-rootfs: copied \d+ MiB from media:" + MEDIA.volume_label(platform.stamp),
                              BOOT_TIMEOUT)
        seconds = node.wait_for_login(BOOT_TIMEOUT)
        node.login(PASSWORD)
        node.execute("systemctl is-system-running --wait", timeout=300)
        source = dict(line.split("=", 1) for line in node.succeed("cat /run/triton/rootfs/source").splitlines())
        expected = (platform.path / "x86_64/filesystem.squashfs.sha256").read_text().split()[0]
        # The same root a network boot of this build verifies.
        assert source["TRITON_PLATFORM"] == platform.stamp
        assert source["TRITON_ROOTFS_SHA256"] == expected
        assert source["TRITON_ROOTFS_URL"].startswith(f"media:{MEDIA.volume_label(platform.stamp)}:/dev/")
        assert f"Live Image: {platform.stamp}" in node.succeed("cat /etc/product")
        assert node.succeed("findmnt -n -o FSTYPE /") == "overlay"
        # Copied to RAM: nothing of the medium is mounted any more.
        assert node.succeed("findmnt -rn -o SOURCE,FSTYPE | grep -c -e iso9660 -e vfat || true") == "0"
        efi = node.execute("test -d /sys/firmware/efi")[0] == 0
        assert efi == (firmware == "uefi")
        # node.config from the config filesystem, applied.
        assert node.succeed("hostname") == "cn-from-media"
        assert node.succeed("systemctl --failed --no-legend --plain") == ""
        print(f"\nfigure: {medium} {firmware}: QEMU start to login {seconds:.1f} s")


def test_toram_0_boots_from_the_medium_which_stays_mounted(platform, media, logs):
    """triton.toram=0: the root is checked and mounted on the medium itself
    (less RAM; the medium must stay in). Booted with -kernel/-initrd and the
    DVD attached, with the arguments of GRUB's default entry plus that one."""
    label = MEDIA.volume_label(platform.stamp)
    args = [*load().boot.args, f"triton.media={label}", "triton.toram=0"]
    extra = ["-drive", f"file={media['iso']},media=cdrom,if=none,id=dvd,readonly=on", "-device", "ide-cd,drive=dvd",
             "-drive", f"file={media['config']},format=raw,if=none,id=cfg", "-device", "virtio-blk-pci,drive=cfg"]
    with Node.direct(platform.paths["kernel"], platform.paths["initrd"], args, logs / "media-toram0.log",
                     extra=extra) as node:
        node.wait_for_console(r"triton-fetch-rootfs: booting from media:" + label + r":/dev/sr0 \(triton.toram=0\)",
                              BOOT_TIMEOUT)
        node.wait_for_login(BOOT_TIMEOUT)
        node.login(PASSWORD)
        expected = (platform.path / "x86_64/filesystem.squashfs.sha256").read_text().split()[0]
        assert f"TRITON_ROOTFS_SHA256={expected}" in node.succeed("cat /run/triton/rootfs/source")
        assert node.succeed("findmnt -rn -o SOURCE,FSTYPE /run/triton/rootfs/medium") == "/dev/sr0 iso9660"
        # The loop device reads the squashfs on the medium (its path there),
        # not a copy in RAM (which would be /filesystem.squashfs on a tmpfs).
        assert node.succeed("losetup -n -O BACK-FILE") == f"/platform-{platform.stamp}/x86_64/filesystem.squashfs"
