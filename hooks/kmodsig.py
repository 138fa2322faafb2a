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

Debian's xz-compressed modules become zstd-compressed (`.ko.xz` ->
`.ko.zst`; mkosi.finalize reruns depmod). The kernel decompresses xz itself,
slowly: 2.5 guest s before the login prompt, 0.6 s for libata alone. It
reads no zstd (Debian builds it for xz only), so kmod decompresses those in
user space with libzstd, several times faster; the root is 5 % larger for it
(63 MB of modules against 53). Plain `.ko` files (ZFS) stay plain: the
squashfs compresses them.
"""

from __future__ import annotations

import lzma
import os
import struct
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# What ends a signed module: the PKCS#7 signature, then struct
# module_signature (12 bytes, the signature's length last, big-endian), then
# this marker (the kernel's MODULE_SIG_STRING).
SIGNATURE_MARKER = b"~Module signature appended~\n"
PKEY_ID_PKCS7 = 2
# zstd's level for the modules: 15 compresses Debian's 289 MB of modules to
# 63 MB in 12 s on two cores; 19 gains 2 MB for a minute more.
ZSTD_LEVEL = 15


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


def module_elf(path: Path) -> bytes:
    """A module file's ELF image, whatever this build stores it as."""
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dcq", "--", str(path)], capture_output=True, check=True).stdout
    if path.name.endswith(".xz"):
        return lzma.decompress(path.read_bytes())
    return path.read_bytes()


def is_signed(path: Path) -> bool:
    return module_elf(path).endswith(SIGNATURE_MARKER)


def strip_file(path: Path) -> tuple[Path, bool]:
    """Strip one module file: a plain `.ko` in place; a `.ko.xz` into a
    plain `.ko` beside it (the xz file removed), for zstd to compress.
    Returns the file now holding the module, and whether it was signed."""
    try:
        data = path.read_bytes()
        if path.name.endswith(".ko.xz"):
            data = lzma.decompress(data)
            out = path.with_name(path.name.removesuffix(".xz"))
        elif path.name.endswith(".ko"):
            out = path
        elif path.name.endswith(".ko.zst"):  # this build's own, from an earlier run
            if is_signed(path):
                raise ValueError("a signed zstd-compressed module: this build writes none")
            return path, False
        else:
            raise ValueError("not a module this build knows how to read (.ko, .ko.xz or .ko.zst)")
        stripped = strip_signature(data)
    except (lzma.LZMAError, struct.error, ValueError, subprocess.CalledProcessError) as e:
        raise ModuleSignatureError(f"{path}: {e}") from e
    if out == path and stripped is data:
        return out, False
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(stripped)
    os.chmod(tmp, path.stat().st_mode & 0o7777)
    tmp.replace(out)
    if out != path:
        path.unlink()
    return out, stripped is not data


def zstd_compress(files: list[Path], workers: int) -> None:
    """Compress each file to FILE.zst, removing FILE; `workers` zstd runs."""
    commands = [["zstd", "-q", f"-{ZSTD_LEVEL}", "--rm", "--no-progress", "--", *map(str, files[i::workers])]
                for i in range(workers) if files[i::workers]]
    runs = [(command, subprocess.Popen(command)) for command in commands]
    if failed := [command for command, run in runs if run.wait() != 0]:
        raise ModuleSignatureError(f"zstd failed: {' '.join(failed[0][:7])} ...")


def module_files(modules_dir: Path) -> list[Path]:
    return sorted(p for p in modules_dir.rglob("*.ko*") if p.is_file() and not p.name.endswith(".tmp"))


def strip_tree(modules_dir: Path, workers: int = os.cpu_count() or 1) -> tuple[int, int]:
    """Strip every module under `modules_dir` (/usr/lib/modules) and turn
    xz into zstd, on all CPUs. Returns (modules, of them signed). depmod
    must run again when any was xz (its file name changed)."""
    files = module_files(modules_dir)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(strip_file, files, chunksize=32))
    zstd_compress([out for (out, _), src in zip(done, files) if src.name.endswith(".xz")], workers)
    return len(files), sum(signed for _, signed in done)
