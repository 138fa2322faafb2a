#!/usr/bin/python3 -IS
"""mkzpool: create a ZFS pool from disklayout's JSON, as Triton's setup does.

The headnode's joysetup.sh runs `mkzpool -B -f zones /tmp/pool.json` and,
when that fails, `mkzpool -f zones /tmp/pool.json`. The pool is created
with `zpool create [-f] POOL <vdevs> [spare ...] [log ...] [cache ...]`,
each vdev its type (mirror, raidz, raidz2, raidz3; none for a single disk)
and the devices' names; no other pool or dataset property (joysetup.sh
sets those itself).

- -B asks for a boot partition on the pool's disks (illumos's
  `zpool create -B`); OpenZFS on Linux has none, so mkzpool refuses it
  before touching a disk, and joysetup.sh's second try creates the pool.
- -e asks for an encrypted pool through SmartOS's key manager, which this
  platform does not have: refused, naming the option.
- -f passes `-f` to `zpool create` (use disks that hold something).

Errors print `fatal error: ...` on standard output, exit status 255 (as
Triton's own: joysetup.sh only checks the status).

  mkzpool [-Bef] POOL FILE.json
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triton_pool_disks import vdev_args as one_vdev  # noqa: E402

USAGE = "usage: mkzpool [-Bef] <pool> <file.json>"
VDEV_TYPES = ("mirror", "raidz", "raidz1", "raidz2", "raidz3")
# A device as disklayout names it: a kernel name (sda, nvme0n1) or a
# path under /dev; never an option or anything a shell would split.
DEVICE = re.compile(r"(/dev/)?[A-Za-z0-9][A-Za-z0-9._:+@-]*(/[A-Za-z0-9._:+@-]+)*")
POOL = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]*")
SECTIONS = (("spares", "spare"), ("logs", "log"), ("cache", "cache"))


class PoolSpecError(Exception):
    pass


def device_name(dev: Any, where: str) -> str:
    name = dev.get("name") if isinstance(dev, dict) else None
    if not isinstance(name, str) or not DEVICE.fullmatch(name) or ".." in name.split("/"):
        raise PoolSpecError(f"{where}: not a device name: {name!r}")
    return name


def vdev_args(config: Any) -> list[str]:
    """`zpool create`'s vdev arguments for disklayout's JSON."""
    if not isinstance(config, dict):
        raise PoolSpecError("expected a JSON object with \"vdevs\" (disklayout's output)")
    vdevs = config.get("vdevs")
    if not isinstance(vdevs, list) or not vdevs:
        raise PoolSpecError("\"vdevs\" must be a non-empty list")
    args: list[str] = []
    for i, v in enumerate(vdevs):
        where = f"vdevs[{i}]"
        if isinstance(v, dict) and "devices" in v:
            vtype, devices = v.get("type"), v.get("devices")
            if vtype not in VDEV_TYPES:
                raise PoolSpecError(f"{where}.type: {vtype!r} is not one of {', '.join(VDEV_TYPES)}")
            if not isinstance(devices, list) or not devices:
                raise PoolSpecError(f"{where}.devices must be a non-empty list")
            args += one_vdev(vtype, [device_name(d, f"{where}.devices[{j}]") for j, d in enumerate(devices)])
        else:
            args += one_vdev("single", [device_name(v, where)])
    for key, word in SECTIONS:
        devices = config.get(key)
        if devices is None:
            continue
        if not isinstance(devices, list):
            raise PoolSpecError(f"\"{key}\" must be a list")
        if devices:
            args += [word, *(device_name(d, f"{key}[{j}]") for j, d in enumerate(devices))]
    return args


def create_argv(pool: str, config: Any, force: bool) -> list[str]:
    if not POOL.fullmatch(pool):
        raise PoolSpecError(f"{pool!r} is not a pool name (a letter, then letters, digits, _ . : -)")
    return ["zpool", "create", *(["-f"] if force else []), pool, *vdev_args(config)]


def parse_args(argv: Sequence[str]) -> Optional[tuple[set[str], str, str]]:
    flags: set[str] = set()
    args = list(argv)
    while args and args[0].startswith("-") and len(args[0]) > 1:
        word = args.pop(0)
        if word == "--":
            break
        if any(c not in "Bef" for c in word[1:]):
            return None
        flags |= set(word[1:])
    if len(args) < 2:
        return None
    return flags, args[0], args[1]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parsed = parse_args(sys.argv[1:] if argv is None else argv)
    if parsed is None:
        print(USAGE)
        return 255
    flags, pool, path = parsed
    try:
        if "B" in flags:
            raise PoolSpecError("-B: a boot partition on the pool's disks is illumos's; OpenZFS on Linux "
                                "has none (create the pool without -B)")
        if "e" in flags:
            raise PoolSpecError("-e: encrypted pools need SmartOS's key manager (kbmadm), which this "
                                "platform does not have")
        try:
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, ValueError) as e:
            raise PoolSpecError(f"{path}: {e}")
        argv_ = create_argv(pool, config, "f" in flags)
    except PoolSpecError as e:
        print(f"fatal error: pool creation failed: {e}")
        return 255
    res = subprocess.run(argv_, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"fatal error: pool creation failed: {(res.stderr or res.stdout).strip()}")
        return 255
    return 0


if __name__ == "__main__":
    sys.exit(main())
