"""Make a Debian build host ready: check it, then install what it lacks.

`make` and `make check` run this first. It is idempotent and quiet when the
host already has everything. Standard library only: it runs before
python3-yaml and friends are installed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

BACKPORTS_FILE = Path("/etc/apt/sources.list.d/triton-pi-bookworm-backports.sources")
BACKPORTS_SOURCES = """\
# Added by the Triton platform image build (tools/hostsetup.py): mkosi 24.3
# (with systemd 254) and QEMU 10 come from bookworm-backports, from this
# host's own mirror.
Types: deb
URIs: {debian}
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
# The image's package sources (mkosi.pkgmngr): with this file there, mkosi
# writes none of its own, so it adds no debug archive. Written from the
# host's mirror, so a site with a local mirror or proxy builds through it.
IMAGE_SOURCES_FILE = Path(__file__).resolve().parents[1] / "mkosi.pkgmngr/etc/apt/sources.list.d/mkosi.sources"
IMAGE_SOURCES = """\
# Written by tools/hostsetup.py from this host's apt sources: do not edit.
# With this file present mkosi writes no sources of its own, so it does not
# add the debug archive (unreachable from build hosts without full internet
# access).
Types: deb
URIs: {debian}
Suites: trixie trixie-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {security}
Suites: trixie-security
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

# Debian packages the build and the tests need on the host, and why.
HOST_PACKAGES: dict[str, str] = {
    "mkosi": "builds the image",
    "bubblewrap": "mkosi's sandbox",
    "debian-archive-keyring": "verifies trixie's archive",
    "squashfs-tools": "mksquashfs for the root",
    "cryptsetup-bin": "veritysetup: the root's dm-verity hash tree, for media booted with triton.toram=0",
    "kmod": "depmod for the image's modules",
    "cpio": "the initrd",
    "zstd": "initrd and squashfs compression",
    "pigz": "the platform tarball",
    "git": "records the source revision",
    "python3-yaml": "platform.yaml",
    "python3-jinja2": "templates",
    "python3-pytest": "make check",
    "python3-pexpect": "boot tests drive the serial console",
    "mypy": "make check types the Python the image and hooks run",
    "python3-typeshed": "the library stubs mypy needs (yaml)",
    "python3-hypothesis": "property-based tests of the node's parsers",
    "qemu-system-x86": "boot tests",
    "qemu-utils": "qemu-img for test disks",
    "ipxe-qemu": "QEMU's PXE boot ROM",
    "iproute2": "the tests' own network namespaces and switches",
    "iputils-ping": "tests reach a node's static addresses",
    "nftables": "tests load the instance ports' filters into a throwaway network namespace",
    "grub-common": "grub-mkrescue writes the live media",
    "grub-pc-bin": "live media boot under BIOS",
    "grub-efi-amd64-bin": "live media boot under UEFI",
    "xorriso": "grub-mkrescue writes the hybrid ISO",
    "xz-utils": "xz: grub-mkrescue --compress=xz compresses GRUB's modules with it",
    "fdisk": "sfdisk: boot tests read the USB image's partitions and partition a test disk",
    "binutils": "readelf: image tests check the initrd's programs find their libraries",
    "mtools": "the live media's EFI and config partitions",
    "dosfstools": "the USB image's config partition",
    "ovmf": "UEFI firmware for the live media boot tests",
    "nodejs": "unit tests run the node's json command (/usr/triton/bin/json) as the node does",
    "openssh-client": "boot tests log in over ssh with the root key booter delivers",
    "python3-pika": "the ur agent's AMQP client, for its unit tests",
    "rabbitmq-server": "the ur agent's test runs a private RabbitMQ to play the headnode's",
    "flake8": "make check lints the Python (pyflakes and pycodestyle)",
}
# Debian packages unpacked under UNPACKED_DIR, never installed, for a
# program the tests run: installing them would replace one of the host's
# own services. What they depend on (their libraries) is installed, from
# the package's own Depends.
HOST_UNPACKED: dict[str, str] = {
    "chrony": "chronyd, the headnode's NTP server for the boot test that runs Triton's joysetup.sh (it sets "
              "the node's clock from node.config's ntp_hosts); installed, chrony would replace the host's "
              "own time service",
}
UNPACKED_DIR = Path(__file__).resolve().parents[1] / "mkosi.cache/host-unpacked"
# Packages that must come from backports on bookworm, with the minimum version.
# QEMU: the boot tests run the guest under TCG (no working KVM on the build
# hosts), and QEMU 10's TCG brings a node to its login prompt about a third
# sooner than bookworm's 7.2 (direct boot, same image: 56-60 s against
# 74-90 s); a host that has 7.2 is upgraded.
BACKPORTED = {"mkosi": "24.3", "qemu-system-x86": "1:10.0"}


class HostError(Exception):
    """The host cannot build the PI; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Host:
    distro_id: str
    codename: str
    version_id: str
    euid: int


def parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def host_from(os_release: str, euid: int) -> Host:
    f = parse_os_release(os_release)
    return Host(f.get("ID", ""), f.get("VERSION_CODENAME", ""), f.get("VERSION_ID", ""), euid)


def check_host(host: Host) -> None:
    """Raise HostError with one actionable line if this host cannot build."""
    if host.distro_id != "debian":
        name = host.distro_id or "an unknown system"
        raise HostError(
            f"this host is {name}, not Debian: the PI builds on Debian 12 (bookworm) or newer "
            "with apt; use a Debian machine or VM"
        )
    if host.version_id and host.version_id.isdigit() and int(host.version_id) < 12:
        raise HostError(
            f"this host is Debian {host.version_id} ({host.codename}); the PI needs Debian 12 "
            "(bookworm) or newer for mkosi 24.3: upgrade the host"
        )
    if host.euid != 0:
        raise HostError(
            "the PI is built as root (mkosi installs packages into the image and "
            "the tests boot VMs): run 'sudo make' or 'sudo make check'"
        )


def needs_backports(host: Host) -> bool:
    return host.codename == "bookworm"


def has_backports(source_texts: Sequence[str]) -> bool:
    return any(
        "bookworm-backports" in line and not line.lstrip().startswith("#")
        for text in source_texts for line in text.splitlines()
    )


def source_entries(texts: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(URI, suites) of each active deb entry, in one-line and deb822 form."""
    out: list[tuple[str, list[str]]] = []
    for text in texts:
        for stanza in text.split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("deb "):
                    words = [w for w in line.split()[1:] if not w.startswith("[")]
                    if len(words) >= 2:
                        out.append((words[0], [words[1]]))
                    continue
                key, sep, value = line.partition(":")
                if sep:
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                out += [(uri, fields.get("suites", "").split()) for uri in fields.get("uris", "").split()]
    return out


def host_mirrors(texts: Sequence[str], codename: str) -> tuple[str, str]:
    """This host's Debian archive and security archive (their URIs)."""
    debian = security = ""
    for uri, suites in source_entries(texts):
        if not debian and codename in suites:
            debian = uri.rstrip("/")
        if not security and f"{codename}-security" in suites:
            security = uri.rstrip("/")
    if not debian:
        raise HostError(f"no Debian archive for {codename} in /etc/apt/sources.list*: the image is built "
                        f"from the host's own Debian mirror; add one (e.g. in /etc/apt/sources.list.d/)")
    return debian, security or debian + "-security"


def missing_packages(installed: Mapping[str, str], wanted: Sequence[str],
                     minimum: Mapping[str, str], version_ge: Callable[[str, str], bool]) -> list[str]:
    out = []
    for pkg in wanted:
        have = installed.get(pkg)
        if have is None or (pkg in minimum and not version_ge(have, minimum[pkg])):
            out.append(pkg)
    return out


def dpkg_installed() -> dict[str, str]:
    res = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Status}\n"],
        capture_output=True, text=True,
    )
    out = {}
    for line in res.stdout.splitlines():
        name, version, status = (line.split("\t") + ["", ""])[:3]
        if status == "installed":
            out[name] = version
    return out


def dpkg_version_ge(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "ge", b]).returncode == 0


def apt(args: Sequence[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    res = subprocess.run(["apt-get", "-q", "-y", *args], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-5:])
        raise HostError(
            f"'apt-get {' '.join(args)}' failed: Debian's package archive is not reachable "
            f"or lacks a package; check /etc/apt/sources.list*.\n{tail}"
        )


def source_texts() -> list[str]:
    paths = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    texts = []
    for p in paths:
        try:
            texts.append(p.read_text())
        except OSError:
            pass
    return texts


def write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def unpacked(pkg: str) -> Path:
    """Where HOST_UNPACKED's package `pkg` is unpacked (its root)."""
    return UNPACKED_DIR / pkg


def unpack(pkg: str, say: Callable[[str], None]) -> None:
    """Download `pkg` from the host's archive, install what it depends on
    (apt-get satisfy with its Depends: its libraries, whatever they are
    called on this release) and unpack it (dpkg-deb -x), once. A half-done
    earlier try is started again."""
    dest = unpacked(pkg)
    if (dest / ".unpacked").exists():
        return
    say(f"hostsetup: unpacking {pkg} ({HOST_UNPACKED[pkg]}) into {dest}")
    UNPACKED_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=UNPACKED_DIR) as tmp:
        argv = ["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", pkg]
        res = subprocess.run(argv, cwd=tmp, capture_output=True, text=True)
        if res.returncode != 0:
            apt(["update"])
            res = subprocess.run(argv, cwd=tmp, capture_output=True, text=True)
        debs = sorted(Path(tmp).glob(f"{pkg}_*.deb"))
        if res.returncode != 0 or not debs:
            raise HostError(f"'apt-get download {pkg}' failed: Debian's package archive is not reachable or "
                            f"lacks it; check /etc/apt/sources.list*.\n{(res.stdout + res.stderr).strip()}")
        fields = subprocess.run(["dpkg-deb", "-f", str(debs[-1]), "Depends"], capture_output=True, text=True)
        if fields.stdout.strip():
            apt(["satisfy", "--no-install-recommends", fields.stdout.strip()])
        res = subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(Path(tmp) / "root")], capture_output=True,
                             text=True)
        if fields.returncode != 0 or res.returncode != 0:
            raise HostError(f"{debs[-1].name}: cannot read or unpack it ({(fields.stderr + res.stderr).strip()}); "
                            f"remove {UNPACKED_DIR} and run `make setup` again")
        (Path(tmp) / "root/.unpacked").write_text(debs[-1].name + "\n")
        try:
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(Path(tmp) / "root", dest)
        except OSError as e:
            raise HostError(f"{dest}: cannot replace it ({e.strerror or e}); remove it and run `make setup` "
                            f"again") from None


def setup(host: Host, say: Callable[[str], None] = print) -> None:
    check_host(host)
    debian, security = host_mirrors(source_texts(), host.codename)
    if write_if_changed(IMAGE_SOURCES_FILE, IMAGE_SOURCES.format(debian=debian, security=security)):
        say(f"hostsetup: the image's packages come from {debian} ({IMAGE_SOURCES_FILE})")
    updated = False
    if needs_backports(host) and not has_backports(source_texts()):
        say(f"hostsetup: adding bookworm-backports ({BACKPORTS_FILE})")
        BACKPORTS_FILE.write_text(BACKPORTS_SOURCES.format(debian=debian))
        apt(["update"])
        updated = True
    missing = missing_packages(dpkg_installed(), list(HOST_PACKAGES), BACKPORTED, dpkg_version_ge)
    if not missing:
        for pkg in HOST_UNPACKED:
            unpack(pkg, say)
        return
    say("hostsetup: installing " + ", ".join(f"{p} ({HOST_PACKAGES[p]})" for p in missing))
    if not updated:
        apt(["update"])
    plain = [p for p in missing if p not in BACKPORTED]
    if plain:
        apt(["install", "--no-install-recommends", *plain])
    for pkg in [p for p in missing if p in BACKPORTED]:
        target = ["-t", "bookworm-backports"] if needs_backports(host) else []
        apt(["install", "--no-install-recommends", *target, pkg])
    if "rabbitmq-server" in missing and Path("/run/systemd/system").is_dir():
        # Debian starts a system broker on install (port 5672 on every
        # address); the tests start private ones, so it is switched off.
        subprocess.run(["systemctl", "disable", "--now", "rabbitmq-server.service"], check=False)
        say("hostsetup: rabbitmq-server installed for the tests; its system service is disabled")
    still = missing_packages(dpkg_installed(), list(HOST_PACKAGES), BACKPORTED, dpkg_version_ge)
    if still:
        raise HostError(f"still missing after apt-get install: {', '.join(still)}")
    for pkg in HOST_UNPACKED:
        unpack(pkg, say)


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        text = ""
    try:
        setup(host_from(text, os.geteuid()))
    except HostError as e:
        print(f"hostsetup: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
