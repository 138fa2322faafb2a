#!/usr/bin/python3 -S
"""triton-pool: the node's system pool (`zones`), where everything that must
survive a reboot lives. Standard library only; it calls zpool, zfs and
systemd, and keeps no state of its own beyond /run/triton/pool.

  triton-pool status [--json]        set up or not, health, what boot did
  triton-pool setup [--force] [--yes] --layout single|mirror|raidz|raidz2 DISK...
  triton-pool setup --answers FILE   the same, from an answers file
  triton-pool factory-reset [--yes] [--cancel] [--reboot]

Run by the initrd, inside the verified root before switch-root:
  triton-pool boot       hostid, load ZFS, import, identify the system
                         pool (marker file), factory reset, unattended setup
  triton-pool restore    after the initrd mounted the datasets: machine-id,
                         ssh host keys, root's credentials, image-owned /var
The facts (pool name, datasets, marker) come from platform.yaml through
/usr/lib/triton/pool.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import triton_settings  # noqa: E402
from triton_network import bootif_mac, kernel_args  # noqa: E402
from triton_settings import RUNTIME, Dataset, PoolSettings  # noqa: E402

SETTINGS = triton_settings.POOL_JSON
RUN = RUNTIME.pool
STATE = RUNTIME.pool_state
# The initrd's mount units for the pool's datasets run only when this exists.
MOUNT_FLAG = RUNTIME.mount_flag
BOOT_FILES = RUNTIME.boot_files
ISSUE = Path("/run/issue.d/50-triton-pool.issue")
LAYOUTS = {"single": 1, "mirror": 2, "raidz": 3, "raidz2": 4}
FACTORY_RESET = "smartdc:factoryreset"  # as SmartOS and linux-live set it on <pool>/var
# The pool's comment from `zpool create` until setup's last step: given with
# `-o`, it is written in the pool's first transaction (user properties and
# -O properties come in later ones), so no pool setup made is ever without
# it. With no marker, it is an unfinished setup of this node's, which setup
# may discard and redo; without it, a pool is someone else's.
SETUP_INCOMPLETE = "triton: setup incomplete"
PROG = "triton-pool"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class PoolError(Exception):
    """Something the operator must fix; the message says what and how."""


def say(msg: str) -> None:
    print(f"{PROG}: {msg}", flush=True)


# -- settings -------------------------------------------------------------------

def load_settings() -> PoolSettings:
    try:
        return triton_settings.load_pool(SETTINGS)
    except triton_settings.SettingsError as e:
        raise PoolError(str(e)) from None


# -- pure helpers (unit-tested) ----------------------------------------------------

def hostid_from_uuid(system_uuid: str) -> int:
    """CRC32 (IEEE) of the SMBIOS system UUID as dmidecode prints it
    (upper case), as Triton's linux-live sethostid does: the same node keeps
    its hostid, so it imports its own pool and no other live host's."""
    return zlib.crc32(system_uuid.strip().upper().encode())


# UUIDs that firmware ships on every board of a kind instead of a real one:
# AMI's default (and the same bytes in the other byte order), and a count
# 00 01 02 ... 0f. A hostid made from one is shared by many nodes.
PLACEHOLDER_UUIDS = frozenset({
    "03000200-0400-0500-0006-000700080009",
    "00020003-0004-0005-0006-000700080009",
    "00010203-0405-0607-0809-0a0b0c0d0e0f",
})


def uuid_problem(text: str) -> Optional[str]:
    """Why the firmware's system UUID cannot tell this node from others
    (None: it can). One hex digit repeated (all zeros, all ones, 1111...)
    is what firmware reports when it has none."""
    u = text.strip().lower()
    if not u:
        return "the firmware reports no system UUID"
    if not re.fullmatch(UUID, u):
        return f"the firmware's system UUID {text.strip()!r} is not a UUID"
    if len(set(u.replace("-", ""))) == 1 or u in PLACEHOLDER_UUIDS:
        return f"the firmware's system UUID {u} is a placeholder that many machines share"
    return None


def reports_no_uuid(u: str) -> bool:
    """Firmware with no UUID at all: none, not one, all zeros or all ones."""
    digits = set(u.replace("-", ""))
    return not re.fullmatch(UUID, u) or digits <= {"0"} or digits <= {"f"}


def valid_system_uuid(text: str) -> Optional[str]:
    return None if uuid_problem(text) else text.strip().lower()


def choose_hostid(uuid_text: str, cmdline: str) -> tuple[int, str]:
    """The hostid and where it came from, for the console: the system UUID;
    else the boot NIC's MAC (BOOTIF=), the next most stable identity. A
    placeholder UUID with no BOOTIF= (booted from a DVD or USB stick) is
    still used, as before, so such a node keeps importing its pool; the
    console says that ZFS cannot tell it from another such node."""
    problem = uuid_problem(uuid_text)
    u = uuid_text.strip().lower()
    if problem is None:
        return hostid_from_uuid(u), f"SMBIOS system UUID {u}"
    mac = bootif_mac(cmdline)
    if mac:
        return zlib.crc32(mac.upper().encode()), f"boot NIC {mac} ({problem})"
    if not reports_no_uuid(u):
        return hostid_from_uuid(u), (f"SMBIOS system UUID {u}, although {problem}: the boot has no BOOTIF= "
                                     f"to use instead, so ZFS cannot tell this node's pools from theirs")
    raise PoolError(f"{problem}, and the boot has no BOOTIF=: cannot derive a stable hostid; "
                    f"pools are not imported")


def hostid_file_bytes(hostid: int) -> bytes:
    return hostid.to_bytes(4, "little")


def is_true(value: Optional[str]) -> bool:
    return value is not None and value.lower() in ("", "1", "true", "yes", "on")


@dataclasses.dataclass(frozen=True)
class Answers:
    layout: str
    disks: tuple[str, ...]
    force: bool = False


def parse_answers(data: Any, source: str) -> Answers:
    """The answers file: {"pool": {"layout": "mirror", "disks": ["vdb", "vdc"], "force": false}}."""
    if not isinstance(data, dict) or not isinstance(data.get("pool"), dict):
        raise PoolError(f"{source}: expected a JSON object with a \"pool\" object "
                        "({\"pool\": {\"layout\": \"mirror\", \"disks\": [\"vdb\", \"vdc\"]}})")
    pool = data["pool"]
    unknown = set(pool) - {"layout", "disks", "force"}
    if unknown:
        raise PoolError(f"{source}: pool: unknown keys {sorted(unknown)}; known: layout, disks, force")
    layout = pool.get("layout")
    disks = pool.get("disks")
    force = pool.get("force", False)
    if not isinstance(disks, list) or not disks or not all(isinstance(d, str) and d for d in disks):
        raise PoolError(f"{source}: pool.disks must be a non-empty list of disk names (e.g. [\"sdb\", \"sdc\"])")
    if not isinstance(force, bool):
        raise PoolError(f"{source}: pool.force must be true or false")
    check_layout(layout, disks, f"{source}: pool.layout")
    return Answers(layout, tuple(disks), force)


def check_layout(layout: Any, disks: Sequence[str], what: str = "layout") -> None:
    if layout not in LAYOUTS:
        raise PoolError(f"{what} {layout!r} is not one of {', '.join(LAYOUTS)}")
    need = LAYOUTS[layout]
    if layout == "single" and len(disks) != 1:
        raise PoolError(f"{what} single takes exactly one disk, got {len(disks)}: {' '.join(disks)}")
    if len(disks) < need:
        raise PoolError(f"{what} {layout} needs at least {need} disks, got {len(disks)}: {' '.join(disks)}")
    if len(set(disks)) != len(disks):
        raise PoolError(f"{what}: a disk is named twice: {' '.join(disks)}")


def vdev_args(layout: str, disks: Sequence[str]) -> list[str]:
    return list(disks) if layout == "single" else [layout, *disks]


def mount_order(datasets: Iterable[Dataset]) -> list[Dataset]:
    """Parents before children."""
    return sorted(datasets, key=lambda d: (d.mountpoint.count("/"), d.mountpoint))


def disk_refusal(disk: str, probe: dict[str, str], parts: Sequence[dict[str, str]]) -> Optional[str]:
    """Why setup must not touch `disk` without --force (None: it is blank).
    `probe` is `blkid -p -o export` of the disk, `parts` of its partitions."""
    for p in [probe, *parts]:
        if p.get("TYPE") == "zfs_member":
            label = p.get("LABEL") or "?"
            return f"{disk} holds ZFS pool '{label}'"
    if probe.get("PTTYPE"):
        n = len(parts)
        return f"{disk} has a {probe['PTTYPE']} partition table ({n} partition{'s' if n != 1 else ''})"
    if probe.get("TYPE"):
        return f"{disk} holds a {probe['TYPE']} filesystem"
    return None


def unfinished_create(probe: dict[str, str], parts: Sequence[dict[str, str]], label_txg: Optional[int]) -> bool:
    """The disk holds only what a `zpool create` cut short leaves, so no
    data: OpenZFS's own whole-disk partitions (1 and 9) and, on partition
    1, nothing or the labels of a pool whose first transaction never
    completed (txg 0, which `zpool import` ignores as "not part of a valid
    pool"). `probe`, `parts`: blkid of the disk and of its partitions;
    `label_txg`: the txg in partition 1's ZFS label (None: no label)."""
    numbered = {int(p["PART_ENTRY_NUMBER"]): p for p in parts if p.get("PART_ENTRY_NUMBER", "").isdigit()}
    types = {n: p.get("PART_ENTRY_TYPE", "").lower() for n, p in numbered.items()}
    if probe.get("PTTYPE") != "gpt" or len(parts) != 2 or types != ZFS_WHOLE_DISK_PARTS or numbered[9].get("TYPE"):
        return False
    if label_txg == 0:
        return numbered[1].get("TYPE") in (None, "zfs_member")
    return label_txg is None and not numbered[1].get("TYPE")


def parse_label_txg(zdb: str) -> Optional[int]:
    """The pool's txg in `zdb -l <device>`'s first label (None: none)."""
    m = re.search(r"^\s+txg: (\d+)$", zdb, re.M)
    return int(m.group(1)) if m else None


def redo_refusal(settings: PoolSettings, comment: str, held: Sequence[str], named: Sequence[str]) -> Optional[str]:
    """Why setup must not discard the imported pool that is named like the
    system pool but has no marker (None: it is an unfinished setup of this
    node's, on the disks named). `held`: the disks its devices are on."""
    if comment != SETUP_INCOMPLETE:
        return (f"a pool named '{settings.name}' is imported but has no {settings.marker}: "
                f"it is not a system pool; export or rename it first")
    others = [d for d in held if d not in named]
    if others:
        return (f"pool '{settings.name}' is an interrupted setup's, on {' '.join(held)}; {' '.join(others)} "
                f"{'is' if len(others) == 1 else 'are'} not among the disks named ({' '.join(named)}): "
                f"name the same disks to set it up again")
    return None


def interrupted_summary(settings: PoolSettings, datasets: Collection[str]) -> str:
    """What an interrupted setup left, for the console (`datasets`: the pool's)."""
    wanted = [settings.full(d.name) for d in mount_order(settings.datasets) if d.name]
    made = [n for n in wanted if n in datasets]
    missing = [n for n in wanted if n not in datasets]
    return (f"pool '{settings.name}' was created but setup never finished (no {settings.marker}; datasets made: "
            f"{', '.join(made) or 'none'}" + (f"; missing: {', '.join(missing)}" if missing else "") + ")")


def parse_blkid_export(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k] = v
    return out


def parse_import_listing(text: str) -> list[dict[str, str]]:
    """`zpool import` (no arguments): the pools seen but not imported, with
    their state and the reason ZFS gives."""
    pools: list[dict[str, str]] = []
    key = None
    for raw in text.splitlines():
        m = re.match(r"\s*(pool|id|state|status|action):\s?(.*)$", raw)
        if m:
            key = m.group(1)
            if key == "pool":
                pools.append({"pool": m.group(2).strip()})
            elif pools:
                pools[-1][key] = m.group(2).strip()
            continue
        if re.match(r"\s*(config|see|comment):", raw):
            key = None
            continue
        if key in ("status", "action") and pools and raw.strip():
            pools[-1][key] += " " + raw.strip()
    return pools


VDEV_SECTIONS = ("logs", "cache", "spares", "special", "dedup")
# Devices ZFS lists but that are not there to clear: the path may now be
# another disk's.
ABSENT_STATES = ("UNAVAIL", "REMOVED")
# OpenZFS's own layout of a disk given whole: GPT partition 1 (the vdev)
# and partition 9 (8 MiB, reserved), nothing else.
ZFS_WHOLE_DISK_PARTS = {1: "6a898cc3-1dd2-11b2-99a6-080020736631", 9: "6a945a3b-1dd2-11b2-99a6-080020736631"}


@dataclasses.dataclass(frozen=True)
class Vdev:
    path: str
    section: str  # "data", or the section it is listed under: logs, cache, spares, special, dedup
    state: str


def parse_zpool_status(text: str) -> dict[str, list[Vdev]]:
    """`zpool status -P -L`: each pool's devices (leaf vdevs, by path), in
    every section, a spare in use once."""
    pools: dict[str, list[Vdev]] = {}
    pool: Optional[str] = None
    section = "data"
    in_config = False
    for raw in text.splitlines():
        words = raw.split()
        m = re.match(r"\s*pool:\s*(\S+)", raw)
        if m:
            pool, in_config = m.group(1), False
            pools[pool] = []
        elif re.match(r"\s*config:", raw):
            in_config, section = True, "data"
        elif re.match(r"\s*errors:", raw):
            in_config = False
        elif not (in_config and pool and words):
            continue
        elif len(words) == 1 and words[0] in VDEV_SECTIONS:
            section = words[0]
        elif words[0].startswith("/"):
            if all(v.path != words[0] for v in pools[pool]):
                pools[pool].append(Vdev(words[0], section, words[1] if len(words) > 1 else ""))
    return pools


@dataclasses.dataclass(frozen=True)
class Partition:
    path: str
    number: int
    type: str  # GPT partition type GUID, lower case ("" if unknown)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a vdev's device sits: `disk` is the device itself for a disk,
    the partition's disk (with all its partitions) for a partition, "" if
    that is unknown."""
    disk: str
    partitions: tuple[Partition, ...] = ()


@dataclasses.dataclass(frozen=True)
class ResetPlan:
    disks: tuple[str, ...]       # cleared whole (labels, partition table)
    partitions: tuple[str, ...]  # cleared alone: the rest of their disk is not the pool's
    skipped: tuple[str, ...]     # the pool's devices left alone, and why


def zfs_whole_disk(where: Placement, dev: str) -> bool:
    """The partition is partition 1 of a disk that ZFS partitioned itself
    (given the whole disk): partitions 1 and 9 of ZFS's types, no other."""
    types = {p.number: p.type for p in where.partitions}
    first = [p.path for p in where.partitions if p.number == 1]
    return types == ZFS_WHOLE_DISK_PARTS and first == [dev]


def reset_plan(vdevs: Sequence[Vdev], placements: Mapping[str, Placement],
               elsewhere: Mapping[str, str]) -> ResetPlan:
    """What a factory reset clears: every device of the pool (data, log,
    cache, special, spare), each as the pool holds it. A disk ZFS was given
    whole is cleared whole; a partition is cleared alone, never the other
    partitions of its disk. `elsewhere`: devices of other imported pools
    (a shared spare), left alone."""
    disks: list[str] = []
    parts: list[str] = []
    skipped: list[str] = []
    for v in vdevs:
        where = placements.get(v.path)
        if v.state in ABSENT_STATES:
            skipped.append(f"{v.path} ({v.section}) is {v.state}")
        elif v.path in elsewhere:
            skipped.append(f"{v.path} ({v.section}) is also in pool '{elsewhere[v.path]}'")
        elif where is None:
            skipped.append(f"{v.path} ({v.section}) is not a block device")
        elif where.disk == v.path or zfs_whole_disk(where, v.path):
            disks += [] if where.disk in disks else [where.disk]
        elif v.path not in parts:
            parts.append(v.path)
    return ResetPlan(tuple(disks), tuple(parts), tuple(skipped))


def reset_summary(plan: ResetPlan) -> str:
    cleared = [*(f"disk {d}" for d in plan.disks), *(f"partition {p}" for p in plan.partitions)]
    return "cleared " + ", ".join(cleared) if cleared else "found none of its devices to clear"


def issue_text(state: dict[str, Any]) -> str:
    """What the console shows above its login prompt."""
    s = state.get("state")
    pool = state.get("pool", "zones")
    if s == "imported":
        health = state.get("health", "?")
        if health == "ONLINE":
            return f"Pool {pool}: imported, {health}.\n" + restore_issue(state)
        return f"Pool {pool}: imported but {health}: see `zpool status {pool}`.\n" + restore_issue(state)
    if s == "noimport":
        return "Pools: not imported (noimport=true); `triton-pool status`.\n"
    if state.get("setup_interrupted"):
        return (f"This node is NOT SET UP: setting up pool '{pool}' was interrupted. `triton-pool status`; "
                f"`triton-pool setup` sets it up again.\n")
    return (f"This node is NOT SET UP: no system pool '{pool}'. "
            f"`triton-pool status`; `triton-pool setup` creates it.\n")


def restore_issue(state: dict[str, Any]) -> str:
    """What the console says of a restore that did not all work."""
    out = ""
    if state.get("unmounted"):
        out += f"NOT mounted: {', '.join(state['unmounted'])}: this boot keeps nothing there.\n"
    failed = [r.get("step", "?") for r in state.get("restore", []) if not r.get("ok")]
    if failed:
        out += f"Restore from the pool FAILED: {', '.join(failed)}: see `triton-pool status`.\n"
    return out


# -- running things ----------------------------------------------------------------

def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, text=True, capture_output=True)
    if check and p.returncode != 0:
        detail = (p.stderr or p.stdout).strip()
        raise PoolError(f"`{' '.join(argv)}` failed: {detail}")
    return p


def lines(*argv: str) -> list[str]:
    return [line for line in run(*argv).stdout.splitlines() if line.strip()]


def imported_pools() -> list[str]:
    return lines("zpool", "list", "-H", "-o", "name")


def pool_health(pool: str) -> str:
    return run("zpool", "list", "-H", "-o", "health", pool).stdout.strip()


def mount_zfs(dataset: str, where: Path, readonly: bool = False) -> None:
    where.mkdir(parents=True, exist_ok=True)
    opts = "zfsutil" + (",ro" if readonly else "")
    run("mount", "-t", "zfs", "-o", opts, dataset, str(where))


def umount(where: Path) -> None:
    if run("umount", str(where), check=False).returncode != 0:
        run("umount", "-l", str(where), check=False)


def is_mountpoint(path: Path) -> bool:
    return run("mountpoint", "-q", str(path), check=False).returncode == 0


def has_marker(pool: str, marker: str) -> bool:
    r = run("zfs", "get", "-H", "-o", "value", "mounted,mountpoint", pool, check=False)
    values = r.stdout.split()
    if r.returncode == 0 and len(values) == 2 and values[0] == "yes":
        return (Path(values[1]) / marker).exists()
    RUN.mkdir(parents=True, exist_ok=True)
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=RUN))
    try:
        mount_zfs(pool, probe, readonly=True)
    except PoolError:
        probe.rmdir()
        return False
    try:
        return (probe / marker).exists()
    finally:
        umount(probe)
        probe.rmdir()


def system_pools(settings: PoolSettings) -> list[str]:
    return [p for p in imported_pools() if has_marker(p, settings.marker)]


# -- state --------------------------------------------------------------------------

def write_state(state: dict[str, Any]) -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.rename(STATE)
    ISSUE.parent.mkdir(parents=True, exist_ok=True)
    ISSUE.write_text(issue_text(state))


def read_state() -> dict[str, Any]:
    try:
        return json.loads(STATE.read_text())
    except (OSError, ValueError):
        return {}


# -- hostid and modules ---------------------------------------------------------------

def ensure_hostid() -> tuple[int, str]:
    hostid_file = Path("/etc/hostid")
    if hostid_file.exists() and len(hostid_file.read_bytes()) == 4:
        return int.from_bytes(hostid_file.read_bytes(), "little"), "/etc/hostid"
    hostid, source = choose_hostid(_read(Path("/sys/class/dmi/id/product_uuid")), _read(Path("/proc/cmdline")))
    hostid_file.write_bytes(hostid_file_bytes(hostid))
    return hostid, source


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def load_zfs(hostid: int) -> None:
    run("modprobe", "spl", f"spl_hostid=0x{hostid:08x}")
    run("modprobe", "zfs")


# -- disks ------------------------------------------------------------------------------

def resolve_disk(name: str) -> Path:
    path = Path(name if name.startswith("/") else f"/dev/{name}")
    if not path.exists():
        raise PoolError(f"disk {name}: no such device ({path}); `lsblk -d` lists the disks")
    real = path.resolve()
    info = run("lsblk", "-dn", "-o", "TYPE", str(real), check=False).stdout.strip()
    if info != "disk":
        raise PoolError(f"disk {name}: {real} is a {info or 'not a block device'}, not a whole disk")
    return real


def partitions(disk: Path) -> list[Path]:
    out = run("lsblk", "-ln", "-o", "PATH,TYPE", str(disk), check=False).stdout
    return [Path(p) for p, t in (line.split() for line in out.splitlines() if line.strip()) if t == "part"]


def blkid(dev: Path) -> dict[str, str]:
    return parse_blkid_export(run("blkid", "-p", "-o", "export", str(dev), check=False).stdout)


def disk_in_use(disk: Path) -> Optional[str]:
    """Reasons even --force does not override: mounted, swap, an imported pool."""
    out = run("lsblk", "-ln", "-o", "PATH,MOUNTPOINTS", str(disk), check=False).stdout
    for line in out.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[1].strip():
            return f"{parts[0]} is mounted on {parts[1].strip()}"
    devs = {str(disk), *map(str, partitions(disk))}
    for pool, vdevs in imported_vdevs().items():
        if any(v.path in devs for v in vdevs):
            return f"{disk} is in imported pool '{pool}'"
    return None


def imported_vdevs() -> dict[str, list[Vdev]]:
    return parse_zpool_status(run("zpool", "status", "-P", "-L", check=False).stdout)


def clear_device(dev: Path) -> None:
    """A device's ZFS labels and signatures; nothing else on its disk."""
    if blkid(dev).get("TYPE") == "zfs_member":
        run("zpool", "labelclear", "-f", str(dev))
    run("wipefs", "-a", "-q", str(dev))


def wipe(disk: Path) -> None:
    """ZFS labels, partition table and signatures: the disk is blank after."""
    for dev in [*partitions(disk), disk]:
        clear_device(dev)


def placement(dev: str) -> Optional[Placement]:
    """Where a vdev's device sits: a disk itself, or a partition with all
    the partitions of its disk (blkid reads their numbers and GPT types
    from the partition table). None: not a block device."""
    if not Path(dev).is_block_device():
        return None
    if run("lsblk", "-dn", "-o", "TYPE", dev, check=False).stdout.strip() != "part":
        return Placement(dev)
    parent = run("lsblk", "-dn", "-o", "PKNAME", dev, check=False).stdout.strip()
    if not parent:
        return Placement("")
    disk = Path(f"/dev/{parent}")
    return Placement(str(disk), tuple(partition_entry(p) for p in partitions(disk)))


def partition_entry(part: Path) -> Partition:
    probe = blkid(part)
    number = probe.get("PART_ENTRY_NUMBER", "")
    return Partition(str(part), int(number) if number.isdigit() else 0, probe.get("PART_ENTRY_TYPE", "").lower())


# -- setup ---------------------------------------------------------------------------

def setup(settings: PoolSettings, answers: Answers, *, booting: bool, report: Callable[[str], None] = say) -> str:
    """Create the system pool and its datasets. Idempotent: a node that has
    its pool is left alone. Refuses disks that hold anything unless forced,
    and never creates a pool while one of that name is on disk but not
    imported. Leaves nothing half-created; what a power cut leaves (an
    unfinished pool of this node's on the same disks, or what a cut-short
    `zpool create` left) it discards and redoes, saying so with `report`."""
    for pool in system_pools(settings):
        return f"already set up: pool '{pool}' is imported and is this node's system pool; nothing to do"
    disks = [resolve_disk(d) for d in answers.disks]
    check_layout(answers.layout, [str(d) for d in disks])
    if settings.name in imported_pools():
        redo_interrupted(settings, disks, report)
    refusals = []
    for disk in disks:
        busy = disk_in_use(disk)
        if busy:
            raise PoolError(f"{busy}: not using it")
        why = disk_refusal(str(disk), blkid(disk), [blkid(p) for p in partitions(disk)])
        if why and create_cut_short(disk):
            report(f"setup was interrupted: {disk} holds only what a cut-short `zpool create` leaves "
                   f"(no pool, no data): clearing it")
        elif why and not answers.force:
            refusals.append(why)
    if refusals:
        raise PoolError("; ".join(refusals) + ". Not destroying it: name only blank disks, "
                        "or set force (--force, or \"force\": true in the answers file) to wipe it")
    # Even forced: a pool of this name that did not import (another host's,
    # or missing disks) is never replaced by a new one.
    for seen in parse_import_listing(run("zpool", "import", check=False).stdout):
        if seen["pool"] == settings.name:
            raise PoolError(f"a pool named '{settings.name}' is on this node's disks but was not imported "
                            f"({seen.get('state', '?')}: {seen.get('status', 'see `zpool import`')}); "
                            f"not creating another one. Import it by hand (`zpool import {settings.name}`), "
                            f"or clear its disks (`zpool labelclear -f <disk>`) first")
    for disk in disks:
        wipe(disk)
    run(*create_argv(settings, answers.layout, disks))
    report(f"setup: pool '{settings.name}' created; making its datasets")
    try:
        _populate(settings, answers, disks)
        # The last step: from here on the pool is set up.
        run("zpool", "set", "comment=", settings.name)
    except BaseException:
        discard_unfinished(settings.name, disks, quiet=True)
        raise
    done = (f"created pool '{settings.name}' ({answers.layout} of {' '.join(map(str, disks))}) "
            f"with {', '.join(settings.full(d.name) for d in settings.datasets if d.name)}")
    return done if booting else done + "; reboot to use it (the node mounts its datasets at boot)"


def create_argv(settings: PoolSettings, layout: str, disks: Sequence[Path]) -> list[str]:
    argv = ["zpool", "create", "-f", "-o", "cachefile=none", "-o", f"comment={SETUP_INCOMPLETE}"]
    for k, v in settings.pool_properties.items():
        argv += ["-o", f"{k}={v}"]
    argv += ["-O", f"mountpoint={settings.root.mountpoint}", "-O", "canmount=noauto"]
    for k, v in settings.fs_properties.items():
        argv += ["-O", f"{k}={v}"]
    return argv + [settings.name, *vdev_args(layout, [str(d) for d in disks])]


def redo_interrupted(settings: PoolSettings, disks: Sequence[Path], report: Callable[[str], None]) -> None:
    """The imported pool named like the system pool, without its marker: if
    it is this node's unfinished setup on these disks, discard it; else refuse."""
    held = pool_disks(settings.name)
    why = redo_refusal(settings, pool_comment(settings.name), held, [str(d) for d in disks])
    if why:
        raise PoolError(why)
    report(f"setup was interrupted: discarding the unfinished pool '{settings.name}' on {' '.join(held)} "
           f"to set it up again")
    discard_unfinished(settings.name, [Path(d) for d in held])


def pool_disks(pool: str) -> list[str]:
    """The disks (or devices) an imported pool's present devices are on."""
    out: list[str] = []
    for v in imported_vdevs().get(pool, []):
        where = placement(v.path) if v.state not in ABSENT_STATES else None
        disk = where.disk if where and where.disk else v.path
        out += [] if disk in out or v.state in ABSENT_STATES else [disk]
    return out


def discard_unfinished(pool: str, disks: Sequence[Path], quiet: bool = False) -> None:
    """An unfinished pool: exported, then its disks cleared. A power cut
    in between leaves it importable and still marked unfinished, or disks
    that `create_cut_short` recognises: setup can always run again."""
    try:
        run("zpool", "export", "-f", pool)
        for disk in disks:
            wipe(disk)
    except PoolError:
        if not quiet:
            raise


def create_cut_short(disk: Path) -> bool:
    """See unfinished_create."""
    parts = partitions(disk)
    probes = [blkid(p) for p in parts]
    first = [p for p, b in zip(parts, probes) if b.get("PART_ENTRY_NUMBER") == "1"]
    zdb = run("zdb", "-l", str(first[0]), check=False).stdout if first else ""
    return unfinished_create(blkid(disk), probes, parse_label_txg(zdb))


def _populate(settings: PoolSettings, answers: Answers, disks: Sequence[Path]) -> None:
    """The datasets, /var seeded, setup.json, and last the marker that makes
    the pool this node's system pool: a pool with the marker has the rest."""
    # Every dataset is canmount=noauto: the initrd mounts them at boot, and
    # creating them on a running node must not hide its live /var.
    for d in mount_order(settings.datasets):
        if d.name:
            run("zfs", "create", "-o", f"mountpoint={d.mountpoint}", "-o", "canmount=noauto",
                settings.full(d.name))
    work = Path(tempfile.mkdtemp(prefix="setup-", dir=RUN))
    record = json.dumps({
        "layout": answers.layout, "disks": [str(x) for x in disks],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": _os_release().get("TRITON_RELEASE", "?"),
    }, indent=2) + "\n"
    try:
        for d in mount_order(settings.datasets):
            if d.seed:
                with _mounted(settings, d, work) as where:
                    # In the initrd this is the image's pristine copy; on a
                    # running node, its live one (as joysetup did).
                    run("cp", "-a", f"{d.mountpoint}/.", f"{where}/")
            if d.name == settings.config_dataset:
                with _mounted(settings, d, work) as where:
                    (where / "setup.json").write_text(record)
        with _mounted(settings, settings.root, work) as where:
            (where / settings.marker).write_text("")
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _mounted(settings: PoolSettings, d: Dataset, work: Path) -> Iterator[Path]:
    where = work / (d.name or "root")
    mount_zfs(settings.full(d.name), where)
    try:
        yield where
    finally:
        umount(where)
        where.rmdir()


def _os_release() -> dict[str, str]:
    out = {}
    for line in _read(Path("/usr/lib/os-release")).splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k] = v.strip('"')
    return out


def load_answers(settings: PoolSettings, args: dict[str, str]) -> Optional[tuple[Answers, str]]:
    url = args.get("triton.answers")
    if url:
        # Only here: importing it costs every boot's pool import a quarter
        # of a second (more under emulation), for a rarely given argument.
        import urllib.request
        for attempt in range(5):
            try:
                with urllib.request.urlopen(url, timeout=20) as r:
                    return parse_answers(json.loads(r.read()), url), url
            except (OSError, ValueError) as e:
                if isinstance(e, ValueError) and not isinstance(e, UnicodeError):
                    raise PoolError(f"{url}: not valid JSON: {e}")
                say(f"cannot fetch answers {url} (attempt {attempt + 1}): {e}")
                time.sleep(2 ** attempt)
        raise PoolError(f"cannot fetch the answers file {url}: check triton.answers=")
    path = BOOT_FILES / settings.answers_file
    if path.is_file():
        try:
            return parse_answers(json.loads(path.read_text()), str(path)), str(path)
        except ValueError as e:
            raise PoolError(f"{path}: not valid JSON: {e}")
    return None


# -- boot (in the initrd, inside the verified root) ---------------------------------------

def boot(settings: PoolSettings) -> int:
    RUN.mkdir(parents=True, exist_ok=True)
    MOUNT_FLAG.unlink(missing_ok=True)
    args = kernel_args(_read(Path("/proc/cmdline")))
    state: dict[str, Any] = {"pool": settings.name, "state": "not-setup", "messages": []}

    def note(msg: str) -> None:
        say(msg)
        state["messages"].append(msg)

    try:
        hostid, source = ensure_hostid()
        state["hostid"] = f"{hostid:08x}"
        note(f"hostid {hostid:08x} from the {source}")
        load_zfs(hostid)
    except PoolError as e:
        note(f"FAILED: {e}")
        state["state"] = "error"
        write_state(state)
        return 0
    if is_true(args.get("noimport")):
        note("noimport=true: no pool imported (import by hand: zpool import -N <pool>)")
        state["state"] = "noimport"
        write_state(state)
        return 0
    t0 = time.monotonic()
    p = run("zpool", "import", "-a", "-N", "-o", "cachefile=none", check=False)
    for line in (p.stderr + p.stdout).splitlines():
        if line.strip() and "no pools available" not in line:
            note(f"zpool import: {line.strip()}")
    for seen in parse_import_listing(run("zpool", "import", check=False).stdout):
        note(f"pool '{seen['pool']}' not imported: {seen.get('state', '?')}: "
             f"{seen.get('status', '')} {seen.get('action', '')}".rstrip())
    found = system_pools(settings)
    state["pools"] = imported_pools()
    if len(found) > 1:
        note(f"FAILED: several pools carry {settings.marker}: {', '.join(found)}; "
             f"mounting none of them. Export all but this node's own and reboot")
        state["state"] = "error"
        write_state(state)
        return 0
    pool = found[0] if found else None
    unfinished = unfinished_setup(settings, [p for p in state["pools"] if p not in found])
    others = [p for p in state["pools"] if p not in found and p != unfinished]
    if others:
        # Imported without mounting (-N), and nothing mounts them later
        # (zfs-mount.service is masked): a pool on a USB stick or a moved
        # disk cannot put its datasets over the node's paths.
        note(f"pool(s) {', '.join(others)} left alone: imported but not mounted (not this node's system pool; "
             f"mount a dataset by hand with `zfs mount <dataset>` if it is yours)")
        state["unmounted_pools"] = others
    if pool and pool != settings.name:
        note(f"FAILED: the system pool is named '{pool}', but this platform mounts '{settings.name}'; "
             f"not mounting it")
        state["state"] = "error"
        write_state(state)
        return 0
    if pool:
        finish_setup(pool, note)
    if pool and factory_reset_requested(settings, pool):
        note(f"factory reset requested ({FACTORY_RESET}=yes on {settings.full('var')}): destroying pool '{pool}'")
        if not destroy_and_clear(pool, note):
            state["state"] = "error"
            write_state(state)
            return 0
        pool = None
    if not pool:
        pool = set_up_at_boot(settings, args, unfinished, state, note)
    if not pool:
        note(f"node is NOT SET UP: no system pool (a pool with {settings.marker}) was found")
        write_state(state)
        return 0
    ensure_datasets(settings, note)
    state.update(state="imported", pool=pool, health=pool_health(pool),
                 import_seconds=round(time.monotonic() - t0, 2))
    if state["health"] != "ONLINE":
        note(f"pool '{pool}' is {state['health']}:")
        for line in run("zpool", "status", "-x", pool, check=False).stdout.splitlines():
            if line.strip():
                note(f"  {line.strip()}")
    else:
        note(f"pool '{pool}' imported, ONLINE; mounting its datasets")
    MOUNT_FLAG.write_text(pool + "\n")
    write_state(state)
    return 0


def set_up_at_boot(settings: PoolSettings, args: dict[str, str], unfinished: Optional[str], state: dict[str, Any],
                   note: Callable[[str], None]) -> Optional[str]:
    """No system pool: say what an interrupted setup left, and set up from
    an answers file if one was delivered. The pool made, if any."""
    if unfinished:
        listing = run("zfs", "list", "-H", "-o", "name", "-r", unfinished, check=False).stdout
        state["setup_interrupted"] = interrupted_summary(settings, listing.split())
        note(f"setup was interrupted: {state['setup_interrupted']}")
    try:
        answers = load_answers(settings, args)
        if answers:
            note(f"setting up from {answers[1]}: {answers[0].layout} of {' '.join(answers[0].disks)}")
            note(setup(settings, answers[0], booting=True, report=note))
            state.pop("setup_interrupted", None)
            return settings.name
        if unfinished:
            note("`triton-pool setup` (or an answers file at the next boot) sets it up again, "
                 "discarding the unfinished pool first")
    except PoolError as e:
        note(f"setup FAILED: {e}")
    return None


def pool_comment(pool: str) -> str:
    return run("zpool", "get", "-H", "-o", "value", "comment", pool, check=False).stdout.strip()


def unfinished_setup(settings: PoolSettings, unmarked: Sequence[str]) -> Optional[str]:
    """The imported pool without the marker that is this node's setup cut short, if any."""
    return settings.name if settings.name in unmarked and pool_comment(settings.name) == SETUP_INCOMPLETE else None


def finish_setup(pool: str, note: Callable[[str], None]) -> None:
    """Setup's last step, if a power cut came between it and the marker
    (which is written once everything else is): the pool is whole."""
    if pool_comment(pool) == SETUP_INCOMPLETE:
        run("zpool", "set", "comment=", pool)
        note(f"setup was interrupted after its marker was written: pool '{pool}' is whole; finished its last step")


def destroy_and_clear(pool: str, note: Callable[[str], None]) -> bool:
    """Factory reset: destroy the pool and clear the devices it held, and
    only those, so the answers file can set the node up anew."""
    pools = imported_vdevs()
    ours = pools.get(pool, [])
    elsewhere = {v.path: name for name, vdevs in pools.items() if name != pool for v in vdevs}
    found = {v.path: placement(v.path) for v in ours}
    plan = reset_plan(ours, {k: v for k, v in found.items() if v is not None}, elsewhere)
    r = run("zpool", "destroy", "-f", pool, check=False)
    if r.returncode != 0:
        note(f"FAILED: factory reset: could not destroy '{pool}': {r.stderr.strip()}; not mounting it")
        return False
    for why in plan.skipped:
        note(f"factory reset: not clearing {why}")
    clears = [(d, wipe) for d in plan.disks] + [(p, clear_device) for p in plan.partitions]
    failed = set()
    for dev, clear in clears:
        try:
            clear(Path(dev))
        except PoolError as e:
            note(f"factory reset: could not clear {dev}: {e}")
            failed.add(dev)
    done = dataclasses.replace(plan, disks=tuple(d for d in plan.disks if d not in failed),
                               partitions=tuple(p for p in plan.partitions if p not in failed))
    note(f"factory reset: pool '{pool}' destroyed; {reset_summary(done)}")
    return True


def factory_reset_requested(settings: PoolSettings, pool: str) -> bool:
    r = run("zfs", "get", "-H", "-o", "value", FACTORY_RESET, f"{pool}/var", check=False)
    return r.returncode == 0 and r.stdout.strip() == "yes"


def ensure_datasets(settings: PoolSettings, note: Any) -> None:
    """A pool set up by an older platform may lack a dataset this one mounts:
    create it (empty, never touching what is there)."""
    have = set(lines("zfs", "list", "-H", "-o", "name", "-r", settings.name))
    for d in mount_order(settings.datasets):
        name = settings.full(d.name)
        if name not in have:
            run("zfs", "create", "-o", f"mountpoint={d.mountpoint}", "-o", "canmount=noauto", name)
            note(f"created missing dataset {name} ({d.mountpoint})")


# -- restore (in the initrd, after the datasets are mounted) --------------------------------

# The steps of `restore`, as the console and `triton-pool status` name them.
MACHINE_ID = "machine-id"
SSH_HOST_KEYS = "ssh host keys"
ROOT_PASSWORD = "root password"
ROOT_KEYS = "root ssh keys"
KEEP_BOOT_FILES = "boot files"
INSTANCES = "instance datasets"

ETC_MACHINE_ID = Path("/etc/machine-id")
ETC_SSH = Path("/etc/ssh")
SHADOW = Path("/etc/shadow")
ROOT_AUTHORIZED_KEYS = Path("/root/.ssh/authorized_keys")
BOOT_FILE_NAMES = ("node.config", "triton-networking.json")
SSH_KEY_TYPES = ("rsa", "ecdsa", "ed25519")

Step = tuple[str, Callable[[], Optional[str]]]


@dataclasses.dataclass(frozen=True)
class StepResult:
    step: str
    error: Optional[str] = None  # why it failed, one line
    note: Optional[str] = None   # what it did that is worth saying


def describe(e: Exception) -> str:
    """An exception as one line naming the file and the error."""
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    elif isinstance(e, (PoolError, triton_settings.SettingsError)):
        text = str(e)
    else:
        text = f"{type(e).__name__}: {e}"
    return " ".join(text.split())


def run_steps(steps: Sequence[Step]) -> list[StepResult]:
    """Run every step whatever the others did: one that fails (a full pool,
    a damaged saved file, a missing tool) is recorded, never raised."""
    results = []
    for name, step in steps:
        try:
            results.append(StepResult(name, note=step()))
        except Exception as e:  # each step stands alone
            results.append(StepResult(name, error=describe(e)))
    return results


def failure_line(r: StepResult) -> str:
    return f"restore: {r.step} FAILED: {r.error}"


def restore_report(results: Sequence[StepResult], cfg: Path) -> list[str]:
    """The console's lines: each failure on one line, then what was done."""
    out = [failure_line(r) for r in results if r.error]
    done = [r.step for r in results if not r.error and r.step != INSTANCES]
    if done:
        out.append(f"restored {', '.join(done)} from {cfg}")
    return out + [r.note for r in results if r.note]


def record_restore(state: dict[str, Any], results: Sequence[StepResult],
                   unmounted: Sequence[str]) -> dict[str, Any]:
    """The boot's state with what restore did, for `triton-pool status`
    and for save-root (which keeps a saved copy that was not restored)."""
    out = dict(state)
    out["restore"] = [{"step": r.step, "ok": not r.error, **({"error": r.error} if r.error else {})}
                      for r in results]
    messages = [*state.get("messages", []), *(failure_line(r) for r in results if r.error)]
    if unmounted:
        out["unmounted"] = list(unmounted)
        messages.append(f"not mounted: {', '.join(unmounted)}")
    out["messages"] = messages
    return out


def restore_failures(state: dict[str, Any]) -> set[str]:
    return {r.get("step", "?") for r in state.get("restore", []) if not r.get("ok")}


def restore(settings: PoolSettings) -> int:
    """Each step runs whatever the others did, and the instances always
    mount; a failure is a line on the console, in `triton-pool status`,
    and the exit status."""
    if not MOUNT_FLAG.exists():
        return 0
    cfg = settings.config_dir
    unmounted = [d.mountpoint for d in settings.datasets if not is_mountpoint(Path(d.mountpoint))]
    if unmounted:
        say(f"FAILED: datasets not mounted on {', '.join(unmounted)}: this boot keeps nothing there")
    identity = run_steps(identity_steps(cfg)) if str(cfg) not in unmounted else []
    for line in restore_report(identity, cfg):
        say(line)
    instances = run_steps([(INSTANCES, lambda: mount_instances(settings))])
    for line in restore_report(instances, cfg):
        say(line)
    results = identity + instances
    write_state(record_restore(read_state(), results, unmounted))
    return 1 if unmounted or any(r.error for r in results) else 0


def identity_steps(cfg: Path) -> list[Step]:
    return [
        (MACHINE_ID, lambda: restore_machine_id(cfg)),
        (SSH_HOST_KEYS, lambda: restore_ssh_host_keys(cfg)),
        (ROOT_PASSWORD, lambda: restore_root_password(cfg)),
        (ROOT_KEYS, lambda: restore_root_keys(cfg)),
        (KEEP_BOOT_FILES, lambda: keep_boot_files(cfg)),
    ]


def instance_datasets(listing: str, settings: PoolSettings) -> list[str]:
    """From `zfs list -H -o name,canmount -d 1 <pool>`: the pool's children
    that vmadm made (named by UUID, canmount=on), to be mounted at boot."""
    out = []
    for line in listing.splitlines():
        fields = line.split("\t")
        if len(fields) != 2:
            continue
        name, canmount = fields
        parent, _, child = name.rpartition("/")
        if parent == settings.name and canmount == "on" and re.fullmatch(UUID, child):
            out.append(name)
    return out


def mount_instances(settings: PoolSettings) -> Optional[str]:
    """Mount the instances' datasets, so the root's systemd finds their
    config (triton-instance-generator) from its first moment. One that
    does not mount leaves the others mounted."""
    try:
        unremoved = remove_unfinished(settings)
    except Exception as e:  # the instances mount whatever this does
        unremoved = [f"removing what interrupted creates left: {describe(e)}"]
    r = run("zfs", "list", "-H", "-o", "name,canmount", "-d", "1", settings.name, check=False)
    if r.returncode != 0:
        raise PoolError(f"cannot list the datasets of {settings.name}: {r.stderr.strip()}")
    names = instance_datasets(r.stdout, settings)
    failed = []
    for name in names:
        m = run("zfs", "mount", name, check=False)
        if m.returncode != 0 and "already mounted" not in m.stderr:
            failed.append(f"{name}: {m.stderr.strip()}")
    errors = [f"{len(failed)} of {len(names)} did not mount: {'; '.join(failed)}"] if failed else []
    if failed or unremoved:
        raise PoolError("; ".join(errors + unremoved))
    return f"mounted {len(names)} instance dataset(s)" if names else None


def remove_unfinished(settings: PoolSettings) -> list[str]:
    """Destroy what an interrupted `vmadm create` or `imgadm import` left
    (triton_instance.leftovers), before anything mounts or starts it, with a
    console line naming each. Here, in the initrd, no vmadm or imgadm can be
    at work on the pool. What could not be destroyed, and why."""
    import triton_instance as ti  # only here: the pool's import needs none of it
    r = run(*ti.LEFTOVERS_LISTING, settings.name, check=False)
    failed = []
    for left in ti.leftovers(r.stdout, settings.name):
        d = run("zfs", "destroy", "-r", left.dataset, check=False)
        if d.returncode != 0:
            failed.append(f"{left.dataset} ({left.why}) not removed: {d.stderr.strip()}")
            continue
        ti.remove_mountpoint(Path("/", left.dataset))
        say(f"removed {left.dataset}: {left.why}")
        try:
            if left.image:
                triton_settings.load_instances().manifest(left.image).unlink(missing_ok=True)
        except (OSError, ValueError, TypeError) as e:
            failed.append(f"{left.dataset} removed, but not its image's manifest: {describe(e)}")
    return failed


def read_bytes_if(path: Path) -> Optional[bytes]:
    """A file's bytes; None when there is none."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def read_saved(path: Path) -> Optional[str]:
    """A file kept on the pool (None: none). Bytes that are not UTF-8 read
    as U+FFFD, so a damaged file reads as damaged, not as an exception."""
    data = read_bytes_if(path)
    return None if data is None else data.decode(errors="replace")


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """All or nothing: a full pool or a crash leaves the previous copy whole."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from e  # named as the file, not its temporary
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def saved_machine_id(text: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """The saved machine-id, or None and what was wrong with the saved file
    (None, None: nothing saved yet, the node's first boot on this pool)."""
    if text is None:
        return None, None
    value = text.strip()
    if re.fullmatch(r"[0-9a-f]{32}", value):
        return value, None
    return None, f"damaged ({value[:40]!r} is not a machine-id)"


def restore_machine_id(cfg: Path) -> None:
    saved = cfg / "machine-id"
    value, damage = saved_machine_id(read_saved(saved))
    new = value is None
    value = value or os.urandom(16).hex()
    ETC_MACHINE_ID.write_text(value + "\n")
    if new:
        write_atomic(saved, (value + "\n").encode(), 0o644)
    if damage:
        raise PoolError(f"{saved} was {damage}: this node has a new machine-id, {value}")


def ssh_key_plan(saved: Collection[str]) -> dict[str, str]:
    """For each host key type, from the file names saved on the pool:
    "copy" both halves; "derive-public" when the .pub is lost (ssh-keygen -y
    makes it again, so the node keeps its key); "generate" a key when there
    is no private one (the first boot on this pool)."""
    plan = {}
    for t in SSH_KEY_TYPES:
        key = f"ssh_host_{t}_key"
        plan[t] = "generate" if key not in saved else "derive-public" if f"{key}.pub" not in saved else "copy"
    return plan


def restore_ssh_host_keys(cfg: Path) -> Optional[str]:
    """Each key type on its own: one that cannot be restored leaves sshd the others."""
    keys = cfg / "ssh"
    keys.mkdir(mode=0o700, exist_ok=True)
    plan = ssh_key_plan({p.name for p in keys.iterdir()})
    errors = []
    for t, action in plan.items():
        try:
            install_host_key(keys, t, action)
        except (OSError, PoolError) as e:
            errors.append(f"{t}: {describe(e)}")
    if errors:
        raise PoolError("; ".join(errors))
    derived = [t for t, action in plan.items() if action == "derive-public"]
    return f"ssh host keys: made the lost .pub of {', '.join(derived)} again from the private key" if derived else None


def install_host_key(keys: Path, key_type: str, action: str) -> None:
    key = keys / f"ssh_host_{key_type}_key"
    pub = keys / f"{key.name}.pub"
    if action == "generate":
        pub.unlink(missing_ok=True)
        run("ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", f"root@{os.uname().nodename}", "-f", str(key))
    elif action == "derive-public":
        try:
            public = run("ssh-keygen", "-y", "-P", "", "-f", str(key)).stdout
        except PoolError as e:
            raise PoolError(f"{e}; if {key} is damaged, remove it: the next boot makes a new key") from None
        write_atomic(pub, public.encode(), 0o644)
    for src, mode in ((key, 0o600), (pub, 0o644)):
        write_atomic(ETC_SSH / src.name, src.read_bytes(), mode)


def saved_root_hash(text: Optional[str]) -> Optional[str]:
    """root's password field as save-root kept it, exactly: a hash, a locked
    one ("!..."), "*", or empty. None: nothing saved. ValueError: damaged."""
    if text is None:
        return None
    if not text.endswith("\n") or "\n" in text[:-1]:
        raise ValueError("it is not one line ending in a newline (cut short?)")
    if not re.fullmatch(r"[\x21-\x39\x3b-\x7e]*", text[:-1]):
        raise ValueError("it holds characters no password field has")
    return text[:-1]


def restore_root_password(cfg: Path) -> None:
    saved = cfg / "root" / "shadow"
    try:
        value = saved_root_hash(read_saved(saved))
    except ValueError as e:
        aside = saved.with_name("shadow.damaged")
        saved.replace(aside)
        raise PoolError(f"{saved}: {e}; moved to {aside.name}, root's password is not restored: "
                        f"set it with passwd") from None
    if value is not None:
        run("usermod", "--password", value, "root")


def restore_root_keys(cfg: Path) -> None:
    """Exactly as saved: root's authorized_keys, or none at all when it
    was removed (save-root then removed the saved copy)."""
    data = read_bytes_if(cfg / "root" / "authorized_keys")
    if data is None:
        ROOT_AUTHORIZED_KEYS.unlink(missing_ok=True)
        return
    ROOT_AUTHORIZED_KEYS.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(ROOT_AUTHORIZED_KEYS, data, 0o600)


def keep_boot_files(cfg: Path) -> None:
    """The node's own config files as booter last delivered them. One that
    cannot be written (a full pool) leaves the copy an earlier boot kept."""
    dest = cfg / "boot"
    errors = []
    for name in BOOT_FILE_NAMES:
        src = BOOT_FILES / name
        if not src.is_file():
            continue
        try:
            dest.mkdir(mode=0o700, exist_ok=True)
            write_atomic(dest / name, src.read_bytes(), 0o600)
        except OSError as e:
            errors.append(describe(e))
    if errors:
        raise PoolError("; ".join(errors) + "; the copy an earlier boot kept is unchanged")


# -- save-root (on the running node, triton-persist-root.path) -------------------------------

ROOT_SAVED = {"shadow": ROOT_PASSWORD, "authorized_keys": ROOT_KEYS}  # saved file: its restore step


def root_entry_hash(shadow: str) -> Optional[str]:
    """root's password field in /etc/shadow as it is: a hash, "!..." when
    locked, "*", or empty. None: no root entry."""
    for line in shadow.splitlines():
        fields = line.split(":")
        if fields[0] == "root" and len(fields) > 1:
            return fields[1]
    return None


def root_save_plan(shadow: str, keys: Optional[bytes], saved: Mapping[str, bytes],
                   not_restored: Collection[str]) -> tuple[dict[str, Optional[bytes]], list[str]]:
    """What save-root changes in <config>/root: {file: new content, or None
    to remove it}, and what it leaves alone and why. Saved as they are: a
    locked or emptied password, a removed authorized_keys (the saved copy
    goes, so the next boot has none). A saved copy this boot did not restore
    is kept: what is live then is not what the operator had."""
    password = root_entry_hash(shadow)
    live = {"shadow": None if password is None else f"{password}\n".encode(), "authorized_keys": keys}
    changes: dict[str, Optional[bytes]] = {}
    kept = []
    for name, data in live.items():
        if ROOT_SAVED[name] in not_restored and name in saved:
            kept.append(f"not saving {name}: this boot did not restore the saved copy (`triton-pool status`)")
        elif data is None and (name == "shadow" or name not in saved):
            continue
        elif data != saved.get(name):
            changes[name] = data
    return changes, kept


def saved_root_files(root: Path) -> dict[str, bytes]:
    found = {name: read_bytes_if(root / name) for name in ROOT_SAVED}
    return {name: data for name, data in found.items() if data is not None}


def apply_root_save(root: Path, changes: Mapping[str, Optional[bytes]]) -> None:
    for name, data in changes.items():
        if data is None:
            (root / name).unlink(missing_ok=True)
            say(f"removed {root / name}: root has no {name} now")
        else:
            write_atomic(root / name, data, 0o600)
            say(f"saved root's {name} to {root / name}")


def save_root(settings: PoolSettings) -> int:
    """Keep root's password field and authorized_keys on the pool as they
    are, removals and locks included (triton-persist-root.path)."""
    state = read_state()
    if state.get("state") != "imported":
        return 0
    if str(settings.config_dir) in state.get("unmounted", []):
        say(f"not saving root's credentials: {settings.config_dir} is not mounted")
        return 1
    root = settings.config_dir / "root"
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        # Again while they change: the .path unit does not see a change
        # made while this runs.
        for attempt in range(3):
            changes, kept = root_save_plan(_read(SHADOW), read_bytes_if(ROOT_AUTHORIZED_KEYS),
                                           saved_root_files(root), restore_failures(state))
            for line in kept if attempt == 0 else []:
                say(line)
            if not changes:
                break
            apply_root_save(root, changes)
    except OSError as e:
        say(f"FAILED: saving root's credentials: {describe(e)}")
        return 1
    return 0


# -- operator commands ----------------------------------------------------------------------

def status(settings: PoolSettings, as_json: bool) -> int:
    state = read_state() or {"pool": settings.name, "state": "unknown",
                             "messages": [f"no record of this boot's import ({STATE})"]}
    pool = state.get("pool", settings.name)
    if state.get("state") == "imported" and pool in imported_pools():
        state["health"] = pool_health(pool)
    state["setup"] = state.get("state") == "imported"
    if as_json:
        print(json.dumps(state, indent=2))
        return 0
    print(issue_text(state).strip())
    for m in state.get("messages", []):
        print(f"  boot: {m}")
    if state["setup"]:
        print(run("zpool", "status", pool, check=False).stdout.rstrip())
    return 0


def confirm(prompt: str, expected: str) -> bool:
    if not sys.stdin.isatty():
        raise PoolError("not confirmed: run this at a terminal, or pass --yes")
    try:
        return input(prompt).strip() == expected
    except EOFError:
        return False


def factory_reset(settings: PoolSettings, yes: bool, cancel: bool, reboot: bool) -> int:
    found = system_pools(settings)
    if not found:
        raise PoolError("no system pool is imported: there is nothing to reset")
    pool = found[0]
    target = f"{pool}/var"
    if cancel:
        run("zfs", "inherit", FACTORY_RESET, target)
        say(f"factory reset cancelled: {pool} will be imported as usual")
        return 0
    if not yes and not confirm(
            f"At the next boot this DESTROYS pool '{pool}' and everything on it (instances, /opt, /var, "
            f"the node's keys and config). Type the pool name to confirm: ", pool):
        say("not confirmed: nothing changed")
        return 1
    run("zfs", "set", f"{FACTORY_RESET}=yes", target)
    say(f"factory reset requested: pool '{pool}' is destroyed at the next boot "
        f"(`triton-pool factory-reset --cancel` undoes this before then)")
    if reboot:
        run("systemctl", "reboot")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="The node's system pool.")
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="set up or not, health, what the boot did")
    st.add_argument("--json", action="store_true")
    su = sub.add_parser("setup", help="create the system pool (destroys the named disks' contents with --force)")
    su.add_argument("--layout", choices=list(LAYOUTS))
    su.add_argument("--answers", metavar="FILE", help="answers file (JSON) naming layout and disks")
    su.add_argument("--force", action="store_true", help="wipe disks that hold a pool, partitions or a filesystem")
    su.add_argument("--yes", action="store_true", help="do not ask before wiping")
    su.add_argument("disks", nargs="*", metavar="DISK")
    fr = sub.add_parser("factory-reset", help="destroy the system pool at the next boot")
    fr.add_argument("--yes", action="store_true")
    fr.add_argument("--cancel", action="store_true")
    fr.add_argument("--reboot", action="store_true")
    for name in ("boot", "restore", "save-root"):
        sub.add_parser(name, help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    try:
        settings = load_settings()
        if a.command == "boot":
            return boot(settings)
        if a.command == "restore":
            return restore(settings)
        if a.command == "save-root":
            return save_root(settings)
        if a.command == "status":
            return status(settings, a.json)
        if a.command == "factory-reset":
            return factory_reset(settings, a.yes, a.cancel, a.reboot)
        if a.answers:
            if a.layout or a.disks:
                raise PoolError("give either --answers FILE or --layout and disks, not both")
            try:
                answers = parse_answers(json.loads(Path(a.answers).read_text()), a.answers)
            except OSError as e:
                raise PoolError(f"{a.answers}: {e.strerror}")
            except ValueError as e:
                raise PoolError(f"{a.answers}: not valid JSON: {e}")
            answers = dataclasses.replace(answers, force=answers.force or a.force)
        else:
            if not a.layout or not a.disks:
                raise PoolError("name the layout and the disks: triton-pool setup --layout mirror sdb sdc "
                                "(or --answers FILE); `lsblk -d` lists the disks")
            check_layout(a.layout, a.disks)
            answers = Answers(a.layout, tuple(a.disks), a.force)
        if answers.force and not a.yes and not confirm(
                f"--force wipes {' '.join(answers.disks)} even if they hold data. Type 'wipe' to go on: ", "wipe"):
            say("not confirmed: nothing changed")
            return 1
        say(setup(settings, answers, booting=False))
        return 0
    except PoolError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
