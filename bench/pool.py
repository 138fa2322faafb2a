#!/usr/bin/python3
"""System pool figures, PXE-booting the built platform in QEMU (TCG unless
TRITON_TEST_KVM=1), one boot after another on the same two blank disks:

  no pool        no disks: the node boots not set up
  setup          an answers file: the initrd creates `zones` (mirror)
  pool           the next boot imports it and mounts its datasets

For each: seconds from QEMU start to the login prompt, and, from the
console's kernel timestamps, when the initrd's pool import started, when the
datasets were mounted and the node's identity restored, and when systemd
switched root. Needs a built platform (make).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hooks.bootfiles import Module  # noqa: E402
from tests.lib.pxe import NETWORKING, NODE_CONFIG, pxe_script  # noqa: E402
from tests.lib.http import HttpServer  # noqa: E402
from tests.lib.image import Platform  # noqa: E402
from tests.lib.node import KVM, Node  # noqa: E402

OUT = REPO / "out/bench"
UUID = "5a1e0c1d-2b3c-4d5e-8f90-a1b2c3d4e5f6"
MARKS = {
    "root verified": r"fetch-rootfs\[\d+\]: triton-fetch-rootfs: platform \S+: root verified",
    # Once journald runs, the initrd's systemd logs to the journal, not to the
    # console's kernel log: these are triton-pool's own lines and journald's.
    "pool work starts": r"in-sysroot\[\d+\]: triton-pool: hostid",
    "pool imported": r"in-sysroot\[\d+\]: triton-pool: (pool 'zones' imported|node is NOT SET UP|created pool)",
    "identity restored": r"in-sysroot\[\d+\]: triton-pool: restored machine-id",
    "switch-root": r"systemd-journald\[\d+\]: Received SIGTERM from PID 1",
}


def marks(log: str) -> dict[str, float]:
    found = {}
    for name, pattern in MARKS.items():
        m = re.search(r"\[\s*(\d+\.\d+)\]\s+" + pattern, log)
        if m:
            found[name] = float(m.group(1))
    return found


def boot(label: str, http: HttpServer, platform: Platform, disks: list[Path], answers: bool) -> None:
    tftp = OUT / f"tftp-{label}"
    tftp.mkdir(parents=True, exist_ok=True)
    modules = [Module(http.guest_url("/inject/answers.json"), "/etc/triton/answers.json")] if answers else []
    (tftp / "boot.ipxe").write_text(pxe_script(http, platform, [], modules))
    log = OUT / f"pool-{label}.log"
    with Node.pxe(tftp, "boot.ipxe", log, extra=Node.hardware(UUID, disks)) as node:
        seconds = node.wait_for_login(timeout=600)
    m = marks(log.read_text(errors="replace"))
    kernel = ", ".join(f"{k} {v:.1f}" for k, v in m.items())
    spent = ""
    if "pool work starts" in m and "switch-root" in m:
        spent = f"; pool work to switch-root {m['switch-root'] - m['pool work starts']:.1f} s"
    print(f"{label:<8} login {seconds:6.1f} s   kernel clock: {kernel or '-'}{spent}", flush=True)


def main() -> int:
    platform = Platform((REPO / "out/platform-latest").resolve())
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OUT) as tmp, HttpServer() as http:
        disks = [Path(tmp) / "pool0.qcow2", Path(tmp) / "pool1.qcow2"]
        for d in disks:
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(d), "2G"], check=True)
        http.serve_dir("/out", platform.path.parent)
        http.routes["/inject/node.config"] = NODE_CONFIG.encode()
        http.routes["/inject/networking.json"] = NETWORKING.encode()
        http.routes["/inject/answers.json"] = json.dumps(
            {"pool": {"layout": "mirror", "disks": ["vda", "vdb"]}}).encode()
        print(f"platform {platform.stamp}, PXE boots, {'KVM' if KVM else 'TCG'}")
        t = time.monotonic()
        boot("no pool", http, platform, [], answers=False)
        boot("setup", http, platform, disks, answers=True)
        boot("pool", http, platform, disks, answers=False)
        print(f"({time.monotonic() - t:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
