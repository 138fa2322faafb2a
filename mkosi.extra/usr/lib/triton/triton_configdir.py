#!/usr/bin/python3 -IS
"""triton-config-dir: /usr/triton/config as Triton's agents and setup
scripts expect it on a Linux compute node (linux-live's layout), before
any of them starts (triton-config-dir.service, early in sysinit).

- Where it is. On a node whose system pool is mounted, a link to
  /opt/triton/config on the pool (zones/opt), made if missing: the
  directory joysetup.sh moves the config to, where its setup state
  (triton-setup-state.json, written by joysetup.sh and agentsetup.sh)
  and the agents' edits of triton-networking.json stay. On a node without
  a pool, a directory in RAM (the root's overlay), as linux-live has it
  before setup; joysetup.sh turns it into that link when it sets a node up.
- node.config and triton-networking.json: the ones booter delivered with
  this boot (the initrd keeps them in /run/triton/boot), or, for a file
  this boot did not deliver, the copy the pool keeps in
  /zones/config/boot (triton-pool restore). triton-networking.json.hash
  comes along only when this boot delivered it and it matches. A file that
  is missing, or that cannot be read as what it is (node.config with no
  key=value line or not UTF-8 text; networking.json not JSON, not
  booter's shape, or not matching its .hash), is not there: the console
  says which and why, and an earlier boot's copy is removed.
- systemd.env, the agents' units' environment: /usr/triton/defaults/
  systemd.env when there is none (an operator's copy on the pool stays).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import triton_network as tn  # noqa: E402
import triton_settings  # noqa: E402
import triton_nodeconfig as nc  # noqa: E402

PROG = "triton-config-dir"
NODE_CONFIG = "node.config"
NETWORKING = "triton-networking.json"
HASH = NETWORKING + ".hash"
ENV = "systemd.env"
INSTANCES = triton_settings.INSTANCES_JSON


@dataclasses.dataclass(frozen=True)
class Layout:
    """The paths it works with (tests give their own)."""
    usr_config: Path = Path("/usr/triton/config")
    opt: Path = Path("/opt")
    pool_config: Path = Path("/opt/triton/config")
    boot: Path = triton_settings.RUNTIME.boot_files
    kept: Path = Path("/zones/config/boot")
    default_env: Path = Path("/usr/triton/defaults/systemd.env")


def say(msg: str) -> None:
    print(f"{PROG}: {msg}", flush=True)


def node_config_problem(raw: bytes) -> Optional[str]:
    """Why node.config cannot be used, or None."""
    if b"\0" in raw:
        return "it holds NUL bytes: not a text file"
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        return f"not UTF-8 text ({e})"
    values, _ = nc.parse_node_config(text)
    if not values:
        return "no key='value' line in it"
    return None


def networking_problem(raw: bytes, expected_hash: Optional[str], suffix: str) -> Optional[str]:
    """Why networking.json cannot be used (not JSON, not booter's shape, not
    its .hash), or None. What this node makes of it is triton-node-config's."""
    try:
        tn.load(raw, NETWORKING, suffix, expected_hash)
    except tn.Malformed as e:
        return str(e).removeprefix(f"{NETWORKING}: ")
    except Exception as e:  # a file no check foresaw is still only this file's problem
        return f"cannot be read ({type(e).__name__}: {e})"
    return None


def source(name: str, layout: Layout) -> Optional[Path]:
    """This boot's file, else the pool's kept copy."""
    for d in (layout.boot, layout.kept):
        if (d / name).is_file():
            return d / name
    return None


def config_dir(layout: Layout) -> tuple[Path, str]:
    """/usr/triton/config made for this boot (a link to the pool's
    directory, or one in RAM), and where it is; one that is there already
    (joysetup.sh made it, or this ran before) is kept, but for one in RAM
    once the pool is mounted (set up since the boot began): its files move
    onto the pool."""
    usr = layout.usr_config
    if usr.is_dir() and not usr.is_symlink() and os.path.ismount(layout.opt):
        # The pool came after this boot began (triton-pool setup on a
        # running node): what is in RAM moves onto it, as joysetup.sh's
        # install_configs moves it, and the directory becomes the link.
        layout.pool_config.mkdir(mode=0o755, parents=True, exist_ok=True)
        for f in usr.iterdir():
            if not (layout.pool_config / f.name).exists():
                shutil.move(str(f), str(layout.pool_config / f.name))
        shutil.rmtree(usr)
    if not usr.is_symlink() and not usr.exists():
        if os.path.ismount(layout.opt):
            layout.pool_config.mkdir(mode=0o755, parents=True, exist_ok=True)
            usr.parent.mkdir(parents=True, exist_ok=True)
            usr.symlink_to(layout.pool_config)
        else:
            usr.mkdir(mode=0o755, parents=True)
    if usr.is_symlink():
        return usr, f"a link to {os.readlink(usr)} (kept on the system pool)"
    return usr, "a directory in RAM (no system pool is mounted)"


def write(path: Path, data: bytes, mode: int) -> None:
    """Whole or not at all: written beside it, then renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def place(name: str, check: Callable[[bytes], Optional[str]], target: Path, layout: Layout,
          mode: int) -> tuple[bool, str]:
    """One of booter's files into the config directory, or none there;
    (placed, what the console says)."""
    src = source(name, layout)
    if src is None:
        target.unlink(missing_ok=True)
        return False, (f"PROBLEM: no {name} was delivered with this boot and the pool keeps none: "
                       f"{target} is absent")
    try:
        raw = src.read_bytes()
    except OSError as e:
        target.unlink(missing_ok=True)
        return False, f"PROBLEM: {src}: cannot be read ({e.strerror}); {target} is absent"
    why = check(raw)
    if why:
        target.unlink(missing_ok=True)
        return False, f"PROBLEM: {src}: {why}; {target} is absent"
    write(target, raw, mode)
    return True, f"{name} from {src}"


def lay_out(layout: Layout, suffix: str) -> list[str]:
    """Does it all; the console's lines."""
    usr, where = config_dir(layout)
    lines = [f"{usr} is {where}"]
    placed, line = place(NODE_CONFIG, node_config_problem, usr / NODE_CONFIG, layout, 0o600)
    lines.append(line)
    # The .hash checks this boot's networking.json only: the pool keeps
    # none, so a kept copy is checked as JSON in booter's shape.
    hash_src = layout.boot / HASH
    expected = None
    if (layout.boot / NETWORKING).is_file() and hash_src.is_file():
        expected = hash_src.read_bytes().decode(errors="replace")
    placed, line = place(NETWORKING, lambda raw: networking_problem(raw, expected, suffix),
                         usr / NETWORKING, layout, 0o644)
    lines.append(line)
    if placed and expected is not None:
        write(usr / HASH, hash_src.read_bytes(), 0o644)
        lines[-1] += " (matches its .hash)"
    else:
        (usr / HASH).unlink(missing_ok=True)
    env = usr / ENV
    if not env.is_file():
        write(env, layout.default_env.read_bytes(), 0o644)
        lines.append(f"{ENV} from {layout.default_env}")
    return lines


def main() -> int:
    try:
        suffix = triton_settings.load_instances(INSTANCES).bridge_suffix
        lines = lay_out(Layout(), suffix)
    except Exception as e:  # said on the console, not a traceback
        say(f"PROBLEM: /usr/triton/config not laid out: {type(e).__name__}: {e}")
        return 1
    for line in lines:
        say(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
