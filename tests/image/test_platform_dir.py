"""The platform directory and tarball, as sdcadm and booter take them."""

import shlex
import subprocess
import tarfile

from hooks import bootfiles
from hooks.stamp import is_stamp
from tests.conftest import REPO
from tests.lib.cpio_initrd import newc_entries, zstd_frames_end


def test_stamp_names_the_directory(platform):
    assert is_stamp(platform.stamp)
    assert platform.paths["version"].read_text() == platform.stamp + "\n"
    assert (REPO / "out/platform-latest").resolve() == platform.path


def test_each_boot_file_has_a_checksum_that_verifies(platform):
    for role in ("kernel", "initrd", "rootfs", "verity"):
        f = platform.paths[role]
        assert f.stat().st_size > 0
        res = subprocess.run(["sha256sum", "-c", f.name + ".sha256"], cwd=f.parent,
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr


def test_squashfs_is_compressed_as_configured(platform):
    out = subprocess.run(["unsquashfs", "-s", str(platform.rootfs)], capture_output=True, text=True).stdout
    assert f"Compression {platform.manifest['squashfs']['compression']}" in out


def test_manifest_records_contents_and_build(platform):
    m = platform.manifest
    assert m["platform"] == platform.stamp
    assert m["kernel"].endswith("-amd64")
    assert m["zfs"] and m["packages"]["zfsutils-linux"] == m["zfs"]
    assert {"systemd", "systemd-container", "openssh-server", "python3", "linux-image-amd64"} <= set(m["packages"])
    assert m["build"]["host_tools"]["mkosi"].startswith("mkosi ")
    assert len(m["build"]["source"]["digest"]) == 64
    for rel, info in m["files"].items():
        assert (platform.path / rel).stat().st_size == info["size"]
    packages = platform.paths["packages"].read_text().splitlines()
    assert f"zfsutils-linux\t{m['zfs']}" in packages


def rootfs_env(platform) -> dict[str, str]:
    """The facts the build bound into the initrd (the cpio it appended)."""
    data = platform.initrd.read_bytes()
    entries = {name: content for name, _, content in newc_entries(data, zstd_frames_end(data))}
    text = entries[bootfiles.ROOTFS_ENV.lstrip("/")].decode()
    return {k: " ".join(shlex.split(v)) for k, _, v in (line.partition("=") for line in text.splitlines())}


def test_the_hash_tree_verifies_the_root_with_what_the_initrd_carries(platform):
    """triton.toram=0 opens the root on a medium with the initrd's root hash
    and options, and the tree beside the squashfs: they must agree with the
    manifest, and verify the root."""
    v = platform.manifest["verity"]
    env = rootfs_env(platform)
    assert env["TRITON_ROOTFS_VERITY_ROOTHASH"] == v["root_hash"]
    assert env["TRITON_ROOTFS_VERITY_OPTIONS"].split() == v["veritysetup_options"]
    assert "--no-superblock" in v["veritysetup_options"]
    assert platform.path / v["hash_tree"] == platform.paths["verity"]
    assert v["data_blocks"] * v["block_size"] == platform.rootfs.stat().st_size
    res = subprocess.run(["veritysetup", "verify", *v["veritysetup_options"], str(platform.rootfs),
                          str(platform.paths["verity"]), v["root_hash"]], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_tarball_unpacks_to_the_documented_layout(platform, tmp_path):
    tgz = platform.path.parent / f"{platform.path.name}.tgz"
    with tarfile.open(tgz) as t:
        names = t.getnames()
        assert {n.split("/")[0] for n in names} == {platform.path.name}
        t.extractall(tmp_path)
    top = tmp_path / platform.path.name
    for rel in ("x86_64/vmlinuz", "x86_64/initrd", "x86_64/filesystem.squashfs",
                "x86_64/filesystem.squashfs.sha256", "x86_64/filesystem.squashfs.verity",
                "etc/version/platform", "etc/version/manifest.json"):
        assert (top / rel).is_file(), rel
    res = subprocess.run(["sha256sum", "-c", "filesystem.squashfs.sha256"], cwd=top / "x86_64",
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def test_mkosi_outputs_do_not_link_into_platforms(platform):
    """`mkosi --force` deletes the targets of its outputs' links: a link from
    out/triton-pi into a platform directory would delete that platform on the
    next build."""
    out = platform.path.parent
    assert (out / "triton-pi").read_text().strip() == platform.path.name
    for p in out.glob("triton-pi*"):
        assert not p.is_symlink(), p
