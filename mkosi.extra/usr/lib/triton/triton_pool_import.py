"""`triton-pool boot`, in the initrd inside the verified root: hostid, load
ZFS, import, identify the system pool (its marker file), finish or redo an
interrupted setup, factory reset, unattended setup; then the initrd's units
mount the datasets."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from triton_common import kernel_args, read_text
from triton_pool_disks import parse_import_listing
from triton_pool_hostid import ensure_hostid, load_zfs
from triton_pool_reset import FACTORY_RESET, destroy_and_clear, factory_reset_requested
from triton_pool_setup import SETUP_INCOMPLETE, interrupted_summary, load_answers, setup
from triton_pool_state import MOUNT_FLAG, RUN, PoolError, run, say, write_state
from triton_pool_zfs import ensure_datasets, imported_pools, pool_comment, pool_health, system_pools
from triton_settings import PoolSettings


def is_true(value: Optional[str]) -> bool:
    return value is not None and value.lower() in ("", "1", "true", "yes", "on")


def boot(settings: PoolSettings) -> int:
    RUN.mkdir(parents=True, exist_ok=True)
    MOUNT_FLAG.unlink(missing_ok=True)
    args = kernel_args(read_text(Path("/proc/cmdline")))
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
    state["pools"] = imported_pools()
    found = system_pools(settings, state["pools"])
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
            note(setup(settings, answers[0], report=note))
            state.pop("setup_interrupted", None)
            return settings.name
        if unfinished:
            note("`triton-pool setup` (or an answers file at the next boot) sets it up again, "
                 "discarding the unfinished pool first")
    except PoolError as e:
        note(f"setup FAILED: {e}")
    return None


def unfinished_setup(settings: PoolSettings, unmarked: Sequence[str]) -> Optional[str]:
    """The imported pool without the marker that is this node's setup cut short, if any."""
    return settings.name if settings.name in unmarked and pool_comment(settings.name) == SETUP_INCOMPLETE else None


def finish_setup(pool: str, note: Callable[[str], None]) -> None:
    """Setup's last step, if a power cut came between it and the marker
    (which is written once everything else is): the pool is whole."""
    if pool_comment(pool) == SETUP_INCOMPLETE:
        run("zpool", "set", "comment=", pool)
        note(f"setup was interrupted after its marker was written: pool '{pool}' is whole; finished its last step")
