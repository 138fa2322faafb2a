"""What is inside the initrd: everything it runs can load its libraries."""

import subprocess
from pathlib import Path

import pytest

from tests.lib.cpio_initrd import unpack_initrd


@pytest.fixture(scope="module")
def initrd_tree(platform, tmp_path_factory) -> Path:
    tree = tmp_path_factory.mktemp("initrd")
    unpack_initrd(platform.initrd, tree)
    return tree


def elf_files(tree: Path) -> list[Path]:
    out = []
    for p in tree.rglob("*"):
        if p.is_file() and not p.is_symlink() and p.stat().st_size > 4:
            with p.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    out.append(p)
    return out


def needed(elf: Path) -> list[str]:
    res = subprocess.run(["readelf", "-d", str(elf)], capture_output=True, text=True)
    # A readelf that failed would list no libraries, and the check would pass.
    assert res.returncode == 0, f"readelf -d {elf}: {res.stderr.strip()}"
    dyn = res.stdout
    return [line.split("[", 1)[1].rstrip("]") for line in dyn.splitlines() if "(NEEDED)" in line]


def test_the_initrd_has_its_fetch_tools(initrd_tree):
    for tool in ("usr/bin/curl", "usr/bin/sha256sum", "usr/lib/triton/fetch-rootfs",
                 "usr/lib/systemd/systemd-networkd", "usr/bin/udevadm",
                 # A root read from its medium (triton.toram=0): through dm-verity.
                 "usr/sbin/losetup", "usr/sbin/veritysetup", "usr/sbin/dmsetup", "usr/bin/dd"):
        assert (initrd_tree / tool).exists(), tool
    assert list(initrd_tree.glob("usr/lib/modules/*/kernel/drivers/net/virtio_net.ko*"))


def test_the_initrd_carries_no_documentation_or_package_tools(initrd_tree):
    """The kernel unpacks every byte of the initrd at every boot."""
    assert (initrd_tree / "usr/bin/curl").is_file()  # the tree was unpacked
    for gone in ("usr/share/doc", "usr/share/common-licenses", "usr/share/bash-completion",
                 "var/lib/systemd/catalog", "usr/bin/dpkg", "usr/bin/dpkg-query", "usr/bin/systemd-repart"):
        assert not (initrd_tree / gone).exists(), gone


def test_every_program_and_library_in_the_initrd_finds_its_libraries(initrd_tree):
    """Trimming the initrd (RemoveFiles= in mkosi.initrd/mkosi.conf) must not
    take a library that something left in it links."""
    libdirs = [initrd_tree / d for d in ("usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/lib",
                                         "usr/lib/x86_64-linux-gnu/systemd")]
    elves = elf_files(initrd_tree)
    assert len(elves) > 100
    missing = []
    for elf in elves:
        if "/modules/" in str(elf):
            continue
        for lib in needed(elf):
            if not any((d / lib).exists() for d in libdirs):
                missing.append(f"{elf.relative_to(initrd_tree)} needs {lib}")
    assert not missing, "\n".join(missing)


@pytest.fixture(scope="module")
def moddir(initrd_tree) -> Path:
    """The initrd's /usr/lib/modules/<kver>."""
    return next(initrd_tree.glob("usr/lib/modules/*"))


def module_names(moddir: Path) -> dict[str, str]:
    """{module name: path under kernel/} of the modules in the initrd."""
    kernel = moddir / "kernel"
    return {ko.name.split(".ko")[0].replace("-", "_"): str(ko.relative_to(kernel))
            for ko in kernel.glob("**/*.ko*")}


def test_the_initrd_has_the_drivers_a_node_boots_with(moddir):
    names = module_names(moddir)
    wanted = {
        "network boot": ["virtio_net", "e1000", "e1000e", "igb", "ixgbe", "i40e", "ice", "bnxt_en",
                         "tg3", "bnx2x", "mlx4_en", "mlx5_core", "r8169", "vmxnet3", "hv_netvsc"],
        "the root": ["loop", "squashfs", "overlay"],
        "the root on its medium, through dm-verity": ["dm_mod", "dm_verity"],
        "the pool's disks": ["ahci", "nvme", "sd_mod", "virtio_scsi", "virtio_blk", "mpt3sas",
                             "megaraid_sas", "smartpqi", "hpsa", "aacraid", "usb_storage", "uas"],
        "live media": ["ata_piix", "sr_mod", "isofs", "vfat", "nls_cp437", "xhci_pci"],
    }
    missing = [f"{name} ({why})" for why, mods in wanted.items() for name in mods if name not in names]
    assert not missing, "missing from the initrd: " + ", ".join(missing)


# device-mapper's own, for the root read from its medium (triton.toram=0);
# dm-verity hashes with the kernel's built-in sha256.
DM_VERITY = {"dm_mod", "dm_bufio", "dm_verity"}


def test_no_module_in_the_initrd_carries_a_signature(moddir):
    """mkosi takes the initrd's modules from the root after mkosi.finalize
    has stripped them (hooks/kmodsig.py)."""
    from hooks.kmodsig import is_signed, module_files
    files = module_files(moddir)
    assert any(f.name == "virtio_net.ko.zst" for f in files), [f.name for f in files]
    signed = [f.name for f in files if is_signed(f)]
    assert not signed, f"{len(signed)} of {len(files)} modules still signed: {signed[:5]}"


def test_the_initrd_has_no_modules_it_never_uses(moddir):
    """udev loads every module whose alias matches the machine, CPU features
    included: each crypto module here would be loaded (and self-tested by the
    kernel) at every boot, for nothing the initrd does."""
    unused = sorted(path for name, path in module_names(moddir).items()
                    if path.startswith(("crypto/", "arch/x86/crypto/", "fs/btrfs/", "fs/xfs/",
                                        "fs/ext4/", "fs/erofs/", "drivers/md/"))
                    and not name.startswith("crc32c")  # libcrc32c's soft dependency
                    and name not in DM_VERITY)
    assert not unused, "the initrd has modules it never uses: " + ", ".join(unused)


def test_every_module_in_the_initrd_has_its_dependencies(moddir):
    present = {f"kernel/{path}" for path in module_names(moddir).values()}
    missing = []
    for line in (moddir / "modules.dep").read_text().splitlines():
        module, _, deps = line.partition(":")
        if module in present:
            missing += [f"{module} needs {dep}" for dep in deps.split() if dep not in present]
    assert not missing, "\n".join(missing)


def test_the_units_the_initrd_masks_stay_masked(initrd_tree):
    """mkosi.initrd masks units the initrd never needs; the image build's
    `systemctl preset-all` would remove masks of template instances from
    /etc, so those live in /usr/lib."""
    extra = Path(__file__).resolve().parents[2] / "mkosi.initrd/mkosi.extra"
    masks = [p.relative_to(extra) for p in extra.glob("**/systemd/system/*")
             if p.is_symlink() and str(p.readlink()) == "/dev/null"]
    assert len(masks) >= 10
    lost = [str(m) for m in masks
            if not ((initrd_tree / m).is_symlink() and str((initrd_tree / m).readlink()) == "/dev/null")]
    assert not lost, "masked in mkosi.initrd but not in the built initrd: " + ", ".join(lost)


def test_every_module_in_the_initrd_has_its_soft_dependencies(moddir):
    """mkosi follows modules.dep only; a soft dependency left out can keep a
    driver from loading (libcrc32c, for bnx2x, needs crc32c)."""
    names = module_names(moddir)
    aliases = {}
    for line in (moddir / "modules.alias").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "alias":
            aliases.setdefault(parts[1], set()).add(parts[2].replace("-", "_"))
    missing = []
    for name, path in names.items():
        res = subprocess.run(["modinfo", "-F", "softdep", str(moddir / "kernel" / path)],
                             capture_output=True, text=True)
        assert res.returncode == 0, f"modinfo {path}: {res.stderr.strip()}"
        info = res.stdout
        for dep in info.replace("pre:", " ").replace("post:", " ").split():
            wanted = {dep.replace("-", "_")} | aliases.get(dep, set())
            if not wanted & set(names):
                missing.append(f"{name} wants {dep}")
    assert not missing, "\n".join(missing)


def tftp_server(data: bytes, sock) -> None:
    """One RRQ answered with `data` in 512-byte blocks, no options, block
    numbers wrapping past 65535 (as a TFTP server that ignores curl's options)."""
    import socket
    import struct
    _, peer = sock.recvfrom(2048)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.bind(("127.0.0.1", 0))
    out.settimeout(5)
    n = 0
    for offset in range(0, len(data) + 1, 512):
        n += 1
        packet = struct.pack("!HH", 3, n & 0xFFFF) + data[offset:offset + 512]
        for _ in range(5):
            out.sendto(packet, peer)
            try:
                ack, _ = out.recvfrom(64)
            except socket.timeout:
                continue
            if struct.unpack("!HH", ack[:4]) == (4, n & 0xFFFF):
                break
        else:
            return
    out.close()


def test_the_initrds_curl_fetches_a_root_over_tftp(initrd_tree, tmp_path):
    """booter's fetch= is tftp:// when its ipxeHTTP is off: the initrd's curl,
    with fetch-rootfs's options, fetches over TFTP past block 65535."""
    import os
    import socket
    import threading
    data = os.urandom(65536 * 512 + 4096)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    server = threading.Thread(target=tftp_server, args=(data, sock), daemon=True)
    server.start()
    lib = initrd_tree / "usr/lib/x86_64-linux-gnu"
    res = subprocess.run([str(initrd_tree / "lib64/ld-linux-x86-64.so.2"), "--library-path", str(lib),
                          str(initrd_tree / "usr/bin/curl"), "--fail", "--silent", "--show-error", "--location",
                          "--globoff", "--connect-timeout", "5", "--speed-limit", "1024", "--speed-time", "20",
                          "--max-time", "120", "--max-filesize", str(len(data)), "--output", str(tmp_path / "root"),
                          "--", f"tftp://127.0.0.1:{sock.getsockname()[1]}/filesystem.squashfs"],
                         capture_output=True, text=True, timeout=180)
    server.join(30)
    sock.close()
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "root").read_bytes() == data
    assert "--max-filesize" in (initrd_tree / "usr/lib/triton/fetch-rootfs").read_text()
