"""The root's dm-verity hash tree: its parameters, veritysetup's commands, and
(where the host has veritysetup, as `make setup` installs it) a real tree,
made and checked without root, as the build makes it."""

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from hooks import bootfiles, verity
from hooks.config import load
from hooks.files import sha256_file
from hooks.platform_dir import build_manifest, layout

SHA = "ab" * 32
FETCH_ROOTFS = Path(__file__).resolve().parents[2] / "mkosi.initrd/mkosi.extra/usr/lib/triton/fetch-rootfs"


def test_params_salt_is_the_roots_own_sha256_and_cover_every_block():
    p = verity.params(SHA, 3 * 4096)
    assert p == verity.VerityParams(salt=SHA, data_blocks=3, hash="sha256", block_size=4096)


@pytest.mark.parametrize("size", [0, 4095, 4097, 3 * 4096 + 1])
def test_a_root_that_is_not_whole_blocks_is_refused(size):
    """veritysetup would silently leave the tail past the last whole block
    unchecked."""
    with pytest.raises(verity.VerityError, match="whole number of 4096-byte blocks"):
        verity.params(SHA, size)


@pytest.mark.parametrize("sha", ["", "AB" * 32, "ab" * 31, "zz" * 32])
def test_the_salt_must_be_a_sha256(sha):
    with pytest.raises(verity.VerityError, match="not a SHA-256"):
        verity.params(sha, 4096)


def test_options_take_nothing_from_the_medium():
    """No superblock: hash, sizes, block count and salt are all given."""
    opts = verity.options(verity.params(SHA, 5 * 4096))
    assert opts == ["--no-superblock", "--hash=sha256", "--data-block-size=4096", "--hash-block-size=4096",
                    "--data-blocks=5", f"--salt={SHA}"]
    # The initrd splits them on spaces (fetch-rootfs): none may hold one.
    assert all(" " not in o and "'" not in o for o in opts)


def test_format_and_verify_commands_share_the_options():
    p = verity.params(SHA, 4096)
    fmt = verity.format_command(Path("/p/fs.squashfs"), Path("/p/fs.squashfs.verity"), p, Path("/t/root"))
    assert fmt[:2] == ["veritysetup", "format"]
    assert fmt[-2:] == ["/p/fs.squashfs", "/p/fs.squashfs.verity"]
    assert "--root-hash-file=/t/root" in fmt
    assert fmt[2:2 + len(verity.options(p))] == verity.options(p)
    ver = verity.verify_command(Path("/p/fs.squashfs"), Path("/p/fs.squashfs.verity"), p, "cd" * 32)
    assert ver == ["veritysetup", "verify", *verity.options(p), "/p/fs.squashfs", "/p/fs.squashfs.verity",
                   "cd" * 32]


def test_parse_root_hash():
    assert verity.parse_root_hash("cd" * 32 + "\n") == "cd" * 32
    for bad in ("", "Root hash: " + "cd" * 32, "cd" * 16):
        with pytest.raises(verity.VerityError):
            verity.parse_root_hash(bad)


def test_rootfs_env_binds_the_root_hash_and_options_as_the_initrd_sources_them():
    tree = verity.HashTree(verity.params(SHA, 8192), "cd" * 32)
    env = bootfiles.rootfs_env("20261125T000000Z", SHA, 8192, tree, load(), "platform-20261125T000000Z/x86_64/fs")
    assert f"TRITON_ROOTFS_VERITY_ROOTHASH={'cd' * 32}\n" in env
    # What bash makes of the file: the options come back word for word.
    out = subprocess.run(["bash", "-c", 'set -u; . /dev/stdin; printf "%s\\n" $TRITON_ROOTFS_VERITY_OPTIONS'],
                         input=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == verity.options(tree.params)


def test_the_initrd_finds_the_tree_where_the_build_puts_it():
    paths = layout("20261125T000000Z", "x86_64")
    assert paths["verity"] == paths["rootfs"] + ".verity"
    script = FETCH_ROOTFS.read_text()
    assert 'tree="${src}.verity"' in script
    assert "veritysetup open $TRITON_ROOTFS_VERITY_OPTIONS" in script


def test_the_manifest_records_how_to_check_a_medium_by_hand():
    tree = verity.HashTree(verity.params(SHA, 8192), "cd" * 32)
    entry = verity.manifest_entry(tree, "x86_64/filesystem.squashfs.verity")
    assert entry["root_hash"] == "cd" * 32 and entry["salt"] == SHA and entry["data_blocks"] == 2
    assert entry["hash_tree"] == "x86_64/filesystem.squashfs.verity"
    assert entry["veritysetup_options"] == verity.options(tree.params)
    m = build_manifest(stamp="20261125T000000Z", kver="6.12.1", base="Debian 13", packages={}, files={},
                       host_tools={}, source={}, squashfs=load().squashfs, verity=entry)
    assert m["verity"] == entry


needs_veritysetup = pytest.mark.skipif(shutil.which("veritysetup") is None,
                                       reason="no veritysetup on this host: `make setup` installs cryptsetup-bin")


def root_like(path: Path, blocks: int) -> Path:
    """Deterministic bytes, a whole number of 4 KiB blocks, as mksquashfs writes."""
    data = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() * 128 for i in range(blocks))
    path.write_bytes(data)
    return path


@needs_veritysetup
def test_write_hash_tree_is_reproducible_and_checks_the_root(tmp_path):
    data = root_like(tmp_path / "filesystem.squashfs", 300)
    p = verity.params(sha256_file(data), data.stat().st_size)
    first = verity.write_hash_tree(data, tmp_path / "a.verity", p)
    again = verity.write_hash_tree(data, tmp_path / "b.verity", p)
    assert first == again and len(first.root_hash) == 64
    # Bit for bit: a SOURCE_DATE_EPOCH build stays reproducible.
    assert (tmp_path / "a.verity").read_bytes() == (tmp_path / "b.verity").read_bytes()
    assert (tmp_path / "a.verity").stat().st_mode & 0o777 == 0o644
    # A tree of pure hashes: no superblock (it would start with its
    # signature) tells a reader its parameters.
    assert not (tmp_path / "a.verity").read_bytes().startswith(b"verity")


@needs_veritysetup
def test_a_changed_block_or_a_wrong_root_hash_fails_verification(tmp_path):
    """As the initrd's open sees a medium: the options bound into the initrd,
    the tree and the root hash; one byte changed anywhere fails."""
    data = root_like(tmp_path / "filesystem.squashfs", 300)
    p = verity.params(sha256_file(data), data.stat().st_size)
    tree = verity.write_hash_tree(data, tmp_path / "fs.verity", p)

    def verify(root_hash: str) -> int:
        return subprocess.run(verity.verify_command(data, tmp_path / "fs.verity", p, root_hash),
                              capture_output=True).returncode

    assert verify(tree.root_hash) == 0
    assert verify("0" * 64) != 0
    with data.open("r+b") as f:
        f.seek(200 * 4096 + 123)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert verify(tree.root_hash) != 0


@needs_veritysetup
def test_a_failing_veritysetup_names_what_failed(tmp_path):
    p = verity.params(SHA, 2 * 4096)
    with pytest.raises(verity.VerityError, match="veritysetup format failed"):
        verity.write_hash_tree(tmp_path / "missing.squashfs", tmp_path / "fs.verity", p)
