"""Power cuts lose nothing (issue 16 item 17), without root, disks or ZFS.

What the next boot decides from what a power cut left: which datasets an
interrupted `vmadm create` or `imgadm import` left (destroyed), what an
interrupted `triton-pool setup` left (reported, redone). Then vmadm create
and imgadm import are cut after each of their steps in turn, on a small
model of ZFS (each command atomic, as a ZFS transaction is; files written
before a command are there after it, as ZFS orders its transactions), the
boot's cleanup is run, and what is left must be a whole instance (or image)
or nothing. tests/boot/test_power_cuts.py cuts a real node's power.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from hooks.config import load
from tests.unit import nodelib

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_imgadm as ia  # noqa: E402
import triton_instance as ti  # noqa: E402
import triton_pool_disks as pdisks  # noqa: E402
import triton_pool_import as pimport  # noqa: E402
import triton_pool_instances as pinstances  # noqa: E402
import triton_pool_restore as prestore  # noqa: E402
import triton_pool_setup as psetup  # noqa: E402
import triton_pool_state as pstate  # noqa: E402
import triton_settings as ts  # noqa: E402
import triton_vmadm as va  # noqa: E402

IMAGE = "0b8e9a44-3c2d-4e5f-8a9b-0c1d2e3f4a5b"
VM = "6f1c3a2b-9d8e-4f7a-b6c5-d4e3f2a1b0c9"
OTHER = "a1b2c3d4-0000-4000-8000-000000000001"


# -- what the boot removes ------------------------------------------------------------------

LISTING = "\n".join("\t".join(row) for row in [
    ("zones", "-", "on"),
    ("zones/config", "-", "on"),
    (f"zones/{IMAGE}", "-", "off"),
    (f"zones/{IMAGE}@final", "-", "-"),
    (f"zones/{VM}", f"zones/{IMAGE}@final", "on"),
    (f"zones/{OTHER}-partial", f"zones/{IMAGE}@final", "on"),   # a create cut short
    (f"zones/{OTHER.replace('1', '2')}-partial", "-", "off"),     # an import cut short
    (f"zones/{OTHER.replace('1', '3')}", "-", "off"),            # an old imgadm's import cut short
    ("zones/not-a-uuid-partial", "-", "on"),
    ("zones/config/" + OTHER + "-partial", "-", "on"),
]) + "\n"


def test_the_boot_removes_only_what_an_interrupted_create_or_import_left():
    found = ti.leftovers(LISTING, "zones")
    assert [(x.dataset, x.image) for x in found] == [
        (f"zones/{OTHER}-partial", None),
        (f"zones/{OTHER.replace('1', '2')}-partial", OTHER.replace("1", "2")),
        (f"zones/{OTHER.replace('1', '3')}", OTHER.replace("1", "3")),
    ]
    assert "vmadm create" in found[0].why and "imgadm import" in found[1].why
    assert "no @final snapshot" in found[2].why


def test_a_finished_instance_or_image_is_never_a_leftover():
    # Whatever it holds: a clone is an instance, an image has its snapshot,
    # an instance's child is not the boot's to judge.
    rows = [("zones", "-", "on"), (f"zones/{IMAGE}", "-", "off"), (f"zones/{IMAGE}@final", "-", "-"),
            (f"zones/{VM}", f"zones/{IMAGE}@final", "on"), (f"zones/{VM}/data", "-", "off"),
            (f"zones/{OTHER}", "-", "on")]
    assert ti.leftovers("\n".join("\t".join(r) for r in rows), "zones") == []
    assert ti.leftovers("", "zones") == []


def test_a_partial_image_of_an_installed_one_keeps_the_manifest():
    listing = f"zones/{IMAGE}\t-\toff\nzones/{IMAGE}@final\t-\t-\nzones/{IMAGE}-partial\t-\toff\n"
    [left] = ti.leftovers(listing, "zones")
    assert left.dataset == f"zones/{IMAGE}-partial" and left.image is None


# -- a small ZFS, and power cuts in vmadm create and imgadm import ------------------------------

def pool_settings(tmp_path) -> ts.PoolSettings:
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(load().pool.as_json()))
    return ts.load_pool(path)


class PowerCut(BaseException):
    """The node lost power: nothing after this runs, not even a rollback."""


@dataclasses.dataclass
class Dataset:
    origin: str = "-"
    props: dict[str, str] = dataclasses.field(default_factory=dict)
    mounted: bool = False


class FakeZfs:
    """Enough of zfs and systemctl for vmadm create and imgadm import.
    A dataset's files are in <top>/<name> whether or not it is mounted;
    every command is atomic; the power goes after `cut` commands."""

    def __init__(self, top: Path, cut: Optional[int] = None) -> None:
        self.top, self.cut, self.count = top, cut, 0
        top.mkdir(parents=True, exist_ok=True)
        self.datasets: dict[str, Dataset] = {"zones": Dataset(props={"mountpoint": str(top / "zones")})}
        self.snapshots: set[str] = set()

    def path(self, name: str) -> Path:
        return self.top / name

    def __call__(self, *argv: str, check: bool = True, input: Optional[str] = None) -> subprocess.CompletedProcess:
        if self.cut is not None and self.count >= self.cut:
            raise PowerCut(" ".join(argv))
        self.count += 1
        out, rc = self.do(list(argv))
        if check and rc:
            raise ti.InstanceError(f"`{' '.join(argv)}` failed")
        return subprocess.CompletedProcess(argv, rc, out, "" if rc == 0 else "cannot: no such dataset\n")

    def do(self, argv: list[str]) -> tuple[str, int]:
        cmd, args = argv[:2], argv[2:]
        if argv[0] == "systemctl" or argv[:2] == ["zpool", "sync"]:
            return "", 0
        if cmd == ["zfs", "list"] and args[-2] == "2":  # LEFTOVERS_LISTING
            rows = [f"{n}\t{d.origin}\t{d.props.get('exec', 'on')}" for n, d in sorted(self.datasets.items())]
            return "\n".join(rows + [f"{s}\t-\t-" for s in sorted(self.snapshots)]) + "\n", 0
        if cmd == ["zfs", "list"]:
            return "", 0 if args[-1] in self.datasets or args[-1] in self.snapshots else 1
        if cmd == ["zfs", "get"]:
            prop, name = args[-2:]
            d = self.datasets[name]
            value = {"mounted": "yes" if d.mounted else "no", "mountpoint": str(self.path(name)),
                     "used": "0"}.get(prop)
            return (value or d.props.get(prop, "-")) + "\n", 0
        if cmd == ["zfs", "clone"] or cmd == ["zfs", "create"]:
            props = dict(a.split("=", 1) for a in args[:-1] if "=" in a)
            origin = args[-2] if cmd[1] == "clone" else "-"
            self.datasets[args[-1]] = Dataset(origin, props, mounted=True)
            self.path(args[-1]).mkdir(parents=True)
            if origin != "-":
                shutil.copytree(self.path(origin.split("@")[0]), self.path(args[-1]), dirs_exist_ok=True)
            return "", 0
        if cmd == ["zfs", "mount"] or cmd == ["zfs", "unmount"]:
            self.datasets[args[-1]].mounted = cmd[1] == "mount"
            return "", 0
        if cmd == ["zfs", "set"]:
            key, value = args[0].split("=", 1)
            self.datasets[args[1]].props[key] = value
            return "", 0
        if cmd == ["zfs", "snapshot"]:
            self.snapshots.add(args[0])
            return "", 0
        if cmd == ["zfs", "rename"]:
            old, new = args
            if new in self.datasets:
                return "", 1
            self.datasets[new] = self.datasets.pop(old)
            self.path(old).rename(self.path(new))
            self.snapshots = {new + s[len(old):] if s.startswith(old + "@") else s for s in self.snapshots}
            return "", 0
        if cmd == ["zfs", "destroy"]:
            name = args[-1]
            del self.datasets[name]
            self.snapshots = {s for s in self.snapshots if not s.startswith(name + "@")}
            shutil.rmtree(self.path(name))
            return "", 0
        raise AssertionError(f"the model does not know {argv}")


@pytest.fixture
def settings(tmp_path):
    return dataclasses.replace(load().instances, manifests=str(tmp_path / "manifests"))


def installed_image(zfs: FakeZfs, settings: ts.InstanceSettings) -> None:
    (zfs.path(f"zones/{IMAGE}") / "root/etc").mkdir(parents=True)
    zfs.datasets[f"zones/{IMAGE}"] = Dataset(props={"exec": "off", "canmount": "noauto"})
    zfs.snapshots.add(f"zones/{IMAGE}@final")
    settings.manifest_dir.mkdir()
    settings.manifest(IMAGE).write_text("{}")


def use(zfs: FakeZfs, monkeypatch) -> None:
    nodelib.patch(monkeypatch, "run", zfs)


def boot(zfs: FakeZfs, settings: ts.InstanceSettings, monkeypatch, capsys) -> list[str]:
    """What the next boot's restore does before it mounts the instances."""
    zfs.cut = None
    monkeypatch.setattr(ts, "load_instances", lambda path=ts.INSTANCES_JSON: settings)
    assert pinstances.remove_unfinished(pool_settings(zfs.top)) == []
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("triton-pool: removed")]


def create_steps(tmp_path, settings, monkeypatch, cut: Optional[int]) -> FakeZfs:
    zfs = FakeZfs(tmp_path / f"cut{cut}", cut)
    installed_image(zfs, settings)
    use(zfs, monkeypatch)
    try:
        va.create({"uuid": VM, "image_uuid": IMAGE, "autoboot": False}, settings)
    except PowerCut:
        pass
    return zfs


def test_vmadm_create_cut_after_any_step_leaves_a_whole_instance_or_nothing(tmp_path, settings, monkeypatch, capsys):
    whole = create_steps(tmp_path, settings, monkeypatch, None)
    steps = whole.count
    vm_json = whole.path(f"zones/{VM}") / "config/vm.json"
    assert json.loads(vm_json.read_text())["uuid"] == VM
    outcomes = set()
    for cut in range(steps + 1):
        shutil.rmtree(settings.manifest_dir)
        zfs = create_steps(tmp_path, settings, monkeypatch, cut)
        removed = boot(zfs, settings, monkeypatch, capsys)
        names = set(zfs.datasets) - {"zones", f"zones/{IMAGE}"}
        if names:
            assert names == {f"zones/{VM}"}, (cut, names)
            assert json.loads((zfs.path(f"zones/{VM}") / "config/vm.json").read_text())["uuid"] == VM
            assert zfs.datasets[f"zones/{VM}"].origin == f"zones/{IMAGE}@final"
            outcomes.add("whole")
        else:
            assert not zfs.path(f"zones/{VM}").exists() and not zfs.path(f"zones/{VM}-partial").exists(), cut
            outcomes.add("nothing")
        assert len(removed) <= 1 and all(f"zones/{VM}-partial" in line for line in removed)
    assert outcomes == {"whole", "nothing"}


def import_steps(tmp_path, settings, monkeypatch, cut: Optional[int]) -> FakeZfs:
    zfs = FakeZfs(tmp_path / f"cut{cut}", cut)
    use(zfs, monkeypatch)
    monkeypatch.setattr(ia, "extract", lambda src, info, root, base: (root / "etc").mkdir())
    manifest = tmp_path / "image.json"
    manifest.write_text(json.dumps({"uuid": IMAGE, "name": "debian", "version": "13", "os": "linux", "type": "zone",
                                    "files": [{"size": 1, "sha256": "0" * 64}]}))
    try:
        ia.import_image(str(manifest), str(tmp_path / "image.tar.zst"), settings)
    except PowerCut:
        pass
    return zfs


def test_imgadm_import_cut_after_any_step_leaves_an_installed_image_or_nothing(tmp_path, settings, monkeypatch,
                                                                               capsys):
    whole = import_steps(tmp_path, settings, monkeypatch, None)
    steps = whole.count
    outcomes = set()
    for cut in range(steps + 1):
        shutil.rmtree(settings.manifest_dir, ignore_errors=True)
        zfs = import_steps(tmp_path, settings, monkeypatch, cut)
        boot(zfs, settings, monkeypatch, capsys)
        if set(zfs.datasets) - {"zones"}:
            assert set(zfs.datasets) == {"zones", f"zones/{IMAGE}"}, cut
            assert f"zones/{IMAGE}@final" in zfs.snapshots and settings.manifest(IMAGE).is_file()
            assert (zfs.path(f"zones/{IMAGE}") / "root/etc").is_dir()
            outcomes.add("installed")
        else:
            assert not settings.manifest(IMAGE).exists() and not zfs.snapshots, cut
            outcomes.add("nothing")
    assert outcomes == {"installed", "nothing"}


def test_a_create_under_way_is_not_taken_for_a_new_one(tmp_path, settings, monkeypatch):
    zfs = FakeZfs(tmp_path)
    installed_image(zfs, settings)
    use(zfs, monkeypatch)
    zfs.datasets[f"zones/{VM}-partial"] = Dataset(f"zones/{IMAGE}@final")
    with pytest.raises(ti.InstanceError, match=f"zones/{VM}-partial exists; the next boot removes it"):
        va.create({"uuid": VM, "image_uuid": IMAGE, "autoboot": False}, settings)
    assert f"zones/{VM}-partial" in zfs.datasets


def test_a_failed_create_leaves_nothing(tmp_path, settings, monkeypatch):
    zfs = FakeZfs(tmp_path)
    installed_image(zfs, settings)
    use(zfs, monkeypatch)

    def broken(vm, root):
        raise ti.InstanceError("cannot set root's password")

    monkeypatch.setattr(va, "set_root_credentials", broken)
    with pytest.raises(ti.InstanceError):
        va.create({"uuid": VM, "image_uuid": IMAGE, "autoboot": False}, settings)
    assert set(zfs.datasets) == {"zones", f"zones/{IMAGE}"} and not zfs.path(f"zones/{VM}-partial").exists()


def test_config_files_are_replaced_whole_and_synced(tmp_path, monkeypatch):
    synced = []
    real_fsync = ti.os.fsync
    monkeypatch.setattr(ti.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    path = tmp_path / "vm.json"
    path.write_text("old")
    ti.write_durable(path, "new")
    assert path.read_text() == "new" and oct(path.stat().st_mode & 0o777) == "0o600"
    assert len(synced) == 2  # the file, then the directory that holds the rename
    assert [p.name for p in tmp_path.iterdir()] == ["vm.json"]


# -- an interrupted setup -----------------------------------------------------------------------

ZFS_DATA = "6a898cc3-1dd2-11b2-99a6-080020736631"
ZFS_RESERVED = "6a945a3b-1dd2-11b2-99a6-080020736631"


def part(n: int, kind: str, fs: str = "") -> dict[str, str]:
    return {"PART_ENTRY_NUMBER": str(n), "PART_ENTRY_TYPE": kind.upper(), **({"TYPE": fs} if fs else {})}


@pytest.mark.parametrize("probe,parts,txg,cut_short", [
    # GPT written, labels not yet; labels of a first transaction that never completed.
    ({"PTTYPE": "gpt"}, [part(1, ZFS_DATA), part(9, ZFS_RESERVED)], None, True),
    ({"PTTYPE": "gpt"}, [part(1, ZFS_DATA, "zfs_member"), part(9, ZFS_RESERVED)], 0, True),
    ({"PTTYPE": "gpt"}, [part(1, ZFS_DATA), part(9, ZFS_RESERVED)], 0, True),
    # A pool that was ever whole, or labels zdb cannot read: someone's data.
    ({"PTTYPE": "gpt"}, [part(1, ZFS_DATA, "zfs_member"), part(9, ZFS_RESERVED)], 4, False),
    ({"PTTYPE": "gpt"}, [part(1, ZFS_DATA, "zfs_member"), part(9, ZFS_RESERVED)], None, False),
    # Anything else on the disk.
    ({"PTTYPE": "gpt"}, [part(1, ZFS_DATA, "ext4"), part(9, ZFS_RESERVED)], None, False),
    ({"PTTYPE": "gpt"}, [part(1, ZFS_DATA), part(9, ZFS_RESERVED, "vfat")], None, False),
    ({"PTTYPE": "gpt"}, [part(1, ZFS_DATA), part(9, ZFS_RESERVED), part(2, ZFS_DATA)], None, False),
    ({"PTTYPE": "dos"}, [part(1, ZFS_DATA), part(9, ZFS_RESERVED)], None, False),
    ({"PTTYPE": "gpt"}, [part(1, ZFS_DATA)], None, False),
])
def test_what_a_cut_short_zpool_create_leaves_is_recognised(probe, parts, txg, cut_short):
    assert pdisks.unfinished_create(probe, parts, txg) is cut_short


def test_the_label_txg_is_read_from_zdb():
    zdb = ("------------------------------------\nLABEL 0\n------------------------------------\n"
           "    version: 5000\n    name: 'zones'\n    state: 0\n    txg: 0\n    pool_guid: 1\n"
           "    create_txg: 4\n")
    assert pdisks.parse_label_txg(zdb) == 0
    assert pdisks.parse_label_txg(zdb.replace("txg: 0\n", "txg: 1234\n")) == 1234
    assert pdisks.parse_label_txg("failed to unpack label 0\n") is None


def test_only_this_nodes_unfinished_setup_on_the_named_disks_is_redone(tmp_path):
    s = pool_settings(tmp_path)
    assert psetup.redo_refusal(s, psetup.SETUP_INCOMPLETE, ["/dev/vda"], ["/dev/vda"]) is None
    assert psetup.redo_refusal(s, psetup.SETUP_INCOMPLETE, ["/dev/vda"], ["/dev/vda", "/dev/vdb"]) is None
    # Someone's pool (no comment, or another one): never.
    for comment in ("-", "", "backups"):
        assert "it is not a system pool; export or rename it first" in \
            psetup.redo_refusal(s, comment, ["/dev/vda"], ["/dev/vda"])
    assert "/dev/vdb is not among the disks named (/dev/vda)" in \
        psetup.redo_refusal(s, psetup.SETUP_INCOMPLETE, ["/dev/vda", "/dev/vdb"], ["/dev/vda"])


def test_the_console_says_what_an_interrupted_setup_left(tmp_path):
    s = pool_settings(tmp_path)
    assert psetup.interrupted_summary(s, ["zones", "zones/opt", "zones/var"]) == (
        "pool 'zones' was created but setup never finished (no .system_pool; datasets made: zones/opt, "
        "zones/var; missing: zones/config)")
    summary = psetup.interrupted_summary(s, ["zones"])
    assert "datasets made: none; missing: zones/opt, zones/var, zones/config" in summary
    issue = pstate.issue_text({"state": "not-setup", "pool": "zones", "setup_interrupted": "..."})
    assert "NOT SET UP: setting up pool 'zones' was interrupted" in issue and "`triton-pool setup`" in issue


class FakeNode:
    """zpool, zfs, blkid and lsblk of a node with disk vda, for setup."""

    def __init__(self, pool: Optional[str], comment: str = psetup.SETUP_INCOMPLETE) -> None:
        self.pool, self.comment = pool, comment
        self.ran: list[tuple[str, ...]] = []

    def __call__(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        self.ran.append(argv)
        out = ""
        if argv[:2] == ("zpool", "list"):
            out = f"{self.pool}\n" if self.pool else ""
        elif argv[:2] == ("zpool", "get"):
            out = self.comment + "\n"
        elif argv[:2] == ("zpool", "status"):
            out = (f"  pool: {self.pool}\nconfig:\n\n\t{self.pool}  ONLINE\n\t  /dev/vda1  ONLINE  0 0 0\n\n"
                   if self.pool else "")
        elif argv[:2] == ("zpool", "export"):
            self.pool = None
        elif argv[:2] == ("zpool", "create"):
            self.pool = argv[-2]
        elif argv[:4] == ("lsblk", "-dn", "-o", "TYPE"):
            out = "part\n" if argv[-1].endswith("1") else "disk\n"
        elif argv[:4] == ("lsblk", "-dn", "-o", "PKNAME"):
            out = "vda\n"
        return subprocess.CompletedProcess(argv, 0, out, "")


@pytest.fixture
def node(tmp_path, monkeypatch):
    nodelib.patch(monkeypatch, "RUN", tmp_path / "run")
    (tmp_path / "run").mkdir()
    nodelib.patch(monkeypatch, "resolve_disk", lambda name: Path("/dev/vda"))
    nodelib.patch(monkeypatch, "has_marker", lambda pool, marker: False)
    monkeypatch.setattr(Path, "is_block_device", lambda self: True)
    written: list[list[str]] = []

    def umount(where: Path) -> None:
        """What setup wrote into the dataset, in the order it unmounted them."""
        written.append(sorted(p.name for p in where.iterdir()))
        for p in where.iterdir():
            p.unlink()

    nodelib.patch(monkeypatch, "mount_zfs", lambda dataset, where, readonly=False: where.mkdir(parents=True))
    nodelib.patch(monkeypatch, "umount", umount)
    return written


def test_setup_redoes_an_interrupted_setup_and_says_so(tmp_path, node, monkeypatch):
    fake = FakeNode("zones")
    nodelib.patch(monkeypatch, "run", fake)
    said = []
    done = psetup.setup(pool_settings(tmp_path), psetup.Answers("single", ("vda",)), report=said.append)
    assert done.startswith("created pool 'zones' (single of /dev/vda)")
    assert said[0] == "setup was interrupted: discarding the unfinished pool 'zones' on /dev/vda to set it up again"
    commands = [" ".join(a[:2]) for a in fake.ran if a[0] in ("zpool", "wipefs")]
    assert commands.index("zpool export") < commands.index("wipefs -a") < commands.index("zpool create")
    create = next(a for a in fake.ran if a[:2] == ("zpool", "create"))
    assert f"comment={psetup.SETUP_INCOMPLETE}" in create
    # The comment goes last, after the marker, which comes after everything else.
    assert fake.ran[-1] == ("zpool", "set", "comment=", "zones")
    assert node[-1] == [".system_pool"] and ["setup.json"] in node[:-1]


def test_setup_never_discards_someone_elses_pool(tmp_path, node, monkeypatch):
    fake = FakeNode("zones", comment="-")
    nodelib.patch(monkeypatch, "run", fake)
    with pytest.raises(pstate.PoolError, match="has no .system_pool: it is not a system pool"):
        psetup.setup(pool_settings(tmp_path), psetup.Answers("single", ("vda",), force=True))
    assert not [a for a in fake.ran if a[:2] in (("zpool", "export"), ("zpool", "destroy"), ("zpool", "create"))]


def test_a_failed_setup_leaves_blank_disks(tmp_path, node, monkeypatch):
    fake = FakeNode(None)
    nodelib.patch(monkeypatch, "run", fake)

    def no_space(*args):
        raise pstate.PoolError("`cp -a` failed: No space left on device")

    nodelib.patch(monkeypatch, "_populate", no_space)
    with pytest.raises(pstate.PoolError, match="No space left"):
        psetup.setup(pool_settings(tmp_path), psetup.Answers("single", ("vda",)))
    after = fake.ran[[a[:2] for a in fake.ran].index(("zpool", "create")):]
    assert ("zpool", "export", "-f", "zones") in after and ("wipefs", "-a", "-q", "/dev/vda") in after


def test_the_boot_finishes_a_setup_cut_after_its_marker(monkeypatch):
    fake = FakeNode("zones")
    nodelib.patch(monkeypatch, "run", fake)
    notes = []
    pimport.finish_setup("zones", notes.append)
    assert fake.ran[-1] == ("zpool", "set", "comment=", "zones") and "is whole" in notes[0]
    fake = FakeNode("zones", comment="-")
    nodelib.patch(monkeypatch, "run", fake)
    pimport.finish_setup("zones", notes.append)
    assert not [a for a in fake.ran if a[:2] == ("zpool", "set")] and len(notes) == 1


def test_the_boot_reports_an_interrupted_setup_and_redoes_it_from_answers(tmp_path, monkeypatch):
    s = pool_settings(tmp_path)
    fake = FakeNode("zones")
    nodelib.patch(monkeypatch, "run", fake)
    assert pimport.unfinished_setup(s, ["zones"]) == "zones"
    assert pimport.unfinished_setup(s, ["backup"]) is None
    nodelib.patch(monkeypatch, "load_answers", lambda settings, args: None)
    notes: list[str] = []
    state: dict = {}
    assert pimport.set_up_at_boot(s, {}, "zones", state, notes.append) is None
    assert notes[0].startswith("setup was interrupted: pool 'zones' was created but setup never finished")
    assert "sets it up again" in notes[1] and state["setup_interrupted"]
    answers = (psetup.Answers("single", ("vda",)), "answers.json")
    nodelib.patch(monkeypatch, "load_answers", lambda settings, args: answers)
    nodelib.patch(monkeypatch, "setup", lambda settings, answers, report: "created pool 'zones'")
    assert pimport.set_up_at_boot(s, {}, "zones", state, notes.append) == "zones"
    assert "setup_interrupted" not in state and notes[-1] == "created pool 'zones'"


def test_the_instances_mount_even_when_a_leftover_cannot_be_removed(tmp_path, monkeypatch, capsys):
    partial, vm = f"zones/{OTHER}-partial", f"zones/{VM}"
    ran = []

    def fake_run(*argv, check=True):
        ran.append(argv)
        if argv[:2] == ("zfs", "list") and "origin" in argv[4]:
            return subprocess.CompletedProcess(argv, 0, f"zones\t-\ton\n{vm}\tzones/i@final\ton\n"
                                                        f"{partial}\tzones/i@final\ton\n", "")
        if argv[:2] == ("zfs", "list"):
            return subprocess.CompletedProcess(argv, 0, f"zones\ton\n{vm}\ton\n{partial}\ton\n", "")
        rc = 1 if argv[:2] == ("zfs", "destroy") else 0
        return subprocess.CompletedProcess(argv, rc, "", "cannot destroy: pool I/O is currently suspended\n")

    nodelib.patch(monkeypatch, "run", fake_run)
    [result] = prestore.run_steps([(pinstances.INSTANCES, lambda: pinstances.mount_instances(pool_settings(tmp_path)))])
    assert ("zfs", "mount", vm) in ran and ("zfs", "mount", partial) not in ran
    assert result.error == (f"{partial} (a `vmadm create` cut short (a power cut or crash) that never finished) "
                            f"not removed: cannot destroy: pool I/O is currently suspended")
    assert "removed" not in capsys.readouterr().out


def test_the_instances_mount_even_when_the_cleanup_itself_fails(tmp_path, monkeypatch):
    vm = f"zones/{VM}"
    ran = []

    def fake_run(*argv, check=True):
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 0, f"zones\ton\n{vm}\ton\n", "")

    def missing():
        raise FileNotFoundError(2, "No such file or directory", "/usr/lib/triton/instances.json")

    nodelib.patch(monkeypatch, "run", fake_run)
    monkeypatch.setattr(ti, "leftovers", lambda listing, pool: [ti.Leftover("zones/x-partial", "why", IMAGE)])
    monkeypatch.setattr(ts, "load_instances", lambda path=ts.INSTANCES_JSON: missing())
    [result] = prestore.run_steps([(pinstances.INSTANCES, lambda: pinstances.mount_instances(pool_settings(tmp_path)))])
    assert ("zfs", "mount", vm) in ran
    assert result.error == ("zones/x-partial removed, but not its image's manifest: "
                            "/usr/lib/triton/instances.json: No such file or directory")
