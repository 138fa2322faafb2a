"""hooks/kmodsig.py: modules lose the signature the kernel would check at
every load, and nothing else."""

import lzma
import struct
import subprocess

import pytest

from hooks import kmodsig
from tests.unit.test_zfs_modules import elf


def signed(module: bytes, signature: bytes = b"\x30\x82PKCS7" * 40) -> bytes:
    """`module` with a signature appended as the kernel's sign-file does:
    the PKCS#7 blob, struct module_signature (id_type 2, sig_len big-endian
    last), then the marker."""
    info = bytes([0, 0, kmodsig.PKEY_ID_PKCS7, 0, 0, 0, 0, 0]) + struct.pack(">I", len(signature))
    return module + signature + info + kmodsig.SIGNATURE_MARKER


MODULE = elf({".text": b"\xc3" * 100, ".data": b"x"})


def test_the_signature_is_left_behind_and_the_elf_kept_whole():
    assert kmodsig.strip_signature(signed(MODULE)) == MODULE
    assert kmodsig.strip_signature(MODULE) is MODULE


def zstd_decompress(path) -> bytes:
    return subprocess.run(["zstd", "-dcq", str(path)], capture_output=True, check=True).stdout


def test_a_tree_of_modules_is_stripped_xz_becoming_zstd_and_plain_staying_plain(tmp_path):
    kernel = tmp_path / "6.12.1/kernel/drivers/net"
    kernel.mkdir(parents=True)
    xz = kernel / "virtio_net.ko.xz"
    xz.write_bytes(lzma.compress(signed(MODULE), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32))
    xz.chmod(0o644)
    plain = tmp_path / "6.12.1/updates/dkms/zfs.ko"
    plain.parent.mkdir(parents=True)
    plain.write_bytes(signed(MODULE))
    unsigned_plain = tmp_path / "6.12.1/updates/dkms/spl.ko"
    unsigned_plain.write_bytes(MODULE)
    before = unsigned_plain.stat().st_mtime_ns
    unsigned_xz = kernel / "e1000.ko.xz"
    unsigned_xz.write_bytes(lzma.compress(MODULE, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32))

    assert kmodsig.strip_tree(tmp_path / "6.12.1", workers=2) == (4, 2)
    assert plain.read_bytes() == MODULE
    assert unsigned_plain.stat().st_mtime_ns == before  # an unsigned plain module is not rewritten
    for name in ("virtio_net", "e1000"):
        zst = kernel / f"{name}.ko.zst"
        assert zstd_decompress(zst) == MODULE
        assert zst.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.rglob("*.ko*")) == [
        "e1000.ko.zst", "spl.ko", "virtio_net.ko.zst", "zfs.ko"]
    # A second run finds nothing left to do.
    assert kmodsig.strip_tree(tmp_path / "6.12.1", workers=1) == (4, 0)


@pytest.mark.parametrize("damage, why", [
    ("too_long", r"a damaged signature \(type 2, 1000000 bytes"),
    ("not_pkcs7", r"a damaged signature \(type 1,"),
    ("marker_only", "a signature marker with no signature before it"),
    ("not_xz", "Input format not supported|not in the .xz format"),
])
def test_a_damaged_module_stops_the_build_by_name(tmp_path, damage, why):
    data = bytearray(signed(MODULE))
    marker = len(kmodsig.SIGNATURE_MARKER)
    if damage == "too_long":
        data[-marker - 4:-marker] = struct.pack(">I", 10**6)
    elif damage == "not_pkcs7":
        data[-marker - 10] = 1
    elif damage == "marker_only":
        data = bytearray(kmodsig.SIGNATURE_MARKER)
    ko = tmp_path / ("zfs.ko.xz" if damage == "not_xz" else "zfs.ko")
    ko.write_bytes(bytes(data))
    with pytest.raises(kmodsig.ModuleSignatureError, match=f"zfs.ko(.xz)?: ({why})"):
        kmodsig.strip_tree(tmp_path, workers=1)
    assert ko.read_bytes() == bytes(data)  # left as it was


def test_an_unknown_compression_is_refused_by_name(tmp_path):
    (tmp_path / "zfs.ko.gz").write_bytes(b"x")
    with pytest.raises(kmodsig.ModuleSignatureError, match=r"zfs.ko.gz: not a module this build knows"):
        kmodsig.strip_tree(tmp_path, workers=1)


def test_a_signed_zstd_module_is_refused_by_name(tmp_path):
    ko = tmp_path / "drm.ko"
    ko.write_bytes(signed(MODULE))
    subprocess.run(["zstd", "-q", "--rm", str(ko)], check=True)
    with pytest.raises(kmodsig.ModuleSignatureError, match=r"drm.ko.zst: a signed zstd-compressed module"):
        kmodsig.strip_tree(tmp_path, workers=1)
