"""The pool's ZFS, as triton-pool's jobs ask it: which pools are imported
and which is the system pool (its marker file), health, mounts."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional

from triton_pool_state import RUN, PoolError, lines, run
from triton_settings import Dataset, PoolSettings


def imported_pools() -> list[str]:
    return lines("zpool", "list", "-H", "-o", "name")


def pool_health(pool: str) -> str:
    return run("zpool", "list", "-H", "-o", "health", pool).stdout.strip()


def pool_comment(pool: str) -> str:
    return run("zpool", "get", "-H", "-o", "value", "comment", pool, check=False).stdout.strip()


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


def system_pools(settings: PoolSettings, pools: Optional[Iterable[str]] = None) -> list[str]:
    """The imported pools (or these, already listed) that carry the marker."""
    return [p for p in (imported_pools() if pools is None else pools) if has_marker(p, settings.marker)]


def create_dataset(name: str, mountpoint: str) -> None:
    """canmount=noauto: the initrd mounts the pool's datasets at boot, and
    one created on a running node must not hide what is mounted there."""
    run("zfs", "create", "-o", f"mountpoint={mountpoint}", "-o", "canmount=noauto", name)


def mount_order(datasets: Iterable[Dataset]) -> list[Dataset]:
    """Parents before children."""
    return sorted(datasets, key=lambda d: (d.mountpoint.count("/"), d.mountpoint))


def ensure_datasets(settings: PoolSettings, note: Callable[[str], None]) -> None:
    """A pool set up by an older platform may lack a dataset this one mounts:
    create it (empty, never touching what is there)."""
    have = set(lines("zfs", "list", "-H", "-o", "name", "-r", settings.name))
    for d in mount_order(settings.datasets):
        name = settings.full(d.name)
        if name not in have:
            create_dataset(name, d.mountpoint)
            note(f"created missing dataset {name} ({d.mountpoint})")
