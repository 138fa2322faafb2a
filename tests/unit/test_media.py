"""Live media: the GRUB menu and the ISO command, from platform.yaml."""

from pathlib import Path

import pytest

from hooks import media
from hooks.config import ConfigError, load, parse
from hooks.platform_dir import layout, platform_name

S = load()
STAMP = "20261126T072750Z"


def test_menu_serial_default_vga_rescue_and_root_on_the_medium():
    entries = media.menu_entries(STAMP, S)
    label = f"triton.media={S.media.volume_prefix}{STAMP}"
    assert [e.title for e in entries] == [f"Triton Linux {STAMP} (serial console)",
                                          f"Triton Linux {STAMP} (VGA console) [v]",
                                          f"Triton Linux {STAMP} rescue (no pool import) [r]",
                                          f"Triton Linux {STAMP} root left on the medium [m]"]
    serial, vga, rescue, medium = (e.args for e in entries)
    assert serial == (*S.boot.args, label)
    assert vga[-2:] == ("console=tty0", label) and "console=ttyS1,115200n8" in vga
    assert rescue == (*serial, "noimport=true")
    assert medium == (*serial, "triton.toram=0")
    # Each key is named in its entry's title, and no two entries share one.
    keys = [e.hotkey for e in entries if e.hotkey]
    assert len(set(keys)) == len(keys) == 3
    assert all(e.title.endswith(f"[{e.hotkey}]") for e in entries if e.hotkey)
    # GRUB's menu is 80 columns wide, its box and arrow included.
    assert all(len(e.title) <= 70 for e in entries), [len(e.title) for e in entries]


def test_grub_cfg_boots_the_platform_directory_files():
    cfg = media.grub_cfg(STAMP, S)
    assert f"set timeout={S.media.menu_timeout}" in cfg and "set default=0" in cfg
    assert f"linux /platform-{STAMP}/x86_64/vmlinuz boot=live" in cfg
    assert f"initrd /platform-{STAMP}/x86_64/initrd" in cfg
    assert cfg.count("menuentry") == 4 and "serial --unit=1 --speed=115200" in cfg
    assert f'menuentry "Triton Linux {STAMP} root left on the medium [m]" --hotkey=m {{' in cfg
    assert f'menuentry "Triton Linux {STAMP} (serial console)" {{' in cfg


def test_the_medium_carries_the_roots_hash_tree(tmp_path):
    """triton.toram=0 reads the root through dm-verity: the tree must be on
    the medium, beside the squashfs, where the initrd looks for it."""
    paths = layout(STAMP, S.arch_dir)
    pdir = tmp_path / platform_name(STAMP)
    for role in media.MEDIA_ROLES:
        (pdir / paths[role]).parent.mkdir(parents=True, exist_ok=True)
        (pdir / paths[role]).write_text(role)
    tree = tmp_path / "tree"
    media.stage(pdir, STAMP, S, tree)
    on_medium = tree / platform_name(STAMP)
    assert (on_medium / paths["verity"]).read_text() == "verity"
    assert (on_medium / paths["rootfs"]).read_text() == "rootfs"
    assert (on_medium / paths["verity"]).parent == (on_medium / paths["rootfs"]).parent
    assert (tree / "boot/grub/grub.cfg").is_file()


def test_mkrescue_command():
    argv = media.mkrescue_command(Path("/t"), Path("/o.iso"), "TRITON_X")
    assert argv[:2] == ["grub-mkrescue", "--compress=xz"] and argv[-3:] == ["--", "-volid", "TRITON_X"]
    usb = media.mkrescue_command(Path("/t"), Path("/o.img"), "TRITON_X", Path("/cfg.img"))
    assert usb[-4:] == ["-append_partition", "3", "0x0c", "/cfg.img"]


def test_volume_label_fits_iso9660():
    assert len(S.media.volume_label(STAMP)) <= 32


@pytest.mark.parametrize("key,value,message", [
    ("volume_prefix", "triton-", "media.volume_prefix"),
    ("config_label", "WAY_TOO_LONG_LABEL", "FAT label"),
])
def test_bad_media_settings_are_refused(key, value, message):
    import yaml
    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "platform.yaml").read_text())
    data["media"][key] = value
    with pytest.raises(ConfigError, match=message):
        parse(data)
