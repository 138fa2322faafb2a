#!/usr/bin/python3 -S
"""triton-pool: the node's system pool (`zones`), where everything that must
survive a reboot lives. Standard library only; it calls zpool, zfs and
systemd, and keeps no state of its own beyond /run/triton/pool.

  triton-pool status [--json]        set up or not, health, what boot did
  triton-pool setup [--force] [--yes] --layout single|mirror|raidz|raidz2 DISK...
  triton-pool setup --answers FILE   the same, from an answers file
  triton-pool factory-reset [--yes] [--cancel] [--reboot]

Run by the initrd, inside the verified root before switch-root:
  triton-pool boot       hostid, load ZFS, import, identify the system
                         pool (marker file), factory reset, unattended setup
  triton-pool restore    after the initrd mounted the datasets: machine-id,
                         ssh host keys, root's credentials, image-owned /var
The facts (pool name, datasets, marker) come from platform.yaml through
/usr/lib/triton/pool.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triton_network import bootif_mac, kernel_args  # noqa: E402

SETTINGS = Path("/usr/lib/triton/pool.json")
RUN = Path("/run/triton/pool")
STATE = RUN / "state.json"
# The initrd's mount units for the pool's datasets run only when this exists.
MOUNT_FLAG = RUN / "mount"
BOOT_FILES = Path("/run/triton/boot")
ISSUE = Path("/run/issue.d/50-triton-pool.issue")
LAYOUTS = {"single": 1, "mirror": 2, "raidz": 3, "raidz2": 4}
FACTORY_RESET = "smartdc:factoryreset"  # as SmartOS and linux-live set it on <pool>/var
PROG = "triton-pool"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class PoolError(Exception):
    """Something the operator must fix; the message says what and how."""


def say(msg: str) -> None:
    print(f"{PROG}: {msg}", flush=True)


# -- settings -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Settings:
    name: str
    marker: str
    pool_properties: dict[str, str]
    fs_properties: dict[str, str]
    datasets: tuple[dict[str, Any], ...]
    image_var: tuple[str, ...]
    config_dataset: str
    settle_timeout: int
    answers_file: str

    @classmethod
    def load(cls, path: Optional[Path] = None) -> "Settings":
        path = path or SETTINGS
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise PoolError(f"{path}: cannot read the pool settings the platform build wrote ({e})")
        fields = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in fields}
        data["datasets"] = tuple(data["datasets"])
        data["image_var"] = tuple(data["image_var"])
        return cls(**data)

    def full(self, name: str) -> str:
        return f"{self.name}/{name}" if name else self.name

    @property
    def config_dir(self) -> Path:
        for d in self.datasets:
            if d["name"] == self.config_dataset:
                return Path(d["mountpoint"])
        raise KeyError(self.config_dataset)


# -- pure helpers (unit-tested) ----------------------------------------------------

def hostid_from_uuid(system_uuid: str) -> int:
    """CRC32 (IEEE) of the SMBIOS system UUID as dmidecode prints it
    (upper case), as Triton's linux-live sethostid does: the same node keeps
    its hostid, so it imports its own pool and no other live host's."""
    return zlib.crc32(system_uuid.strip().upper().encode())


def valid_system_uuid(text: str) -> Optional[str]:
    u = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", u):
        return None
    # Firmware that has no UUID reports all zeros or all ones.
    if set(u.replace("-", "")) <= {"0"} or set(u.replace("-", "")) <= {"f"}:
        return None
    return u


def hostid_file_bytes(hostid: int) -> bytes:
    return hostid.to_bytes(4, "little")


def is_true(value: Optional[str]) -> bool:
    return value is not None and value.lower() in ("", "1", "true", "yes", "on")


@dataclasses.dataclass(frozen=True)
class Answers:
    layout: str
    disks: tuple[str, ...]
    force: bool = False


def parse_answers(data: Any, source: str) -> Answers:
    """The answers file: {"pool": {"layout": "mirror", "disks": ["vdb", "vdc"], "force": false}}."""
    if not isinstance(data, dict) or not isinstance(data.get("pool"), dict):
        raise PoolError(f"{source}: expected a JSON object with a \"pool\" object "
                        "({\"pool\": {\"layout\": \"mirror\", \"disks\": [\"vdb\", \"vdc\"]}})")
    pool = data["pool"]
    unknown = set(pool) - {"layout", "disks", "force"}
    if unknown:
        raise PoolError(f"{source}: pool: unknown keys {sorted(unknown)}; known: layout, disks, force")
    layout = pool.get("layout")
    disks = pool.get("disks")
    force = pool.get("force", False)
    if not isinstance(disks, list) or not disks or not all(isinstance(d, str) and d for d in disks):
        raise PoolError(f"{source}: pool.disks must be a non-empty list of disk names (e.g. [\"sdb\", \"sdc\"])")
    if not isinstance(force, bool):
        raise PoolError(f"{source}: pool.force must be true or false")
    check_layout(layout, disks, f"{source}: pool.layout")
    return Answers(layout, tuple(disks), force)


def check_layout(layout: Any, disks: Sequence[str], what: str = "layout") -> None:
    if layout not in LAYOUTS:
        raise PoolError(f"{what} {layout!r} is not one of {', '.join(LAYOUTS)}")
    need = LAYOUTS[layout]
    if layout == "single" and len(disks) != 1:
        raise PoolError(f"{what} single takes exactly one disk, got {len(disks)}: {' '.join(disks)}")
    if len(disks) < need:
        raise PoolError(f"{what} {layout} needs at least {need} disks, got {len(disks)}: {' '.join(disks)}")
    if len(set(disks)) != len(disks):
        raise PoolError(f"{what}: a disk is named twice: {' '.join(disks)}")


def vdev_args(layout: str, disks: Sequence[str]) -> list[str]:
    return list(disks) if layout == "single" else [layout, *disks]


def mount_order(datasets: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parents before children."""
    return sorted(datasets, key=lambda d: (d["mountpoint"].count("/"), d["mountpoint"]))


def disk_refusal(disk: str, probe: dict[str, str], parts: Sequence[dict[str, str]]) -> Optional[str]:
    """Why setup must not touch `disk` without --force (None: it is blank).
    `probe` is `blkid -p -o export` of the disk, `parts` of its partitions."""
    for p in [probe, *parts]:
        if p.get("TYPE") == "zfs_member":
            label = p.get("LABEL") or "?"
            return f"{disk} holds ZFS pool '{label}'"
    if probe.get("PTTYPE"):
        n = len(parts)
        return f"{disk} has a {probe['PTTYPE']} partition table ({n} partition{'s' if n != 1 else ''})"
    if probe.get("TYPE"):
        return f"{disk} holds a {probe['TYPE']} filesystem"
    return None


def parse_blkid_export(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k] = v
    return out


def parse_import_listing(text: str) -> list[dict[str, str]]:
    """`zpool import` (no arguments): the pools seen but not imported, with
    their state and the reason ZFS gives."""
    pools: list[dict[str, str]] = []
    key = None
    for raw in text.splitlines():
        m = re.match(r"\s*(pool|id|state|status|action):\s?(.*)$", raw)
        if m:
            key = m.group(1)
            if key == "pool":
                pools.append({"pool": m.group(2).strip()})
            elif pools:
                pools[-1][key] = m.group(2).strip()
            continue
        if re.match(r"\s*(config|see|comment):", raw):
            key = None
            continue
        if key in ("status", "action") and pools and raw.strip():
            pools[-1][key] += " " + raw.strip()
    return pools


def issue_text(state: dict[str, Any]) -> str:
    """What the console shows above its login prompt."""
    s = state.get("state")
    pool = state.get("pool", "zones")
    if s == "imported":
        health = state.get("health", "?")
        if health == "ONLINE":
            return f"Pool {pool}: imported, {health}.\n"
        return f"Pool {pool}: imported but {health}: see `zpool status {pool}`.\n"
    if s == "noimport":
        return "Pools: not imported (noimport=true); `triton-pool status`.\n"
    return (f"This node is NOT SET UP: no system pool '{pool}'. "
            f"`triton-pool status`; `triton-pool setup` creates it.\n")


# -- running things ----------------------------------------------------------------

def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, text=True, capture_output=True)
    if check and p.returncode != 0:
        detail = (p.stderr or p.stdout).strip()
        raise PoolError(f"`{' '.join(argv)}` failed: {detail}")
    return p


def lines(*argv: str) -> list[str]:
    return [line for line in run(*argv).stdout.splitlines() if line.strip()]


def imported_pools() -> list[str]:
    return lines("zpool", "list", "-H", "-o", "name")


def pool_health(pool: str) -> str:
    return run("zpool", "list", "-H", "-o", "health", pool).stdout.strip()


def mount_zfs(dataset: str, where: Path, readonly: bool = False) -> None:
    where.mkdir(parents=True, exist_ok=True)
    opts = "zfsutil" + (",ro" if readonly else "")
    run("mount", "-t", "zfs", "-o", opts, dataset, str(where))


def umount(where: Path) -> None:
    if run("umount", str(where), check=False).returncode != 0:
        run("umount", "-l", str(where), check=False)


def is_mountpoint(path: Path) -> bool:
    return run("mountpoint", "-q", str(path), check=False).returncode == 0


def has_marker(pool: str, marker: str) -> bool:
    r = run("zfs", "get", "-H", "-o", "value", "mounted,mountpoint", pool, check=False)
    values = r.stdout.split()
    if r.returncode == 0 and len(values) == 2 and values[0] == "yes":
        return (Path(values[1]) / marker).exists()
    RUN.mkdir(parents=True, exist_ok=True)
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=RUN))
    try:
        mount_zfs(pool, probe, readonly=True)
    except PoolError:
        probe.rmdir()
        return False
    try:
        return (probe / marker).exists()
    finally:
        umount(probe)
        probe.rmdir()


def system_pools(settings: Settings) -> list[str]:
    return [p for p in imported_pools() if has_marker(p, settings.marker)]


# -- state --------------------------------------------------------------------------

def write_state(state: dict[str, Any]) -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.rename(STATE)
    ISSUE.parent.mkdir(parents=True, exist_ok=True)
    ISSUE.write_text(issue_text(state))


def read_state() -> dict[str, Any]:
    try:
        return json.loads(STATE.read_text())
    except (OSError, ValueError):
        return {}


# -- hostid and modules ---------------------------------------------------------------

def ensure_hostid() -> tuple[int, str]:
    hostid_file = Path("/etc/hostid")
    if hostid_file.exists() and len(hostid_file.read_bytes()) == 4:
        return int.from_bytes(hostid_file.read_bytes(), "little"), "/etc/hostid"
    uuid = valid_system_uuid(_read(Path("/sys/class/dmi/id/product_uuid")))
    if uuid:
        hostid, source = hostid_from_uuid(uuid), f"SMBIOS system UUID {uuid}"
    else:
        # No usable UUID: the boot NIC's MAC is the next most stable identity.
        mac = bootif_mac(_read(Path("/proc/cmdline")))
        if not mac:
            raise PoolError("the firmware reports no system UUID and the boot has no BOOTIF=: "
                            "cannot derive a stable hostid; pools are not imported")
        hostid, source = zlib.crc32(mac.upper().encode()), f"boot NIC {mac} (no SMBIOS UUID)"
    hostid_file.write_bytes(hostid_file_bytes(hostid))
    return hostid, source


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def load_zfs(hostid: int) -> None:
    run("modprobe", "spl", f"spl_hostid=0x{hostid:08x}")
    run("modprobe", "zfs")


# -- disks ------------------------------------------------------------------------------

def resolve_disk(name: str) -> Path:
    path = Path(name if name.startswith("/") else f"/dev/{name}")
    if not path.exists():
        raise PoolError(f"disk {name}: no such device ({path}); `lsblk -d` lists the disks")
    real = path.resolve()
    info = run("lsblk", "-dn", "-o", "TYPE", str(real), check=False).stdout.strip()
    if info != "disk":
        raise PoolError(f"disk {name}: {real} is a {info or 'not a block device'}, not a whole disk")
    return real


def partitions(disk: Path) -> list[Path]:
    out = run("lsblk", "-ln", "-o", "PATH,TYPE", str(disk), check=False).stdout
    return [Path(p) for p, t in (line.split() for line in out.splitlines() if line.strip()) if t == "part"]


def blkid(dev: Path) -> dict[str, str]:
    return parse_blkid_export(run("blkid", "-p", "-o", "export", str(dev), check=False).stdout)


def disk_in_use(disk: Path) -> Optional[str]:
    """Reasons even --force does not override: mounted, swap, an imported pool."""
    out = run("lsblk", "-ln", "-o", "PATH,MOUNTPOINTS", str(disk), check=False).stdout
    for line in out.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[1].strip():
            return f"{parts[0]} is mounted on {parts[1].strip()}"
    devs = {str(disk), *map(str, partitions(disk))}
    status = run("zpool", "status", "-P", "-L", check=False).stdout
    pool = None
    for line in status.splitlines():
        m = re.match(r"\s*pool:\s*(\S+)", line)
        if m:
            pool = m.group(1)
        elif line.split() and line.split()[0] in devs:
            return f"{disk} is in imported pool '{pool}'"
    return None


def wipe(disk: Path) -> None:
    """ZFS labels, partition table and signatures: the disk is blank after."""
    for dev in [*partitions(disk), disk]:
        if blkid(dev).get("TYPE") == "zfs_member":
            run("zpool", "labelclear", "-f", str(dev))
        run("wipefs", "-a", "-q", str(dev))


def whole_disk(dev: str) -> Path:
    parent = run("lsblk", "-dn", "-o", "PKNAME", dev, check=False).stdout.strip()
    return Path(f"/dev/{parent}") if parent else Path(dev)


# -- setup ---------------------------------------------------------------------------

def setup(settings: Settings, answers: Answers, *, booting: bool) -> str:
    """Create the system pool and its datasets. Idempotent: a node that has
    its pool is left alone. Refuses disks that hold anything unless forced,
    and never creates a pool while one of that name is on disk but not
    imported. Leaves nothing half-created."""
    for pool in system_pools(settings):
        return f"already set up: pool '{pool}' is imported and is this node's system pool; nothing to do"
    if settings.name in imported_pools():
        raise PoolError(f"a pool named '{settings.name}' is imported but has no {settings.marker}: "
                        f"it is not a system pool; export or rename it first")
    disks = [resolve_disk(d) for d in answers.disks]
    check_layout(answers.layout, [str(d) for d in disks])
    refusals = []
    for disk in disks:
        busy = disk_in_use(disk)
        if busy:
            raise PoolError(f"{busy}: not using it")
        why = disk_refusal(str(disk), blkid(disk), [blkid(p) for p in partitions(disk)])
        if why and not answers.force:
            refusals.append(why)
    if refusals:
        raise PoolError("; ".join(refusals) + ". Not destroying it: name only blank disks, "
                        "or set force (--force, or \"force\": true in the answers file) to wipe it")
    # Even forced: a pool of this name that did not import (another host's,
    # or missing disks) is never replaced by a new one.
    for seen in parse_import_listing(run("zpool", "import", check=False).stdout):
        if seen["pool"] == settings.name:
            raise PoolError(f"a pool named '{settings.name}' is on this node's disks but was not imported "
                            f"({seen.get('state', '?')}: {seen.get('status', 'see `zpool import`')}); "
                            f"not creating another one. Import it by hand (`zpool import {settings.name}`), "
                            f"or clear its disks (`zpool labelclear -f <disk>`) first")
    for disk in disks:
        wipe(disk)
    argv = ["zpool", "create", "-f", "-o", "cachefile=none"]
    for k, v in settings.pool_properties.items():
        argv += ["-o", f"{k}={v}"]
    root = next(d for d in settings.datasets if d["name"] == "")
    argv += ["-O", f"mountpoint={root['mountpoint']}", "-O", "canmount=noauto"]
    for k, v in settings.fs_properties.items():
        argv += ["-O", f"{k}={v}"]
    argv += [settings.name, *vdev_args(answers.layout, [str(d) for d in disks])]
    run(*argv)
    try:
        _populate(settings, answers, disks)
    except BaseException:
        run("zpool", "destroy", "-f", settings.name, check=False)
        raise
    done = (f"created pool '{settings.name}' ({answers.layout} of {' '.join(map(str, disks))}) "
            f"with {', '.join(settings.full(d['name']) for d in settings.datasets if d['name'])}")
    return done if booting else done + "; reboot to use it (the node mounts its datasets at boot)"


def _populate(settings: Settings, answers: Answers, disks: Sequence[Path]) -> None:
    # Every dataset is canmount=noauto: the initrd mounts them at boot, and
    # creating them on a running node must not hide its live /var.
    for d in mount_order(settings.datasets):
        if d["name"]:
            run("zfs", "create", "-o", f"mountpoint={d['mountpoint']}", "-o", "canmount=noauto",
                settings.full(d["name"]))
    work = Path(tempfile.mkdtemp(prefix="setup-", dir=RUN))
    try:
        for d in mount_order(settings.datasets):
            if not (d["name"] == "" or d.get("seed") or d["name"] == settings.config_dataset):
                continue
            where = work / (d["name"] or "root")
            mount_zfs(settings.full(d["name"]), where)
            try:
                if d["name"] == "":
                    (where / settings.marker).write_text("")
                if d.get("seed"):
                    # In the initrd this is the image's pristine copy; on a
                    # running node, its live one (as joysetup did).
                    run("cp", "-a", f"{d['mountpoint']}/.", f"{where}/")
                if d["name"] == settings.config_dataset:
                    (where / "setup.json").write_text(json.dumps({
                        "layout": answers.layout, "disks": [str(x) for x in disks],
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "platform": _os_release().get("TRITON_RELEASE", "?"),
                    }, indent=2) + "\n")
            finally:
                umount(where)
                where.rmdir()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _os_release() -> dict[str, str]:
    out = {}
    for line in _read(Path("/usr/lib/os-release")).splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k] = v.strip('"')
    return out


def load_answers(settings: Settings, args: dict[str, str]) -> Optional[tuple[Answers, str]]:
    url = args.get("triton.answers")
    if url:
        # Only here: importing it costs every boot's pool import a quarter
        # of a second (more under emulation), for a rarely given argument.
        import urllib.request
        for attempt in range(5):
            try:
                with urllib.request.urlopen(url, timeout=20) as r:
                    return parse_answers(json.loads(r.read()), url), url
            except (OSError, ValueError) as e:
                if isinstance(e, ValueError) and not isinstance(e, UnicodeError):
                    raise PoolError(f"{url}: not valid JSON: {e}")
                say(f"cannot fetch answers {url} (attempt {attempt + 1}): {e}")
                time.sleep(2 ** attempt)
        raise PoolError(f"cannot fetch the answers file {url}: check triton.answers=")
    path = BOOT_FILES / settings.answers_file
    if path.is_file():
        try:
            return parse_answers(json.loads(path.read_text()), str(path)), str(path)
        except ValueError as e:
            raise PoolError(f"{path}: not valid JSON: {e}")
    return None


# -- boot (in the initrd, inside the verified root) ---------------------------------------

def boot(settings: Settings) -> int:
    RUN.mkdir(parents=True, exist_ok=True)
    MOUNT_FLAG.unlink(missing_ok=True)
    args = kernel_args(_read(Path("/proc/cmdline")))
    state: dict[str, Any] = {"pool": settings.name, "state": "not-setup", "messages": []}

    def note(msg: str) -> None:
        say(msg)
        state["messages"].append(msg)

    try:
        hostid, source = ensure_hostid()
        state["hostid"] = f"{hostid:08x}"
        note(f"hostid {hostid:08x} from the {source}")
        load_zfs(hostid)
    except PoolError as e:
        note(f"FAILED: {e}")
        state["state"] = "error"
        write_state(state)
        return 0
    if is_true(args.get("noimport")):
        note("noimport=true: no pool imported (import by hand: zpool import -N <pool>)")
        state["state"] = "noimport"
        write_state(state)
        return 0
    t0 = time.monotonic()
    p = run("zpool", "import", "-a", "-N", "-o", "cachefile=none", check=False)
    for line in (p.stderr + p.stdout).splitlines():
        if line.strip() and "no pools available" not in line:
            note(f"zpool import: {line.strip()}")
    for seen in parse_import_listing(run("zpool", "import", check=False).stdout):
        note(f"pool '{seen['pool']}' not imported: {seen.get('state', '?')}: "
             f"{seen.get('status', '')} {seen.get('action', '')}".rstrip())
    found = system_pools(settings)
    state["pools"] = imported_pools()
    if len(found) > 1:
        note(f"FAILED: several pools carry {settings.marker}: {', '.join(found)}; "
             f"mounting none of them. Export all but this node's own and reboot")
        state["state"] = "error"
        write_state(state)
        return 0
    pool = found[0] if found else None
    if pool and pool != settings.name:
        note(f"FAILED: the system pool is named '{pool}', but this platform mounts '{settings.name}'; "
             f"not mounting it")
        state["state"] = "error"
        write_state(state)
        return 0
    if pool and factory_reset_requested(settings, pool):
        note(f"factory reset requested ({FACTORY_RESET}=yes on {settings.full('var')}): destroying pool '{pool}'")
        devices = sorted({str(whole_disk(d)) for d in pool_devices(pool)})
        r = run("zpool", "destroy", "-f", pool, check=False)
        if r.returncode != 0:
            note(f"FAILED: factory reset: could not destroy '{pool}': {r.stderr.strip()}; not mounting it")
            state["state"] = "error"
            write_state(state)
            return 0
        # Its disks are blank again, so the answers file can set the node up anew.
        for dev in devices:
            try:
                wipe(Path(dev))
            except PoolError as e:
                note(f"factory reset: could not clear {dev}: {e}")
        note(f"factory reset: pool '{pool}' destroyed, its disks ({' '.join(devices)}) cleared")
        pool = None
    if not pool:
        try:
            answers = load_answers(settings, args)
            if answers:
                note(f"setting up from {answers[1]}: {answers[0].layout} of {' '.join(answers[0].disks)}")
                note(setup(settings, answers[0], booting=True))
                pool = settings.name
        except PoolError as e:
            note(f"setup FAILED: {e}")
    if not pool:
        note(f"node is NOT SET UP: no system pool (a pool with {settings.marker}) was found")
        write_state(state)
        return 0
    ensure_datasets(settings, note)
    state.update(state="imported", pool=pool, health=pool_health(pool),
                 import_seconds=round(time.monotonic() - t0, 2))
    if state["health"] != "ONLINE":
        note(f"pool '{pool}' is {state['health']}:")
        for line in run("zpool", "status", "-x", pool, check=False).stdout.splitlines():
            if line.strip():
                note(f"  {line.strip()}")
    else:
        note(f"pool '{pool}' imported, ONLINE; mounting its datasets")
    MOUNT_FLAG.write_text(pool + "\n")
    write_state(state)
    return 0


def pool_devices(pool: str) -> list[str]:
    out = run("zpool", "status", "-P", "-L", pool, check=False).stdout
    return [w[0] for w in (line.split() for line in out.splitlines()) if w and w[0].startswith("/dev/")]


def factory_reset_requested(settings: Settings, pool: str) -> bool:
    r = run("zfs", "get", "-H", "-o", "value", FACTORY_RESET, f"{pool}/var", check=False)
    return r.returncode == 0 and r.stdout.strip() == "yes"


def ensure_datasets(settings: Settings, note: Any) -> None:
    """A pool set up by an older platform may lack a dataset this one mounts:
    create it (empty, never touching what is there)."""
    have = set(lines("zfs", "list", "-H", "-o", "name", "-r", settings.name))
    for d in mount_order(settings.datasets):
        name = settings.full(d["name"])
        if name not in have:
            run("zfs", "create", "-o", f"mountpoint={d['mountpoint']}", "-o", "canmount=noauto", name)
            note(f"created missing dataset {name} ({d['mountpoint']})")


# -- restore (in the initrd, after the datasets are mounted) --------------------------------

def restore(settings: Settings) -> int:
    if not MOUNT_FLAG.exists():
        return 0
    state = read_state()
    missing = [d["mountpoint"] for d in settings.datasets if not is_mountpoint(Path(d["mountpoint"]))]
    if missing:
        say(f"FAILED: datasets not mounted on {', '.join(missing)}: this boot keeps nothing there")
        state.setdefault("messages", []).append(f"not mounted: {', '.join(missing)}")
        state["unmounted"] = missing
        write_state(state)
        if str(settings.config_dir) in missing:
            return 0
    cfg = settings.config_dir
    restore_machine_id(cfg)
    restore_ssh_host_keys(cfg)
    restore_root(cfg)
    keep_boot_files(cfg)
    say(f"restored machine-id, ssh host keys and root's credentials from {cfg}")
    mounted = mount_instances(settings)
    if mounted:
        say(f"mounted {mounted} instance dataset(s)")
    return 0


def instance_datasets(listing: str, settings: Settings) -> list[str]:
    """From `zfs list -H -o name,canmount -d 1 <pool>`: the pool's children
    that vmadm made (named by UUID, canmount=on), to be mounted at boot."""
    out = []
    for line in listing.splitlines():
        fields = line.split("\t")
        if len(fields) != 2:
            continue
        name, canmount = fields
        parent, _, child = name.rpartition("/")
        if parent == settings.name and canmount == "on" and re.fullmatch(UUID, child):
            out.append(name)
    return out


def mount_instances(settings: Settings) -> int:
    """Mount the instances' datasets, so the root's systemd finds their
    config (triton-instance-generator) from its first moment."""
    r = run("zfs", "list", "-H", "-o", "name,canmount", "-d", "1", settings.name, check=False)
    count = 0
    for name in instance_datasets(r.stdout, settings):
        m = run("zfs", "mount", name, check=False)
        if m.returncode != 0 and "already mounted" not in m.stderr:
            say(f"instance dataset {name} did not mount: {m.stderr.strip()}")
            continue
        count += 1
    return count


def restore_machine_id(cfg: Path) -> None:
    saved = cfg / "machine-id"
    value = _read(saved).strip()
    if not re.fullmatch(r"[0-9a-f]{32}", value):
        value = os.urandom(16).hex()
        saved.write_text(value + "\n")
    Path("/etc/machine-id").write_text(value + "\n")


SSH_KEY_TYPES = ("rsa", "ecdsa", "ed25519")


def restore_ssh_host_keys(cfg: Path) -> None:
    keys = cfg / "ssh"
    keys.mkdir(mode=0o700, exist_ok=True)
    for t in SSH_KEY_TYPES:
        key = keys / f"ssh_host_{t}_key"
        if not key.exists():
            run("ssh-keygen", "-q", "-t", t, "-N", "", "-C", f"root@{os.uname().nodename}", "-f", str(key))
    etc = Path("/etc/ssh")
    for t in SSH_KEY_TYPES:
        for suffix, mode in (("", 0o600), (".pub", 0o644)):
            src = keys / f"ssh_host_{t}_key{suffix}"
            dst = etc / src.name
            shutil.copyfile(src, dst)
            dst.chmod(mode)


def restore_root(cfg: Path) -> None:
    root = cfg / "root"
    root.mkdir(mode=0o700, exist_ok=True)
    shadow = _read(root / "shadow").strip()
    if shadow:
        run("usermod", "--password", shadow, "root")
    keys = root / "authorized_keys"
    if keys.is_file():
        ssh = Path("/root/.ssh")
        ssh.mkdir(mode=0o700, exist_ok=True)
        shutil.copyfile(keys, ssh / "authorized_keys")
        (ssh / "authorized_keys").chmod(0o600)


def keep_boot_files(cfg: Path) -> None:
    """The node's own config files as booter last delivered them."""
    dest = cfg / "boot"
    for name in ("node.config", "triton-networking.json"):
        src = BOOT_FILES / name
        if src.is_file():
            dest.mkdir(mode=0o700, exist_ok=True)
            shutil.copy2(src, dest / name)


def save_root(settings: Settings) -> int:
    """Keep root's password hash and ssh keys on the pool (triton-persist-root.path)."""
    if read_state().get("state") != "imported":
        return 0
    root = settings.config_dir / "root"
    root.mkdir(mode=0o700, exist_ok=True)
    for line in _read(Path("/etc/shadow")).splitlines():
        fields = line.split(":")
        if fields[0] == "root" and fields[1] and fields[1][0] not in "!*":
            (root / "shadow").write_text(fields[1] + "\n")
            (root / "shadow").chmod(0o600)
    keys = Path("/root/.ssh/authorized_keys")
    if keys.is_file():
        shutil.copyfile(keys, root / "authorized_keys")
        (root / "authorized_keys").chmod(0o600)
    return 0


# -- operator commands ----------------------------------------------------------------------

def status(settings: Settings, as_json: bool) -> int:
    state = read_state() or {"pool": settings.name, "state": "unknown",
                             "messages": ["no record of this boot's import (/run/triton/pool/state.json)"]}
    pool = state.get("pool", settings.name)
    if state.get("state") == "imported" and pool in imported_pools():
        state["health"] = pool_health(pool)
    state["setup"] = state.get("state") == "imported"
    if as_json:
        print(json.dumps(state, indent=2))
        return 0
    print(issue_text(state).strip())
    for m in state.get("messages", []):
        print(f"  boot: {m}")
    if state["setup"]:
        print(run("zpool", "status", pool, check=False).stdout.rstrip())
    return 0


def confirm(prompt: str, expected: str) -> bool:
    if not sys.stdin.isatty():
        raise PoolError("not confirmed: run this at a terminal, or pass --yes")
    try:
        return input(prompt).strip() == expected
    except EOFError:
        return False


def factory_reset(settings: Settings, yes: bool, cancel: bool, reboot: bool) -> int:
    found = system_pools(settings)
    if not found:
        raise PoolError("no system pool is imported: there is nothing to reset")
    pool = found[0]
    target = f"{pool}/var"
    if cancel:
        run("zfs", "inherit", FACTORY_RESET, target)
        say(f"factory reset cancelled: {pool} will be imported as usual")
        return 0
    if not yes and not confirm(
            f"At the next boot this DESTROYS pool '{pool}' and everything on it (instances, /opt, /var, "
            f"the node's keys and config). Type the pool name to confirm: ", pool):
        say("not confirmed: nothing changed")
        return 1
    run("zfs", "set", f"{FACTORY_RESET}=yes", target)
    say(f"factory reset requested: pool '{pool}' is destroyed at the next boot "
        f"(`triton-pool factory-reset --cancel` undoes this before then)")
    if reboot:
        run("systemctl", "reboot")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="The node's system pool.")
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="set up or not, health, what the boot did")
    st.add_argument("--json", action="store_true")
    su = sub.add_parser("setup", help="create the system pool (destroys the named disks' contents with --force)")
    su.add_argument("--layout", choices=list(LAYOUTS))
    su.add_argument("--answers", metavar="FILE", help="answers file (JSON) naming layout and disks")
    su.add_argument("--force", action="store_true", help="wipe disks that hold a pool, partitions or a filesystem")
    su.add_argument("--yes", action="store_true", help="do not ask before wiping")
    su.add_argument("disks", nargs="*", metavar="DISK")
    fr = sub.add_parser("factory-reset", help="destroy the system pool at the next boot")
    fr.add_argument("--yes", action="store_true")
    fr.add_argument("--cancel", action="store_true")
    fr.add_argument("--reboot", action="store_true")
    for name in ("boot", "restore", "save-root"):
        sub.add_parser(name, help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    try:
        settings = Settings.load()
        if a.command == "boot":
            return boot(settings)
        if a.command == "restore":
            return restore(settings)
        if a.command == "save-root":
            return save_root(settings)
        if a.command == "status":
            return status(settings, a.json)
        if a.command == "factory-reset":
            return factory_reset(settings, a.yes, a.cancel, a.reboot)
        if a.answers:
            if a.layout or a.disks:
                raise PoolError("give either --answers FILE or --layout and disks, not both")
            try:
                answers = parse_answers(json.loads(Path(a.answers).read_text()), a.answers)
            except OSError as e:
                raise PoolError(f"{a.answers}: {e.strerror}")
            except ValueError as e:
                raise PoolError(f"{a.answers}: not valid JSON: {e}")
            answers = dataclasses.replace(answers, force=answers.force or a.force)
        else:
            if not a.layout or not a.disks:
                raise PoolError("name the layout and the disks: triton-pool setup --layout mirror sdb sdc "
                                "(or --answers FILE); `lsblk -d` lists the disks")
            check_layout(a.layout, a.disks)
            answers = Answers(a.layout, tuple(a.disks), a.force)
        if answers.force and not a.yes and not confirm(
                f"--force wipes {' '.join(answers.disks)} even if they hold data. Type 'wipe' to go on: ", "wipe"):
            say("not confirmed: nothing changed")
            return 1
        say(setup(settings, answers, booting=False))
        return 0
    except PoolError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
