"""How the ur agent (triton_ur.py) runs what the headnode sends: a program
started directly (no shell) with the given arguments and exactly the given
environment, stdin from /dev/null, in the agent's directory and as its
user (root); its exit status and the first 5 MiB of its stdout and of its
stderr (what comes after is read and dropped: the program is not killed,
and stderr ends with a line saying so). Standard library only, no AMQP.

- A script is written to a 0700 file named ur-* in the temporary
  directory, run, and deleted: it must start with its #! line, as on
  Triton's agent (CNAPI's scripts start with #!/bin/bash).
- Exit status 113 asks for a reboot: the reply says 0 (Triton's rule).
- A signal's death is 128 + the signal, as a shell reports it.
- A program that cannot be started is 127 when it does not exist, else
  126 (ENOEXEC: no #! line; EACCES: not executable), as a shell's, with
  the error code's name (Triton's agent replies with that name in
  exit_status) and what to do in stderr.
"""

from __future__ import annotations

import codecs
import dataclasses
import errno
import os
import selectors
import subprocess
import tempfile
import threading
import time
from typing import Any, Mapping, Optional, Sequence

MAX_OUTPUT = 5 * 2**20               # bytes kept of stdout, and of stderr (Triton's MAX_BUFFER)
REBOOT_EXIT = 113                    # a program's request to reboot the node
CANNOT_EXECUTE, NOT_FOUND = 126, 127


@dataclasses.dataclass(frozen=True)
class Result:
    exit_status: int
    stdout: str = ""
    stderr: str = ""
    reboot: bool = False

    def reply(self) -> dict[str, Any]:
        """The execute reply's body."""
        return {"exit_status": self.exit_status, "stdout": self.stdout, "stderr": self.stderr}


def capped(data: bytes, cap: int = MAX_OUTPUT) -> str:
    """The first `cap` bytes as text: invalid UTF-8 becomes U+FFFD (as
    Node.js decodes), a character cut at the end is dropped."""
    return codecs.getincrementaldecoder("utf-8")("replace").decode(data[:cap], final=len(data) <= cap)


def with_note(err: bytes, note: str, cap: int) -> str:
    """stderr ending with `note`, the whole within `cap` bytes."""
    room = max(cap - len(note.encode()), 0)
    return capped(err, room) + note


def collect(proc: subprocess.Popen[bytes], cap: int) -> tuple[bytes, bytes]:
    """stdout and stderr read to their ends; `cap` bytes of each kept, and
    one more when there was more."""
    assert proc.stdout is not None and proc.stderr is not None
    kept = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    with selectors.DefaultSelector() as sel:
        for fd in kept:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            for key, _ in sel.select():
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buf = kept[key.fd]
                if len(buf) <= cap:
                    buf += chunk[:cap + 1 - len(buf)]
    return bytes(kept[proc.stdout.fileno()]), bytes(kept[proc.stderr.fileno()])


# Held while a script file is open for writing and while a program starts,
# so that no program of ours inherits another's script still open for
# writing across its fork (that script's exec would fail with ETXTBSY).
_SPAWN = threading.Lock()


def spawn(argv: Sequence[str], env: Optional[Mapping[str, str]]) -> subprocess.Popen[bytes]:
    for attempt in range(20):
        try:
            with _SPAWN:
                return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env)
        except OSError as e:
            # Another thread's fork (sysinfo's commands) may hold a script open.
            if e.errno != errno.ETXTBSY or attempt == 19:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def spawn_error(what: str, e: OSError) -> Result:
    code = errno.errorcode.get(e.errno or 0, "error")
    hint = {errno.ENOEXEC: " (a script needs a #! line, e.g. #!/bin/bash)",
            errno.EACCES: " (not executable, or on a noexec file system)"}.get(e.errno or 0, "")
    status = NOT_FOUND if e.errno == errno.ENOENT else CANNOT_EXECUTE
    return Result(status, "", f"{code}: ur cannot run {what}: {e.strerror}{hint}\n")


def run_program(argv: Sequence[str], env: Optional[Mapping[str, str]], cap: int = MAX_OUTPUT,
                what: str = "") -> Result:
    """Run argv with exactly env (None: the agent's own)."""
    try:
        proc = spawn(argv, env)
    except OSError as e:
        return spawn_error(what or argv[0], e)
    with proc:
        out, err = collect(proc, cap)
        status = proc.wait()
    if status < 0:
        status = 128 - status
    stderr = capped(err, cap)
    if len(out) > cap or len(err) > cap:
        stderr = with_note(err, f"\nur: output cut at {cap} bytes (stdout and stderr each)\n", cap)
    if status == REBOOT_EXIT:
        return Result(0, capped(out, cap), stderr, reboot=True)
    return Result(status, capped(out, cap), stderr)


def run_script(text: str, args: Sequence[str], env: Optional[Mapping[str, str]],
               tmpdir: Optional[str] = None, cap: int = MAX_OUTPUT) -> Result:
    with _SPAWN:
        fd, path = tempfile.mkstemp(prefix="ur-", dir=tmpdir)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o700)
            f.write(text.encode())
    try:
        return run_program([path, *args], env, cap, "the script")
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
