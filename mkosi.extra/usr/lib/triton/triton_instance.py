"""Container instances on the system pool: what vmadm, imgadm, the unit
generator and triton-instance@.service share. Standard library only.

An instance is the dataset <pool>/<uuid>, a clone of an image's
<pool>/<image>@final, mounted on /zones/<uuid>:

    /zones/<uuid>/root/             the instance's root filesystem
    /zones/<uuid>/config/vm.json    its config (what vmadm create was given,
                                    with defaults filled in)

While vmadm creates it (and while imgadm imports an image) the dataset is
<pool>/<uuid>-partial, mounted on /zones/<uuid>-partial; renaming it to
<pool>/<uuid> is the last step. A power cut leaves either the finished
dataset or a -partial one, which the next boot destroys (`leftovers`,
triton-pool restore) before anything mounts or starts it.

Nothing else about an instance is kept anywhere. At boot and on every change
(`systemctl daemon-reload`) the generator turns each vm.json into the unit's
resource limits and, for autoboot instances, a want from machines.target;
when the unit starts, `prepare` writes its systemd-nspawn settings
(/run/systemd/nspawn/<uuid>.nspawn) and network config into /run.

This module is what they share (settings, datasets, reading an instance's
config); each job is a module of its own:
  triton_instance_payload    checking a vmadm payload or update
  triton_instance_generator  the systemd generator (unit drop-ins, autoboot)
  triton_instance_prepare    the unit's ExecStartPre and ExecStopPost
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Optional

import triton_common
import triton_settings
from triton_common import is_uuid
from triton_settings import PARTIAL, RUNTIME, InstanceSettings

SETTINGS = triton_settings.INSTANCES_JSON
NSPAWN_DIR = Path("/run/systemd/nspawn")
RUN_DIR = RUNTIME.instances
UNIT = "triton-instance@{}.service"
TEMPLATE = "/usr/lib/systemd/system/triton-instance@.service"
# imgadm unpacks images as this 64K range of host users (see
# triton_imgadm.spawn_unprivileged), never as the host's root. It is the top
# of systemd-nspawn's container range: an instance's systemd-nspawn takes the
# range its root is owned by when no running instance has it, else picks
# another and re-owns (chowns) the instance's files to it.
IMAGE_UID_BASE = 0x6FFF0000


class InstanceError(Exception):
    """Bad input or a state the operator must fix; the message names it."""


def load_settings() -> InstanceSettings:
    try:
        return triton_settings.load_instances(SETTINGS)
    except triton_settings.SettingsError as e:
        raise InstanceError(str(e)) from None


def run(*argv: str, check: bool = True, input: Optional[str] = None) -> subprocess.CompletedProcess[str]:
    """A failure is an InstanceError naming the command."""
    return triton_common.run(*argv, check=check, input=input, error=InstanceError)


def zfs_exists(name: str) -> bool:
    return run("zfs", "list", "-H", "-o", "name", name, check=False).returncode == 0


def require_pool(settings: InstanceSettings) -> None:
    if not zfs_exists(settings.pool):
        raise InstanceError(f"this node has no system pool {settings.pool!r} imported "
                            f"(see `triton-pool status`; `triton-pool setup` creates it)")


def zfs_get(name: str, prop: str) -> str:
    return run("zfs", "get", "-H", "-p", "-o", "value", prop, name).stdout.strip()


def write_durable(path: Path, text: str, mode: int = 0o600) -> None:
    """The whole new file or the old one, on disk when this returns: written
    beside it, synced, renamed over it, and the rename synced."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def finish(uuid: str, settings: InstanceSettings) -> None:
    """The last step of making a dataset: <pool>/<uuid>-partial becomes
    <pool>/<uuid>, in one transaction (a mounted one is mounted again at
    its new mountpoint)."""
    run("zfs", "rename", settings.partial(uuid), settings.dataset(uuid))
    remove_mountpoint(Path("/") / settings.partial(uuid))


def discard(uuid: str, settings: InstanceSettings) -> None:
    """An unfinished <pool>/<uuid>-partial, if there is one."""
    if zfs_exists(settings.partial(uuid)):
        run("zfs", "destroy", "-r", settings.partial(uuid))
    remove_mountpoint(Path("/") / settings.partial(uuid))


def remove_mountpoint(path: Path) -> None:
    """ZFS leaves a destroyed or unmounted dataset's empty directory behind."""
    try:
        path.rmdir()
    except OSError:
        pass


# What `leftovers` reads: each top-level dataset's origin (a clone's image
# snapshot, or "-") and exec, and their snapshots.
LEFTOVERS_LISTING = ("zfs", "list", "-H", "-o", "name,origin,exec", "-t", "filesystem,snapshot", "-d", "2")


@dataclasses.dataclass(frozen=True)
class Leftover:
    dataset: str
    why: str
    image: Optional[str] = None  # an image that was never installed: its manifest goes too


def leftovers(listing: str, pool: str) -> list[Leftover]:
    """From `zfs list -H -o name,origin,exec -t filesystem,snapshot -d 2
    <pool>`: what interrupted `vmadm create`s and `imgadm import`s left,
    to be destroyed at boot before anything mounts or starts it.

    - <pool>/<uuid>-partial: never finished (a clone: an instance; else an
      image). The rename that finishes one was never made, so the command
      never reported success either; whatever it had written (even its
      vm.json) is not a whole instance or image, and goes.
    - <pool>/<uuid> that is no clone, has no snapshot and has exec=off: an
      image import by an earlier imgadm (which unpacked under the final name
      and snapshotted it @final last) that never finished. Instances are
      clones; a finished image has its snapshot."""
    rows = [line.split("\t") for line in listing.splitlines()]
    snapshotted = {r[0].partition("@")[0] for r in rows if "@" in r[0]}
    datasets = {r[0]: r for r in rows if len(r) == 3 and "@" not in r[0]}
    out = []
    for name, (_, origin, exec_) in sorted(datasets.items()):
        parent, _, child = name.rpartition("/")
        if parent != pool:
            continue
        uuid = child.removesuffix(PARTIAL)
        if child.endswith(PARTIAL) and is_uuid(uuid):
            if origin != "-":
                out.append(Leftover(name, "a `vmadm create` cut short (a power cut or crash) that never finished"))
            else:
                out.append(Leftover(name, "an `imgadm import` cut short (a power cut or crash) that never finished",
                                    None if f"{pool}/{uuid}" in datasets else uuid))
        elif is_uuid(child) and origin == "-" and exec_ == "off" and name not in snapshotted:
            out.append(Leftover(name, "an image import by an earlier imgadm that never finished (no @final snapshot)",
                                child))
    return out


def read_config(uuid: str, settings: InstanceSettings) -> dict[str, Any]:
    path = settings.config_file(uuid)
    try:
        vm = json.loads(path.read_text())
    except FileNotFoundError:
        raise InstanceError(f"instance {uuid}: no such instance (no {path}; see `vmadm list`)")
    except (OSError, ValueError) as e:
        raise InstanceError(f"instance {uuid}: cannot read {path}: {e}")
    if vm.get("uuid") != uuid:
        raise InstanceError(f"instance {uuid}: {path} names another uuid ({vm.get('uuid')!r})")
    return vm


def instance_uuids(settings: InstanceSettings) -> list[str]:
    """Instances whose config is on the pool (their datasets are mounted)."""
    top = Path("/") / settings.pool
    try:
        names = sorted(p.name for p in top.iterdir())
    except OSError:
        return []
    return [n for n in names if is_uuid(n) and settings.config_file(n).is_file()]


def mount(uuid: str, settings: InstanceSettings) -> None:
    dataset = settings.dataset(uuid)
    if not zfs_exists(dataset):
        raise InstanceError(f"instance {uuid}: no such instance (no dataset {dataset}; see `vmadm list`)")
    if zfs_get(dataset, "mounted") != "yes":
        run("zfs", "mount", dataset)


def check_bridges(vm: dict[str, Any], settings: InstanceSettings) -> None:
    """Each NIC's tag must be a bridge on this node (triton-network makes them)."""
    for i, nic in enumerate(vm["nics"]):
        bridge = settings.bridge(nic["nic_tag"])
        if not Path(f"/sys/class/net/{bridge}/bridge").is_dir():
            raise InstanceError(f"nics[{i}].nic_tag: this node has no NIC tag {nic['nic_tag']!r} "
                                f"(no bridge {bridge}; see `networkctl list`)")


def unit_properties(vm: dict[str, Any]) -> dict[str, str]:
    """systemd resource-control properties of the instance's unit."""
    props = {
        "MemoryMax": f"{vm['max_physical_memory']}M",
        "MemorySwapMax": "0",
        "CPUWeight": str(vm["cpu_shares"]),
        "TasksMax": str(vm["max_lwps"]),
        # An empty CPUQuota= is "no cap".
        "CPUQuota": f"{vm['cpu_cap']}%" if vm["cpu_cap"] else "",
    }
    return props
