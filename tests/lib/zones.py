"""Checks a boot test makes of a node's pool and instances, over its console."""

from __future__ import annotations

import json

from tests.lib.node import Node


def in_instance(node: Node, uuid: str, command: str, timeout: float = 120) -> str:
    """Run a command inside the instance (machinectl shell), its output."""
    out = node.succeed(f"machinectl -q shell --setenv=TERM=dumb {uuid} /bin/sh -c {json.dumps(command)}", timeout)
    return out.replace("\r", "").strip()


def pool_kept(node: Node, guid: str) -> None:
    """The pool imported clean, and is the one setup made (not set up anew
    from the answers file booter delivers at every boot)."""
    assert node.succeed("zpool status -x zones") == "pool 'zones' is healthy"
    assert node.succeed("zpool get -H -o value guid zones") == guid
    assert "triton-pool: setting up from" not in node.console(last=100000)
