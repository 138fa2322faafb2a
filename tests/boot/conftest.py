"""Fixtures for booting the real platform image in QEMU.

One HTTP server serves out/ for the whole run; one node, PXE-booted the way
booter boots a compute node, is shared by the tests that only look at it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import pytest

from hooks import bootfiles
from hooks.config import load
from tests.conftest import REPO
from tests.lib.http import HttpServer
from tests.lib.image import Platform
from tests.lib.node import Node

sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_guestroot as guestroot  # noqa: E402

PASSWORD = "triton-test-console"

# The node's own SHA-512 crypt (Python's crypt module is gone in 3.13).
ROOT_SHADOW = guestroot.sha512_crypt(PASSWORD)

NODE_CONFIG = (
    "# node.config as booter delivers it (subset)\n"
    f"root_shadow='{ROOT_SHADOW}'\n"
    "datacenter_name='test-dc'\n"
    "dns_domain='test.example'\n"
)
NETWORKING = json.dumps({"nictags": [{"name": "admin", "mac": Node.MAC}], "resolvers": ["10.0.2.3"]})


@pytest.fixture(scope="session")
def http(platform: Platform):
    """Serves out/ at /out and the files booter would inject at /inject."""
    with HttpServer() as server:
        server.serve_dir("/out", platform.path.parent)
        server.routes["/inject/node.config"] = NODE_CONFIG.encode()
        server.routes["/inject/networking.json"] = NETWORKING.encode()
        yield server


def platform_url(http: HttpServer, platform: Platform) -> str:
    return http.guest_url(f"/out/{platform.path.name}")


@pytest.fixture(scope="session")
def logs() -> Path:
    d = REPO / "out/test-logs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def pxe_script(http: HttpServer, platform: Platform, extra_args: list[str],
               modules: Sequence[bootfiles.Module] = (), inject: str = "/inject") -> str:
    """booter's boot script for this node: the build's boot.ipxe template with
    booter's module lines (node.config and networking.json from `inject` on
    our HTTP server, as booter serves them), preceded by the server's URL."""
    own = [bootfiles.Module(http.guest_url(f"{inject}/node.config"), "/etc/node.config"),
           bootfiles.Module(http.guest_url(f"{inject}/networking.json"), "/etc/triton-networking.json")]
    if http.lookup(f"{inject}/networking.json.hash") is not None:
        own.append(bootfiles.Module(http.guest_url(f"{inject}/networking.json.hash"),
                                    "/etc/triton-networking.json.hash"))
    text = bootfiles.boot_ipxe(
        platform.stamp, {k: str(v.relative_to(platform.path)) for k, v in platform.paths.items()},
        load(),
        modules=[*own, *modules],
        extra_args=extra_args,
    )
    head, _, rest = text.partition("\n")
    return f"{head}\nset base-url {platform_url(http, platform)}\n{rest}"


@pytest.fixture(scope="session")
def pxe_node(platform: Platform, http: HttpServer, logs: Path, tmp_path_factory: pytest.TempPathFactory):
    """A node PXE-booted (QEMU's iPXE ROM, TFTP, then HTTP) to its login prompt, logged in."""
    tftp = tmp_path_factory.mktemp("tftp")
    (tftp / "boot.ipxe").write_text(pxe_script(http, platform, []))
    node = Node.pxe(tftp, "boot.ipxe", logs / "pxe-node.log")
    try:
        node.seconds_to_login = node.wait_for_login()
        node.login(PASSWORD)
        # Tests look at a node that has finished booting, as an operator would.
        node.execute("systemctl is-system-running --wait", timeout=300)
        yield node
    finally:
        node.close()
