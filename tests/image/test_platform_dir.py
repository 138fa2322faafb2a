"""The platform directory and tarball, as sdcadm and booter take them."""

import subprocess
import tarfile

from hooks.stamp import is_stamp
from tests.conftest import REPO


def test_stamp_names_the_directory(platform):
    assert is_stamp(platform.stamp)
    assert platform.paths["version"].read_text() == platform.stamp + "\n"
    assert (REPO / "out/platform-latest").resolve() == platform.path


def test_each_boot_file_has_a_checksum_that_verifies(platform):
    for role in ("kernel", "initrd", "rootfs"):
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


def test_tarball_unpacks_to_the_documented_layout(platform, tmp_path):
    tgz = platform.path.parent / f"{platform.path.name}.tgz"
    with tarfile.open(tgz) as t:
        names = t.getnames()
        assert {n.split("/")[0] for n in names} == {platform.path.name}
        t.extractall(tmp_path)
    top = tmp_path / platform.path.name
    for rel in ("x86_64/vmlinuz", "x86_64/initrd", "x86_64/filesystem.squashfs",
                "x86_64/filesystem.squashfs.sha256", "etc/version/platform", "etc/version/manifest.json"):
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
