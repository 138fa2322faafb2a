"""Triton's booter, as far as a Linux compute node sees it: the boot.ipxe
it writes for the node, the TFTP and HTTP paths it serves them from.

Written from what sdc-booter's lib/menulst.js (buildIpxeCfg, os "linux"),
lib/bootparams.js and lib/boot-files.js do (see
../shared/research/triton-linuxcn-contract.md, "Boot (booter)"), not from
this project's own boot.ipxe template: a node booted with this script is
booted the way a Triton datacenter boots it.

    kernel /os/<platform>/platform/x86_64/vmlinuz boot=live console=tty0 console=ttyS<u>,115200n8
        BOOTIF=01-<mac> ip=<ip>:::<netmask>:: <kernel args>
        fetch=http://<server>/os/<platform>/platform/x86_64/filesystem.squashfs
    initrd http://<server>/os/<platform>/platform/x86_64/initrd
    module http://<server>/extra/joysetup/node.config /etc/node.config
    module http://<server>/bootfs/<mac>/<file> /etc/triton-<file>     (one per bootfs file)
    boot

The kernel line has no scheme: iPXE loads it relative to the script, over
TFTP. booter writes `${next-server}` (iPXE's DHCP next-server) as the
server of the bootfs lines and its own admin IP in the others; both are the
host here (QEMU's 10.0.2.2), but the test's HTTP server listens on a port
of its own, so every line names `10.0.2.2:<port>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.lib.http import HttpServer
from tests.lib.image import Platform

# CNAPI's `serial` value → the serial unit booter passes (anything else,
# "none" included, is unit -1: console=ttyS-1).
SERIAL_UNITS = {"ttya": 0, "ttyb": 1, "ttyc": 2, "ttyd": 3}
NODE_CONFIG_PATH = "/extra/joysetup/node.config"


@dataclass
class BootParams:
    """What CNAPI's boot parameters and booter's own state give one node."""
    mac: str
    ip: str = "10.0.2.15"
    netmask: str = "255.255.255.0"
    # CNAPI's kernel_args (rabbitmq=, hostname=, operator boot params) and
    # booter's NIC-tag arguments (<tag>_nic=, <aggr>_aggr=), in their order.
    kernel_args: dict[str, str] = field(default_factory=dict)
    serial: str = "ttyb"
    # booter's master writes ip=<ip>:::<mask>::, its Debian 12 branch
    # (LINUXCN-27) ip=<ip>:::<mask>:::none.
    debian12: bool = False
    # Files in /tftpboot/bootfs/<mac>/: networking.json, its .hash, CNAPI's boot_modules.
    bootfs: dict[str, bytes] = field(default_factory=dict)


def mac_dir(mac: str) -> str:
    return mac.replace(":", "").lower()


def script_name(mac: str) -> str:
    """The TFTP file booter's DHCP server names for an iPXE client."""
    return "boot.ipxe.01" + mac.replace(":", "").upper()


def ip_argument(p: BootParams) -> str:
    return f"ip={p.ip}:::{p.netmask}:::none" if p.debian12 else f"ip={p.ip}:::{p.netmask}::"


def boot_ipxe(p: BootParams, stamp: str, server: str, proto: str = "http") -> str:
    """`proto` is http when booter's ipxeHTTP is on (SAPI's default), else tftp."""
    base = f"/os/{stamp}/platform/x86_64"
    unit = SERIAL_UNITS.get(p.serial, -1)
    kargs = " ".join(f"{k}={v}" for k, v in p.kernel_args.items())
    lines = [
        "#!ipxe",
        f"kernel {base}/vmlinuz boot=live console=tty0 console=ttyS{unit},115200n8 "
        f"BOOTIF=01-{p.mac.replace(':', '-')} {ip_argument(p)} {kargs} "
        f"fetch={proto}://{server}{base}/filesystem.squashfs",
        f"initrd {proto}://{server}{base}/initrd",
        f"module {proto}://{server}{NODE_CONFIG_PATH} /etc/node.config",
        *(f"module {proto}://{server}/bootfs/{mac_dir(p.mac)}/{name} /etc/triton-{name}" for name in p.bootfs),
        "boot",
    ]
    return "\n".join(lines) + "\n"


class Booter:
    """booter for one test run: the platform under /os/<stamp>/platform on
    HTTP and (the kernel, which iPXE loads relative to the script) TFTP;
    node.config for every node; each node's boot.ipxe and bootfs files."""

    def __init__(self, http: HttpServer, platform: Platform, tftp: Path) -> None:
        self.http, self.platform, self.tftp = http, platform, tftp
        self.base = f"/os/{platform.stamp}/platform"
        http.serve_dir(self.base, platform.path)
        kernel = tftp / self.base.lstrip("/") / "x86_64/vmlinuz"
        kernel.parent.mkdir(parents=True, exist_ok=True)
        if not kernel.exists():
            kernel.symlink_to(platform.kernel)

    @property
    def server(self) -> str:
        return f"10.0.2.2:{self.http.port}"

    def set_node_config(self, text: str) -> None:
        """The datacenter's node.config (booter serves one to every node)."""
        self.http.routes[NODE_CONFIG_PATH] = text.encode()

    def add(self, p: BootParams) -> str:
        """Write the node's boot.ipxe and serve its bootfs files; the TFTP
        file name to give QEMU (Node.pxe(booter.tftp, name, ...))."""
        for name, data in p.bootfs.items():
            self.http.routes[f"/bootfs/{mac_dir(p.mac)}/{name}"] = data
        name = script_name(p.mac)
        (self.tftp / name).write_text(boot_ipxe(p, self.platform.stamp, self.server))
        return name
