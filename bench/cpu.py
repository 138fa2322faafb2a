#!/usr/bin/python3
"""Where a boot's CPU goes: our direct boot against live-boot's, booting the
same kernel and squashfs (the gap bench/boot.py shows, issue 3).

Each boot gets a probe on its kernel command line (`systemd.run=`, so
live-boot needs no login): a Python one-liner that the root's systemd runs
once basic.target is reached. It prints, on the console:
  - uptime and the guest's busy CPU seconds (user, system) from /proc/stat;
  - PID 1's own CPU seconds;
  - the CPU of the biggest cgroups (init.scope holds PID 1 and the
    generators; system.slice the services; cgroups made in our initrd carry
    over into the root, so ours include the initrd's services).
Meanwhile the QEMU monitor is asked `info jit`: under TCG, code the guest
runs is translated into a cache of limited size (a full cache is flushed
and everything retranslated), and writes to pages holding translated code
invalidate it (as when the initrd's freed pages are reused).
"""

from __future__ import annotations

import re
import socket
import sys
import threading
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.lib.http import HttpServer  # noqa: E402
from tests.lib.image import Platform  # noqa: E402
from tests.lib.node import Node  # noqa: E402

OUT = REPO / "out/bench"
CONSOLE = "console=ttyS1,115200n8"

PROBE = b"""
import os
tty = open("/dev/ttyS1", "w")
up = open("/proc/uptime").read().split()[0]
cpu = open("/proc/stat").readline().split()
pid1 = open("/proc/1/stat").read().split()
hz = os.sysconf("SC_CLK_TCK")
print("PROBE", up, int(cpu[1]) / hz, int(cpu[3]) / hz, (int(pid1[13]) + int(pid1[14])) / hz, file=tty)
cg = []
for root, dirs, files in os.walk("/sys/fs/cgroup"):
    if root != "/sys/fs/cgroup" and "cpu.stat" in files:
        d = dict(line.split() for line in open(root + "/cpu.stat"))
        cg.append((int(d["usage_usec"]) / 1e6, root[15:]))
for usec, name in sorted(cg, reverse=True)[:8]:
    print("CGROUP", round(usec, 1), name, file=tty)
print("PROBE-END", file=tty, flush=True)
"""


def probe_args() -> list[str]:
    # The kernel command line has no room for the script as text, and
    # systemd would expand its `$`s: it travels zlib-compressed as a hex
    # integer, with no quote, dollar or space inside.
    z = zlib.compress(PROBE, 9)
    code = f"import zlib;exec(zlib.decompress((0x{z.hex()}).to_bytes({len(z)})))"
    return [f"systemd.run=\"/usr/bin/python3 -c '{code}'\"",
            "systemd.run_success_action=none", "systemd.run_failure_action=none"]


class Jit:
    """Samples `info jit` from the QEMU monitor socket every few seconds."""

    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.last: dict[str, int] = {}
        self.stop = False
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def query(self) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.sock))
            s.settimeout(5)
            s.sendall(b"info jit\n")
            buf, end = b"", time.monotonic() + 5
            while time.monotonic() < end and b"TB invalidate count" not in buf:
                buf += s.recv(65536)
        text = buf.decode(errors="replace")
        for key in ("TB count", "TB flush count", "TB invalidate count"):
            if m := re.search(key + r"\s+(\d+)", text):
                self.last[key] = int(m.group(1))

    def loop(self) -> None:
        while not self.stop:
            time.sleep(3)
            try:
                self.query()
            except OSError:
                pass


def run(label: str, kernel: Path, initrd: Path, append: list[str]) -> None:
    sock = OUT / f"cpu-{label}.monitor"
    sock.unlink(missing_ok=True)
    node = Node.direct(kernel, initrd, [*append, *probe_args()], OUT / f"cpu-{label}.log",
                       extra=["-monitor", f"unix:{sock},server,nowait"])
    jit = Jit(sock)
    jit.thread.start()
    with node:
        node.child.expect(r"PROBE ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", timeout=900)
        up, user, system, pid1 = (float(x) for x in node.child.match.groups())
        node.child.expect(r"(?s)(.*?)PROBE-END", timeout=120)
        groups = re.findall(r"CGROUP ([\d.]+) (\S+)", node.child.match.group(1))
        node.child.expect(r"login: ", timeout=600)
        login = time.monotonic() - node.started
        jit.stop = True
        jit.query()
    print(f"{label}: login {login:.1f} s; at basic.target ({up:.1f} s up): busy {user + system:.1f} s "
          f"(user {user:.1f}, system {system:.1f}), PID 1 {pid1:.1f} s", flush=True)
    print("    cgroups: " + ", ".join(f"{name} {sec} s" for sec, name in groups[:6]), flush=True)
    print(f"    TCG at login: {jit.last.get('TB count', '?')} translated blocks, "
          f"{jit.last.get('TB flush count', '?')} cache flushes, "
          f"{jit.last.get('TB invalidate count', '?')} invalidated", flush=True)


def main() -> int:
    platform = Platform((REPO / "out/platform-latest").resolve())
    lb_initrd = OUT / "live-boot.initrd"
    if not lb_initrd.exists():
        print(f"no {lb_initrd}: run bench/boot.py once first (it builds it)", file=sys.stderr)
        return 2
    with HttpServer() as http:
        http.serve_dir("/out", platform.path.parent)
        url = http.guest_url(f"/out/{platform.path.name}/x86_64/filesystem.squashfs")
        run("ours", platform.kernel, platform.initrd, [CONSOLE, f"fetch={url}"])
        run("live-boot", platform.kernel, lb_initrd, ["boot=live", f"fetch={url}", "ip=dhcp", CONSOLE])
    return 0


if __name__ == "__main__":
    sys.exit(main())
