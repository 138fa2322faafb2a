"""Live media: the build's hybrid ISO boots as a DVD and its USB image as a
USB stick, each under BIOS (SeaBIOS) and UEFI (OVMF), through GRUB's default
(serial console) entry to a login prompt. The node reports the same platform
and the same verified root as a network boot of the same build, took its
node.config from a FAT filesystem labelled TRITONCFG (the USB image's own
config partition, or a second disk beside the DVD), and no longer needs the
medium (the root was copied to RAM).

With triton.toram=0 (the menu's "root left on the medium" entry, which the
USB stick boots under UEFI) the root stays on the medium and is read only
through dm-verity, against the root hash bound into the initrd: a medium
changed after the build, or an initrd expecting another root, stops the
boot (-kernel/-initrd boots with the DVD attached).
"""

from __future__ import annotations

import mmap
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from hooks import bootfiles
from hooks.config import load
from tests.lib.pxe import PASSWORD, ROOT_SHADOW
from tests.lib.cpio_initrd import initrd_with_files, newc_entries, zstd_frames_end
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


def dvd(media, image: Optional[Path] = None, bootindex: bool = False) -> list[str]:
    """QEMU's arguments for the DVD (the ISO, or `image`) in its drive, and
    the disk with the config filesystem beside it."""
    return ["-drive", f"file={image or media['iso']},media=cdrom,if=none,id=dvd,readonly=on",
            "-device", "ide-cd,drive=dvd" + (",bootindex=0" if bootindex else ""),
            "-drive", f"file={media['config']},format=raw,if=none,id=cfg", "-device", "virtio-blk-pci,drive=cfg"]


def boot(platform, media, logs, medium: str, firmware: str) -> Node:
    argv = [*qemu_base(2048), *Node.netdev()]
    if firmware == "uefi":
        vars_copy = media["tmp"] / f"vars-{medium}.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
    if medium == "dvd":
        argv += dvd(media, bootindex=True)
    else:
        argv += ["-device", "qemu-xhci,id=xhci",
                 "-drive", f"file={media['stick']},format=raw,if=none,id=stick,cache=unsafe",
                 "-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"]
    return Node(argv, logs / f"media-{medium}-{firmware}.log")


# The USB stick under UEFI boots the menu's entry that leaves the root on
# the medium (triton.toram=0), chosen by its key as an operator would at the
# serial console; the other three boot the default entry (root copied to RAM).
ON_MEDIUM = ("usb", "uefi")


@pytest.mark.parametrize("medium,firmware", [("dvd", "bios"), ("dvd", "uefi"), ("usb", "bios"), ("usb", "uefi")])
def test_boots_from_live_media(platform, media, logs, medium, firmware):
    if firmware == "uefi" and not OVMF_CODE.is_file():
        pytest.fail(f"{OVMF_CODE} is missing: `make setup` installs Debian's ovmf")
    label = MEDIA.volume_label(platform.stamp)
    on_medium = (medium, firmware) == ON_MEDIUM
    with boot(platform, media, logs, medium, firmware) as node:
        if on_medium:
            node.expect(r"root left on the medium \[m\]", 180)
            node.child.send("m")
            the_initrd_reads_the_root_from_the_stick(node, platform)
        else:
            node.wait_for_console(r"triton-fetch-rootfs: copied \d+ MiB from media:" + label, BOOT_TIMEOUT)
        seconds = node.up(PASSWORD, BOOT_TIMEOUT)
        source = dict(line.split("=", 1) for line in node.succeed("cat /run/triton/rootfs/source").splitlines())
        expected = (platform.path / "x86_64/filesystem.squashfs.sha256").read_text().split()[0]
        # The same root a network boot of this build verifies.
        assert source["TRITON_PLATFORM"] == platform.stamp
        assert source["TRITON_ROOTFS_SHA256"] == expected
        assert source["TRITON_ROOTFS_URL"].startswith(f"media:{label}:/dev/")
        assert f"Live Image: {platform.stamp}" in node.succeed("cat /etc/product")
        assert node.succeed("findmnt -n -o FSTYPE /") == "overlay"
        if on_medium:
            the_root_is_read_from_the_medium_through_dm_verity(node, platform, source)
        else:
            # Copied to RAM: nothing of the medium is mounted any more.
            assert node.succeed("findmnt -rn -o SOURCE,FSTYPE | grep -c -e iso9660 -e vfat || true") == "0"
        efi = node.execute("test -d /sys/firmware/efi")[0] == 0
        assert efi == (firmware == "uefi")
        # node.config from the config filesystem, applied.
        assert node.succeed("hostname") == "cn-from-media"
        assert node.succeed("systemctl --failed --no-legend --plain") == ""
        print(f"\nfigure: {medium} {firmware}{' (root on the medium)' if on_medium else ''}: "
              f"QEMU start to login {seconds:.1f} s")


def the_initrd_reads_the_root_from_the_stick(node: Node, platform) -> None:
    """What the initrd says of triton.toram=0: the root stays on the medium
    (the stick's whole disk), every block checked against the root hash
    bound into the initrd."""
    label = MEDIA.volume_label(platform.stamp)
    node.wait_for_console(rf"triton-fetch-rootfs: booting from media:{label}:/dev/sd[a-z] "
                          r"\(triton.toram=0\)", BOOT_TIMEOUT)
    node.wait_for_console(r"triton-fetch-rootfs: platform \S+: root verified \(dm-verity root hash "
                          + platform.manifest["verity"]["root_hash"], BOOT_TIMEOUT)


def the_root_is_read_from_the_medium_through_dm_verity(node: Node, platform, source: dict[str, str]) -> None:
    """triton.toram=0: the root is mounted from the medium itself (less RAM;
    the medium must stay in), and every read of it goes through dm-verity,
    against the root hash the build bound into the initrd: a USB stick or a
    BMC's virtual media that changes a block after boot gives an I/O error,
    never the changed data."""
    verity = platform.manifest["verity"]
    assert source["TRITON_ROOTFS_VERITY_ROOTHASH"] == verity["root_hash"]
    assert node.succeed("findmnt -rn -o FSTYPE /run/triton/rootfs/medium") == "iso9660"
    # The overlay's lower layer is the dm-verity device, active and with
    # no block found corrupted (V), keyed to the build's root hash and salt.
    lower = node.succeed("findmnt -n -o MAJ:MIN /run/triton/rootfs/lower").strip()
    dm = node.succeed("dmsetup info -c --noheadings -o major,minor --separator : triton-root").strip()
    assert lower == dm, f"the root's lower layer ({lower}) is not dm-verity's triton-root ({dm})"
    assert node.succeed("findmnt -n -o FSTYPE /run/triton/rootfs/lower") == "squashfs"
    table = node.succeed("dmsetup table triton-root").split()
    assert table[2] == "verity", table
    assert verity["root_hash"] in table and verity["salt"] in table
    assert node.succeed("dmsetup status triton-root").split()[-1] == "V"
    # dm-verity reads the medium's own files (read-only loop devices),
    # not a copy in RAM: the squashfs as data, its tree as hashes.
    loops = dict(line.split() for line in
                 node.succeed("losetup -n -O MAJ:MIN,BACK-FILE").splitlines())
    data_dev, hash_dev = table[4], table[5]
    assert loops[data_dev].endswith(f"/platform-{platform.stamp}/x86_64/filesystem.squashfs"), loops
    assert loops[hash_dev].endswith(f"/platform-{platform.stamp}/x86_64/filesystem.squashfs.verity"), loops
    assert node.succeed("losetup -n -O RO").split() == ["1", "1"]


def toram_0(platform, media, logs, name: str, image: Optional[Path] = None, initrd: Optional[Path] = None) -> Node:
    """Booted with -kernel/-initrd and the DVD (the ISO, or `image`) with the
    config disk beside it, with the arguments of GRUB's default entry plus
    triton.toram=0."""
    label = MEDIA.volume_label(platform.stamp)
    append = [*load().boot.args, f"triton.media={label}", "triton.toram=0"]
    return Node.direct(platform.paths["kernel"], initrd or platform.paths["initrd"], append,
                       logs / f"media-{name}.log", extra=dvd(media, image))


def squashfs_offset(image: Path, rootfs: Path) -> int:
    """Where the platform's squashfs starts inside a medium's image (found by
    its first 64 KiB: the superblock, with its build time, is unique)."""
    with rootfs.open("rb") as f:
        head = f.read(65536)
    with image.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        at = m.find(head)
        assert at >= 0, f"{image} holds no copy of {rootfs}"
        assert m.find(head, at + 1) < 0, f"{image} holds {rootfs} twice"
    return at


def rootfs_env(initrd: Path) -> str:
    """The facts the build bound into this initrd (the cpio it appended)."""
    data = initrd.read_bytes()
    entries = {name: content for name, _, content in newc_entries(data, zstd_frames_end(data))}
    return entries[bootfiles.ROOTFS_ENV.lstrip("/")].decode()


@pytest.mark.parametrize("change", ["damaged medium", "wrong root hash"])
def test_toram_0_refuses_a_root_that_does_not_match_its_root_hash(platform, media, logs, tmp_path, change):
    """A medium changed after the build (one byte flipped in the middle of
    its squashfs, a block the mount itself never reads), or an initrd that
    expects another root hash: the boot stops before switch-root with the
    FAILED line naming the medium and the root hash the initrd expected.
    The initrd reads every block through dm-verity once before it mounts the
    root, so damage anywhere is found at boot, not by a program later."""
    label = MEDIA.volume_label(platform.stamp)
    root_hash = platform.manifest["verity"]["root_hash"]
    image, initrd, block = None, None, None
    if change == "damaged medium":
        image = tmp_path / "damaged.iso"
        shutil.copyfile(media["iso"], image)
        at = squashfs_offset(image, platform.rootfs)
        flip = platform.rootfs.stat().st_size // 2 + 123
        block = flip // 4096
        with image.open("r+b") as f:
            f.seek(at + flip)
            byte = f.read(1)[0]
            f.seek(at + flip)
            f.write(bytes([byte ^ 0xFF]))
    else:
        env = rootfs_env(platform.initrd)
        assert f"TRITON_ROOTFS_VERITY_ROOTHASH={root_hash}\n" in env
        # The same root hash with its last digit changed: a later cpio's file
        # replaces the earlier one, as iPXE's modules do.
        root_hash = root_hash[:-1] + ("0" if root_hash[-1] != "0" else "1")
        env = env.replace(f"TRITON_ROOTFS_VERITY_ROOTHASH={platform.manifest['verity']['root_hash']}",
                          f"TRITON_ROOTFS_VERITY_ROOTHASH={root_hash}")
        initrd = initrd_with_files(platform.initrd, tmp_path / "initrd", {bootfiles.ROOTFS_ENV: env.encode()})
    name = "toram0-" + change.replace(" ", "-")
    with toram_0(platform, media, logs, name, image=image, initrd=initrd) as node:
        node.wait_for_console(r"triton-fetch-rootfs: checking every block of the root on media:" + label,
                              BOOT_TIMEOUT)
        line = node.wait_for_console(r"triton-fetch-rootfs: FAILED: ", BOOT_TIMEOUT, fatal=False)
        assert f"FAILED: dm-verity mismatch for media:{label}:/dev/sr0: " in line, line
        assert f"expected root hash {root_hash}" in line, line
        assert "the medium is damaged or was altered" in line and "Not booting it" in line, line
        if block is not None:
            # dm-verity itself found the flipped block (the kernel says which).
            assert f"data block {block} is corrupted" in node.console(last=400)
