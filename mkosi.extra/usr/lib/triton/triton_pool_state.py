"""What triton-pool's jobs share: their errors and console lines, the pool's
settings, and this boot's record (/run/triton/pool/state.json, and the line
above the console's login prompt). Standard library only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import triton_common
import triton_settings
from triton_settings import RUNTIME, PoolSettings

SETTINGS = triton_settings.POOL_JSON
RUN = RUNTIME.pool
STATE = RUNTIME.pool_state
# The initrd's mount units for the pool's datasets run only when this exists.
MOUNT_FLAG = RUNTIME.mount_flag
BOOT_FILES = RUNTIME.boot_files
ISSUE = Path("/run/issue.d/50-triton-pool.issue")
PROG = "triton-pool"


class PoolError(Exception):
    """Something the operator must fix; the message says what and how."""


def say(msg: str) -> None:
    triton_common.say(PROG, msg)


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A failure is a PoolError naming the command."""
    return triton_common.run(*argv, check=check, error=PoolError)


def lines(*argv: str) -> list[str]:
    return [line for line in run(*argv).stdout.splitlines() if line.strip()]


def describe(e: Exception) -> str:
    """An exception as one line naming the file and the error."""
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    elif isinstance(e, (PoolError, triton_settings.SettingsError)):
        text = str(e)
    else:
        text = f"{type(e).__name__}: {e}"
    return " ".join(text.split())


def confirm(prompt: str, expected: str) -> bool:
    if not sys.stdin.isatty():
        raise PoolError("not confirmed: run this at a terminal, or pass --yes")
    try:
        return input(prompt).strip() == expected
    except EOFError:
        return False


def load_settings() -> PoolSettings:
    try:
        return triton_settings.load_pool(SETTINGS)
    except triton_settings.SettingsError as e:
        raise PoolError(str(e)) from None


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


def restore_failures(state: dict[str, Any]) -> set[str]:
    return {r.get("step", "?") for r in state.get("restore", []) if not r.get("ok")}
