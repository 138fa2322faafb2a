#!/usr/bin/python3 -S
"""triton-pool: the node's system pool (`zones`), where everything that must
survive a reboot lives. Standard library only; it calls zpool, zfs and
systemd, and keeps no state of its own beyond /run/triton/pool.

  triton-pool status [--json]        set up or not, health, what boot did
  triton-pool setup [--force] [--yes] --layout single|mirror|raidz|raidz2 DISK...
  triton-pool setup --answers FILE   the same, from an answers file
  triton-pool factory-reset [--yes] [--cancel] [--reboot]
  triton-pool adopt                  put to use the pool Triton's joysetup.sh
                                     just made (triton-lxd.service runs it)

Run by the initrd, inside the verified root before switch-root:
  triton-pool boot       hostid, load ZFS, import, identify the system
                         pool (marker file), factory reset, unattended setup
  triton-pool restore    after the initrd mounted the datasets: machine-id,
                         ssh host keys, root's credentials, image-owned /var
The facts (pool name, datasets, marker) come from platform.yaml through
/usr/lib/triton/pool.json (triton_settings).

This module is the command line; each job is a module of its own:
  triton_pool_import     boot: import, identify, finish or redo setup
  triton_pool_hostid     the hostid ZFS checks, and loading ZFS
  triton_pool_setup      setup (command, answers file, interrupted setups)
  triton_pool_disks      layouts, what a disk holds, wiping it
  triton_pool_reset      factory reset (requested, then done at boot)
  triton_pool_restore    restore: every step, each failure recorded
  triton_pool_identity   the node's identity kept on the pool; save-root
  triton_pool_instances  the instances' datasets at boot
  triton_pool_zfs        imported pools, the marker, health, mounts
  triton_pool_state      errors, console lines, settings, state.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triton_pool_disks import LAYOUTS, check_layout  # noqa: E402
from triton_pool_identity import keep_identity, save_root  # noqa: E402
from triton_pool_import import boot  # noqa: E402
from triton_pool_reset import factory_reset  # noqa: E402
from triton_pool_restore import restore  # noqa: E402
from triton_pool_setup import Answers, adopt, parse_answers, setup, use_now  # noqa: E402
from triton_pool_state import (  # noqa: E402
    PROG, STATE, PoolError, confirm, issue_text, load_settings, read_state, run, say,
)
from triton_pool_zfs import imported_pools, pool_health  # noqa: E402
from triton_settings import PoolSettings  # noqa: E402


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


def keep(settings: PoolSettings) -> None:
    """After a setup on the running node: its identity (machine-id, ssh
    host keys, booter's files, root's password and keys) kept on the pool
    as it is now, so the next boot restores it and is the same node."""
    say(f"kept on the pool: {', '.join(keep_identity(settings.config_dir))}")
    save_root(settings)


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
    sub.add_parser("adopt", help="put to use the pool Triton's joysetup.sh just made on this running node")
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
        if a.command == "adopt":
            if adopt(settings):
                keep(settings)
            return 0
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
        done = setup(settings, answers)
        say(done)
        if not done.startswith("already set up"):
            use_now(settings)
            keep(settings)
        return 0
    except PoolError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
