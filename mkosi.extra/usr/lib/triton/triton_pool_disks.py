"""The disks of the system pool: layouts, what a disk holds (blkid, lsblk,
`zpool status`, `zpool import`), whether setup may take it, and wiping it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from triton_pool_state import PoolError, run

LAYOUTS = {"single": 1, "mirror": 2, "raidz": 3, "raidz2": 4}


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


VDEV_SECTIONS = ("logs", "cache", "spares", "special", "dedup")
# Devices ZFS lists but that are not there to clear: the path may now be
# another disk's.
ABSENT_STATES = ("UNAVAIL", "REMOVED")
# OpenZFS's own layout of a disk given whole: GPT partition 1 (the vdev)
# and partition 9 (8 MiB, reserved), nothing else.
ZFS_WHOLE_DISK_PARTS = {1: "6a898cc3-1dd2-11b2-99a6-080020736631", 9: "6a945a3b-1dd2-11b2-99a6-080020736631"}


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


def create_cut_short(disk: Path) -> bool:
    """See unfinished_create."""
    parts = partitions(disk)
    probes = [blkid(p) for p in parts]
    first = [p for p, b in zip(parts, probes) if b.get("PART_ENTRY_NUMBER") == "1"]
    zdb = run("zdb", "-l", str(first[0]), check=False).stdout if first else ""
    return unfinished_create(blkid(disk), probes, parse_label_txg(zdb))
