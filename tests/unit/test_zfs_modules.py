import lzma
from pathlib import Path

import pytest

from hooks import zfs_modules as zm
from hooks.config import load


def test_key_names_both_versions_and_is_path_safe():
    key = zm.ModuleKey(kernel="6.12.118+deb13-amd64", zfs="1:2.3.9-0+deb13u1")
    assert key.name == "zfs-1_2.3.9-0+deb13u1_linux-6.12.118+deb13-amd64"
    assert "/" not in key.name


def test_keys_differ_when_either_version_does():
    a = zm.ModuleKey("6.12.1", "2.3.9-1").name
    assert a != zm.ModuleKey("6.12.2", "2.3.9-1").name
    assert a != zm.ModuleKey("6.12.1", "2.3.10-1").name


def test_upstream_version():
    assert zm.upstream_version("2.3.9-0+deb13u1") == "2.3.9"
    assert zm.upstream_version("1:2.3.9-1") == "2.3.9"
    assert zm.upstream_version("2.3.9") == "2.3.9"


def _built(tmp_path: Path) -> list[Path]:
    d = tmp_path / "built/module"
    d.mkdir(parents=True)
    for m in ("spl", "zfs"):
        (d / f"{m}.ko.xz").write_bytes(lzma.compress(m.encode() * 100, format=lzma.FORMAT_XZ))
    return zm.module_files(tmp_path / "built")


def test_store_then_hit(tmp_path):
    key = zm.ModuleKey("6.12.1", "2.3.9-1")
    entry = tmp_path / "cache" / key.name
    zm.store(entry, key, _built(tmp_path))
    assert zm.cache_valid(entry, key, ["spl", "zfs"])


def test_other_key_misses(tmp_path):
    key = zm.ModuleKey("6.12.1", "2.3.9-1")
    entry = tmp_path / "cache" / key.name
    zm.store(entry, key, _built(tmp_path))
    assert not zm.cache_valid(entry, zm.ModuleKey("6.12.2", "2.3.9-1"), ["spl", "zfs"])


def test_damaged_entry_misses(tmp_path):
    key = zm.ModuleKey("6.12.1", "2.3.9-1")
    entry = tmp_path / "cache" / key.name
    zm.store(entry, key, _built(tmp_path))
    (entry / "zfs.ko.xz").write_bytes(b"truncated")
    assert not zm.cache_valid(entry, key, ["spl", "zfs"])


def test_incomplete_entry_misses(tmp_path):
    key = zm.ModuleKey("6.12.1", "2.3.9-1")
    entry = tmp_path / "cache" / key.name
    zm.store(entry, key, [p for p in _built(tmp_path) if p.name.startswith("spl")])
    assert not zm.cache_valid(entry, key, ["spl", "zfs"])
    assert zm.missing_modules(zm.module_files(entry), ["spl", "zfs"]) == ["zfs"]


def test_install_puts_modules_where_depmod_finds_them(tmp_path):
    key = zm.ModuleKey("6.12.1", "2.3.9-1")
    entry = tmp_path / "cache" / key.name
    zm.store(entry, key, _built(tmp_path))
    dest = tmp_path / "dest"
    out = zm.install(entry, dest, "6.12.1", load())
    assert sorted(p.relative_to(dest).as_posix() for p in out) == [
        "usr/lib/modules/6.12.1/updates/dkms/spl.ko",
        "usr/lib/modules/6.12.1/updates/dkms/zfs.ko",
    ]
    # Stored plain: the squashfs compresses them, the kernel need not xz-decode.
    assert (dest / "usr/lib/modules/6.12.1/updates/dkms/zfs.ko").read_bytes() == b"zfs" * 100


def test_a_damaged_compressed_module_is_refused_by_name(tmp_path):
    src = tmp_path / "zfs.ko.xz"
    src.write_bytes(b"not xz")
    with pytest.raises(zm.ZfsBuildError, match="zfs.ko.xz: not a valid xz-compressed module"):
        zm.install_module(src, tmp_path)


def test_installed_modules_are_newer_than_the_cache(tmp_path):
    import os
    key = zm.ModuleKey("6.12.1", "2.3.9-1")
    entry = tmp_path / "cache" / key.name
    zm.store(entry, key, _built(tmp_path))
    for f in zm.module_files(entry):
        os.utime(f, (1000, 1000))
    out = zm.install(entry, tmp_path / "dest", "6.12.1", load())
    assert all(p.stat().st_mtime > 1000 for p in out)
