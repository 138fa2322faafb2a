"""A compute node in QEMU, driven at its serial console like an operator.
The one driver every boot test and bench uses:

    node = Node.direct(kernel, initrd, append, log)     # -kernel/-initrd
    node = Node.pxe(tftp_dir, "boot.ipxe", log, extra=Node.hardware(uuid, disks))
    node.up(password)            # login prompt, log in, boot finished, no failed unit
    node.succeed("zpool list")   # or run() -> (status, output), fails()
    node.wait_for_unit("triton-instance@<uuid>")
    node.wait_until_succeeds("ping -c1 10.0.2.2")
    node.poweroff(); node.power_cut()
    Ssh(node, port, key).succeed(...)                # a node without a serial console

The console is QEMU's second serial port (ttyS1), because that is where
booter's `console=ttyS1,115200n8` sends it. Every wait also watches for the
signs of a broken boot (kernel panic, emergency mode, a failed unit) and
fails at once with the console log, instead of timing out.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable, Optional, Sequence

import pexpect

# TCG (software emulation) is the default: KVM dies on these hosts while the
# kernel decompresses. TRITON_TEST_KVM=1 switches it on where it works.
KVM = os.environ.get("TRITON_TEST_KVM") == "1"
# Timeouts are written for TCG on 2 cores; scale them for slower machines.
SCALE = float(os.environ.get("TRITON_TEST_TIMEOUT_SCALE", "1"))

# Always a broken boot, even where a test expects the boot to stop.
BROKEN = {
    "kernel panic": r"Kernel panic - not syncing[^\r\n]*",
    "kernel oops": r"Oops: [^\r\n]*",
}
# A boot that stopped: fatal unless the test waits for exactly that.
FATAL = {
    **BROKEN,
    "emergency mode": r"You are in emergency mode|Entering emergency mode|emergency shell",
    "initrd fetch failed": r"triton-fetch-rootfs: FAILED: [^\r\n]*",
    # systemd's status lines, coloured on the console ("[\x1b[0;1;31mFAILED\x1b[0m]"):
    # \S* takes the colour codes.
    "failed unit": r"FAILED\S*\] Failed to start [^\r\n]*",
    "failed mount": r"FAILED\S*\] Failed to mount [^\r\n]*",
    "failed dependency": r"DEPEND\S*\] Dependency failed for [^\r\n]*",
}


class BootError(AssertionError):
    pass


def qemu_base(memory_mib: int, reboot: bool = False) -> list[str]:
    # Under TCG, `-cpu max` offers ERMS, and the kernel then clears pages with
    # `rep stosb`, which TCG emulates so slowly that clearing huge pages
    # trips the soft-lockup detector and adds minutes to a boot.
    # TRITON_TEST_TB_SIZE (MiB) sizes TCG's translation cache: once it fills,
    # QEMU throws away every translation and the guest runs slowly while it
    # translates its code again (bench/boot.py --tb-size).
    tb_size = os.environ.get("TRITON_TEST_TB_SIZE", "")
    if tb_size and not (tb_size.isdigit() and int(tb_size) > 0):
        raise ValueError(f"TRITON_TEST_TB_SIZE={tb_size!r}: give TCG's translation cache in MiB "
                         "(a whole number, e.g. 3072), or unset it for QEMU's default")
    tcg = f"tcg,tb-size={tb_size}" if tb_size else "tcg"
    accel = ["-accel", "kvm", "-cpu", "host"] if KVM else ["-accel", tcg, "-cpu", "max,erms=off"]
    # TRITON_TEST_ICOUNT=shift=N[,sleep=on|off] (bench/boot.py --icount):
    # while the guest runs, its clock counts its instructions (2^N ns each)
    # instead of following the host's, so the kernel's timestamps measure the
    # work the guest did; sleep=off also skips an idle guest ahead to its
    # next timer, sleep=on (QEMU's default) lets idle time pass at host speed.
    icount = os.environ.get("TRITON_TEST_ICOUNT", "")
    if icount:
        if not re.fullmatch(r"shift=(10|[0-9])(,sleep=(on|off))?", icount):
            raise ValueError(f"TRITON_TEST_ICOUNT={icount!r}: give QEMU's -icount options as "
                             "shift=N[,sleep=on|off] (N 0-10: guest nanoseconds per instruction = 2^N), "
                             "or unset it")
        if KVM:
            raise ValueError("TRITON_TEST_ICOUNT counts instructions under TCG: unset TRITON_TEST_KVM")
        accel += ["-icount", icount]
    # One vCPU under TCG: with two, the kernel's live code patching (int3
    # breakpoints while static keys flip) races in TCG and can oops at boot.
    cpus = "2" if KVM else "1"
    return [
        "qemu-system-x86_64", *accel, "-m", str(memory_mib), "-smp", cpus,
        "-display", "none", "-vga", "none", "-monitor", "none",
        # ttyS0 exists but is unused; ttyS1 is the console, as with booter.
        "-serial", "null", "-serial", "stdio",
        # A guest that reboots ends QEMU, unless the test watches it boot again.
        *([] if reboot else ["-no-reboot"]),
    ]


class Shell:
    """succeed and fails over a shell's execute (the console's, or ssh's)."""
    VIA = ""

    def execute(self, command: str, timeout: float = 60) -> tuple[int, str]:
        raise NotImplementedError

    def succeed(self, command: str, timeout: float = 60) -> str:
        rc, out = self.execute(command, timeout)
        if rc != 0:
            raise AssertionError(f"`{command}`{self.VIA} failed with exit status {rc}:\n{out}")
        return out

    def fails(self, command: str, timeout: float = 60) -> str:
        rc, out = self.execute(command, timeout)
        if rc == 0:
            raise AssertionError(f"`{command}`{self.VIA} succeeded but should have failed:\n{out}")
        return out

    def run(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """The command's exit status and output (stdout and stderr)."""
        return self.execute(command, timeout)

    def wait_until_succeeds(self, command: str, timeout: float = 120, every: float = 2) -> str:
        """Run `command` until it succeeds; its output. Fails with the last output."""
        deadline = time.monotonic() + timeout * SCALE
        while True:
            rc, out = self.execute(command, timeout)
            if rc == 0:
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"`{command}`{self.VIA} still failed after {timeout * SCALE:.0f}s "
                                     f"(exit status {rc}):\n{out}")
            time.sleep(every)

    def wait_for_unit(self, unit: str, timeout: float = 120) -> None:
        """Wait until `unit` is active; fail at once when it failed."""
        deadline = time.monotonic() + timeout * SCALE
        while True:
            state = self.execute(f"systemctl is-active {shlex.quote(unit)}", 30)[1].strip()
            if state == "active":
                return
            if state == "failed" or time.monotonic() > deadline:
                _, status = self.execute(f"systemctl status --no-pager -n 20 {shlex.quote(unit)}", 30)
                why = "failed" if state == "failed" else f"is {state!r} after {timeout * SCALE:.0f}s"
                raise AssertionError(f"{unit}{self.VIA} {why}:\n{status}")
            time.sleep(2)

    def system_ready(self, expected_failed: Sequence[str] = (), timeout: float = 300) -> None:
        """The boot finished: `systemctl is-system-running --wait` says
        running (its exit status, not its words), and no unit failed but
        those the test names."""
        rc, state = self.execute("systemctl is-system-running --wait", timeout)
        failed = sorted(self.succeed("systemctl --failed --no-legend --plain | awk '{print $1}'").split())
        if failed != sorted(expected_failed):
            _, status = self.execute("systemctl status --no-pager -n 10 --failed", 30)
            raise AssertionError(f"failed units{self.VIA}: {failed} (expected {sorted(expected_failed)}):\n{status}")
        if not expected_failed and rc != 0:
            _, jobs = self.execute("systemctl list-jobs --no-pager; systemctl list-units --no-pager --plain "
                                   "--state=activating,deactivating", 60)
            raise AssertionError(f"systemctl is-system-running{self.VIA}: {state} (exit status {rc}); "
                                 f"what the boot still waits for:\n{jobs}")


class Node(Shell):
    MAC = "52:54:00:12:34:56"

    def __init__(self, argv: Sequence[str], log_path: Path,
                 preexec_fn: Optional[Callable[[], None]] = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log = log_path.open("w", encoding="utf-8", errors="replace")
        self._log.write("# " + shlex.join(self.argv) + "\n")
        self.started = time.monotonic()
        self.child = pexpect.spawn(self.argv[0], self.argv[1:], encoding="utf-8",
                                   codec_errors="replace", timeout=None, maxread=65536,
                                   preexec_fn=preexec_fn)
        self.child.logfile_read = self._log
        self.logged_in = False

    @staticmethod
    def netdev(tftp: Optional[Path] = None, bootfile: Optional[str] = None,
               hostfwd: Sequence[str] = ()) -> list[str]:
        """The admin NIC on QEMU's user-mode network; `hostfwd` forwards
        ports of the host's loopback to the node (tcp:127.0.0.1:2222-:22)."""
        user = "user,id=n0,restrict=off"
        if tftp:
            user += f",tftp={tftp},bootfile={bootfile}"
        user += "".join(f",hostfwd={h}" for h in hostfwd)
        return ["-netdev", user, "-device", f"virtio-net-pci,netdev=n0,mac={Node.MAC}"]

    @staticmethod
    def hardware(system_uuid: str, disks: Sequence[Path] = ()) -> list[str]:
        """A machine with this SMBIOS system UUID and these disks (virtio,
        /dev/disk/by-id/virtio-<file stem>); raw files are raw, others qcow2."""
        argv = ["-uuid", system_uuid]
        for i, disk in enumerate(disks):
            fmt = "raw" if disk.suffix == ".raw" else "qcow2"
            argv += ["-drive", f"file={disk},if=none,id=disk{i},format={fmt},cache=unsafe",
                     "-device", f"virtio-blk-pci,drive=disk{i},serial={disk.stem}"]
        return argv

    @classmethod
    def direct(cls, kernel: Path, initrd: Path, append: Sequence[str], log_path: Path,
               memory_mib: int = 2048, extra: Sequence[str] = (), reboot: bool = False) -> "Node":
        argv = [*qemu_base(memory_mib, reboot), *cls.netdev(), "-kernel", str(kernel), "-initrd", str(initrd),
                "-append", " ".join(append), *extra]
        return cls(argv, log_path)

    @classmethod
    def pxe(cls, tftp: Path, bootfile: str, log_path: Path, memory_mib: int = 2048,
            extra: Sequence[str] = (), preexec_fn: Optional[Callable[[], None]] = None,
            hostfwd: Sequence[str] = ()) -> "Node":
        """PXE boot from the first NIC (user-mode network: the admin NIC)."""
        argv = [*qemu_base(memory_mib), *cls.netdev(tftp, bootfile, hostfwd), "-boot", "n", *extra]
        return cls(argv, log_path, preexec_fn)

    # -- waiting ------------------------------------------------------------------

    def console(self, last: int = 60) -> str:
        self._log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-last:])

    def fail(self, why: str) -> None:
        raise BootError(f"{why}\n--- console (last lines; full log {self.log_path}) ---\n{self.console()}")

    def expect(self, pattern: str, timeout: float, fatal: bool = True) -> re.Match[str]:
        """Wait for `pattern`; fail at once on a sign of a broken boot."""
        patterns = [pattern, pexpect.TIMEOUT, pexpect.EOF]
        table = FATAL if fatal else BROKEN
        names = list(table)
        patterns += [table[n] for n in names]
        i = self.child.expect(patterns, timeout=timeout * SCALE)
        if i == 0:
            return self.child.match
        if i == 1:
            self.fail(f"timed out after {timeout * SCALE:.0f}s waiting for {pattern!r}")
        if i == 2:
            self.fail(f"QEMU exited while waiting for {pattern!r}")
        self.fail(f"{names[i - 3]} while waiting for {pattern!r}: {self.child.after.strip()}")
        raise AssertionError("unreachable")

    def wait_for_console(self, pattern: str, timeout: float = 120, fatal: bool = True) -> str:
        """Wait for a console line matching `pattern`; the whole line, once it has ended."""
        return self.expect(rf"(?:{pattern})[^\r\n]*[\r\n]", timeout, fatal).group(0).strip()

    def wait_for_login(self, timeout: float = 240) -> float:
        """Wait for the serial login prompt; the seconds since QEMU started."""
        self.expect(r"login: ", timeout)
        return time.monotonic() - self.started

    # -- the shell ----------------------------------------------------------------

    def login(self, password: str, user: str = "root") -> None:
        self.child.sendline(user)
        self.expect(r"Password: ", 60)
        self.child.sendline(password)
        i = self.child.expect([r"# ", r"Login incorrect", pexpect.TIMEOUT], timeout=90 * SCALE)
        if i != 0:
            self.fail(f"could not log in as {user}: " + ("wrong password" if i == 1 else "no shell prompt"))
        # A prompt and settings that make output easy to read back.
        self.child.sendline("stty -echo; export PS1='' TERM=dumb SYSTEMD_PAGER=cat SYSTEMD_COLORS=0; "
                            "dmesg -n 1; echo READY-$((6*7))")
        self.expect(r"READY-42\r*\n", 60)
        self.logged_in = True

    def up(self, password: str, timeout: float = 480, expected_failed: Sequence[str] = ()) -> float:
        """Boot to the login prompt, log in, wait until the boot finished
        with no failed units (see Shell.system_ready); seconds to login."""
        seconds = self.wait_for_login(timeout)
        self.login(password)
        self.system_ready(expected_failed)
        return seconds

    def poweroff(self) -> None:
        """`systemctl poweroff` at the console; QEMU ends with the node."""
        self.child.sendline("systemctl poweroff")
        self.ended()

    def ended(self) -> None:
        """Wait until the node has shut down (-no-reboot: a reboot ends QEMU
        too), then let go of it."""
        self.child.expect(pexpect.EOF, timeout=240 * SCALE)
        self.close()

    def power_cut(self) -> None:
        """Pull the plug: QEMU gets SIGKILL (SIGTERM would let it close its
        disks cleanly), so it writes nothing more."""
        os.kill(self.child.pid, signal.SIGKILL)
        self.child.expect(pexpect.EOF, timeout=60)
        self.close()

    def login_refused(self, password: str, user: str = "root") -> bool:
        """Try a login that should fail; True when the node refused it."""
        self.child.sendline(user)
        self.expect(r"Password: ", 60)
        self.child.sendline(password)
        i = self.child.expect([r"Login incorrect", r"# ", pexpect.TIMEOUT], timeout=90 * SCALE)
        if i == 0:
            self.expect(r"login: ", 60)
        return i == 0

    def execute(self, command: str, timeout: float = 60) -> tuple[int, str]:
        token = uuid.uuid4().hex[:12]
        self.child.sendline(f"( {command} ) 2>&1; rc=$?; echo ''; echo {token}-$rc")
        m = self.expect(rf"{token}-(\d+)\r*\n", timeout, fatal=False)
        output = self.child.before.replace("\r", "").rstrip("\n")
        return int(m.group(1)), output.strip("\n")

    # -- ending -------------------------------------------------------------------

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        self._log.close()

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Ssh(Shell):
    """A node's shell over ssh, through a port of the host's loopback that
    QEMU forwards to the node (Node.pxe(..., hostfwd=[f"tcp:127.0.0.1:{port}-:22"])):
    for a node whose console the test cannot read (booter's serial "none",
    console=ttyS-1, leaves no serial console). The same execute, succeed
    and fails as Node's console shell."""

    VIA = " (over ssh)"

    def __init__(self, node: Node, port: int, key: Path) -> None:
        self.node, self.port, self.key = node, port, key

    def argv(self, command: str) -> list[str]:
        return ["ssh", "-p", str(self.port), "-i", str(self.key), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=10", "root@127.0.0.1", f"( {command} ) 2>&1"]

    def execute(self, command: str, timeout: float = 60) -> tuple[int, str]:
        try:
            res = subprocess.run(self.argv(command), capture_output=True, text=True, timeout=timeout * SCALE,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return 255, f"ssh: `{command}` did not finish in {timeout * SCALE:.0f}s"
        return res.returncode, (res.stdout + res.stderr).strip("\n")

    def wait_until_up(self, timeout: float = 240) -> float:
        """Wait until root logs in with the key; the seconds since QEMU started."""
        deadline = time.monotonic() + timeout * SCALE
        last = ""
        while True:
            # Keep QEMU's console output flowing into the log.
            self.node.child.expect([pexpect.TIMEOUT, pexpect.EOF], timeout=1)
            if not self.node.child.isalive():
                self.node.fail("QEMU exited while waiting for ssh")
            rc, last = self.execute("true", timeout=30)
            if rc == 0:
                return time.monotonic() - self.node.started
            if time.monotonic() > deadline:
                self.node.fail(f"no ssh login after {timeout * SCALE:.0f}s (last: {last})")
            time.sleep(5)
