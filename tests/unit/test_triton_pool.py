"""triton-pool's decisions, without root, disks or ZFS (the boot tests run
the real thing)."""

import dataclasses
import os
import subprocess
import json
import sys
import zlib
from pathlib import Path

import pytest

from hooks import postinst
from hooks.config import load
from tests.unit import nodelib

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_common as common  # noqa: E402
import triton_pool as tp  # noqa: E402
import triton_pool_disks as pdisks  # noqa: E402
from triton_pool_disks import Partition, Placement  # noqa: E402
import triton_pool_hostid as phostid  # noqa: E402
import triton_pool_identity as pidentity  # noqa: E402
import triton_pool_import as pimport  # noqa: E402
import triton_pool_instances as pinstances  # noqa: E402
import triton_pool_reset as preset  # noqa: E402
import triton_pool_restore as prestore  # noqa: E402
import triton_pool_setup as psetup  # noqa: E402
import triton_pool_state as pstate  # noqa: E402
import triton_pool_zfs as pzfs  # noqa: E402
import triton_settings as ts  # noqa: E402


def test_hostid_is_linux_lives_crc32_of_dmidecodes_uuid():
    # dmidecode prints the UUID in upper case; the kernel's product_uuid in lower.
    u = "4c4c4544-0037-3510-8052-b4c04f4d3732"
    assert phostid.hostid_from_uuid(u) == zlib.crc32(u.upper().encode())
    assert phostid.hostid_from_uuid(u.upper() + "\n") == phostid.hostid_from_uuid(u)
    assert phostid.hostid_file_bytes(0x11223344) == b"\x44\x33\x22\x11"


@pytest.mark.parametrize("text,ok", [
    ("4C4C4544-0037-3510-8052-B4C04F4D3732\n", True),
    ("00000000-0000-0000-0000-000000000000", False),
    ("ffffffff-ffff-ffff-ffff-ffffffffffff", False),
    ("Not Settable", False),
    ("", False),
])
def test_unusable_firmware_uuids_are_rejected(text, ok):
    assert (phostid.valid_system_uuid(text) is not None) == ok


def test_kernel_args_and_noimport():
    args = common.kernel_args("BOOT_IMAGE=x noimport=true console=ttyS1,115200n8 quiet")
    assert pimport.is_true(args.get("noimport"))
    assert args["console"] == "ttyS1,115200n8"
    assert not pimport.is_true(common.kernel_args("noimport=false").get("noimport"))
    assert not pimport.is_true(common.kernel_args("").get("noimport"))


def test_answers_file():
    a = psetup.parse_answers({"pool": {"layout": "mirror", "disks": ["vdb", "vdc"]}}, "answers.json")
    assert a == psetup.Answers("mirror", ("vdb", "vdc"), False)
    assert pdisks.vdev_args(a.layout, a.disks) == ["mirror", "vdb", "vdc"]
    assert pdisks.vdev_args("single", ["vdb"]) == ["vdb"]


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
    with pytest.raises(pstate.PoolError, match=message) as e:
        psetup.parse_answers(data, "/run/triton/boot/answers.json")
    assert "answers.json" in str(e.value)


def test_blank_disk_is_accepted_anything_else_refused():
    assert pdisks.disk_refusal("/dev/vdb", {}, []) is None
    assert pdisks.disk_refusal("/dev/vdb", {"PTTYPE": "gpt"}, [{"TYPE": "zfs_member", "LABEL": "zones"}, {}]) \
        == "/dev/vdb holds ZFS pool 'zones'"
    assert pdisks.disk_refusal("/dev/vdb", {"PTTYPE": "dos"}, [{"TYPE": "ext4"}]) \
        == "/dev/vdb has a dos partition table (1 partition)"
    assert pdisks.disk_refusal("/dev/vdb", {"TYPE": "xfs"}, []) == "/dev/vdb holds a xfs filesystem"


def test_blkid_export():
    assert pdisks.parse_blkid_export("DEVNAME=/dev/vdb1\nLABEL=zones\nTYPE=zfs_member\n") == \
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
    [seen] = pdisks.parse_import_listing(IMPORT_LISTING)
    assert seen["pool"] == "zones"
    assert seen["state"] == "ONLINE"
    assert "last accessed by another system" in seen["status"]
    assert seen["action"].endswith("the '-f' flag.")
    assert pdisks.parse_import_listing("no pools available to import\n") == []


def test_mount_order_parents_first():
    ds = [ts.Dataset("config", "/zones/config"), ts.Dataset("var", "/var"), ts.Dataset("", "/zones")]
    assert [d.mountpoint for d in pzfs.mount_order(ds)] == ["/var", "/zones", "/zones/config"]


def test_console_issue_says_what_state_the_node_is_in():
    assert "NOT SET UP" in pstate.issue_text({"state": "not-setup", "pool": "zones"})
    assert "DEGRADED" in pstate.issue_text({"state": "imported", "pool": "zones", "health": "DEGRADED"})
    assert "noimport" in pstate.issue_text({"state": "noimport", "pool": "zones"})


def test_settings_read_what_the_build_writes(tmp_path):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(load().pool.as_json()))
    s = ts.load_pool(path)
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
    nodelib.patch(monkeypatch, "SETTINGS", path)
    names = {"bad": tmp_path / "bad.json", "missing": tmp_path / "missing.json"}
    names["bad"].write_text("{not json")
    argv = [a.format(**names) for a in argv]
    assert tp.main(argv) == 1
    assert message.format(**names) in capsys.readouterr().err


# -- hostid: firmware placeholder UUIDs (issue 16, item 11) ------------------------------

PLACEHOLDERS = [
    "03000200-0400-0500-0006-000700080009",   # AMI's default
    "00020003-0004-0005-0006-000700080009",   # the same, other byte order
    "00000000-0000-0000-0000-000000000000",
    "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
    "11111111-1111-1111-1111-111111111111",
    "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa",
]
BOOTIF = "BOOT_IMAGE=x BOOTIF=01-52-54-00-12-34-56 console=ttyS0"


@pytest.mark.parametrize("uuid", PLACEHOLDERS)
def test_placeholder_uuids_are_not_a_nodes_identity(uuid):
    assert phostid.valid_system_uuid(uuid) is None
    assert phostid.valid_system_uuid(uuid.lower() + "\n") is None


@pytest.mark.parametrize("uuid", PLACEHOLDERS)
def test_a_placeholder_uuid_gives_the_boot_nics_hostid_and_says_why(uuid):
    hostid, source = phostid.choose_hostid(uuid + "\n", BOOTIF)
    assert hostid == zlib.crc32(b"52:54:00:12:34:56".upper())
    assert source.startswith("boot NIC 52:54:00:12:34:56 (")
    assert "placeholder" in source and uuid.lower() in source


def test_a_real_uuid_gives_its_own_hostid_whatever_the_boot_nic():
    u = "4c4c4544-0037-3510-8052-b4c04f4d3732"
    assert phostid.choose_hostid(u.upper() + "\n", BOOTIF) == (phostid.hostid_from_uuid(u), f"SMBIOS system UUID {u}")


def test_without_bootif_a_placeholder_keeps_its_old_hostid_but_no_uuid_imports_nothing():
    # Booted from a DVD or USB stick (no BOOTIF=): the placeholder's hostid,
    # as before, so the node keeps importing its pool; the console says why.
    hostid, source = phostid.choose_hostid(PLACEHOLDERS[0], "console=ttyS0")
    assert hostid == phostid.hostid_from_uuid(PLACEHOLDERS[0])
    assert "placeholder" in source and "no BOOTIF=" in source
    for absent in ("", "Not Settable", PLACEHOLDERS[2], PLACEHOLDERS[3]):
        with pytest.raises(pstate.PoolError, match="no BOOTIF="):
            phostid.choose_hostid(absent, "console=ttyS0")


# -- factory reset clears only the pool's devices (item 9) --------------------------------

ZFS_DATA = "6a898cc3-1dd2-11b2-99a6-080020736631"
ZFS_RESERVED = "6a945a3b-1dd2-11b2-99a6-080020736631"
EFI = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
LINUX = "0fc63daf-8483-4772-8e79-3d69d8477de4"

# `zpool status -P -L`: zones on whole disks (sdb, sdc, sdf, which ZFS
# partitioned itself) with a spare in use, a missing and a removed disk, a
# log and a cache on partitions of the NVMe the node boots from, and a spare
# shared with the data pool, which lives on another partition of that NVMe.
ZPOOL_STATUS = """\
  pool: data
 state: ONLINE
config:

\tNAME              STATE     READ WRITE CKSUM
\tdata              ONLINE       0     0     0
\t  /dev/nvme0n1p5  ONLINE       0     0     0
\tspares
\t  /dev/sde1       AVAIL

errors: No known data errors

  pool: zones
 state: DEGRADED
status: One or more devices could not be used because the label is missing or
\tinvalid.  Sufficient replicas exist for the pool to continue
\tfunctioning in a degraded state.
action: Replace the device using 'zpool replace'.
   see: https://openzfs.github.io/openzfs-docs/msg/ZFS-8000-4J
  scan: resilvered 1.20G in 00:00:12 with 0 errors on Tue Dec  1 10:00:00 2026
config:

\tNAME                     STATE     READ WRITE CKSUM
\tzones                    DEGRADED     0     0     0
\t  mirror-0               ONLINE       0     0     0
\t    /dev/sdb1            ONLINE       0     0     0
\t    spare-1              ONLINE       0     0     0
\t      /dev/sdc1          ONLINE       0     0     0
\t      /dev/sdd1          ONLINE       0     0     0
\t  mirror-1               DEGRADED     0     0     0
\t    /dev/sdf1            ONLINE       0     0     0
\t    9876543210987654321  UNAVAIL      0     0     0  was /dev/sdg1
\t    /dev/sdh1            REMOVED      0     0     0
\tlogs
\t  /dev/nvme0n1p3         ONLINE       0     0     0
\tcache
\t  /dev/nvme0n1p4         ONLINE       0     0     0
\tspares
\t  /dev/sdd1              INUSE     currently in use
\t  /dev/sde1              AVAIL

errors: No known data errors
"""


def zfs_disk(disk):
    return Placement(disk, (Partition(disk + "1", 1, ZFS_DATA), Partition(disk + "9", 9, ZFS_RESERVED)))


NVME = Placement("/dev/nvme0n1", tuple(
    Partition(f"/dev/nvme0n1p{n}", n, t) for n, t in
    [(1, EFI), (2, LINUX), (3, ZFS_DATA), (4, ZFS_DATA), (5, ZFS_DATA)]))
SDD = Placement("/dev/sdd", (Partition("/dev/sdd1", 1, ZFS_DATA), Partition("/dev/sdd2", 2, LINUX)))
PLACEMENTS = {"/dev/sdb1": zfs_disk("/dev/sdb"), "/dev/sdc1": zfs_disk("/dev/sdc"), "/dev/sdf1": zfs_disk("/dev/sdf"),
              "/dev/sdd1": SDD, "/dev/sde1": Placement("/dev/sde", (Partition("/dev/sde1", 1, ZFS_DATA),)),
              "/dev/sdh1": zfs_disk("/dev/sdh"), "/dev/nvme0n1p3": NVME, "/dev/nvme0n1p4": NVME}


def test_zpool_status_lists_every_device_of_every_pool_by_section():
    pools = pdisks.parse_zpool_status(ZPOOL_STATUS)
    assert [(v.path, v.section, v.state) for v in pools["zones"]] == [
        ("/dev/sdb1", "data", "ONLINE"), ("/dev/sdc1", "data", "ONLINE"), ("/dev/sdd1", "data", "ONLINE"),
        ("/dev/sdf1", "data", "ONLINE"), ("/dev/sdh1", "data", "REMOVED"),
        ("/dev/nvme0n1p3", "logs", "ONLINE"), ("/dev/nvme0n1p4", "cache", "ONLINE"),
        ("/dev/sde1", "spares", "AVAIL"),
    ]
    assert [(v.path, v.section) for v in pools["data"]] == [("/dev/nvme0n1p5", "data"), ("/dev/sde1", "spares")]
    assert pdisks.parse_zpool_status("no pools available\n") == {}


def test_factory_reset_clears_whole_disks_zfs_made_and_only_the_pools_partitions():
    pools = pdisks.parse_zpool_status(ZPOOL_STATUS)
    elsewhere = {v.path: "data" for v in pools["data"]}
    plan = preset.reset_plan(pools["zones"], PLACEMENTS, elsewhere)
    assert plan.disks == ("/dev/sdb", "/dev/sdc", "/dev/sdf")
    # The log, the cache and the spare are partitions: the NVMe's EFI, root
    # and data-pool partitions, and sdd2, are not the pool's.
    assert plan.partitions == ("/dev/sdd1", "/dev/nvme0n1p3", "/dev/nvme0n1p4")
    assert plan.skipped == ("/dev/sdh1 (data) is REMOVED", "/dev/sde1 (spares) is also in pool 'data'")
    assert preset.reset_summary(plan) == ("cleared disk /dev/sdb, disk /dev/sdc, disk /dev/sdf, partition /dev/sdd1, "
                                          "partition /dev/nvme0n1p3, partition /dev/nvme0n1p4")


@pytest.mark.parametrize("where,cleared", [
    (Placement("/dev/sdb"), ("disks", "/dev/sdb")),                         # a disk without partitions
    (zfs_disk("/dev/sdb"), ("disks", "/dev/sdb")),                             # ZFS's own layout
    (Placement("/dev/sdb", (Partition("/dev/sdb1", 1, ZFS_DATA),         # partition 9 of another type
                            Partition("/dev/sdb9", 9, LINUX))), ("partitions", "/dev/sdb1")),
    (Placement("/dev/sdb", (*zfs_disk("/dev/sdb").partitions,               # a third partition
                            Partition("/dev/sdb2", 2, LINUX))), ("partitions", "/dev/sdb1")),
    (Placement("/dev/sdb", (Partition("/dev/sdb1", 1, ""),               # types unknown
                            Partition("/dev/sdb9", 9, ""))), ("partitions", "/dev/sdb1")),
    (Placement(""), ("partitions", "/dev/sdb1")),                           # its disk unknown
])
def test_only_zfss_own_whole_disk_layout_clears_a_whole_disk(where, cleared):
    dev = "/dev/sdb" if where.disk == "/dev/sdb" and not where.partitions else "/dev/sdb1"
    plan = preset.reset_plan([pdisks.Vdev(dev, "data", "ONLINE")], {dev: where}, {})
    assert getattr(plan, cleared[0]) == (cleared[1],)


def test_factory_reset_runs_labelclear_and_wipefs_on_the_pools_devices_only(monkeypatch):
    parents = {"/dev/sdb1": "sdb", "/dev/sdc1": "sdc", "/dev/sdd1": "sdd", "/dev/sdf1": "sdf", "/dev/sdh1": "sdh",
               "/dev/sde1": "sde", "/dev/nvme0n1p3": "nvme0n1", "/dev/nvme0n1p4": "nvme0n1"}
    disks = {"/dev/sdb": zfs_disk("/dev/sdb"), "/dev/sdc": zfs_disk("/dev/sdc"), "/dev/sdf": zfs_disk("/dev/sdf"),
             "/dev/sdh": zfs_disk("/dev/sdh"), "/dev/sdd": SDD, "/dev/sde": PLACEMENTS["/dev/sde1"],
             "/dev/nvme0n1": NVME}
    parts = {p.path: p for d in disks.values() for p in d.partitions}
    touched = []

    def fake_run(*argv, check=True):
        out = ""
        if argv[:2] == ("zpool", "status"):
            out = ZPOOL_STATUS
        elif argv[:4] == ("lsblk", "-dn", "-o", "TYPE"):
            out = "part\n" if argv[4] in parts else "disk\n"
        elif argv[:4] == ("lsblk", "-dn", "-o", "PKNAME"):
            out = parents.get(argv[4], "") + "\n"
        elif argv[:2] == ("lsblk", "-ln"):
            out = "".join(f"{p.path} part\n" for p in disks[argv[-1]].partitions)
        elif argv[0] == "blkid":
            p = parts.get(argv[-1])
            out = f"TYPE=zfs_member\nPART_ENTRY_NUMBER={p.number}\nPART_ENTRY_TYPE={p.type.upper()}\n" if p else ""
        elif argv[0] in ("wipefs", "zpool") and argv[1] != "destroy":
            touched.append(argv[-1])
        return subprocess.CompletedProcess(argv, 0, out, "")

    nodelib.patch(monkeypatch, "run", fake_run)
    monkeypatch.setattr(Path, "is_block_device", lambda self: True)
    notes = []
    assert preset.destroy_and_clear("zones", notes.append)
    assert set(touched) == {"/dev/sdb1", "/dev/sdb9", "/dev/sdb", "/dev/sdc1", "/dev/sdc9", "/dev/sdc",
                            "/dev/sdf1", "/dev/sdf9", "/dev/sdf", "/dev/sdd1", "/dev/nvme0n1p3", "/dev/nvme0n1p4"}
    assert notes[-1].startswith("factory reset: pool 'zones' destroyed; cleared disk /dev/sdb")
    assert "factory reset: not clearing /dev/sde1 (spares) is also in pool 'data'" in notes


# -- restore: every step runs, each failure is reported (item 7) ---------------------------

def node_settings(tmp_path):
    """The build's pool settings, with every dataset under tmp_path."""
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(load().pool.as_json()))
    s = ts.load_pool(path)
    return dataclasses.replace(s, datasets=tuple(
        dataclasses.replace(d, mountpoint=str(tmp_path / "node" / d.mountpoint.lstrip("/"))) for d in s.datasets))


@pytest.fixture
def node(tmp_path, monkeypatch):
    """A node's /run, /etc and /root under tmp_path; its pool imported and mounted."""
    run = tmp_path / "run"
    for name, path in [("RUN", run), ("STATE", run / "state.json"), ("MOUNT_FLAG", run / "mount"),
                       ("ISSUE", tmp_path / "issue"), ("BOOT_FILES", tmp_path / "boot"),
                       ("ETC_MACHINE_ID", tmp_path / "etc/machine-id"), ("ETC_SSH", tmp_path / "etc/ssh"),
                       ("SHADOW", tmp_path / "etc/shadow"),
                       ("ROOT_AUTHORIZED_KEYS", tmp_path / "root/.ssh/authorized_keys")]:
        nodelib.patch(monkeypatch, name, path)
    (tmp_path / "etc/ssh").mkdir(parents=True)
    (tmp_path / "boot").mkdir()
    settings = node_settings(tmp_path)
    settings.config_dir.mkdir(parents=True)
    pstate.write_state({"pool": "zones", "state": "imported", "health": "ONLINE", "messages": []})
    pstate.MOUNT_FLAG.write_text("zones\n")
    nodelib.patch(monkeypatch, "is_mountpoint", lambda path: True)
    return settings


def enospc(path):
    return OSError(28, "No space left on device", path)


def test_restore_runs_every_step_and_mounts_the_instances_whatever_fails(node, monkeypatch, capsys):
    ran = []

    def step(name, error=None):
        def fake(*args):
            ran.append(name)
            if error:
                raise error
        return fake

    nodelib.patch(monkeypatch, "restore_machine_id", step("machine-id"))
    nodelib.patch(monkeypatch, "restore_ssh_host_keys", step("ssh", FileNotFoundError(
        2, "No such file or directory", "/zones/config/ssh/ssh_host_rsa_key.pub")))
    nodelib.patch(monkeypatch, "restore_root_password", step("password", pstate.PoolError(
        "/zones/config/root/shadow: it is not one line\nending in a newline")))
    nodelib.patch(monkeypatch, "restore_root_keys", step("keys"))
    nodelib.patch(monkeypatch, "keep_boot_files", step("boot", enospc("/zones/config/boot/node.config")))
    nodelib.patch(monkeypatch, "mount_instances",
                  lambda settings: ran.append("instances") or "mounted 2 instance dataset(s)")

    assert prestore.restore(node) == 1
    assert ran == ["machine-id", "ssh", "password", "keys", "boot", "instances"]
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "triton-pool: restore: ssh host keys FAILED: /zones/config/ssh/ssh_host_rsa_key.pub: No such file or directory",
        "triton-pool: restore: root password FAILED: /zones/config/root/shadow: it is not one line ending in a newline",
        "triton-pool: restore: boot files FAILED: /zones/config/boot/node.config: No space left on device",
        f"triton-pool: restored machine-id, root ssh keys from {node.config_dir}",
        "triton-pool: mounted 2 instance dataset(s)",
    ]
    state = pstate.read_state()
    assert [(r["step"], r["ok"]) for r in state["restore"]] == [
        ("machine-id", True), ("ssh host keys", False), ("root password", False), ("root ssh keys", True),
        ("boot files", False), ("instance datasets", True)]
    assert state["messages"] == [line.removeprefix("triton-pool: ") for line in out[:3]]
    assert pstate.ISSUE.read_text() == ("Pool zones: imported, ONLINE.\nRestore from the pool FAILED: ssh host keys, "
                                        "root password, boot files: see `triton-pool status`.\n")


def test_restore_mounts_instances_even_without_the_config_dataset(node, monkeypatch, capsys):
    nodelib.patch(monkeypatch, "is_mountpoint", lambda path: path != node.config_dir)
    nodelib.patch(monkeypatch, "restore_machine_id", lambda cfg: pytest.fail("wrote to an unmounted /zones/config"))
    nodelib.patch(monkeypatch, "mount_instances", lambda settings: "mounted 1 instance dataset(s)")
    assert prestore.restore(node) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "triton-pool: mounted 1 instance dataset(s)"
    assert pstate.read_state()["unmounted"] == [str(node.config_dir)]


def test_one_instance_that_does_not_mount_leaves_the_others_mounted(node, monkeypatch):
    a, b = "zones/" + "a" * 8 + "-0000-4000-8000-" + "0" * 12, "zones/" + "b" * 8 + "-0000-4000-8000-" + "0" * 12
    mounted = []

    def fake_run(*argv, check=True):
        if argv[:2] == ("zfs", "list"):
            return subprocess.CompletedProcess(argv, 0, f"zones\ton\n{a}\ton\n{b}\ton\n", "")
        mounted.append(argv[-1])
        return subprocess.CompletedProcess(argv, 1 if argv[-1] == a else 0, "", "cannot mount: I/O error\n")

    nodelib.patch(monkeypatch, "run", fake_run)
    [result] = prestore.run_steps([(pinstances.INSTANCES, lambda: pinstances.mount_instances(node))])
    assert mounted == [a, b]
    assert result.error == f"1 of 2 did not mount: {a}: cannot mount: I/O error"


def test_a_full_pool_leaves_the_boot_files_an_earlier_boot_kept(node, monkeypatch):
    (pstate.BOOT_FILES / "node.config").write_text("hostname='new'\n")
    kept = node.config_dir / "boot/node.config"
    kept.parent.mkdir()
    kept.write_text("hostname='old'\n")

    def full(fd):
        raise enospc(None)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(pstate.PoolError, match=f"^{kept}: No space left on device; the copy an earlier boot kept"):
        pidentity.keep_boot_files(node.config_dir)
    assert kept.read_text() == "hostname='old'\n"
    assert [p.name for p in kept.parent.iterdir()] == ["node.config"]


def test_ssh_host_key_plan():
    saved = {"ssh_host_rsa_key", "ssh_host_rsa_key.pub", "ssh_host_ecdsa_key", "ssh_host_ed25519_key.pub"}
    assert pidentity.ssh_key_plan(saved) == {"rsa": "copy", "ecdsa": "derive-public", "ed25519": "generate"}


def test_a_lost_public_host_key_is_made_again_and_the_others_are_installed(node, monkeypatch):
    keys = node.config_dir / "ssh"
    keys.mkdir()
    for t in pidentity.SSH_KEY_TYPES:
        (keys / f"ssh_host_{t}_key").write_text(f"PRIVATE {t}\n")
        if t != "ecdsa":
            (keys / f"ssh_host_{t}_key.pub").write_text(f"PUBLIC {t}\n")
    calls = []

    def fake_run(*argv, check=True):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "ecdsa-sha2-nistp256 AAAA\n", "")

    nodelib.patch(monkeypatch, "run", fake_run)
    assert "ecdsa" in pidentity.restore_ssh_host_keys(node.config_dir)
    assert calls == [("ssh-keygen", "-y", "-P", "", "-f", str(keys / "ssh_host_ecdsa_key"))]
    assert (keys / "ssh_host_ecdsa_key.pub").read_text() == "ecdsa-sha2-nistp256 AAAA\n"
    assert sorted(p.name for p in pidentity.ETC_SSH.iterdir()) == sorted(
        f"ssh_host_{t}_key{s}" for t in pidentity.SSH_KEY_TYPES for s in ("", ".pub"))
    assert oct((pidentity.ETC_SSH / "ssh_host_rsa_key").stat().st_mode & 0o777) == "0o600"


def test_a_damaged_machine_id_is_replaced_and_reported(node):
    saved = node.config_dir / "machine-id"
    pidentity.restore_machine_id(node.config_dir)  # first boot: made, silently
    first = saved.read_text()
    assert pidentity.ETC_MACHINE_ID.read_text() == first and len(first.strip()) == 32
    saved.write_text("\x00garbage")
    with pytest.raises(pstate.PoolError, match="damaged .* this node has a new machine-id"):
        pidentity.restore_machine_id(node.config_dir)
    assert pidentity.ETC_MACHINE_ID.read_text() == saved.read_text() != first


@pytest.mark.parametrize("text,value", [
    (None, None), ("$6$salt$hash\n", "$6$salt$hash"), ("!$6$salt$hash\n", "!$6$salt$hash"),
    ("!\n", "!"), ("*\n", "*"), ("\n", ""),
])
def test_saved_root_password_is_read_exactly(text, value):
    assert pidentity.saved_root_hash(text) == value


@pytest.mark.parametrize("text", ["", "$6$salt$ha", "$6$a\n$6$b\n", "$6$salt:hash\n", "$6$s\ufffd\n", "$6 x\n"])
def test_a_damaged_saved_root_password_is_refused(text):
    with pytest.raises(ValueError):
        pidentity.saved_root_hash(text)


def test_a_damaged_saved_root_password_is_moved_aside_not_installed(node, monkeypatch):
    saved = node.config_dir / "root/shadow"
    saved.parent.mkdir()
    saved.write_bytes(b"$6$\xff\x00")
    nodelib.patch(monkeypatch, "run", lambda *argv, check=True: pytest.fail(f"ran {argv}"))
    with pytest.raises(pstate.PoolError, match="moved to shadow.damaged, root's password is not restored"):
        pidentity.restore_root_password(node.config_dir)
    assert not saved.exists() and (saved.parent / "shadow.damaged").read_bytes() == b"$6$\xff\x00"


# -- root's revoked access stays revoked (item 8) ---------------------------------------------

@pytest.mark.parametrize("shadow,value", [
    ("daemon:*:19000::::::\nroot:$6$s$h:19000:0:99999:7:::\n", "$6$s$h"),
    ("root:!$6$s$h:19000:0:99999:7:::\n", "!$6$s$h"),   # passwd -l root
    ("root:*:19000:0:99999:7:::\n", "*"),
    ("root::19000:0:99999:7:::\n", ""),                 # passwd -d root
    ("daemon:*:19000::::::\n", None),
])
def test_roots_password_field_is_taken_as_it_is(shadow, value):
    assert pidentity.root_entry_hash(shadow) == value


def test_save_plan_saves_locks_and_removals():
    saved = {"shadow": b"$6$s$h\n", "authorized_keys": b"ssh-ed25519 AAAA old\n"}
    locked = "root:!$6$s$h:19000:0:99999:7:::\n"
    assert pidentity.root_save_plan(locked, None, saved, set()) == (
        {"shadow": b"!$6$s$h\n", "authorized_keys": None}, [])
    # Nothing changed, nothing written; no keys and none saved, nothing to remove.
    assert pidentity.root_save_plan("root:$6$s$h:1::::::\n", saved["authorized_keys"], saved, set()) == ({}, [])
    assert pidentity.root_save_plan("root:$6$s$h:1::::::\n", None, {"shadow": b"$6$s$h\n"}, set()) == ({}, [])
    # No root entry (a damaged /etc/shadow): the saved hash stays.
    assert pidentity.root_save_plan("", b"k\n", saved, set()) == ({"authorized_keys": b"k\n"}, [])


def test_a_copy_this_boot_did_not_restore_is_not_overwritten():
    saved = {"shadow": b"$6$s$h\n", "authorized_keys": b"ssh-ed25519 AAAA\n"}
    not_restored = {pidentity.ROOT_PASSWORD, pidentity.ROOT_KEYS}
    changes, kept = pidentity.root_save_plan("root:*:1::::::\n", None, saved, not_restored)
    assert changes == {}
    assert kept == [f"not saving {n}: this boot did not restore the saved copy (`triton-pool status`)"
                    for n in ("shadow", "authorized_keys")]
    # A damaged copy was moved aside: the operator's new password is saved.
    assert pidentity.root_save_plan("root:$6$n$n:1::::::\n", None, {}, {pidentity.ROOT_PASSWORD}) == \
        ({"shadow": b"$6$n$n\n"}, [])


def test_revoked_root_access_stays_revoked_after_a_reboot(node, monkeypatch):
    usermod = []
    nodelib.patch(monkeypatch, "run", lambda *argv, check=True: usermod.append(argv[2]))
    pidentity.SHADOW.write_text("root:$6$s$h:19000:0:99999:7:::\n")
    pidentity.ROOT_AUTHORIZED_KEYS.parent.mkdir(parents=True)
    pidentity.ROOT_AUTHORIZED_KEYS.write_text("ssh-ed25519 AAAA old\n")
    assert pidentity.save_root(node) == 0
    # The operator revokes: `passwd -l root`, `rm /root/.ssh/authorized_keys`.
    pidentity.SHADOW.write_text("root:!$6$s$h:19000:0:99999:7:::\n")
    pidentity.ROOT_AUTHORIZED_KEYS.unlink()
    assert pidentity.save_root(node) == 0
    assert (node.config_dir / "root/shadow").read_text() == "!$6$s$h\n"
    assert not (node.config_dir / "root/authorized_keys").exists()
    # The next boot: a fresh root (here, one with a stale key file) gets exactly that.
    pidentity.ROOT_AUTHORIZED_KEYS.write_text("ssh-ed25519 AAAA old\n")
    pidentity.restore_root_password(node.config_dir)
    pidentity.restore_root_keys(node.config_dir)
    assert usermod == ["!$6$s$h"]
    assert not pidentity.ROOT_AUTHORIZED_KEYS.exists()


def test_keys_added_again_are_restored(node):
    pidentity.ROOT_AUTHORIZED_KEYS.parent.mkdir(parents=True)
    pidentity.ROOT_AUTHORIZED_KEYS.write_text("ssh-ed25519 AAAA new\n")
    assert pidentity.save_root(node) == 0
    pidentity.ROOT_AUTHORIZED_KEYS.unlink()
    pidentity.restore_root_keys(node.config_dir)
    assert pidentity.ROOT_AUTHORIZED_KEYS.read_text() == "ssh-ed25519 AAAA new\n"
    assert oct(pidentity.ROOT_AUTHORIZED_KEYS.stat().st_mode & 0o777) == "0o600"


def test_save_root_leaves_an_unmounted_config_dataset_alone(node, capsys):
    pstate.write_state({**pstate.read_state(), "unmounted": [str(node.config_dir)]})
    assert pidentity.save_root(node) == 1
    assert "is not mounted" in capsys.readouterr().out
    assert not (node.config_dir / "root").exists()


def test_the_path_unit_sees_a_change_and_a_removal_of_either_file():
    # PathChanged= on a file fires when it is written, replaced or removed
    # (IN_ATTRIB, IN_DELETE_SELF on the file; the directory once it is gone).
    unit = postinst.unit_files(load())["/usr/lib/systemd/system/triton-persist-root.path"]
    watched = [line.split("=", 1) for line in unit.splitlines() if line.startswith("Path")]
    assert sorted(watched) == [["PathChanged", "/etc/shadow"], ["PathChanged", "/root/.ssh/authorized_keys"]]


def test_instance_datasets_mounted_at_boot():
    settings = type("S", (), {"name": "zones"})()
    listing = ("zones\tnoauto\nzones/config\tnoauto\nzones/var\tnoauto\n"
               "zones/6f1c3a2b-9d8e-4f7a-b6c5-d4e3f2a1b0c9\ton\n"
               "zones/0b8e9a44-3c2d-4e5f-8a9b-0c1d2e3f4a5b\tnoauto\n")
    assert pinstances.instance_datasets(listing, settings) == ["zones/6f1c3a2b-9d8e-4f7a-b6c5-d4e3f2a1b0c9"]


def test_a_pool_set_up_on_a_running_node_is_put_to_use_at_once(node, monkeypatch, capsys):
    """triton-pool setup on a running node (by hand, or the headnode's
    script through ur): every dataset but the seeded /var mounted where it
    belongs, the pool recorded as this boot's (flag, state, console note),
    and triton-config-dir run again to move /usr/triton/config onto it."""
    import triton_pool_setup as psetup
    pstate.MOUNT_FLAG.unlink()
    pstate.write_state({"pool": "zones", "state": "not-setup", "messages": ["node is NOT SET UP"]})
    mounted, ran = [], []
    nodelib.patch(monkeypatch, "is_mountpoint", lambda path: False)
    nodelib.patch(monkeypatch, "mount_zfs", lambda dataset, where: mounted.append((dataset, str(where))))
    nodelib.patch(monkeypatch, "pool_health", lambda pool: "ONLINE")
    nodelib.patch(monkeypatch, "run", lambda *argv, check=True: ran.append(argv) or
                  subprocess.CompletedProcess(argv, 0, "", ""))
    said: list[str] = []
    psetup.use_now(node, said.append)
    where = {d.name: d.mountpoint for d in node.datasets}
    assert sorted(mounted) == [("zones", where[""]), ("zones/config", where["config"]), ("zones/opt", where["opt"])]
    assert mounted.index(("zones", where[""])) < mounted.index(("zones/config", where["config"]))
    assert pstate.MOUNT_FLAG.read_text() == "zones\n"
    state = pstate.read_state()
    assert state["state"] == "imported" and state["health"] == "ONLINE" and state["set_up_live"]
    assert pstate.ISSUE.read_text().startswith("Pool zones: imported, ONLINE.")
    assert ran == [("systemctl", "restart", "triton-config-dir.service")]
    assert said[0].startswith("in use now: zones") and said[0].endswith(
        f"{where['var']} moves to the pool at the next boot")


def test_adopt_puts_the_pool_joysetup_made_to_use_and_leaves_usr_triton_config_to_it(node, monkeypatch):
    """triton-lxd.service (joysetup.sh restarts it once zones/var is on
    /var): the journal moved onto the pool's /var first; a dataset this
    platform mounts that joysetup did not make is made, what is not
    mounted is, the pool recorded as this boot's; /usr/triton/config is
    left for joysetup.sh's install_configs (it would fail on a link)."""
    import triton_pool_setup as psetup
    pstate.MOUNT_FLAG.unlink()
    pstate.write_state({"pool": "zones", "state": "not-setup", "messages": []})
    where = {d.name: d.mountpoint for d in node.datasets}
    mounted, ran = [], []
    nodelib.patch(monkeypatch, "system_pools", lambda settings, pools=None: ["zones"])
    # joysetup.sh made and mounted all but zones/config here.
    nodelib.patch(monkeypatch, "lines", lambda *argv: ["zones", "zones/opt", "zones/var"])
    nodelib.patch(monkeypatch, "create_dataset", lambda name, mp: ran.append(("create", name, mp)))
    nodelib.patch(monkeypatch, "is_mountpoint", lambda path: str(path) != where["config"])
    nodelib.patch(monkeypatch, "mount_zfs", lambda dataset, w: mounted.append((dataset, str(w))))
    nodelib.patch(monkeypatch, "pool_health", lambda pool: "ONLINE")
    nodelib.patch(monkeypatch, "run", lambda *argv, check=True: ran.append(argv) or
                  subprocess.CompletedProcess(argv, 0, "", ""))
    said: list[str] = []
    assert psetup.adopt(node, said.append) is True
    assert ran == [("journalctl", "--relinquish-var"), ("journalctl", "--flush"),
                   ("create", "zones/config", where["config"])]
    assert mounted == [("zones/config", where["config"])]
    assert pstate.MOUNT_FLAG.read_text() == "zones\n" and pstate.read_state()["state"] == "imported"
    assert said == [f"created missing dataset zones/config ({where['config']})",
                    f"in use now: zones/config on {where['config']}"]
    # Restarted by hand on a node whose pool is in use: nothing.
    ran.clear()
    assert psetup.adopt(node, said.append) is False
    assert ran == [] and said[-1] == "pool 'zones' is already in use on this node: nothing to do"


def test_adopt_refuses_when_there_is_no_system_pool(node, monkeypatch):
    import triton_pool_setup as psetup
    pstate.MOUNT_FLAG.unlink()
    nodelib.patch(monkeypatch, "system_pools", lambda settings, pools=None: [])
    nodelib.patch(monkeypatch, "run", lambda *argv, check=True: pytest.fail(f"ran {argv}"))
    with pytest.raises(pstate.PoolError, match=r"no imported pool 'zones' with \.system_pool on it"):
        psetup.adopt(node, print)
    assert not pstate.MOUNT_FLAG.exists()


def test_copy_tree_keeps_modes_links_and_times(tmp_path):
    import triton_pool_setup as psetup
    src, dst = tmp_path / "var", tmp_path / "seed"
    (src / "log/journal").mkdir(parents=True)
    (src / "lib").mkdir()
    (src / "lib/x").write_text("data")
    os.chmod(src / "lib/x", 0o640)
    os.utime(src / "lib/x", (1_000_000_000, 1_000_000_000))
    (src / "run").symlink_to("/run")
    dst.mkdir()
    psetup.copy_tree(str(src), dst)
    assert (dst / "lib/x").read_text() == "data" and (dst / "lib/x").stat().st_mode & 0o777 == 0o640
    assert (dst / "lib/x").stat().st_mtime == 1_000_000_000
    assert os.readlink(dst / "run") == "/run" and (dst / "log/journal").is_dir()


def test_copy_tree_fails_when_the_source_is_gone(tmp_path):
    import triton_pool_setup as psetup
    (tmp_path / "seed").mkdir()
    with pytest.raises(pstate.PoolError):
        psetup.copy_tree(str(tmp_path / "missing"), tmp_path / "seed")


def test_a_pool_set_up_on_a_running_node_keeps_its_identity_as_it_is(node, tmp_path):
    """Never a new machine-id or host key under a running system: what the
    node has now is saved, and the next boot restores exactly that."""
    machine_id = "0123456789abcdef0123456789abcdef"
    (tmp_path / "etc/machine-id").write_text(machine_id + "\n")
    (tmp_path / "etc/ssh/ssh_host_ed25519_key").write_text("PRIVATE\n")
    (tmp_path / "etc/ssh/ssh_host_ed25519_key.pub").write_text("ssh-ed25519 AAAA root@cn\n")
    (tmp_path / "boot/node.config").write_text("datacenter_name='dc'\n")
    kept = pidentity.keep_identity(node.config_dir)
    assert kept == ["machine-id", "ssh ed25519 host key", "boot files"]
    assert (node.config_dir / "machine-id").read_text() == machine_id + "\n"
    assert (node.config_dir / "ssh/ssh_host_ed25519_key").read_text() == "PRIVATE\n"
    assert (node.config_dir / "ssh/ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "etc/machine-id").read_text() == machine_id + "\n"
    # The next boot's restore takes them as they are.
    pidentity.restore_machine_id(node.config_dir)
    assert (tmp_path / "etc/machine-id").read_text() == machine_id + "\n"
