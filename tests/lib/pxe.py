"""Booting the platform's own boot.ipxe over PXE, as the tests and benches
do: the root password every test node gets, booter's default node.config
and networking.json, and the script (the build's template with booter's
module lines). booter's own script is tests/lib/booter.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from hooks import bootfiles
from hooks.config import load
from tests.lib.http import HttpServer
from tests.lib.image import Platform
from tests.lib.node import Node

REPO_LIB = Path(__file__).resolve().parents[2] / "mkosi.extra/usr/lib/triton"
sys.path.insert(0, str(REPO_LIB))
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


def platform_url(http: HttpServer, platform: Platform) -> str:
    return http.guest_url(f"/out/{platform.path.name}")


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
