#!/usr/bin/python3
"""Build figures: cold build, warm rebuild, rebuild after touching a file in
mkosi.extra/, and the sizes of what the build writes.

    make bench                 # warm figures (needs one earlier build)
    bench/build.py --cold      # also a cold build: drops mkosi's incremental
                               # cache and the ZFS module cache first (the
                               # package download cache stays: the network
                               # is not what we measure)

Prints one line per figure; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hooks.platform_dir import layout  # noqa: E402


def build(label: str) -> float:
    start = time.monotonic()
    with (REPO / "out/bench-build.log").open("w") as log:
        subprocess.run(["make", "-C", str(REPO), "build"], check=True, stdout=log, stderr=subprocess.STDOUT)
    took = time.monotonic() - start
    print(f"{label:<40} {took:7.1f} s", flush=True)
    return took


def mib(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:7.1f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cold", action="store_true", help="measure a cold build first")
    args = ap.parse_args()
    if args.cold:
        shutil.rmtree(REPO / "mkosi.cache", ignore_errors=True)
        shutil.rmtree(REPO / "mkosi.builddir", ignore_errors=True)
        (REPO / "mkosi.cache").mkdir()
        (REPO / "mkosi.builddir").mkdir()
        build("cold build (no image or ZFS cache)")
    build("warm rebuild, nothing changed")
    extra = sorted(p for p in (REPO / "mkosi.extra").rglob("*") if p.is_file())[0]
    os.utime(extra)
    build(f"rebuild after touching {extra.relative_to(REPO)}")

    pdir = (REPO / "out/platform-latest").resolve()
    paths = layout(pdir.name.removeprefix("platform-"), "x86_64")
    print(f"{'squashfs':<40} {mib(pdir / paths['rootfs'])}")
    print(f"{'initrd':<40} {mib(pdir / paths['initrd'])}")
    print(f"{'vmlinuz':<40} {mib(pdir / paths['kernel'])}")
    print(f"{'platform tgz':<40} {mib(pdir.with_name(pdir.name + '.tgz'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
