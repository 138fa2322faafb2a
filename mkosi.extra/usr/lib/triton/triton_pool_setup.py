"""Setting the system pool up: from the operator's command or an answers
file, on blank disks (or forced), redoing what a power cut interrupted, and
never leaving a half-made pool behind."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Optional, Sequence

from triton_common import os_release
from triton_pool_disks import (
    ABSENT_STATES, blkid, check_layout, create_cut_short, disk_in_use, disk_refusal, imported_vdevs,
    parse_import_listing, partitions, placement, resolve_disk, vdev_args, wipe,
)
from triton_pool_state import BOOT_FILES, MOUNT_FLAG, RUN, PoolError, read_state, run, say, write_state
from triton_pool_zfs import (
    create_dataset, ensure_datasets, imported_pools, is_mountpoint, mount_order, mount_zfs, pool_comment,
    pool_health, system_pools, umount,
)
from triton_settings import Dataset, PoolSettings

# The pool's comment from `zpool create` until setup's last step: given with
# `-o`, it is written in the pool's first transaction (user properties and
# -O properties come in later ones), so no pool setup made is ever without
# it. With no marker, it is an unfinished setup of this node's, which setup
# may discard and redo; without it, a pool is someone else's.
SETUP_INCOMPLETE = "triton: setup incomplete"


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


def setup(settings: PoolSettings, answers: Answers, report: Callable[[str], None] = say) -> str:
    """Create the system pool and its datasets. Idempotent: a node that has
    its pool is left alone. Refuses disks that hold anything unless forced,
    and never creates a pool while one of that name is on disk but not
    imported. Leaves nothing half-created; what a power cut leaves (an
    unfinished pool of this node's on the same disks, or what a cut-short
    `zpool create` left) it discards and redoes, saying so with `report`."""
    pools = imported_pools()
    for pool in system_pools(settings, pools):
        return f"already set up: pool '{pool}' is imported and is this node's system pool; nothing to do"
    disks = [resolve_disk(d) for d in answers.disks]
    check_layout(answers.layout, [str(d) for d in disks])
    if settings.name in pools:
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
    return done


def use_now(settings: PoolSettings, report: Callable[[str], None] = say, move_config: bool = True) -> None:
    """After a setup on a running node (as joysetup.sh does on one): the
    datasets mounted where they belong, but for the seeded ones (/var: the
    node keeps its live one until the next boot mounts the pool's, which
    setup copied from it); the pool recorded as this boot's (the mount flag,
    `triton-pool status`, the console's note); /usr/triton/config moved
    onto the pool (triton-config-dir again), so what setup scripts write
    there (triton-setup-state.json) is kept."""
    mounted, later = [], []
    for d in mount_order(settings.datasets):
        where = Path(d.mountpoint)
        if is_mountpoint(where):
            continue
        if d.seed:
            later.append(d.mountpoint)
            continue
        mount_zfs(settings.full(d.name), where)
        mounted.append(f"{settings.full(d.name)} on {where}")
    MOUNT_FLAG.write_text(settings.name + "\n")
    state = read_state()
    state.update(state="imported", pool=settings.name, health=pool_health(settings.name), set_up_live=True)
    state.setdefault("messages", []).append(f"set up while running; mounted {', '.join(mounted) or 'nothing'}")
    write_state(state)
    report(f"in use now: {', '.join(mounted) or 'nothing more to mount'}"
           + (f"; {', '.join(later)} moves to the pool at the next boot" if later else ""))
    if not move_config:
        return
    p = run("systemctl", "restart", "triton-config-dir.service", check=False)
    if p.returncode != 0:
        report(f"triton-config-dir did not run again ({(p.stderr or p.stdout).strip()}): "
               f"/usr/triton/config moves to the pool at the next boot")


def adopt(settings: PoolSettings, report: Callable[[str], None] = say) -> bool:
    """The pool Triton's own joysetup.sh just made on this running node (it
    creates `zones` with the marker, then the datasets, mounts zones/var on
    /var and restarts triton-lxd.service, which runs this): put to use now,
    as `triton-pool setup` leaves its own. Any dataset this platform mounts
    that joysetup.sh did not make is made; what is not mounted yet is
    mounted (/var is, by joysetup.sh); the pool is recorded as this boot's;
    the journal moves onto the pool's /var. /usr/triton/config is left
    alone: joysetup.sh moves it onto the pool itself, next. On a node whose
    pool is already in use (restarted by hand), nothing: False."""
    if MOUNT_FLAG.exists() and read_state().get("state") == "imported":
        report(f"pool '{settings.name}' is already in use on this node: nothing to do")
        return False
    if settings.name not in system_pools(settings):
        raise PoolError(f"no imported pool '{settings.name}' with {settings.marker} on it: nothing to put to use "
                        f"(Triton's joysetup.sh makes both before it restarts triton-lxd.service)")
    # First, so that what follows is logged there: journald still writes
    # to the /var that zones/var now hides; back to /run, then onto the
    # pool's /var.
    for step in ("--relinquish-var", "--flush"):
        p = run("journalctl", step, check=False)
        if p.returncode != 0:
            report(f"journalctl {step} failed ({(p.stderr or p.stdout).strip()}): "
                   f"the journal moves to the pool at the next boot")
            break
    ensure_datasets(settings, report)
    use_now(settings, report, move_config=False)
    return True


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


def _populate(settings: PoolSettings, answers: Answers, disks: Sequence[Path]) -> None:
    """The datasets, /var seeded, setup.json, and last the marker that makes
    the pool this node's system pool: a pool with the marker has the rest."""
    for d in mount_order(settings.datasets):
        if d.name:
            create_dataset(settings.full(d.name), d.mountpoint)
    work = Path(tempfile.mkdtemp(prefix="setup-", dir=RUN))
    record = json.dumps({
        "layout": answers.layout, "disks": [str(x) for x in disks],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": os_release().get("TRITON_RELEASE", "?"),
    }, indent=2) + "\n"
    try:
        for d in mount_order(settings.datasets):
            if d.seed:
                with _mounted(settings, d, work) as where:
                    # In the initrd this is the image's pristine copy; on a
                    # running node, its live one (as joysetup did).
                    copy_tree(d.mountpoint, where)
            if d.name == settings.config_dataset:
                with _mounted(settings, d, work) as where:
                    (where / "setup.json").write_text(record)
        with _mounted(settings, settings.root, work) as where:
            (where / settings.marker).write_text("")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def copy_tree(src: str, dst: Path) -> None:
    """src's contents into dst with owners, modes, times, links and device
    nodes, but no ACLs or xattrs: the pool's datasets take none (a running
    node's /var/log/journal has an ACL, and `cp -a` stopped on it). A
    file that changes while it is read (a running node's journal) is
    copied as it was read: tar's status 1 on the reading side."""
    run("bash", "-c",
        'tar -C "$1" --numeric-owner --warning=no-file-changed -cf - . | tar -C "$2" --numeric-owner -xpf -; '
        's=("${PIPESTATUS[@]}"); [ "${s[0]}" -le 1 ] && [ "${s[1]}" -eq 0 ]', "copy", src, str(dst))


@contextlib.contextmanager
def _mounted(settings: PoolSettings, d: Dataset, work: Path) -> Iterator[Path]:
    where = work / (d.name or "root")
    mount_zfs(settings.full(d.name), where)
    try:
        yield where
    finally:
        umount(where)
        where.rmdir()
