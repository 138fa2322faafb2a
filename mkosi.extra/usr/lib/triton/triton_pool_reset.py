"""Factory reset: the operator asks for it on the running node (a property
on <pool>/var, as SmartOS's sdc-factoryreset sets it); the next boot
destroys the pool and clears the devices it held, and only those."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Mapping, Sequence

from triton_pool_disks import (
    ABSENT_STATES, ZFS_WHOLE_DISK_PARTS, Placement, Vdev, clear_device, imported_vdevs, placement, wipe,
)
from triton_pool_state import PoolError, confirm, run, say
from triton_pool_zfs import system_pools
from triton_settings import PoolSettings

FACTORY_RESET = "smartdc:factoryreset"  # as SmartOS and linux-live set it on <pool>/var


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
