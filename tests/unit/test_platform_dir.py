import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from hooks import platform_dir
from hooks.config import load

S = load().squashfs
REPO = Path(__file__).resolve().parents[2]


def test_layout_is_booters():
    paths = platform_dir.layout("20261125T000000Z", "x86_64")
    assert paths["kernel"] == "x86_64/vmlinuz"
    assert paths["initrd"] == "x86_64/initrd"
    assert paths["rootfs"] == "x86_64/filesystem.squashfs"
    assert paths["verity"] == "x86_64/filesystem.squashfs.verity"
    assert paths["version"] == "etc/version/platform"


def test_mksquashfs_command_excludes_boot_and_compresses():
    cmd = platform_dir.mksquashfs_command(Path("/t"), Path("/o.squashfs"), S, None)
    assert cmd[:3] == ["mksquashfs", "/t", "/o.squashfs"]
    assert cmd[cmd.index("-comp") + 1] == S.compression
    assert "-wildcards" in cmd and "boot" in cmd[cmd.index("-e"):]
    assert "-mkfs-time" not in cmd


def test_lz4_level_picks_its_high_compression_mode_and_zstd_gets_its_level():
    lz4 = dataclasses.replace(S, compression="lz4", level=1)
    assert "-Xhc" in platform_dir.mksquashfs_command(Path("/t"), Path("/o"), lz4, None)
    fast = dataclasses.replace(S, compression="lz4", level=0)
    assert "-Xhc" not in platform_dir.mksquashfs_command(Path("/t"), Path("/o"), fast, None)
    zstd = platform_dir.mksquashfs_command(Path("/t"), Path("/o"), dataclasses.replace(S, compression="zstd", level=15),
                                           None)
    assert zstd[zstd.index("-Xcompression-level") + 1] == "15" and "-Xhc" not in zstd


def test_mksquashfs_command_is_reproducible_with_epoch():
    cmd = platform_dir.mksquashfs_command(Path("/t"), Path("/o"), S, 1700000000)
    assert cmd[cmd.index("-mkfs-time") + 1] == "1700000000"
    assert cmd[cmd.index("-all-time") + 1] == "1700000000"


def test_tar_command():
    cmd = platform_dir.tar_command(Path("/out"), "platform-X", 5)
    assert "--mtime=@5" in cmd and "--sort=name" in cmd
    assert cmd[-1] == "platform-X"


def test_sha256_line_is_what_sha256sum_checks(tmp_path):
    f = tmp_path / "vmlinuz"
    f.write_bytes(b"kernel")
    (tmp_path / "vmlinuz.sha256").write_text(platform_dir.sha256_line(platform_dir.sha256_file(f), "vmlinuz"))
    ok = subprocess.run(["sha256sum", "-c", "vmlinuz.sha256"], cwd=tmp_path, capture_output=True)
    assert ok.returncode == 0, ok.stdout
    f.write_bytes(b"kernel, damaged")
    bad = subprocess.run(["sha256sum", "-c", "vmlinuz.sha256"], cwd=tmp_path, capture_output=True)
    assert bad.returncode != 0


def test_manifest_names_kernel_zfs_and_packages():
    m = platform_dir.build_manifest(
        stamp="20261125T000000Z", kver="6.12.1", base="Debian 13",
        packages={"zfsutils-linux": "2.3.9-1", "systemd": "257"},
        files={"x86_64/vmlinuz": {"sha256": "ab", "size": 1}},
        host_tools={"mkosi": "mkosi 24.3"}, source={"digest": "cd"}, squashfs=S,
        verity={"root_hash": "ef" * 32},
    )
    assert m["zfs"] == "2.3.9-1" and m["kernel"] == "6.12.1" and m["systemd"] == "257"
    assert list(m["packages"]) == ["systemd", "zfsutils-linux"]
    assert m["build"]["host_tools"]["mkosi"] == "mkosi 24.3"
    assert m["verity"]["root_hash"] == "ef" * 32
    json.dumps(m)


def test_packages_text_sorted():
    assert platform_dir.packages_text({"b": "2", "a": "1"}) == "a\t1\nb\t2\n"


def test_prune_keeps_newest(tmp_path):
    for s in ("20260101T000000Z", "20260102T000000Z", "20260103T000000Z"):
        (tmp_path / f"platform-{s}").mkdir()
        (tmp_path / f"platform-{s}.tgz").write_text("x")
    (tmp_path / "platform-latest").symlink_to("platform-20260103T000000Z")
    (tmp_path / "platform-notes").mkdir()
    removed = platform_dir.prune(tmp_path, 2)
    assert sorted(p.name for p in removed) == ["platform-20260101T000000Z", "platform-20260101T000000Z.tgz"]
    assert (tmp_path / "platform-20260102T000000Z").is_dir()
    assert (tmp_path / "platform-latest").is_symlink()
    assert (tmp_path / "platform-notes").is_dir()


def test_no_build_module_shadows_the_standard_library():
    """hooks/platform.py once did: `import platform` in a hook got it."""
    ours = {p.stem for d in ("hooks", "tools") for p in (REPO / d).glob("*.py")}
    assert not ours & sys.stdlib_module_names
