import lzma
import struct
from pathlib import Path

import pytest

from hooks import zfs_modules as zm
from hooks.config import load


def test_key_names_both_versions_and_is_path_safe():
    key = zm.ModuleKey(kernel="6.12.118+deb13-amd64", zfs="1:2.3.9-0+deb13u1")
    assert key.name == "zfs-1_2.3.9-0+deb13u1_linux-6.12.118+deb13-amd64_CC_FLAGS_FTRACE_"
    assert "/" not in key.name


def test_keys_differ_when_either_version_or_the_make_overrides_do():
    a = zm.ModuleKey("6.12.1", "2.3.9-1").name
    assert a != zm.ModuleKey("6.12.2", "2.3.9-1").name
    assert a != zm.ModuleKey("6.12.1", "2.3.10-1").name
    assert a != zm.ModuleKey("6.12.1", "2.3.9-1", overrides="").name
    assert a != zm.ModuleKey("6.12.1", "2.3.9-1", patches="0123456789ab").name


PATCH = """Why, in prose: `patch` skips it.
--- a/module/zfs/zfs_chksum.c
+++ b/module/zfs/zfs_chksum.c
@@ -1 +1 @@
-old
+new
"""


def test_the_repositorys_patches_are_p1_diffs_of_openzfs_files():
    patches = zm.read_patches(zm.PATCH_DIR)
    assert patches, f"no *.patch in {zm.PATCH_DIR}"
    for name, text in patches.items():
        files = zm.patched_files(text)
        assert files and all(f.startswith(("module/", "include/")) for f in files), (name, files)
        assert not text.startswith(("--- ", "+++ ")), f"{name}: a patch says why in a header before its diff"


def test_the_patches_digest_changes_with_any_patch_and_is_empty_without():
    assert zm.patches_digest({}) == ""
    a = zm.patches_digest({"a.patch": PATCH})
    assert len(a) == 12
    assert a != zm.patches_digest({"b.patch": PATCH})
    assert a != zm.patches_digest({"a.patch": PATCH + " "})


def test_dkms_is_told_each_patch_in_order():
    conf = zm.dkms_patch_conf({"1-a.patch": PATCH, "2-b.patch": PATCH})
    assert conf.splitlines()[1:] == ['PATCH[0]="1-a.patch"', 'PATCH[1]="2-b.patch"']


def test_stage_patches_puts_them_where_dkms_reads_them(tmp_path):
    zm.stage_patches(tmp_path, "2.3.9", {"a.patch": PATCH})
    assert (tmp_path / "usr/src/zfs-2.3.9/patches/a.patch").read_text() == PATCH
    assert 'PATCH[0]="a.patch"' in (tmp_path / "etc/dkms/zfs-2.3.9.conf").read_text()


def test_a_patch_dkms_did_not_apply_stops_the_build():
    zm.check_patches_applied("Applying patch a.patch...\npatching file module/zfs/zfs_chksum.c\n", {"a.patch": PATCH})
    with pytest.raises(zm.ZfsBuildError, match="did not apply .*a.patch.*module/zfs/zfs_chksum.c"):
        zm.check_patches_applied("DKMS make.log for zfs/2.3.9\n", {"a.patch": PATCH})
    with pytest.raises(zm.ZfsBuildError, match="not a -p1 unified diff"):
        zm.check_patches_applied("", {"a.patch": "prose only\n"})


def test_makeflags_set_variables_as_a_command_line_would():
    # GNU make reads the words after " -- " in MAKEFLAGS as command-line
    # variable definitions, which override the kernel Makefile's own.
    assert zm.makeflags({"CC_FLAGS_FTRACE": ""}) == " -- CC_FLAGS_FTRACE="
    assert zm.makeflags({"B": "2", "A": "1"}) == " -- A=1 B=2"


def elf(sections: dict[str, bytes]) -> bytes:
    """A minimal 64-bit little-endian relocatable ELF file with `sections`."""
    names = [""] + list(sections) + [".shstrtab"]
    shstrtab = b"\0".join(n.encode() for n in names) + b"\0"
    bodies = [b""] + list(sections.values()) + [shstrtab]
    data, offsets = b"", []
    for body in bodies:
        offsets.append(64 + len(data))
        data += body
    shoff = 64 + len(data)
    header = (b"\x7fELF\x02\x01\x01" + bytes(9)
              + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(names), len(names) - 1))
    table, at = b"", 0
    for name, body, offset in zip(names, bodies, offsets):
        table += struct.pack("<IIQQQQIIQQ", at, 1 if name else 0, 0, 0, offset, len(body), 0, 0, 1, 0)
        at += len(name) + 1
    return header + data + table


def test_ftrace_hooks_are_counted_from_the_modules_section(tmp_path):
    ko = tmp_path / "zfs.ko"
    ko.write_bytes(elf({".text": b"\xc3", "__mcount_loc": bytes(8 * 3), ".data": b"x"}))
    assert zm.ftrace_hooks(ko) == 3
    xz = tmp_path / "spl.ko.xz"
    xz.write_bytes(lzma.compress(elf({".text": b"\xc3", "__mcount_loc": bytes(8 * 5)}), format=lzma.FORMAT_XZ))
    assert zm.ftrace_hooks(xz) == 5


def test_a_module_without_ftrace_hooks_passes_and_one_with_them_stops_the_build(tmp_path):
    clean = tmp_path / "spl.ko"
    clean.write_bytes(elf({".text": b"\xc3", ".data": b"x"}))
    hooked = tmp_path / "zfs.ko"
    hooked.write_bytes(elf({".text": b"\xc3", "__mcount_loc": bytes(16)}))
    assert zm.ftrace_hooks(clean) == 0
    zm.check_no_ftrace_hooks([clean])
    with pytest.raises(zm.ZfsBuildError, match=r"zfs.ko has 2 ftrace entry hooks: .*CC_FLAGS_FTRACE="):
        zm.check_no_ftrace_hooks([clean, hooked])


def test_a_file_that_is_no_module_is_refused_by_name(tmp_path):
    junk = tmp_path / "zfs.ko"
    junk.write_bytes(b"\x7fELF\x02\x01" + bytes(10))
    with pytest.raises(zm.ZfsBuildError, match="zfs.ko: not a readable kernel module"):
        zm.ftrace_hooks(junk)
    text = tmp_path / "spl.ko"
    text.write_bytes(b"hello")
    with pytest.raises(zm.ZfsBuildError, match="spl.ko: not a readable kernel module .not a 64-bit little-endian ELF"):
        zm.ftrace_hooks(text)


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
    assert not zm.cache_valid(entry, zm.ModuleKey("6.12.1", "2.3.9-1", patches="0123456789ab"), ["spl", "zfs"])


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
