"""Hand-made Ethernet frames, sent from inside an instance (its python3) to
show what its port lets onto the wire, and a reader for QEMU's filter-dump
capture of the node's NIC. This file is copied into the instance and run
there as a script; the test host imports it to read the capture."""

from __future__ import annotations

import socket
import struct
import sys

BROADCAST = b"\xff" * 6
SPOOFED_MAC = bytes.fromhex("020000000066")
# What each frame tries, by the marker its payload carries.
KINDS = ("LEGIT", "SPOOFMAC", "SPOOFIP", "DHCPOFFER", "ARPSPOOF", "RA", "VLAN")


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + udp


def ethernet(src: bytes, ethertype: int, payload: bytes, dst: bytes = BROADCAST) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def frames(mac: bytes, ip: str, gateway: str, token: str) -> dict[str, bytes]:
    def mark(kind: str) -> bytes:
        return f"{kind}-{token}".encode()
    ra = struct.pack("!BBHI", 134, 0, 0, 0) + mark("RA")
    ipv6 = (struct.pack("!IHBB", 6 << 28, len(ra), 58, 255) + socket.inet_pton(socket.AF_INET6, "fe80::66")
            + socket.inet_pton(socket.AF_INET6, "ff02::1"))
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, mac, socket.inet_aton(gateway), BROADCAST,
                      socket.inet_aton(gateway))
    return {
        "LEGIT": ethernet(mac, 0x0800, ipv4_udp(ip, gateway, 5555, 9, mark("LEGIT"))),
        "SPOOFMAC": ethernet(SPOOFED_MAC, 0x0800, ipv4_udp(ip, gateway, 5555, 9, mark("SPOOFMAC"))),
        "SPOOFIP": ethernet(mac, 0x0800, ipv4_udp("10.0.2.200", gateway, 5555, 9, mark("SPOOFIP"))),
        "DHCPOFFER": ethernet(mac, 0x0800, ipv4_udp(ip, "255.255.255.255", 67, 68,
                                                    b"\x02\x01\x06\x00" + mark("DHCPOFFER"))),
        "ARPSPOOF": ethernet(mac, 0x0806, arp + mark("ARPSPOOF")),
        "RA": ethernet(mac, 0x86DD, ipv6 + ra),
        "VLAN": ethernet(mac, 0x8100, struct.pack("!HH", 5, 0x0800) + ipv4_udp(ip, gateway, 5555, 9, mark("VLAN"))),
    }


def captured(pcap: bytes) -> list[bytes]:
    """The frames of a pcap file (QEMU's filter-dump writes the classic format)."""
    out, at = [], 24
    while at + 16 <= len(pcap):
        incl = struct.unpack_from("<I", pcap, at + 8)[0]
        out.append(pcap[at + 16: at + 16 + incl])
        at += 16 + incl
    return out


if __name__ == "__main__":
    # frames.py IFACE MAC IP GATEWAY TOKEN: send one frame of each kind.
    iface, mac_text, ip, gateway, token = sys.argv[1:6]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    for frame in frames(bytes.fromhex(mac_text.replace(":", "")), ip, gateway, token).values():
        s.send(frame)
    print("sent", len(KINDS))
