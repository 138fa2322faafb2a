"""The datacenter's other networks, for a node's second and further NICs: a
network namespace of the test's own with bridges ("switches") in it. QEMU's
tap devices are made inside the namespace, so no traffic touches the host's
own networks, and the test reaches the node's static addresses from there.

    with Netns() as net:
        net.switch("ext", "192.168.77.1/24")
        node = Node.pxe(..., extra=net.nic("ext", mac), preexec_fn=net.preexec)
        net.run("ping", "-c1", "192.168.77.20")
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import subprocess
import sys
from typing import Optional

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
FIRST_FD = 200   # the tap file descriptors QEMU inherits: 200, 201, ...

_SNIFF = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((sys.argv[1], 0))
s.setsockopt(263, 8, 1)                    # SOL_PACKET, PACKET_AUXDATA
s.settimeout(0.5)
print("listening", flush=True)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        data, anc, _, _ = s.recvmsg(65535, socket.CMSG_SPACE(20))
    except socket.timeout:
        continue
    vid = 0
    for level, kind, cdata in anc:
        if level == 263 and kind == 8 and len(cdata) >= 20:
            status, _, _, _, _, tci, _ = struct.unpack("IIIHHHH", cdata[:20])
            if status & 0x10:                  # TP_STATUS_VLAN_VALID
                vid = tci & 0xFFF
    ethertype, payload = data[12:14], data[14:]
    if ethertype == b"\x81\x00":
        vid, ethertype, payload = int.from_bytes(data[14:16], "big") & 0xFFF, data[16:18], data[18:]
    if ethertype == b"\x08\x06" and len(payload) >= 28:
        print(vid, socket.inet_ntoa(payload[14:18]), socket.inet_ntoa(payload[24:28]), flush=True)
"""


class Netns:
    def __init__(self, name: Optional[str] = None) -> None:
        self.name = name or f"triton-test-{os.getpid()}"
        self.taps: list[tuple[str, str]] = []    # (tap name, switch)
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.name, *args], check=True, capture_output=True, text=True)

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True,
                              timeout=timeout)

    def switch(self, name: str, *addresses: str) -> None:
        """A bridge in the namespace, with the addresses the "datacenter" side
        has on it."""
        self.ip("link", "add", name, "type", "bridge")
        self.ip("link", "set", name, "up")
        for a in addresses:
            self.ip("addr", "add", a, "dev", name)

    def sniff_arp(self, nic: int, seconds: float) -> subprocess.Popen[str]:
        """Start capturing the ARP requests that come out of QEMU's NIC number
        `nic`, with their 802.1Q VLAN ID (the kernel moves the tag into
        metadata: PACKET_AUXDATA). The process prints one line per frame,
        "<vlan or 0> <sender ip> <target ip>", and ends after `seconds`.
        (This host's kernel has no VLAN devices, so the test checks the tags
        on the wire instead of answering on a VLAN.)"""
        tap = self.taps[nic][0]
        return subprocess.Popen(["ip", "netns", "exec", self.name, sys.executable, "-c", _SNIFF, tap, str(seconds)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def nic(self, switch: str, mac: str) -> list[str]:
        """QEMU arguments for a NIC on this switch (a tap QEMU inherits)."""
        i = len(self.taps)
        self.taps.append((f"tt{os.getpid() % 10000}n{i}", switch))
        return ["-netdev", f"tap,id=t{i},fd={FIRST_FD + i}",
                "-device", f"virtio-net-pci,netdev=t{i},mac={mac},romfile="]

    def preexec(self) -> None:
        """Runs in QEMU's process before exec: open the taps inside the
        namespace at the file descriptors nic() named, then return to the
        host's namespace (QEMU's user-mode network lives there)."""
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        own = os.open("/proc/self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the test's network namespace")
        for i, (tap, _) in enumerate(self.taps):
            fd = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", tap.encode(), IFF_TAP | IFF_NO_PI))
            os.dup2(fd, FIRST_FD + i)
            os.close(fd)
        if libc.setns(own, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back")
        os.close(own)
        os.close(target)

    def plug(self) -> None:
        """Once QEMU runs, put its taps on their switches."""
        for tap, switch in self.taps:
            self.ip("link", "set", tap, "master", switch)
            self.ip("link", "set", tap, "up")

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def __enter__(self) -> "Netns":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
