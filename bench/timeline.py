#!/usr/bin/python3
"""Line up two boots' root phases, unit by unit.

Boot both with `systemd.log_target=kmsg printk.devkmsg=on` on the kernel
command line (bench/boot.py's logs do not have it: PID 1's messages stop
reaching the console once journald runs). Each console log is then read
from its last "running in system mode" (the root's systemd) on; every
Started/Finished/Reached/Mounted line is printed with its seconds since
then in both boots, in the order of the second boot.

  bench/timeline.py live-boot.log ours.log
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

EVENT = re.compile(r"\[\s*([0-9.]+)\] systemd\[1\]: (Finished|Started|Reached target|Mounted|Populated) ?(\S*)")


def root_events(log: Path) -> dict[str, float]:
    if not log.is_file():
        raise SystemExit(f"{log}: no such console log (of a boot with systemd.log_target=kmsg printk.devkmsg=on)")
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))
    root_systemd = r"\[\s*([0-9.]+)\] systemd\[1\]: systemd \S+ running in system mode"
    starts = [float(m.group(1)) for m in re.finditer(root_systemd, text)]
    if not starts:
        raise SystemExit(f"{log}: no 'running in system mode' line: "
                         "boot with systemd.log_target=kmsg printk.devkmsg=on")
    events: dict[str, float] = {}
    for m in EVENT.finditer(text):
        t = float(m.group(1))
        if t >= starts[-1]:
            events.setdefault(f"{m.group(2)} {m.group(3)}".strip(), t - starts[-1])
    return events


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    a, b = (root_events(Path(p)) for p in argv)
    print(f"{Path(argv[0]).name[:8]:>8} {Path(argv[1]).name[:8]:>8}  seconds since the root's systemd started")
    for key in sorted(set(a) | set(b), key=lambda k: b.get(k, a.get(k, 0.0))):
        cells = [f"{d[key]:8.1f}" if key in d else "       -" for d in (a, b)]
        print(f"{cells[0]} {cells[1]}  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
