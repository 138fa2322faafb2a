"""What the node's tools share: running a command, a console line, the
kernel command line, the running system's os-release, and the checks of
UUIDs and MACs. Standard library only."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, Callable, Optional

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAC_RE = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")


class CommandError(Exception):
    """A command failed; the message names it and says what it printed."""


def run(*argv: str, check: bool = True, input: Optional[str] = None,
        error: Callable[[str], Exception] = CommandError) -> subprocess.CompletedProcess[str]:
    """Run a command, its output captured. With `check`, a failure raises
    `error` (each tool its own) naming the command and what it printed."""
    p = subprocess.run(argv, text=True, capture_output=True, input=input)
    if check and p.returncode != 0:
        detail = (p.stderr or p.stdout).strip()
        raise error(f"`{' '.join(argv)}` failed: {detail}")
    return p


def say(prog: str, msg: str) -> None:
    """A line on the console (and in the journal), naming the tool."""
    print(f"{prog}: {msg}", flush=True)


def read_text(path: Path) -> str:
    """A file's text; "" when it cannot be read."""
    try:
        return path.read_text()
    except OSError:
        return ""


def kernel_args(cmdline: str) -> dict[str, str]:
    """The kernel command line as {key: value} ('' for a bare word)."""
    args: dict[str, str] = {}
    for word in cmdline.split():
        key, _, value = word.partition("=")
        args[key] = value
    return args


def bootif_mac(cmdline: str) -> Optional[str]:
    for arg in cmdline.split():
        if arg.startswith("BOOTIF="):
            value = arg.split("=", 1)[1].lower()
            # BOOTIF=01-aa-bb-cc-dd-ee-ff (01: Ethernet)
            parts = value.split("-")
            if len(parts) == 7:
                parts = parts[1:]
            mac = ":".join(parts)
            if MAC_RE.fullmatch(mac):
                return mac
    return None


def normal_mac(value: Any) -> Optional[str]:
    """'52:54:0:12:34:56' or '52-54-00-12-34-56' -> '52:54:00:12:34:56'."""
    if not isinstance(value, str):
        return None
    parts = re.split(r"[:-]", value.strip().lower())
    if len(parts) != 6 or not all(re.fullmatch(r"[0-9a-f]{1,2}", p) for p in parts):
        return None
    return ":".join(p.zfill(2) for p in parts)


def is_uuid(value: Any) -> bool:
    """A lower-case UUID, as Triton writes them."""
    return isinstance(value, str) and UUID_RE.fullmatch(value) is not None


def os_release() -> dict[str, str]:
    """The running system's os-release (TRITON_RELEASE: the platform's
    stamp); {} when it has none."""
    # Only here: `platform` is not needed by the pool's import at boot.
    import platform
    try:
        return platform.freedesktop_os_release()
    except OSError:
        return {}
