#!/usr/bin/python3
"""vmadm: container instances on this node, the way Triton's agents and
operators drive them on SmartOS. A thin layer over systemd (the
triton-instance@<uuid> unit runs systemd-nspawn), machined and ZFS; no
daemon of its own. Standard library only.

  vmadm create [-f FILE]          JSON payload on stdin or in FILE
  vmadm list [-H] [-o FIELDS]     one line per instance
  vmadm get UUID                  the instance's config and state, as JSON
  vmadm start|stop|reboot UUID
  vmadm update UUID [-f FILE]     limits, alias, autoboot, metadata, resolvers
  vmadm update UUID field=value ...
  vmadm delete UUID

The SmartOS mapping: `zoneadm boot` is `systemctl start triton-instance@UUID`,
`zlogin UUID` is `machinectl login UUID` (or `machinectl shell UUID`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import triton_guestroot as guestroot  # noqa: E402
import triton_instance as ti  # noqa: E402
from triton_common import is_uuid  # noqa: E402
from triton_instance import InstanceError, load_settings, run  # noqa: E402
from triton_instance_payload import check_payload, check_update  # noqa: E402
from triton_instance_prepare import cleanup  # noqa: E402
from triton_settings import InstanceSettings  # noqa: E402

PROG = "vmadm"
STATES = {"active": "running", "reloading": "running", "activating": "provisioning",
          "deactivating": "stopping", "inactive": "stopped", "failed": "failed"}


def say(msg: str) -> None:
    print(msg, flush=True)


def unit(uuid: str) -> str:
    return ti.UNIT.format(uuid)


def state(uuid: str) -> str:
    active = run("systemctl", "show", "-P", "ActiveState", unit(uuid), check=False).stdout.strip()
    return STATES.get(active, active or "unknown")


def daemon_reload() -> None:
    run("systemctl", "daemon-reload")


def read_payload(path: Optional[str]) -> Any:
    source = path or "stdin"
    try:
        text = Path(path).read_text() if path else sys.stdin.read()
    except OSError as e:
        raise InstanceError(f"{source}: cannot read the payload: {e.strerror}")
    try:
        return json.loads(text)
    except ValueError as e:
        raise InstanceError(f"{source}: the payload is not valid JSON: {e}")


def write_json(path: Path, data: Any) -> None:
    """Replaced whole and synced: a power cut leaves the old config or the new."""
    ti.write_durable(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def image_snapshot(image: str, settings: InstanceSettings) -> str:
    snap = f"{settings.dataset(image)}@{settings.snapshot}"
    if not settings.manifest(image).is_file() or not ti.zfs_exists(snap):
        raise InstanceError(f"image_uuid: image {image} is not installed on this node "
                            f"(see `imgadm list`; `imgadm import` it first)")
    return snap


def instance_exists(uuid: str, settings: InstanceSettings) -> bool:
    return ti.zfs_exists(settings.dataset(uuid)) or settings.config_file(uuid).exists()


def check_new(uuid: str, settings: InstanceSettings) -> None:
    if instance_exists(uuid, settings):
        raise InstanceError(f"uuid: an instance {uuid} already exists on this node")
    if ti.zfs_exists(settings.partial(uuid)):
        raise InstanceError(f"uuid: instance {uuid} is being created, or its creation was cut short "
                            f"({settings.partial(uuid)} exists; the next boot removes it, or "
                            f"`zfs destroy -r {settings.partial(uuid)}`)")


def set_root_credentials(vm: dict[str, Any], root: Path) -> None:
    """root's password and keys in a root that has never run (just cloned).
    The image's files are written without following its links, and none of
    its programs runs (triton_guestroot)."""
    try:
        password = vm["internal_metadata"].get("root_pw")
        if password:
            guestroot.set_root_password(root, password)
        keys = vm["customer_metadata"].get("root_authorized_keys")
        if keys:
            guestroot.set_root_keys(root, keys)
    except guestroot.GuestRootError as e:
        raise InstanceError(f"image {vm['image_uuid']}: cannot set root's password or keys in the "
                            f"instance: {e}")


def create(payload: Any, settings: InstanceSettings) -> str:
    """Crash-atomic: the instance is made as <pool>/<uuid>-partial and
    renamed to <pool>/<uuid> once its root and vm.json are written. A power
    cut before the rename leaves a -partial dataset that the next boot
    removes; after it, a whole instance (started at boot if autoboot)."""
    vm = check_payload(payload, settings)
    ti.require_pool(settings)
    uuid = vm.setdefault("uuid", str(uuidlib.uuid4()))
    check_new(uuid, settings)
    snap = image_snapshot(vm["image_uuid"], settings)
    ti.check_bridges(vm, settings)
    vm["create_timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cloned = False
    try:
        # The mountpoint is inherited (/zones/<uuid>-partial, then /zones/<uuid>).
        run("zfs", "clone", "-o", f"quota={vm['quota']}G" if vm["quota"] else "quota=none",
            snap, settings.partial(uuid))
        cloned = True
        fill(vm, settings)
        ti.finish(uuid, settings)
        ti.mount(uuid, settings)
        daemon_reload()
        if vm["autoboot"]:
            start(uuid, settings)
    except BaseException:
        if cloned:
            undo_create(uuid, settings)
        raise
    return uuid


def fill(vm: dict[str, Any], settings: InstanceSettings) -> None:
    """The unfinished instance's root credentials and config (vm.json last)."""
    partial = settings.partial(vm["uuid"])
    if ti.zfs_get(partial, "mounted") != "yes":
        run("zfs", "mount", partial)
    where = Path(ti.zfs_get(partial, "mountpoint"))
    # Only root on the host goes into an instance's dataset.
    where.chmod(0o700)
    config = where / settings.config_dir / "vm.json"
    config.parent.mkdir(mode=0o700, exist_ok=True)
    set_root_credentials(vm, where / settings.root_dir)
    write_json(config, vm)


def undo_create(uuid: str, settings: InstanceSettings) -> None:
    """What this create made: the unfinished dataset, or the instance once
    it was renamed (check_new made sure no other was there)."""
    if ti.zfs_exists(settings.partial(uuid)):
        ti.discard(uuid, settings)
    elif ti.zfs_exists(settings.dataset(uuid)):
        remove(uuid, settings)


def start(uuid: str, settings: InstanceSettings) -> None:
    ti.mount(uuid, settings)
    ti.read_config(uuid, settings)
    # Blocks until the instance's own systemd has finished booting (Type=notify).
    p = run("systemctl", "start", unit(uuid), check=False)
    if p.returncode != 0:
        why = run("journalctl", "-u", unit(uuid), "-n", "8", "-o", "cat", "--no-pager", check=False).stdout
        raise InstanceError(f"instance {uuid} did not start: {p.stderr.strip()}\n{why.rstrip()}")


def stop(uuid: str, settings: InstanceSettings, force: bool = False) -> None:
    ti.read_config(uuid, settings)
    if force:
        # -F: no clean shutdown of the instance's own systemd.
        run("systemctl", "kill", "--signal=SIGKILL", unit(uuid), check=False)
    run("systemctl", "stop", unit(uuid))


def reboot(uuid: str, settings: InstanceSettings) -> None:
    ti.mount(uuid, settings)
    ti.read_config(uuid, settings)
    run("systemctl", "restart", unit(uuid))


def remove(uuid: str, settings: InstanceSettings) -> None:
    """Everything of the instance: the unit's state, its /run files, its dataset."""
    run("systemctl", "stop", unit(uuid), check=False)
    run("systemctl", "reset-failed", unit(uuid), check=False)
    dataset = settings.dataset(uuid)
    if ti.zfs_exists(dataset):
        run("zfs", "destroy", "-r", dataset)
    ti.remove_mountpoint(settings.mountpoint(uuid))
    for p in (ti.NSPAWN_DIR / f"{uuid}.nspawn",):
        p.unlink(missing_ok=True)
    cleanup(uuid)
    rundir = ti.RUN_DIR / uuid
    if rundir.is_dir():
        for f in rundir.iterdir():
            f.unlink()
        rundir.rmdir()
    control = Path("/run/systemd/system.control") / (unit(uuid) + ".d")
    if control.is_dir():
        for f in control.iterdir():
            f.unlink()
        control.rmdir()
    daemon_reload()


def delete(uuid: str, settings: InstanceSettings) -> None:
    if not is_uuid(uuid):
        raise InstanceError(f"{uuid!r} is not an instance UUID (see `vmadm list`)")
    if not instance_exists(uuid, settings):
        raise InstanceError(f"instance {uuid}: no such instance (see `vmadm list`)")
    remove(uuid, settings)


def update(uuid: str, changes: Any, settings: InstanceSettings) -> dict[str, Any]:
    vm = ti.read_config(uuid, settings)
    new = check_update(vm, changes, settings)
    if new["quota"] != vm.get("quota"):
        run("zfs", "set", f"quota={new['quota']}G" if new["quota"] else "quota=none", settings.dataset(uuid))
    write_json(settings.config_file(uuid), new)
    daemon_reload()
    if state(uuid) in ("running", "provisioning"):
        props = ti.unit_properties(new)
        old = ti.unit_properties(vm)
        changed = [f"{k}={v}" for k, v in props.items() if old.get(k) != v]
        if changed:
            # Applied to the running instance's cgroup at once; the generated
            # drop-in (daemon-reload above) carries them across restarts.
            run("systemctl", "set-property", "--runtime", unit(uuid), *changed)
    return new


def info(uuid: str, settings: InstanceSettings) -> dict[str, Any]:
    vm = ti.read_config(uuid, settings)
    out = dict(vm)
    out["state"] = state(uuid)
    out["zone_state"] = out["state"]
    out["zfs_filesystem"] = settings.dataset(uuid)
    out["zonepath"] = str(settings.mountpoint(uuid))
    out["brand"] = vm.get("brand", "nspawn")
    out["ram"] = vm["max_physical_memory"]
    show = run("systemctl", "show", unit(uuid), "-p", "MainPID,MemoryCurrent,ActiveEnterTimestamp", check=False)
    props = dict(line.split("=", 1) for line in show.stdout.splitlines() if "=" in line)
    if out["state"] == "running":
        out["pid"] = int(props.get("MainPID", "0") or 0)
        out["boot_timestamp"] = props.get("ActiveEnterTimestamp", "")
        mem = props.get("MemoryCurrent", "")
        if mem.isdigit():
            out["memory_current_bytes"] = int(mem)
    return out


def lookup(filters: dict[str, Any], settings: InstanceSettings) -> list[dict[str, Any]]:
    """Instances whose fields equal all of `filters` (vmadm lookup field=value)."""
    out = []
    for u in ti.instance_uuids(settings):
        try:
            vm = info(u, settings)
        except InstanceError:
            continue
        if all(str(vm.get(k)).lower() == str(v).lower() for k, v in filters.items()):
            out.append(vm)
    return out


def list_rows(fields: Sequence[str], settings: InstanceSettings) -> list[list[str]]:
    rows = []
    for u in ti.instance_uuids(settings):
        try:
            vm = info(u, settings)
        except InstanceError:
            continue
        vm["type"] = "OS"
        rows.append(["-" if vm.get(f) in (None, "") else str(vm.get(f)) for f in fields])
    return rows


def format_table(fields: Sequence[str], rows: list[list[str]], header: bool) -> str:
    widths = [max([len(f)] + [len(r[i]) for r in rows]) for i, f in enumerate(fields)]
    out = []
    if header:
        out.append("  ".join(f.upper().ljust(w) for f, w in zip(fields, widths)).rstrip())
    for r in rows:
        out.append("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return "\n".join(out)


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """`field=value` arguments, as vmadm update takes them; values that are
    JSON (numbers, true/false) are taken as such."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InstanceError(f"{item!r}: expected field=value (like max_physical_memory=512)")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Container instances on this node.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("create", help="create (and, with autoboot, start) an instance")
    p.add_argument("-f", "--file")
    p = sub.add_parser("list", help="the node's instances")
    p.add_argument("-H", dest="no_header", action="store_true")
    p.add_argument("-o", dest="fields", default="uuid,type,ram,state,alias")
    for name in ("get", "start", "reboot", "delete"):
        sub.add_parser(name).add_argument("uuid")
    p = sub.add_parser("stop")
    p.add_argument("uuid")
    p.add_argument("-F", dest="force", action="store_true", help="kill it, no clean shutdown")
    p = sub.add_parser("lookup", help="instances matching field=value filters")
    p.add_argument("-j", dest="json", action="store_true")
    p.add_argument("-1", dest="one", action="store_true", help="exactly one must match")
    p.add_argument("filters", nargs="*")
    p = sub.add_parser("update", help="change limits, alias, autoboot, metadata")
    p.add_argument("uuid")
    p.add_argument("-f", "--file")
    p.add_argument("assignments", nargs="*")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.cmd == "create":
            began = time.monotonic()
            u = create(read_payload(args.file), settings)
            say(f"Successfully created VM {u}")
            print(f"vmadm: created and started in {time.monotonic() - began:.1f} s", file=sys.stderr)
        elif args.cmd == "list":
            fields = [f for f in args.fields.split(",") if f]
            say(format_table(fields, list_rows(fields, settings), not args.no_header))
        elif args.cmd == "get":
            say(json.dumps(info(args.uuid, settings), indent=2, sort_keys=True))
        elif args.cmd == "lookup":
            found = lookup(parse_assignments(args.filters), settings)
            if args.one and len(found) != 1:
                raise InstanceError(f"lookup -1: {len(found)} instances match, not exactly one")
            say(json.dumps(found, indent=2, sort_keys=True) if args.json else "\n".join(v["uuid"] for v in found))
        elif args.cmd == "stop":
            stop(args.uuid, settings, args.force)
            say(f"Successfully completed stop for VM {args.uuid}")
        elif args.cmd in ("start", "reboot"):
            {"start": start, "reboot": reboot}[args.cmd](args.uuid, settings)
            say(f"Successfully completed {args.cmd} for VM {args.uuid}")
        elif args.cmd == "update":
            if args.file and args.assignments:
                raise InstanceError("update: give -f FILE or field=value arguments, not both")
            changes = parse_assignments(args.assignments) if args.assignments else read_payload(args.file)
            update(args.uuid, changes, settings)
            say(f"Successfully updated VM {args.uuid}")
        elif args.cmd == "delete":
            delete(args.uuid, settings)
            say(f"Successfully deleted VM {args.uuid}")
    except InstanceError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"{PROG}: {e.filename}: not found (is this a Triton Linux compute node?)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
