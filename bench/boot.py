#!/usr/bin/python3
"""Boot figures, side by side in one run, under the same QEMU (TCG unless
TRITON_TEST_KVM=1), kernel, squashfs and HTTP server:

  ours, PXE          QEMU's iPXE ROM -> TFTP boot script -> HTTP kernel,
                     initrd; our initrd fetches and verifies the squashfs
  live-boot, PXE     the same, with Debian's live-boot initramfs for the
                     same kernel, booting the same squashfs with
                     `boot=live fetch=` (what Triton's linux-live PI used;
                     it does not verify)
  ours, direct       -kernel/-initrd, same initrd and fetch
  live-boot, direct  -kernel/-initrd with live-boot's initramfs

For each: seconds from QEMU start to the login prompt and to the root's
systemd, seconds the squashfs download took (measured by the HTTP server,
first to last byte), and the RAM in use once booted (`free`; ours only: the
root password reaches live-boot's root by no documented way).

  bench/boot.py [--runs N] [--tb-size MIB]

With N runs the four boots take turns (so a slow spell of the host hits
all alike) and a summary gives each one's median and range. --tb-size
gives QEMU's TCG a translation cache of MIB MiB for every boot: with the
default (1 GiB) a boot that has translated more code than fits throws all
of its translations away near the login prompt and pays to translate them
again, an emulator cost that real hardware does not have. Needs a built
platform (make); builds the live-boot initramfs on first use
(bench/live-boot/).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.lib.pxe import NODE_CONFIG, PASSWORD, pxe_script  # noqa: E402
from tests.lib.cpio_initrd import initrd_with_files  # noqa: E402
from tests.lib.http import HttpServer  # noqa: E402
from tests.lib.image import Platform  # noqa: E402
from tests.lib.node import Node  # noqa: E402

OUT = REPO / "out/bench"
CONSOLE = "console=ttyS1,115200n8"


def live_boot_initrd() -> Path:
    initrd = OUT / "live-boot.initrd"
    if not initrd.exists():
        print("building Debian's live-boot initramfs (bench/live-boot) ...", flush=True)
        subprocess.run(["mkosi", "-C", str(REPO / "bench/live-boot"), "--force", "build"], check=True,
                       stdout=subprocess.DEVNULL)
    return initrd


def download_seconds(http: HttpServer, since: int) -> str:
    spans = [e for e in http.timings[since:] if e[0].endswith("filesystem.squashfs")]
    return f"{spans[-1][2] - spans[-1][1]:6.1f}" if spans else "     -"


def run(label: str, node: Node, http: HttpServer, since: int, login: bool) -> tuple[float, float]:
    with node:
        # The root's systemd greets last ("Welcome to ..."; our initrd's own
        # systemd greets first): the seconds to it are what the initrd costs.
        root_at = None
        while True:
            i = node.child.expect([r"Welcome to [^\r\n]*", r"login: "], timeout=600)
            if i == 1:
                break
            root_at = time.monotonic() - node.started
        seconds = time.monotonic() - node.started
        ram = "-"
        if login:
            node.login(PASSWORD)
            node.execute("systemctl is-system-running --wait", timeout=300)
            ram = node.succeed("free -m | awk '/^Mem:/ {print $3}'") + " MiB"
    to_root = f"{root_at:6.1f}" if root_at else "     -"
    print(f"{label:<22} login {seconds:6.1f} s   root's systemd at {to_root} s   "
          f"download {download_seconds(http, since)} s   RAM used {ram}", flush=True)
    return seconds, root_at or float("nan")


def live_boot_pxe_script(served: Callable[[Path], str], platform: Platform, initrd: Path) -> str:
    """What booter would serve a live-boot PI: the same kernel, live-boot's
    initramfs, the same squashfs and console arguments as our boot.ipxe."""
    return (f"#!ipxe\nkernel {served(platform.kernel)} initrd=initrd boot=live ip=dhcp console=tty0 {CONSOLE} "
            f"BOOTIF=01-${{netX/mac:hexhyp}} fetch={served(platform.rootfs)}\n"
            f"initrd {served(initrd)}\nboot\n")


def summary(results: dict[str, list[tuple[float, float]]]) -> None:
    print("\nsummary (seconds; median, min-max over runs):")
    for label, runs in results.items():
        cells = []
        for i, what in ((0, "login"), (1, "root's systemd")):
            xs = [r[i] for r in runs]
            cells.append(f"{what} {statistics.median(xs):5.1f} ({min(xs):.1f}-{max(xs):.1f})")
        print(f"  {label:<20} " + "   ".join(cells), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1, help="boots of each kind, taking turns")
    ap.add_argument("--tb-size", type=int, metavar="MIB", help="TCG translation cache for every boot (MiB)")
    opts = ap.parse_args()
    if opts.tb_size:
        os.environ["TRITON_TEST_TB_SIZE"] = str(opts.tb_size)
    platform = Platform((REPO / "out/platform-latest").resolve())
    OUT.mkdir(parents=True, exist_ok=True)
    lb_initrd = live_boot_initrd()
    with HttpServer() as http:
        http.serve_dir("/out", platform.path.parent)
        http.routes["/inject/node.config"] = NODE_CONFIG.encode()
        http.routes["/inject/networking.json"] = b"{}"

        def served(path: Path) -> str:
            """The guest's URL of a file under out/."""
            return http.guest_url(f"/out/{path.relative_to(platform.path.parent)}")

        url = served(platform.rootfs)
        print(f"platform {platform.stamp}: squashfs {platform.rootfs.stat().st_size / 2**20:.1f} MiB, "
              f"initrd {platform.initrd.stat().st_size / 2**20:.1f} MiB, "
              f"live-boot initrd {lb_initrd.stat().st_size / 2**20:.1f} MiB", flush=True)

        tftp = OUT / "tftp"
        tftp.mkdir(exist_ok=True)
        (tftp / "boot.ipxe").write_text(pxe_script(http, platform, []))
        (tftp / "live-boot.ipxe").write_text(live_boot_pxe_script(served, platform, lb_initrd))
        initrd = initrd_with_files(platform.initrd, OUT / "initrd+config", {"/etc/node.config": NODE_CONFIG.encode()})
        kinds = {
            "ours, PXE": (lambda: Node.pxe(tftp, "boot.ipxe", OUT / "pxe.log"), True),
            "live-boot, PXE": (lambda: Node.pxe(tftp, "live-boot.ipxe", OUT / "live-boot-pxe.log"), False),
            "ours, direct": (lambda: Node.direct(platform.kernel, initrd, [CONSOLE, f"fetch={url}"],
                                                 OUT / "direct.log"), True),
            "live-boot, direct": (lambda: Node.direct(platform.kernel, lb_initrd,
                                                      ["boot=live", f"fetch={url}", "ip=dhcp", CONSOLE],
                                                      OUT / "live-boot.log"), False),
        }
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
        for i in range(opts.runs):
            if opts.runs > 1:
                print(f"run {i + 1} of {opts.runs}", flush=True)
            for label, (make, login) in kinds.items():
                n = len(http.timings)
                results[label].append(run(label, make(), http, n, login))
        if opts.runs > 1:
            summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
