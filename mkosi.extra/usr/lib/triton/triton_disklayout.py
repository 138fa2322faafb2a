#!/usr/bin/python3 -IS
"""disklayout: the pool layout Triton's setup asks a compute node for.

The headnode's joysetup.sh runs `disklayout [options] [layout] > pool.json`
on a node that has no pool, checks `capacity` against the node's RAM, then
hands the file to `mkzpool` (triton_mkzpool.py). This is the same decision
SmartOS and linux-live's disklayout make, written for this platform from
its documented behaviour and checked against Triton's own test vectors:

- the disks are the whole disks lsblk lists, less the excluded (-e), the
  zvols (zd*), those mounted or used as swap themselves, the removable ones
  and those under about half a GB;
- disks are grouped by size class (sizes are marketed at a few points:
  each disk's size is snapped to the multiple of 500, 150, 80, 20, 4.5 or
  1 TB/GB that is within 5 %) and by solid state or not; groups of the same
  kind within 5 % of each other are one group;
- the spinning group of the largest disks is storage and the other
  spinning groups cache; with no spinning disks the largest solid-state
  group is storage; of the rest the smallest solid-state group is the log
  (when it has fewer than 5 disks), the others cache (-c: no cache);
- with no layout named, one is chosen from the number of storage disks
  (less fixed spares, -s): 1 single, 2 mirror, 3-4 raidz1, 5-6 raidz1 on
  SSDs or with -s else raidz2, more by width (-w), size and count;
- spares are the largest disks; raidz vdevs are the narrowest width in the
  type's range that divides the disks left.

Output: JSON with `spares`, `vdevs` ({type, devices} or a bare device for
single), `capacity` (usable bytes before ZFS's own overhead), `logs`,
`cache`; a device is {name, vid, pid, size, solid_state}. An error is one
line, `fatal error: ...`, on standard output, exit status 255 (as
Triton's own: joysetup.sh only checks the status).

  disklayout [-c] [-f FILE] [-s SPARES] [-w WIDTH] [-e DISK,...] [LAYOUT]
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

LAYOUT_NAMES = ("single", "mirror", "raidz1", "raidz2", "raidz3")
# Size classes, in MB, tried from the coarsest: a disk belongs to the
# multiple of one of them nearest its size, if within 5 %.
SIZE_STEPS_MB = (500000, 150000, 80000, 20000, 4500, 1000)
# raidz kinds: vdev type, parity, narrowest and widest vdev, disks per
# default spare, and the disk counts whose only vdev is all of them.
RAIDZ = {
    "raidz1": ("raidz", 1, 3, 6, 7, ()),
    "raidz2": ("raidz2", 2, 7, 12, 12, (5, 6)),
    "raidz3": ("raidz3", 3, 9, 20, 15, (7, 8)),
}
# Storage disk counts (after fixed spares) that no raidz width fits.
PRIME_COUNTS = (17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67)
ZVOL = re.compile(r"zd[0-9a-z]+")


class LayoutError(Exception):
    pass


@dataclass
class Disk:
    name: str
    size: Any               # as the source gave it (a number from lsblk, text from -f)
    vid: str = "<unknown>"
    pid: str = "<unknown>"
    removable: bool = False
    solid_state: bool = False
    kind: str = "disk"

    @property
    def bytes(self) -> int:
        return int(self.size)

    def device(self) -> dict[str, Any]:
        return {"name": self.name, "vid": self.vid, "pid": self.pid, "size": self.size,
                "solid_state": self.solid_state}


@dataclass
class Group:
    gb: float
    solid_state: bool
    disks: list[Disk] = field(default_factory=list)

    @property
    def smallest(self) -> int:
        return min(d.bytes for d in self.disks)


def js_round(x: float) -> int:
    """Half up, as the reference rounds."""
    return math.floor(x + 0.5)


def size_class_gb(size: int) -> float:
    """The marketed size of a disk, in GB (0 for one too small to use)."""
    mb = size / 1e6
    best, best_error = None, 0.0
    for step in SIZE_STEPS_MB:
        near = math.floor((mb + step // 2) / step) * step
        if abs(mb - near) / mb > 0.05:
            continue
        # Larger sizes weigh more: a disk near a big round size is that size.
        error = (mb - near) ** 2 * (near / step) ** 4
        if best_error == 0 or error < best_error:
            best, best_error = near, error
    if best is not None and abs(best - mb) / mb < 0.05:
        return best / 1000
    return js_round(mb / 1000)


def groups(disks: Sequence[Disk]) -> list[Group]:
    """Usable disks by size class and kind, near classes of one kind merged
    (into the group with more disks)."""
    by_key: dict[tuple[str, float, bool], Group] = {}
    for d in disks:
        if d.removable:
            continue
        gb = size_class_gb(d.bytes)
        if gb == 0:
            continue
        by_key.setdefault((d.kind, gb, d.solid_state), Group(gb, d.solid_state)).disks.append(d)
    live: dict[tuple[str, float, bool], Group] = dict(by_key)
    keys = list(by_key)
    for a in keys:
        for b in list(live):
            ga, gb_ = live.get(a), live.get(b)
            if a == b or ga is None or gb_ is None or ga.solid_state != gb_.solid_state:
                continue
            if abs(ga.gb - gb_.gb) / gb_.gb > 0.05:
                continue
            if len(ga.disks) > len(gb_.disks):
                ga.disks += gb_.disks
                del live[b]
            else:
                gb_.disks += ga.disks
                del live[a]
    return list(live.values())


def ordered(disks: Sequence[Disk]) -> list[Disk]:
    return sorted(disks, key=lambda d: (d.bytes, d.name))


@dataclass
class Roles:
    storage: list[Disk] = field(default_factory=list)
    logs: Optional[list[Disk]] = None
    cache: Optional[list[Disk]] = None


def roles(found: Sequence[Group], cache: bool) -> Roles:
    r = Roles()
    if len(found) == 1:
        r.storage = ordered(found[0].disks)
        return r
    spinning = sorted((g for g in found if not g.solid_state), key=lambda g: g.smallest)
    solid = sorted((g for g in found if g.solid_state), key=lambda g: g.smallest)

    def add_cache(gs: Sequence[Group]) -> None:
        for g in gs:
            r.cache = (r.cache or []) + ordered(g.disks)

    if spinning:
        r.storage = ordered(spinning.pop().disks)
        if cache:
            add_cache(spinning)
    if not solid:
        return r
    if not r.storage:
        r.storage = ordered(solid.pop().disks)
    if solid and len(solid[0].disks) < 5:
        r.logs = ordered(solid.pop(0).disks)
    if cache:
        add_cache(solid)
    return r


def choose(storage: Sequence[Disk], spares: Optional[int], width: Optional[int]) -> str:
    """The layout for these storage disks when none was asked for."""
    n = len(storage) - (spares or 0)
    fixed = spares is not None
    ssd = storage[0].solid_state
    if n <= 1:
        return "single"
    if n == 2:
        return "mirror"
    if n <= 4:
        return "raidz1"
    if n <= 6:
        return "raidz1" if ssd or fixed else "raidz2"
    if width is not None:
        return "mirror" if width <= 2 else "raidz1" if width <= 6 else "raidz2" if width <= 12 else "raidz3"
    if n > 16 or (n > 7 and storage[0].bytes > 1500 * 10**9):
        if not fixed or any(n % w == 0 for w in range(7, 13)):
            return "raidz2"
        return "raidz3" if n == 13 else "raidz1"
    if ssd and n < 12:
        return "raidz2" if n > 6 else "raidz1"
    if n % 2 == 0 or not fixed:
        return "mirror"
    return {15: "raidz1", 13: "raidz3"}.get(n, "raidz2")


def take_spares(disks: list[Disk], count: int, plan: dict[str, Any]) -> list[Disk]:
    """The largest disks are the spares (they can stand in for any other)."""
    if count > 0:
        plan["spares"] = [d.device() for d in disks[len(disks) - count:]]
        return disks[:len(disks) - count]
    return disks


def stripe(disks: list[Disk], width: int, vtype: str, data_disks: int, fixed_width: bool,
           plan: dict[str, Any]) -> None:
    """vdevs of `width` disks; with a fixed width, disks left over stay out."""
    vdevs, capacity = [], 0
    while disks:
        capacity += data_disks * disks[0].bytes
        vdevs.append({"type": vtype, "devices": [d.device() for d in disks[:width]]})
        disks = disks[width:]
        if fixed_width and len(disks) < width:
            break
    plan["vdevs"] = vdevs
    plan["capacity"] = capacity


def plan_single(disks: list[Disk], spares: Optional[int], width: Optional[int]) -> dict[str, Any]:
    if spares:
        raise LayoutError("spares are not allowed for a single disk pool")
    return {"vdevs": [disks[0].device()], "capacity": disks[0].size}


def plan_mirror(disks: list[Disk], spares: Optional[int], width: Optional[int]) -> dict[str, Any]:
    n = len(disks)
    if n < 2:
        raise LayoutError("at least 2 disks are required for mirroring")
    fixed_width = width is not None
    if width is None:
        width = 2
    else:
        usable = n
        if spares is not None:
            if spares >= n:
                raise LayoutError(f"{spares} is an invalid number of spares for {n} disks")
            usable -= spares
        if width < 2 or width > usable:
            raise LayoutError(f"{width} is an invalid width for mirroring and {usable} disks")
    if spares is None:
        if fixed_width:
            spares = n % width
        elif n in (2, 4):
            spares = 0
        else:
            spares = math.ceil(n / 16)
            spares += (n - spares) % width
    elif spares > n - width:
        raise LayoutError(f"{spares} is an invalid number of spares for {n} disks")
    plan: dict[str, Any] = {}
    disks = take_spares(disks, spares, plan)
    stripe(disks, width, "mirror", 1, fixed_width, plan)
    return plan


def plan_raidz(kind: str, disks: list[Disk], spares: Optional[int], width: Optional[int]) -> dict[str, Any]:
    vtype, parity, narrowest, widest, per_spare, whole = RAIDZ[kind]
    n = len(disks)
    if n in whole:
        narrowest = widest = n
    fixed_spares = spares is not None
    if spares is None:
        spares = min(2, n // per_spare)
    elif spares >= n:
        raise LayoutError(f"{spares} is an invalid number of spares for {n} disks")
    fixed_width = width is not None
    if width is not None:
        if width < narrowest or width > n:
            raise LayoutError(f"{width} is an invalid width for {vtype} and {n} disks "
                              f"(min: {narrowest}, default max: {widest})")
        if not fixed_spares:
            spares = n % width
        elif n - spares < width:
            raise LayoutError(f"{width} is an invalid width for {vtype} and {spares} spares")
    else:
        # The narrowest width that divides the disks left (narrow stripes
        # perform better); else one more spare, unless the spares are fixed.
        while n - spares >= narrowest:
            fits = [w for w in range(narrowest, widest + 1) if (n - spares) % w == 0]
            if fits:
                width = fits[0]
                break
            if fixed_spares:
                raise LayoutError(f"no acceptable {vtype} layout is possible with {n} disks and {spares} "
                                  + ("spare" if spares == 1 else "spares"))
            spares += 1
    if n - spares < narrowest or width is None:
        raise LayoutError(f"no acceptable {vtype} layout is possible with {n} disks")
    plan: dict[str, Any] = {}
    disks = take_spares(disks, spares, plan)
    stripe(disks, width, vtype, width - parity, fixed_width, plan)
    return plan


def compute(disks: Sequence[Disk], layout: Optional[str] = None, spares: Optional[int] = None,
            cache: bool = True, width: Optional[int] = None) -> dict[str, Any]:
    """The pool layout for these disks (LayoutError says why there is none)."""
    r = roles(groups(disks), cache)
    if not r.storage:
        raise LayoutError("no primary storage disks available")
    if spares is not None:
        if spares > 0 and len(r.storage) - spares < 2:
            raise LayoutError(f"too many spares ({spares}) for this disk configuration")
        if len(r.storage) - spares in PRIME_COUNTS:
            raise LayoutError(f"invalid number of spares ({spares}) for this disk configuration")
    layout = layout or choose(r.storage, spares, width)
    if layout not in LAYOUT_NAMES:
        raise LayoutError(f"unknown layout {layout}")
    storage = list(r.storage)
    if layout == "single":
        plan = plan_single(storage, spares, width)
    elif layout == "mirror":
        plan = plan_mirror(storage, spares, width)
    else:
        plan = plan_raidz(layout, storage, spares, width)
    if r.logs:
        plan["logs"] = [d.device() for d in r.logs]
    if r.cache:
        plan["cache"] = [d.device() for d in r.cache]
    return plan


# -- where the disks come from ----------------------------------------------------------------

def from_lsblk(data: dict[str, Any]) -> list[Disk]:
    """The whole disks of `lsblk --json --bytes --output NAME,TYPE,SIZE,RM,ROTA,MOUNTPOINTS`
    that nothing mounts (their partitions are not looked at, as Triton's)."""
    disks = []
    for dev in data.get("blockdevices", []):
        if dev.get("type") != "disk":
            continue
        name = str(dev.get("name", ""))
        if ZVOL.fullmatch(name) or any(m is not None for m in dev.get("mountpoints") or []):
            continue
        disks.append(Disk(name=name, size=int(dev.get("size") or 0), removable=_flag(dev.get("rm")),
                          solid_state=not _flag(dev.get("rota"))))
    return disks


def _flag(value: Any) -> bool:
    return value in (True, 1, "1", "true")


def from_table(text: str) -> list[Disk]:
    """`-f FILE`: lines of `type name vid pid size removable ssd` (diskinfo -Hp's)."""
    disks = []
    for line in text.strip().split("\n"):
        if not line:
            continue
        row = line.split("\t") + [""] * 7
        disks.append(Disk(kind=row[0], name=row[1], vid=row[2], pid=row[3], size=row[4],
                          removable=row[5] == "yes", solid_state=row[6] == "yes"))
    return disks


def lsblk_disks() -> list[Disk]:
    out = subprocess.run(["lsblk", "--json", "--bytes", "--nodeps", "--output",
                          "NAME,TYPE,SIZE,RM,ROTA,MOUNTPOINTS"], capture_output=True, text=True)
    if out.returncode != 0:
        raise LayoutError(f"lsblk failed: {out.stderr.strip()}")
    return from_lsblk(json.loads(out.stdout))


# -- the command ---------------------------------------------------------------------------------

USAGE = "usage: disklayout [-c] [-f file] [-s spares] [-w width] [-e disk,...] [<layout>]"


class UsageError(Exception):
    pass


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """getopt `ce:f:s:w:`. A value may be in the same word as its option, with
    or without a space ("-s2", "-s 2": joysetup.sh passes "-s $spares" as one
    word); surrounding blanks are dropped."""
    opts: dict[str, Any] = {"cache": True, "exclude": [], "file": None, "spares": None, "width": None,
                            "layout": None}
    args = list(argv)
    while args and args[0].startswith("-") and args[0] != "-":
        word = args.pop(0)
        if word == "--":
            break
        letters = word[1:]
        while letters:
            letter, letters = letters[0], letters[1:]
            if letter == "c":
                opts["cache"] = False
                continue
            if letter not in "efsw":
                raise UsageError(f"unknown option -{letter}")
            if letters:
                value = letters
            elif args:
                value = args.pop(0)
            else:
                raise UsageError(f"option -{letter} needs a value")
            letters = ""
            value = value.strip()
            if letter == "e":
                opts["exclude"] = [d.strip() for d in value.lower().split(",") if d.strip()]
            elif letter == "f":
                opts["file"] = value
            elif letter == "s":
                if not value.isdigit():
                    raise UsageError(f"invalid value for number of spares: {value}")
                opts["spares"] = int(value)
            else:
                if not value.isdigit() or int(value) < 2:
                    raise UsageError(f"invalid width: {value}")
                opts["width"] = int(value)
    if args:
        opts["layout"] = args[0]
    return opts


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(e)
        print(USAGE)
        print("supported layouts:\n\t" + "\n\t".join(LAYOUT_NAMES))
        return 255
    try:
        if opts["file"]:
            try:
                with open(opts["file"], encoding="utf-8") as f:
                    disks = from_table(f.read())
            except (OSError, UnicodeDecodeError) as e:
                raise LayoutError(f"unable to read {opts['file']}: {e}")
        else:
            disks = lsblk_disks()
        disks = [d for d in disks if d.name.lower() not in opts["exclude"]]
        plan = compute(disks, opts["layout"], opts["spares"], opts["cache"], opts["width"])
    except LayoutError as e:
        print(f"fatal error: {e}")
        return 255
    print(json.dumps(plan, indent="\t", ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
