"""Kernel modules without their appended signatures (mkosi.finalize).

Every module the kernel loads, it first hashes whole and, if it finds the
key, checks an RSA signature, in generic C: under instruction counting
(bench/boot.py --icount) 0.1-0.4 guest seconds per module, about 30 modules
before the login prompt, and 4.9 s for zfs.ko (DKMS signs it with a key made
in the throw-away build overlay, so the kernel hashed it against both its
keyrings and found none). On these nodes the check decides nothing: without
Secure Boot's lockdown the kernel loads an unsigned module and only marks
itself tainted (ZFS's licence and its unknown key taint it anyway), and under
Secure Boot ZFS could never load. The modules' integrity comes from the root
itself, whose every byte the initrd checks against the hash bound into it at
build (or reads through dm-verity).

Modules stay where they are, under the same names (modules.dep is
unchanged): xz-compressed ones are decompressed, stripped and compressed
again as Kbuild does it (CRC32 check, 1 MiB dictionary), which the kernel's
own decompressor reads.
"""

from __future__ import annotations

import lzma
import os
import struct
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# What ends a signed module: the PKCS#7 signature, then struct
# module_signature (12 bytes, the signature's length last, big-endian), then
# this marker (the kernel's MODULE_SIG_STRING).
SIGNATURE_MARKER = b"~Module signature appended~\n"
PKEY_ID_PKCS7 = 2
# scripts/Makefile.modinst: xz --check=crc32 --lzma2=dict=1MiB. Preset 3,
# not 6: 5 % larger, five times faster, as fast to decompress.
XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 3, "dict_size": 1 << 20}]


class ModuleSignatureError(Exception):
    pass


def strip_signature(elf: bytes) -> bytes:
    """The module without its appended signature (unchanged if unsigned)."""
    if not elf.endswith(SIGNATURE_MARKER):
        return elf
    end = len(elf) - len(SIGNATURE_MARKER) - 12
    if end < 0:
        raise ValueError("a signature marker with no signature before it")
    id_type, sig_len = elf[end + 2], struct.unpack_from(">I", elf, end + 8)[0]
    start = end - sig_len
    if id_type != PKEY_ID_PKCS7 or start < 64:
        raise ValueError(f"a damaged signature (type {id_type}, {sig_len} bytes in a {len(elf)}-byte file)")
    if elf[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
    if shoff + shentsize * shnum > start:
        raise ValueError("the ELF section headers overlap the signature")
    return elf[:start]


def strip_file(path: Path) -> bool:
    """Strip one module file in place; True if it was signed."""
    try:
        data = path.read_bytes()
        if path.name.endswith(".ko.xz"):
            elf = lzma.decompress(data)
            stripped = strip_signature(elf)
            if stripped is elf:
                return False
            data = lzma.compress(stripped, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=XZ_FILTERS)
        elif path.name.endswith(".ko"):
            stripped = strip_signature(data)
            if stripped is data:
                return False
            data = stripped
        else:
            raise ValueError("not a module this build knows how to read (.ko or .ko.xz)")
    except (lzma.LZMAError, struct.error, ValueError) as e:
        raise ModuleSignatureError(f"{path}: {e}") from e
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, path.stat().st_mode & 0o7777)
    tmp.replace(path)
    return True


def module_files(modules_dir: Path) -> list[Path]:
    return sorted(p for p in modules_dir.rglob("*.ko*") if p.is_file() and not p.name.endswith(".tmp"))


def strip_tree(modules_dir: Path, workers: int = os.cpu_count() or 1) -> tuple[int, int]:
    """Strip every module under `modules_dir` (/usr/lib/modules), on all
    CPUs. Returns (modules, of them signed)."""
    files = module_files(modules_dir)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        signed = sum(pool.map(strip_file, files, chunksize=32))
    return len(files), signed
