"""dm-verity for the root on a live medium: the hash tree the build writes
beside the squashfs (`filesystem.squashfs.verity`), and the parameters the
initrd opens it with.

Booted with `triton.toram=0`, the node reads its root from the medium for as
long as it runs; a USB stick or a BMC's virtual media can change blocks after
any one-time check. The initrd therefore reads the medium only through
dm-verity, which checks every block against the root hash at every read from
the medium. The tree has no superblock: the medium supplies nothing but data
and hash blocks, and everything else the kernel is told (hash, block sizes,
block count, salt, root hash) comes from the initrd, where the build binds it
(rootfs.env), so a medium cannot describe its own tree.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

HASH = "sha256"
# Data and hash blocks. mksquashfs pads its output to 4 KiB (unless -nopad),
# so every byte of the root is in a block.
BLOCK_SIZE = 4096
_HEX64 = re.compile(r"[0-9a-f]{64}")


class VerityError(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class VerityParams:
    salt: str
    data_blocks: int
    hash: str = HASH
    block_size: int = BLOCK_SIZE


@dataclasses.dataclass(frozen=True)
class HashTree:
    """What the initrd needs to open the root through dm-verity."""
    params: VerityParams
    root_hash: str


def params(rootfs_sha256: str, size: int) -> VerityParams:
    """The tree's parameters for a root of `size` bytes with this SHA-256.
    The salt is the root's own SHA-256: unique to this root, and the same for
    every build of the same bytes, so a SOURCE_DATE_EPOCH build stays
    bit-for-bit reproducible, hash tree included."""
    if not _HEX64.fullmatch(rootfs_sha256):
        raise VerityError(f"{rootfs_sha256!r} is not a SHA-256 in lowercase hex")
    if size <= 0 or size % BLOCK_SIZE:
        raise VerityError(
            f"the root squashfs is {size} bytes, not a whole number of {BLOCK_SIZE}-byte blocks: "
            "dm-verity would leave its tail unchecked (mksquashfs pads to 4 KiB unless given -nopad)"
        )
    return VerityParams(salt=rootfs_sha256, data_blocks=size // BLOCK_SIZE)


def options(p: VerityParams) -> list[str]:
    """veritysetup's options for format, verify and open alike."""
    return [
        "--no-superblock",
        f"--hash={p.hash}",
        f"--data-block-size={p.block_size}",
        f"--hash-block-size={p.block_size}",
        f"--data-blocks={p.data_blocks}",
        f"--salt={p.salt}",
    ]


def format_command(data: Path, tree: Path, p: VerityParams, root_hash_file: Path) -> list[str]:
    return ["veritysetup", "format", *options(p), f"--root-hash-file={root_hash_file}", str(data), str(tree)]


def verify_command(data: Path, tree: Path, p: VerityParams, root_hash: str) -> list[str]:
    return ["veritysetup", "verify", *options(p), str(data), str(tree), root_hash]


def parse_root_hash(text: str) -> str:
    """The root hash veritysetup wrote (--root-hash-file)."""
    root = text.strip()
    if not _HEX64.fullmatch(root):
        raise VerityError(f"veritysetup wrote no {HASH} root hash: {text[:100]!r}")
    return root


def manifest_entry(tree: HashTree, tree_path: str) -> dict[str, Any]:
    """The manifest's record: enough to check a medium by hand with
    `veritysetup verify <options> filesystem.squashfs filesystem.squashfs.verity <root_hash>`."""
    p = tree.params
    return {
        "hash_tree": tree_path,
        "root_hash": tree.root_hash,
        "hash": p.hash,
        "block_size": p.block_size,
        "data_blocks": p.data_blocks,
        "salt": p.salt,
        "veritysetup_options": options(p),
    }


def _run(argv: list[str], what: str) -> None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        raise VerityError("veritysetup not found: run `make setup` "
                          "(tools/hostsetup.py installs cryptsetup-bin)") from None
    if r.returncode != 0:
        raise VerityError(f"veritysetup {what} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-2000:]}")


def write_hash_tree(data: Path, tree: Path, p: VerityParams) -> HashTree:
    """Write the hash tree of `data` to `tree`, check `data` against it, and
    return the root hash with the parameters."""
    tree.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="triton-verity-") as tmp:
        root_file = Path(tmp) / "root-hash"
        _run(format_command(data, tree, p, root_file), "format")
        root = parse_root_hash(root_file.read_text())
    # veritysetup creates it 0600; it is published like the squashfs.
    tree.chmod(0o644)
    _run(verify_command(data, tree, p, root), "verify")
    return HashTree(p, root)
