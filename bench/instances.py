#!/usr/bin/python3
"""Container instance figures on one PXE-booted node in QEMU (TCG unless
TRITON_TEST_KVM=1; 1 vCPU, 2 GiB unless BENCH_MEMORY_MIB), with one blank
disk set up as `zones` from an answers file:

  import         seconds for `imgadm import` of the test image over HTTP
  create         seconds from `vmadm create` until it returns (the
                 instance's own systemd has booted), for each instance
  memory         the unit's MemoryCurrent of each idle instance, and the
                 node's MemAvailable after each create
  how many       instances are created (each with a NIC on admin0, 64 MiB
                 cap, autoboot) until a create fails, MemAvailable falls
                 under BENCH_FLOOR_MIB (default 200), or BENCH_MAX
                 (default 40) are running; then all are checked running

Needs a built platform (make); builds the test image if needed.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hooks.bootfiles import Module  # noqa: E402
from tests.lib.pxe import NETWORKING, NODE_CONFIG, PASSWORD, pxe_script  # noqa: E402
from tests.lib import container_image  # noqa: E402
from tests.lib.http import HttpServer  # noqa: E402
from tests.lib.image import Platform  # noqa: E402
from tests.lib.node import KVM, Node  # noqa: E402

OUT = REPO / "out/bench"
UUID = "3b4c5d6e-7f80-4912-a3b4-c5d6e7f80912"
MEMORY = int(os.environ.get("BENCH_MEMORY_MIB", "2048"))
FLOOR = int(os.environ.get("BENCH_FLOOR_MIB", "200"))
MAX = int(os.environ.get("BENCH_MAX", "40"))


def mem_available(node: Node) -> int:
    return int(node.succeed("awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo"))


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    platform = Platform((REPO / "out/platform-latest").resolve())
    manifest = container_image.build(REPO, OUT / "container-image-build.log")
    image = container_image.load(manifest)
    work = Path(tempfile.mkdtemp(prefix="bench-instances-"))
    disk = work / "zones0.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "8G"], check=True)
    answers = json.dumps({"pool": {"layout": "single", "disks": ["/dev/disk/by-id/virtio-zones0"]}})
    print(f"platform {platform.stamp}, {'KVM' if KVM else 'TCG'}, 1 vCPU, {MEMORY} MiB; "
          f"image {image['name']}@{image['version']} ({image['files'][0]['size'] / 2**20:.1f} MiB)")
    with HttpServer() as http:
        http.serve_dir("/out", platform.path.parent)
        http.serve_dir("/images", manifest.parent)
        http.routes["/inject/node.config"] = NODE_CONFIG.encode()
        http.routes["/inject/networking.json"] = NETWORKING.encode()
        http.routes["/inject/answers.json"] = answers.encode()
        tftp = work / "tftp"
        tftp.mkdir()
        mods = [Module(http.guest_url("/inject/answers.json"), "/etc/triton/answers.json")]
        (tftp / "boot.ipxe").write_text(pxe_script(http, platform, [], mods))
        with Node.pxe(tftp, "boot.ipxe", OUT / "instances-node.log", memory_mib=MEMORY,
                      extra=Node.hardware(UUID, [disk])) as node:
            node.wait_for_login(600)
            node.login(PASSWORD)
            node.execute("systemctl is-system-running --wait", timeout=300)
            base = mem_available(node)
            print(f"node booted: MemAvailable {base} MiB with no instance")
            began = time.monotonic()
            node.succeed(f"imgadm import {http.guest_url('/images/' + manifest.name)}", 600)
            print(f"imgadm import: {time.monotonic() - began:.1f} s")
            creates: list[float] = []
            memories: list[float] = []
            why = f"reached BENCH_MAX={MAX}"
            for i in range(MAX):
                uuid = f"00000000-0000-4000-8000-{i:012d}"
                body = json.dumps({"uuid": uuid, "alias": f"small{i}", "image_uuid": image["uuid"],
                                   "max_physical_memory": 64, "quota": 1,
                                   "nics": [{"nic_tag": "admin", "ip": f"10.0.2.{100 + i}",
                                             "netmask": "255.255.255.0"}]})
                node.succeed(f"echo '{body}' > /tmp/p.json")
                began = time.monotonic()
                rc, out = node.execute("vmadm create -f /tmp/p.json", timeout=600)
                took = time.monotonic() - began
                if rc != 0:
                    why = f"create {i + 1} failed: {out.strip().splitlines()[-1] if out.strip() else rc}"
                    break
                creates.append(took)
                node.execute(f"systemctl -M {uuid} is-system-running --wait", timeout=300)
                mem = int(node.succeed(f"systemctl show -P MemoryCurrent triton-instance@{uuid}"))
                memories.append(mem / 2**20)
                avail = mem_available(node)
                print(f"  instance {i + 1}: create {took:.1f} s, idle {mem / 2**20:.1f} MiB, "
                      f"node MemAvailable {avail} MiB", flush=True)
                if avail < FLOOR:
                    why = f"MemAvailable {avail} MiB < {FLOOR} MiB"
                    break
            running = node.succeed("vmadm list -H -o state | grep -c running || true")
            print(f"stopped creating: {why}")
            print(f"instances running at once: {running} (of {len(creates)} created)")
            if creates:
                print(f"vmadm create to running: median {statistics.median(creates):.1f} s, "
                      f"min {min(creates):.1f}, max {max(creates):.1f}")
                print(f"memory per idle instance: median {statistics.median(memories):.1f} MiB; "
                      f"node MemAvailable fell {(base - mem_available(node)) / len(creates):.1f} MiB per instance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
