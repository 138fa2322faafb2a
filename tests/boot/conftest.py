"""Fixtures for booting the real platform image in QEMU.

One HTTP server serves out/ for the whole run; one node, PXE-booted the way
booter boots a compute node, is shared by the tests that only look at it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.lib.http import HttpServer
from tests.lib.image import Platform
from tests.lib.node import Node
from tests.lib.pxe import NETWORKING, NODE_CONFIG, PASSWORD, pxe_script


@pytest.fixture(scope="session")
def http(platform: Platform):
    """Serves out/ at /out and the files booter would inject at /inject."""
    with HttpServer() as server:
        server.serve_dir("/out", platform.path.parent)
        server.routes["/inject/node.config"] = NODE_CONFIG.encode()
        server.routes["/inject/networking.json"] = NETWORKING.encode()
        yield server


@pytest.fixture(scope="session")
def logs() -> Path:
    d = REPO / "out/test-logs"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def pxe_node(platform: Platform, http: HttpServer, logs: Path, tmp_path_factory: pytest.TempPathFactory):
    """A node PXE-booted (QEMU's iPXE ROM, TFTP, then HTTP) to its login prompt, logged in."""
    tftp = tmp_path_factory.mktemp("tftp")
    (tftp / "boot.ipxe").write_text(pxe_script(http, platform, []))
    node = Node.pxe(tftp, "boot.ipxe", logs / "pxe-node.log")
    try:
        # Tests look at a node that has finished booting, as an operator would.
        node.seconds_to_login = node.up(PASSWORD)
        yield node
    finally:
        node.close()
