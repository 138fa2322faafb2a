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

All four boot the same machine (one NIC, no disks, an SMBIOS system UUID),
so ours takes its hostid, loads ZFS and finds no pool on every kind.

For each: seconds from QEMU start to the login prompt and to the root's
systemd, seconds the squashfs download took (measured by the HTTP server,
first to last byte), and the RAM in use once booted (`free`; ours only: the
root password reaches live-boot's root by no documented way).

  bench/boot.py [--runs N] [--tb-size MIB] [--icount OPTS] [--kinds K ...] [--busy-loop M] [--readme]

--icount shift=N[,sleep=on|off] runs every boot with QEMU's instruction
counting (`-icount OPTS`): while the guest runs, its clock advances 2^N ns
per instruction it executes, so the kernel's timestamps count the guest's
work, not the host's speed or QEMU's translation (sleep=off also skips an
idle guest ahead to its next timer). Every kind then boots with systemd logging to the
kernel's ring buffer (`systemd.log_target=kmsg printk.devkmsg=on`, on all
kinds alike), and each boot prints, on the guest's clock, when the initrd
started, the root was downloaded and verified (ours), the root's systemd
started (switch-root), the pool was imported (when there is one),
multi-user.target was reached and the login prompt's getty started.
--kinds picks some of the four (ours-pxe live-pxe ours-direct live-direct).
--busy-loop M adds to our direct boot's initrd a program that executes M
million instructions (a two-instruction loop, written here as a static
x86-64 ELF) before the root is fetched: the figures must move by it.

--readme writes the run's table (medians; guest-clock milestones with
--icount, and each kind's login against live-boot's over the same path)
into README.md's "Figures" section, between its bench/boot.py markers, so
the README's boot figures are the bench's output, never typed by hand.

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
import re
from typing import Callable, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hooks.platform_dir import first_line  # noqa: E402
from tests.lib.pxe import NODE_CONFIG, PASSWORD, pxe_script  # noqa: E402
from tests.lib.cpio_initrd import initrd_with_files  # noqa: E402
from tests.lib.http import HttpServer  # noqa: E402
from tests.lib.image import Platform  # noqa: E402
from tests.lib.node import Node  # noqa: E402

OUT = REPO / "out/bench"
CONSOLE = "console=ttyS1,115200n8"
# The benched machine's SMBIOS system UUID (every kind boots the same machine).
SYSTEM_UUID = "4c4c4544-0042-3510-8052-b4c04f564d32"
# With --icount: PID 1 logs to the kernel's ring buffer, so its milestones
# reach the console with the kernel's (instruction-counted) timestamps.
KMSG = ["systemd.log_target=kmsg", "printk.devkmsg=on"]
STAMP = r"\[\s*([0-9]+\.[0-9]+)\] "
# Milestones on the guest's clock: (name, pattern, last occurrence?).
MILESTONES = [
    ("initrd", STAMP + r"Run /init as init process", False),
    ("downloaded", STAMP + r"[^\r\n]*triton-fetch-rootfs: downloaded", False),
    ("verified", STAMP + r"[^\r\n]*triton-fetch-rootfs: [^\r\n]*root verified", False),
    ("switch-root", STAMP + r"systemd\[1\]: systemd \d+\S* running in system mode", True),
    ("pool", STAMP + r"[^\r\n]*triton-pool: pool '[^']+' imported", False),
    ("multi-user", STAMP + r"systemd\[1\]: Reached target multi-user\.target", True),
    ("login", STAMP + r"systemd\[1\]: Started serial-getty@ttyS1\.service", True),
]


def busy_loop_elf(million: int) -> bytes:
    """A static x86-64 Linux program that executes `million` million
    instructions (`dec ecx; jnz` half that many times) and exits 0."""
    import struct
    base = 0x400000
    loops = million * 1_000_000 // 2
    code = (b"\xb9" + struct.pack("<I", loops)    # mov ecx, loops
            + b"\xff\xc9\x75\xfc"                 # 1: dec ecx; jnz 1b
            + b"\xb8\x3c\x00\x00\x00\x31\xff\x0f\x05")  # mov eax, 60 (exit); xor edi, edi; syscall
    size = 64 + 56 + len(code)
    ehdr = (b"\x7fELF\x02\x01\x01" + bytes(9)
            + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, base + 120, 64, 0, 0, 64, 56, 1, 64, 0, 0))
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return ehdr + phdr + code


def with_busy_loop(initrd: Path, out: Path, million: int) -> Path:
    """Our initrd plus the busy loop, run before triton-fetch-rootfs."""
    initrd_with_files(initrd, out, {"/usr/local/sbin/bench-busy-loop": busy_loop_elf(million)}, mode=0o755)
    return initrd_with_files(out, out, {"/etc/systemd/system/triton-fetch-rootfs.service.d/bench-busy-loop.conf":
                                        b"[Service]\nExecStartPre=/usr/local/sbin/bench-busy-loop\n"})


def milestones(log: Path) -> dict[str, float]:
    """Guest-clock seconds of each milestone found in a console log."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))
    found = {}
    for name, pattern, last in MILESTONES:
        hits = [float(m.group(1)) for m in re.finditer(pattern, text)]
        if hits:
            found[name] = hits[-1] if last else hits[0]
    return found


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


def run(label: str, node: Node, http: HttpServer, since: int, login: bool,
        log: Optional[Path] = None) -> tuple[float, float, dict[str, float]]:
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
    marks = milestones(log) if log else {}
    if marks:
        print(f"{'':<22} guest clock (s): " + "  ".join(f"{k} {v:.2f}" for k, v in marks.items()), flush=True)
    return seconds, root_at or float("nan"), marks


def live_boot_pxe_script(served: Callable[[Path], str], platform: Platform, initrd: Path,
                         extra: list[str]) -> str:
    """What booter would serve a live-boot PI: the same kernel, live-boot's
    initramfs, the same squashfs and console arguments as our boot.ipxe."""
    more = "".join(f" {a}" for a in extra)
    return (f"#!ipxe\nkernel {served(platform.kernel)} initrd=initrd boot=live ip=dhcp console=tty0 {CONSOLE} "
            f"BOOTIF=01-${{netX/mac:hexhyp}} fetch={served(platform.rootfs)}{more}\n"
            f"initrd {served(initrd)}\nboot\n")


README = REPO / "README.md"
BEGIN = "<!-- bench/boot.py --readme: begin -->"
END = "<!-- bench/boot.py --readme: end -->"
Results = dict[str, list[tuple[float, float, dict[str, float]]]]


def readme_table(results: Results, platform: str, qemu: str, icount: Optional[str], runs: int) -> str:
    """The run as Markdown: a column per kind, a row per milestone (guest
    seconds, medians) and the wall seconds to the login prompt, and our
    login against live-boot's over the same path."""
    labels = list(results)
    med = {label: {name: statistics.median([r[2][name] for r in rs])
                   for name, _, _ in MILESTONES if rs and all(name in r[2] for r in rs)}
           for label, rs in results.items()}
    wall = {label: statistics.median([r[0] for r in rs]) for label, rs in results.items() if rs}
    clock = f"`-icount {icount}`" if icount else "none (wall clock only)"
    out = [f"Platform {platform}, {qemu}, TCG; instruction counting: {clock}; "
           f"{runs} run{'s' if runs != 1 else ''} of each kind, medians.", "",
           "| milestone | " + " | ".join(labels) + " |",
           "|---" * (len(labels) + 1) + "|"]
    for name, _, _ in MILESTONES:
        if any(name in med[label] for label in labels):
            cells = [f"{med[label][name]:.1f}" if name in med[label] else "-" for label in labels]
            out.append(f"| {name} (guest s) | " + " | ".join(cells) + " |")
    out.append("| login (wall s from QEMU's start) | "
               + " | ".join(f"{wall[label]:.1f}" if label in wall else "-" for label in labels) + " |")
    for path in ("PXE", "direct"):
        ours, live = f"ours, {path}", f"live-boot, {path}"
        if "login" in med.get(ours, {}) and "login" in med.get(live, {}):
            ratio, unit = med[ours]["login"] / med[live]["login"], "guest time"
        elif ours in wall and live in wall:
            ratio, unit = wall[ours] / wall[live], "wall time under TCG"
        else:
            continue
        out += ["", f"Ours over {path}, to the login prompt: {ratio:.2f}x live-boot's {unit}."]
    return "\n".join(out) + "\n"


def with_table(readme: str, table: str) -> str:
    """README text with the markers' contents replaced by `table`."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise ValueError(f"{README.name}: needs one {BEGIN!r} line and, after it, one {END!r} line "
                         "in its Figures section for bench/boot.py --readme to write between")
    head, rest = readme.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def summary(results: Results) -> None:
    print("\nsummary (seconds; median, min-max over runs):")
    for label, runs in results.items():
        cells = []
        for i, what in ((0, "login"), (1, "root's systemd")):
            xs = [r[i] for r in runs]
            cells.append(f"{what} {statistics.median(xs):5.1f} ({min(xs):.1f}-{max(xs):.1f})")
        print(f"  {label:<20} wall: " + "   ".join(cells), flush=True)
        for name, _, _ in MILESTONES:
            xs = [r[2][name] for r in runs if name in r[2]]
            if len(xs) == len(runs):
                med = statistics.median(xs)
                spread = 100 * (max(xs) - min(xs)) / med if med else 0.0
                print(f"  {'':<20} guest {name:<12} {med:8.2f} ({min(xs):.2f}-{max(xs):.2f}, "
                      f"spread {spread:.1f} %)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1, help="boots of each kind, taking turns")
    ap.add_argument("--tb-size", type=int, metavar="MIB", help="TCG translation cache for every boot (MiB)")
    ap.add_argument("--icount", metavar="OPTS",
                    help="count guest instructions (QEMU's -icount OPTS, e.g. shift=3); "
                         "milestones on the guest's clock")
    kinds_known = ["ours-pxe", "live-pxe", "ours-direct", "live-direct"]
    ap.add_argument("--kinds", nargs="+", choices=kinds_known, default=kinds_known, help="which boots")
    ap.add_argument("--busy-loop", type=int, metavar="M",
                    help="M million extra instructions in our direct boot's initrd")
    ap.add_argument("--readme", action="store_true",
                    help="write the run's table into README.md's Figures section")
    opts = ap.parse_args()
    if opts.readme and opts.busy_loop:
        ap.error("--readme records the platform as built: leave out --busy-loop")
    if opts.readme:
        with_table(README.read_text(), "")  # the markers are there, before any boot
    if opts.tb_size:
        os.environ["TRITON_TEST_TB_SIZE"] = str(opts.tb_size)
    extra = []
    if opts.icount is not None:
        os.environ["TRITON_TEST_ICOUNT"] = opts.icount
        extra = KMSG
    platform = Platform((REPO / "out/platform-latest").resolve())
    OUT.mkdir(parents=True, exist_ok=True)
    live = [k for k in opts.kinds if k.startswith("live")]
    lb_initrd = live_boot_initrd() if live else platform.initrd
    with HttpServer() as http:
        http.serve_dir("/out", platform.path.parent)
        http.routes["/inject/node.config"] = NODE_CONFIG.encode()
        http.routes["/inject/networking.json"] = b"{}"

        def served(path: Path) -> str:
            """The guest's URL of a file under out/."""
            return http.guest_url(f"/out/{path.relative_to(platform.path.parent)}")

        url = served(platform.rootfs)
        print(f"platform {platform.stamp}: squashfs {platform.rootfs.stat().st_size / 2**20:.1f} MiB, "
              f"initrd {platform.initrd.stat().st_size / 2**20:.1f} MiB"
              + (f", live-boot initrd {lb_initrd.stat().st_size / 2**20:.1f} MiB" if live else ""), flush=True)

        tftp = OUT / "tftp"
        tftp.mkdir(exist_ok=True)
        (tftp / "boot.ipxe").write_text(pxe_script(http, platform, extra))
        (tftp / "live-boot.ipxe").write_text(live_boot_pxe_script(served, platform, lb_initrd, extra))
        initrd = initrd_with_files(platform.initrd, OUT / "initrd+config", {"/etc/node.config": NODE_CONFIG.encode()})
        if opts.busy_loop:
            initrd = with_busy_loop(initrd, OUT / "initrd+config+busy", opts.busy_loop)
            print(f"our direct boot's initrd runs {opts.busy_loop} million extra instructions", flush=True)
        logs = {"ours-pxe": OUT / "pxe.log", "live-pxe": OUT / "live-boot-pxe.log",
                "ours-direct": OUT / "direct.log", "live-direct": OUT / "live-boot.log"}
        # Every kind boots the same machine: a server's firmware reports a
        # system UUID, from which our initrd takes the node's hostid before
        # it looks for the pool (a direct boot without one has no BOOTIF=
        # either, and would stop that step early).
        machine = Node.hardware(SYSTEM_UUID)
        every = {
            "ours-pxe": ("ours, PXE", lambda: Node.pxe(tftp, "boot.ipxe", logs["ours-pxe"], extra=machine), True),
            "live-pxe": ("live-boot, PXE", lambda: Node.pxe(tftp, "live-boot.ipxe", logs["live-pxe"],
                                                            extra=machine), False),
            "ours-direct": ("ours, direct", lambda: Node.direct(platform.kernel, initrd,
                                                                [CONSOLE, f"fetch={url}", *extra],
                                                                logs["ours-direct"], extra=machine), True),
            "live-direct": ("live-boot, direct", lambda: Node.direct(
                platform.kernel, lb_initrd, ["boot=live", f"fetch={url}", "ip=dhcp", CONSOLE, *extra],
                logs["live-direct"], extra=machine), False),
        }
        kinds = {k: every[k] for k in opts.kinds}
        results: Results = {v[0]: [] for v in kinds.values()}
        for i in range(opts.runs):
            if opts.runs > 1:
                print(f"run {i + 1} of {opts.runs}", flush=True)
            for key, (label, make, login) in kinds.items():
                n = len(http.timings)
                results[label].append(run(label, make(), http, n, login,
                                          logs[key] if opts.icount is not None else None))
        if opts.runs > 1:
            summary(results)
        if opts.readme:
            qemu = first_line(["qemu-system-x86_64", "--version"]).split(" (")[0].replace("emulator version ", "")
            README.write_text(with_table(README.read_text(), readme_table(
                results, platform.stamp, qemu, opts.icount, opts.runs)))
            print(f"wrote the table into {README}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
