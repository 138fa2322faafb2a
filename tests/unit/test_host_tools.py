"""Every program the build and the tests run on the host comes from a
package `make setup` installs (tools/hostsetup.py's HOST_PACKAGES), or from
one every Debian has. A fresh bookworm failed where this host did not:
grub-mkrescue needs xz, the media tests sfdisk, the image tests readelf.

The programs are found in the code itself: the first word of every
subprocess call with a literal command in hooks/, tools/, bench/, tests/ and
mkosi's scripts, and the programs named in tests/lib (QEMU, RabbitMQ)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO
from tools.hostsetup import HOST_PACKAGES

# Where each program comes from. "essential": in every Debian (Essential:
# yes packages and what debootstrap's minbase brings), no install needed.
PROVIDER = {
    "apt-get": "essential", "bash": "essential", "dpkg": "essential", "dpkg-deb": "essential",
    "dpkg-query": "essential",
    "gzip": "essential", "mount": "essential", "umount": "essential", "sh": "essential", "tar": "essential",
    "sha256sum": "essential", "unshare": "essential", "python3": "essential", "make": "essential",
    "git": "git", "mkosi": "mkosi", "mkosi-chroot": "mkosi", "mkosi-install": "mkosi",
    "mksquashfs": "squashfs-tools", "unsquashfs": "squashfs-tools", "veritysetup": "cryptsetup-bin",
    "modinfo": "kmod", "modprobe": "kmod", "depmod": "kmod", "cpio": "cpio", "zstd": "zstd", "pigz": "pigz",
    "mypy": "mypy", "qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils", "ip": "iproute2",
    "ping": "iputils-ping", "nft": "nftables", "grub-mkrescue": "grub-common", "xorriso": "xorriso",
    "xz": "xz-utils", "mcopy": "mtools", "mformat": "mtools", "mkfs.vfat": "dosfstools", "sfdisk": "fdisk",
    "readelf": "binutils", "node": "nodejs", "ssh": "openssh-client", "ssh-keygen": "openssh-client",
    "rabbitmq-server": "rabbitmq-server", "epmd": "rabbitmq-server", "flake8": "flake8",
}
# Programs the tests run inside the booted image or a chroot of it, not on the host.
IN_THE_IMAGE = {"machinectl", "systemctl", "systemd-analyze", "systemd-escape", "zfs", "zpool", "triton-pool",
                "sysinfo", "reboot", "uuid"}
TOP = ("hooks", "tools", "bench", "tests")
CALLS = {"run", "Popen", "check_call", "check_output", "call"}
PROGRAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def commands_in(path: Path) -> set[str]:
    """The literal first word of each subprocess call in a Python file, and
    of each command list a function builds (`cmd = [...]`, `argv = [...]`,
    `return [...]` from a *_command function)."""
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        built = None
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and ("cmd" in t.id or "argv" in t.id)
                                                for t in node.targets):
            built = node.value
        elif isinstance(node, ast.FunctionDef) and node.name.endswith("_command"):
            built = next((r.value for r in ast.walk(node) if isinstance(r, ast.Return)), None)
        if isinstance(built, ast.List) and built.elts and isinstance(built.elts[0], ast.Constant) \
                and isinstance(built.elts[0].value, str):
            found.add(built.elts[0].value)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in CALLS and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "subprocess" and node.args):
            continue
        first = node.args[0]
        if isinstance(first, (ast.List, ast.Tuple)) and first.elts:
            first = first.elts[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
        elif isinstance(first, ast.Constant) and isinstance(first.value, str):
            found.add(first.value.split()[0])
        elif isinstance(first, ast.JoinedStr) and first.values and isinstance(first.values[0], ast.Constant):
            found.add(str(first.values[0].value).split()[0])
    return found


def host_commands() -> set[str]:
    found: set[str] = set()
    for top in TOP:
        for f in (REPO / top).rglob("*.py"):
            found |= commands_in(f)
    for script in ("mkosi.build", "mkosi.postinst", "mkosi.finalize", "mkosi.postoutput"):
        if (REPO / script).is_file() and (REPO / script).read_text().startswith("#!/usr/bin/python3"):
            found |= commands_in(REPO / script)
    # Named in tests/lib rather than written in a call.
    found |= {"qemu-system-x86_64", "rabbitmq-server", "epmd", "ssh", "ssh-keygen", "ping", "nft"}
    # Not a program: an argument list that is not a command (QEMU's, the kernel's).
    return {c for c in found if PROGRAM.fullmatch(c)}


def test_the_scan_finds_the_programs_it_should():
    found = host_commands()
    for known in ("mkosi", "mksquashfs", "grub-mkrescue", "sfdisk", "readelf", "qemu-img", "zstd"):
        assert known in found, known


def test_every_program_run_on_the_host_comes_from_a_package_make_setup_installs():
    unknown = sorted(c for c in host_commands() - IN_THE_IMAGE if c not in PROVIDER)
    assert not unknown, f"add these programs' packages to tools/hostsetup.py and to PROVIDER here: {unknown}"
    for command in host_commands() - IN_THE_IMAGE:
        package = PROVIDER.get(command)
        if package in (None, "essential"):
            continue
        assert package in HOST_PACKAGES, f"{command} comes from {package}, which tools/hostsetup.py does not install"
