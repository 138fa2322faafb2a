"""`triton-pool restore`, in the initrd once the datasets are mounted: the
node's identity from the pool, then the instances' datasets. Each step runs
whatever the others did; each failure is a console line, is kept in
state.json (`triton-pool status`) and fails the unit."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from triton_pool_identity import (
    KEEP_BOOT_FILES, MACHINE_ID, ROOT_KEYS, ROOT_PASSWORD, SSH_HOST_KEYS, keep_boot_files, restore_machine_id,
    restore_root_keys, restore_root_password, restore_ssh_host_keys,
)
from triton_pool_instances import INSTANCES, mount_instances
from triton_pool_state import MOUNT_FLAG, describe, read_state, say, write_state
from triton_pool_zfs import is_mountpoint
from triton_settings import PoolSettings


Step = tuple[str, Callable[[], Optional[str]]]


@dataclasses.dataclass(frozen=True)
class StepResult:
    step: str
    error: Optional[str] = None  # why it failed, one line
    note: Optional[str] = None   # what it did that is worth saying


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
