"""triton-pool's decisions, without root, disks or ZFS (the boot tests run
the real thing)."""

import json
import sys
import zlib
from pathlib import Path

import pytest

from hooks.config import load

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_pool as tp  # noqa: E402


def test_hostid_is_linux_lives_crc32_of_dmidecodes_uuid():
    # dmidecode prints the UUID in upper case; the kernel's product_uuid in lower.
    u = "4c4c4544-0037-3510-8052-b4c04f4d3732"
    assert tp.hostid_from_uuid(u) == zlib.crc32(u.upper().encode())
    assert tp.hostid_from_uuid(u.upper() + "\n") == tp.hostid_from_uuid(u)
    assert tp.hostid_file_bytes(0x11223344) == b"\x44\x33\x22\x11"


@pytest.mark.parametrize("text,ok", [
    ("4C4C4544-0037-3510-8052-B4C04F4D3732\n", True),
    ("00000000-0000-0000-0000-000000000000", False),
    ("ffffffff-ffff-ffff-ffff-ffffffffffff", False),
    ("Not Settable", False),
    ("", False),
])
def test_unusable_firmware_uuids_are_rejected(text, ok):
    assert (tp.valid_system_uuid(text) is not None) == ok


def test_kernel_args_and_noimport():
    args = tp.kernel_args("BOOT_IMAGE=x noimport=true console=ttyS1,115200n8 quiet")
    assert tp.is_true(args.get("noimport"))
    assert args["console"] == "ttyS1,115200n8"
    assert not tp.is_true(tp.kernel_args("noimport=false").get("noimport"))
    assert not tp.is_true(tp.kernel_args("").get("noimport"))


def test_answers_file():
    a = tp.parse_answers({"pool": {"layout": "mirror", "disks": ["vdb", "vdc"]}}, "answers.json")
    assert a == tp.Answers("mirror", ("vdb", "vdc"), False)
    assert tp.vdev_args(a.layout, a.disks) == ["mirror", "vdb", "vdc"]
    assert tp.vdev_args("single", ["vdb"]) == ["vdb"]


@pytest.mark.parametrize("data,message", [
    ([], "expected a JSON object"),
    ({"pool": {"layout": "mirror"}}, "pool.disks must be a non-empty list"),
    ({"pool": {"layout": "mirror", "disks": ["vdb"]}}, "mirror needs at least 2 disks"),
    ({"pool": {"layout": "single", "disks": ["vdb", "vdc"]}}, "single takes exactly one disk"),
    ({"pool": {"layout": "raid5", "disks": ["vdb"]}}, "'raid5' is not one of"),
    ({"pool": {"layout": "mirror", "disks": ["vdb", "vdb"]}}, "named twice"),
    ({"pool": {"layout": "single", "disks": ["vdb"], "force": "yes"}}, "force must be true or false"),
    ({"pool": {"layout": "single", "disks": ["vdb"], "size": 3}}, "unknown keys"),
])
def test_bad_answers_name_the_input(data, message):
    with pytest.raises(tp.PoolError, match=message) as e:
        tp.parse_answers(data, "/run/triton/boot/answers.json")
    assert "answers.json" in str(e.value)


def test_blank_disk_is_accepted_anything_else_refused():
    assert tp.disk_refusal("/dev/vdb", {}, []) is None
    assert tp.disk_refusal("/dev/vdb", {"PTTYPE": "gpt"}, [{"TYPE": "zfs_member", "LABEL": "zones"}, {}]) \
        == "/dev/vdb holds ZFS pool 'zones'"
    assert tp.disk_refusal("/dev/vdb", {"PTTYPE": "dos"}, [{"TYPE": "ext4"}]) \
        == "/dev/vdb has a dos partition table (1 partition)"
    assert tp.disk_refusal("/dev/vdb", {"TYPE": "xfs"}, []) == "/dev/vdb holds a xfs filesystem"


def test_blkid_export():
    assert tp.parse_blkid_export("DEVNAME=/dev/vdb1\nLABEL=zones\nTYPE=zfs_member\n") == \
        {"DEVNAME": "/dev/vdb1", "LABEL": "zones", "TYPE": "zfs_member"}


IMPORT_LISTING = """\
   pool: zones
     id: 1234567890
  state: ONLINE
 status: The pool was last accessed by another system.
 action: The pool can be imported using its name or numeric identifier and
\tthe '-f' flag.
   see: https://openzfs.github.io/openzfs-docs/msg/ZFS-8000-EY
 config:

\tzones       ONLINE
\t  mirror-0  ONLINE
\t    vdb     ONLINE
\t    vdc     ONLINE
"""


def test_import_listing_gives_pool_state_and_reason():
    [seen] = tp.parse_import_listing(IMPORT_LISTING)
    assert seen["pool"] == "zones"
    assert seen["state"] == "ONLINE"
    assert "last accessed by another system" in seen["status"]
    assert seen["action"].endswith("the '-f' flag.")
    assert tp.parse_import_listing("no pools available to import\n") == []


def test_mount_order_parents_first():
    ds = [{"mountpoint": "/zones/config"}, {"mountpoint": "/var"}, {"mountpoint": "/zones"}]
    assert [d["mountpoint"] for d in tp.mount_order(ds)] == ["/var", "/zones", "/zones/config"]


def test_console_issue_says_what_state_the_node_is_in():
    assert "NOT SET UP" in tp.issue_text({"state": "not-setup", "pool": "zones"})
    assert "DEGRADED" in tp.issue_text({"state": "imported", "pool": "zones", "health": "DEGRADED"})
    assert "noimport" in tp.issue_text({"state": "noimport", "pool": "zones"})


def test_settings_read_what_the_build_writes(tmp_path):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(load().pool.as_json()))
    s = tp.Settings.load(path)
    assert s.name == "zones"
    assert s.full("var") == "zones/var" and s.full("") == "zones"
    assert s.config_dir == Path("/zones/config")


@pytest.mark.parametrize("argv,message", [
    (["setup"], "name the layout and the disks"),
    (["setup", "--layout", "mirror", "vdb"], "mirror needs at least 2 disks"),
    (["setup", "--answers", "{bad}"], "{bad}: not valid JSON"),
    (["setup", "--answers", "{missing}"], "{missing}: No such file"),
])
def test_cli_errors_name_the_input_and_what_to_do(tmp_path, monkeypatch, capsys, argv, message):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(load().pool.as_json()))
    monkeypatch.setattr(tp, "SETTINGS", path)
    names = {"bad": tmp_path / "bad.json", "missing": tmp_path / "missing.json"}
    names["bad"].write_text("{not json")
    argv = [a.format(**names) for a in argv]
    assert tp.main(argv) == 1
    assert message.format(**names) in capsys.readouterr().err
