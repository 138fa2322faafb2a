"""The node's hostid, which ZFS checks before importing a pool: from the
firmware's system UUID (as Triton's linux-live sets it), else the boot
NIC's MAC; then ZFS is loaded with it."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Optional

from triton_common import UUID_RE, bootif_mac, read_text
from triton_pool_state import PoolError, run


def hostid_from_uuid(system_uuid: str) -> int:
    """CRC32 (IEEE) of the SMBIOS system UUID as dmidecode prints it
    (upper case), as Triton's linux-live sethostid does: the same node keeps
    its hostid, so it imports its own pool and no other live host's."""
    return zlib.crc32(system_uuid.strip().upper().encode())


# UUIDs that firmware ships on every board of a kind instead of a real one:
# AMI's default (and the same bytes in the other byte order), and a count
# 00 01 02 ... 0f. A hostid made from one is shared by many nodes.
PLACEHOLDER_UUIDS = frozenset({
    "03000200-0400-0500-0006-000700080009",
    "00020003-0004-0005-0006-000700080009",
    "00010203-0405-0607-0809-0a0b0c0d0e0f",
})


def uuid_problem(text: str) -> Optional[str]:
    """Why the firmware's system UUID cannot tell this node from others
    (None: it can). One hex digit repeated (all zeros, all ones, 1111...)
    is what firmware reports when it has none."""
    u = text.strip().lower()
    if not u:
        return "the firmware reports no system UUID"
    if not UUID_RE.fullmatch(u):
        return f"the firmware's system UUID {text.strip()!r} is not a UUID"
    if len(set(u.replace("-", ""))) == 1 or u in PLACEHOLDER_UUIDS:
        return f"the firmware's system UUID {u} is a placeholder that many machines share"
    return None


def reports_no_uuid(u: str) -> bool:
    """Firmware with no UUID at all: none, not one, all zeros or all ones."""
    digits = set(u.replace("-", ""))
    return not UUID_RE.fullmatch(u) or digits <= {"0"} or digits <= {"f"}


def valid_system_uuid(text: str) -> Optional[str]:
    return None if uuid_problem(text) else text.strip().lower()


def choose_hostid(uuid_text: str, cmdline: str) -> tuple[int, str]:
    """The hostid and where it came from, for the console: the system UUID;
    else the boot NIC's MAC (BOOTIF=), the next most stable identity. A
    placeholder UUID with no BOOTIF= (booted from a DVD or USB stick) is
    still used, as before, so such a node keeps importing its pool; the
    console says that ZFS cannot tell it from another such node."""
    problem = uuid_problem(uuid_text)
    u = uuid_text.strip().lower()
    if problem is None:
        return hostid_from_uuid(u), f"SMBIOS system UUID {u}"
    mac = bootif_mac(cmdline)
    if mac:
        return zlib.crc32(mac.upper().encode()), f"boot NIC {mac} ({problem})"
    if not reports_no_uuid(u):
        return hostid_from_uuid(u), (f"SMBIOS system UUID {u}, although {problem}: the boot has no BOOTIF= "
                                     f"to use instead, so ZFS cannot tell this node's pools from theirs")
    raise PoolError(f"{problem}, and the boot has no BOOTIF=: cannot derive a stable hostid; "
                    f"pools are not imported")


def hostid_file_bytes(hostid: int) -> bytes:
    return hostid.to_bytes(4, "little")


def ensure_hostid() -> tuple[int, str]:
    hostid_file = Path("/etc/hostid")
    if hostid_file.exists() and len(hostid_file.read_bytes()) == 4:
        return int.from_bytes(hostid_file.read_bytes(), "little"), "/etc/hostid"
    hostid, source = choose_hostid(read_text(Path("/sys/class/dmi/id/product_uuid")), read_text(Path("/proc/cmdline")))
    hostid_file.write_bytes(hostid_file_bytes(hostid))
    return hostid, source


def load_zfs(hostid: int) -> None:
    run("modprobe", "spl", f"spl_hostid=0x{hostid:08x}")
    run("modprobe", "zfs")
