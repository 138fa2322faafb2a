#!/usr/bin/python3
"""imgadm: container images on this node. Standard library only.

An image is a tarball of a root filesystem with a manifest (IMGAPI's, in
the subset that applies: uuid, name, version, os, type, files[0] with size
and sha256). Importing it extracts the tarball into <pool>/<uuid>/root,
verifies size and SHA-256 while it streams, and snapshots the dataset as
<pool>/<uuid>@final; instances are clones of that snapshot.

  imgadm import MANIFEST            path or http(s) URL of the manifest; the
                                    file is files[0].path (or <manifest>.tar.*)
                                    beside it
  imgadm import FILE.tar.zst        with its manifest beside it as FILE.json
  imgadm install -m MANIFEST -f FILE
  imgadm list [-j]
  imgadm get UUID
  imgadm delete UUID                refused while an instance uses the image
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import triton_instance as ti  # noqa: E402
from triton_instance import InstanceError, Settings, run  # noqa: E402

PROG = "imgadm"
CHUNK = 1 << 20
COMPRESSION = {"zstd": "--zstd", "gzip": "--gzip", "xz": "--xz", "bzip2": "--bzip2", "none": None}
MAGIC = {b"\x28\xb5\x2f\xfd": "zstd", b"\x1f\x8b": "gzip", b"\xfd7zXZ": "xz", b"BZh": "bzip2"}
TAR_SUFFIXES = (".tar.zst", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar")


def say(msg: str) -> None:
    print(msg, flush=True)


def is_url(src: str) -> bool:
    return urllib.parse.urlparse(src).scheme in ("http", "https")


def open_source(src: str) -> IO[bytes]:
    try:
        if is_url(src):
            return urllib.request.urlopen(src, timeout=60)
        return open(src, "rb")
    except urllib.error.HTTPError as e:
        raise InstanceError(f"{src}: the server answered {e.code} {e.reason}")
    except urllib.error.URLError as e:
        raise InstanceError(f"{src}: cannot download: {e.reason}")
    except OSError as e:
        raise InstanceError(f"{src}: cannot open: {e.strerror}")


def check_manifest(data: Any, source: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InstanceError(f"{source}: a manifest is a JSON object")
    for field in ("uuid", "name", "version", "os", "type"):
        if not isinstance(data.get(field), str) or not data[field]:
            raise InstanceError(f"{source}: manifest field {field!r} is missing or not a string")
    if not ti.is_uuid(data["uuid"]):
        raise InstanceError(f"{source}: manifest uuid {data['uuid']!r} is not a lower-case UUID")
    if data["os"] != "linux":
        raise InstanceError(f"{source}: image os is {data['os']!r}; this node runs only 'linux' images")
    files = data.get("files")
    if not isinstance(files, list) or len(files) != 1 or not isinstance(files[0], dict):
        raise InstanceError(f"{source}: manifest 'files' must list exactly one file")
    f = files[0]
    if not isinstance(f.get("size"), int) or f["size"] <= 0:
        raise InstanceError(f"{source}: files[0].size must be the file's size in bytes")
    if not isinstance(f.get("sha256"), str) or not re.fullmatch(r"[0-9a-f]{64}", f["sha256"]):
        raise InstanceError(f"{source}: files[0].sha256 must be the file's SHA-256 (64 hex digits)")
    if f.get("compression", "zstd") not in COMPRESSION:
        raise InstanceError(f"{source}: files[0].compression {f['compression']!r} is not one of "
                            f"{', '.join(COMPRESSION)}")
    return data


def load_manifest(src: str) -> dict[str, Any]:
    with open_source(src) as f:
        raw = f.read(CHUNK)
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise InstanceError(f"{src}: not a JSON image manifest: {e}")
    return check_manifest(data, src)


def file_beside(manifest_src: str, manifest: dict[str, Any]) -> str:
    name = manifest["files"][0].get("path")
    if not name:
        stem = manifest_src.rsplit("/", 1)[-1].removesuffix(".json")
        name = stem + ".tar.zst"
    if "/" in name or name in ("", ".", ".."):
        raise InstanceError(f"{manifest_src}: files[0].path must be a file name beside the manifest: {name!r}")
    if is_url(manifest_src):
        return urllib.parse.urljoin(manifest_src, urllib.parse.quote(name))
    return str(Path(manifest_src).resolve().parent / name)


def manifest_path(uuid: str, settings: Settings) -> Path:
    return settings.manifests / f"{settings.pool}-{uuid}.json"


def installed(settings: Settings) -> list[dict[str, Any]]:
    out = []
    for p in sorted(settings.manifests.glob(f"{settings.pool}-*.json")):
        try:
            m = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if ti.zfs_exists(f"{settings.dataset(m.get('uuid', ''))}@{settings.snapshot}"):
            out.append(m)
    return out


def extract(src: str, fileinfo: dict[str, Any], root: Path) -> None:
    """Stream `src` into tar, hashing as it goes; raise if size or hash differ."""
    h = hashlib.sha256()
    size = 0
    with open_source(src) as f:
        first = f.read(CHUNK)
        compression = fileinfo.get("compression") or next(
            (c for m, c in MAGIC.items() if first.startswith(m)), "none")
        flag = COMPRESSION[compression]
        argv = ["tar", "-x", "-C", str(root), "--numeric-owner", "--same-permissions", "--same-owner",
                "--xattrs", "--xattrs-include=*", "--acls"] + ([flag] if flag else [])
        # tar's complaints go to a file: a pipe nobody reads while we feed
        # tar could fill and stall both.
        errors = tempfile.TemporaryFile()
        tar = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=errors)
        assert tar.stdin is not None
        chunk = first
        try:
            while chunk:
                h.update(chunk)
                size += len(chunk)
                tar.stdin.write(chunk)
                chunk = f.read(CHUNK)
        except BrokenPipeError:
            pass
        finally:
            try:
                tar.stdin.close()
            except BrokenPipeError:
                pass
        rc = tar.wait()
        errors.seek(0)
        err = errors.read(4096).decode(errors="replace")
    if size != fileinfo["size"] or h.hexdigest() != fileinfo["sha256"]:
        raise InstanceError(f"{src}: the file is not the one the manifest describes: expected "
                            f"{fileinfo['size']} bytes with SHA-256 {fileinfo['sha256']}, got {size} bytes "
                            f"with SHA-256 {h.hexdigest()}")
    if rc != 0:
        raise InstanceError(f"{src}: cannot unpack the image ({compression}): {err.strip()}")


def import_image(manifest_src: str, file_src: Optional[str], settings: Settings) -> tuple[dict[str, Any], bool]:
    manifest = load_manifest(manifest_src)
    uuid = manifest["uuid"]
    ti.require_pool(settings)
    dataset = settings.dataset(uuid)
    if any(m["uuid"] == uuid for m in installed(settings)):
        return manifest, False
    if ti.zfs_exists(dataset):
        raise InstanceError(f"{dataset} already exists and is not an installed image "
                            f"(an instance, or an import that was interrupted: `zfs destroy -r {dataset}`)")
    src = file_src or file_beside(manifest_src, manifest)
    created = False
    try:
        run("zfs", "create", "-o", f"mountpoint={settings.mountpoint(uuid)}", dataset)
        created = True
        root = settings.root(uuid)
        root.mkdir(mode=0o755)
        extract(src, manifest["files"][0], root)
        if not (root / "etc").is_dir():
            raise InstanceError(f"{src}: the tarball holds no root filesystem (no etc/ at its top)")
        run("zfs", "snapshot", f"{dataset}@{settings.snapshot}")
        # Instances are clones; the image itself need not stay mounted.
        run("zfs", "set", "canmount=noauto", dataset)
        run("zfs", "unmount", dataset, check=False)
        ti.remove_mountpoint(settings.mountpoint(uuid))
        settings.manifests.mkdir(parents=True, exist_ok=True)
        target = manifest_path(uuid, settings)
        target.with_suffix(".tmp").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        target.with_suffix(".tmp").replace(target)
    except BaseException:
        if created:
            run("zfs", "destroy", "-r", dataset, check=False)
            ti.remove_mountpoint(settings.mountpoint(uuid))
        raise
    return manifest, True


def delete_image(uuid: str, settings: Settings) -> None:
    if not ti.is_uuid(uuid):
        raise InstanceError(f"{uuid!r} is not an image UUID (see `imgadm list`)")
    snap = f"{settings.dataset(uuid)}@{settings.snapshot}"
    if not ti.zfs_exists(snap):
        raise InstanceError(f"image {uuid} is not installed (see `imgadm list`)")
    clones = [c for c in ti.zfs_get(snap, "clones").split(",") if c and c != "-"]
    if clones:
        users = ", ".join(c.rsplit("/", 1)[-1] for c in clones)
        raise InstanceError(f"image {uuid} is used by instance(s) {users}: delete them first (`vmadm delete`)")
    run("zfs", "destroy", "-r", settings.dataset(uuid))
    ti.remove_mountpoint(settings.mountpoint(uuid))
    manifest_path(uuid, settings).unlink(missing_ok=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Container images on this node.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("import", help="import an image from its manifest (path or URL)").add_argument("source")
    p = sub.add_parser("install", help="install an image from a manifest and a file")
    p.add_argument("-m", dest="manifest", required=True)
    p.add_argument("-f", dest="file", required=True)
    sub.add_parser("list").add_argument("-j", dest="json", action="store_true")
    sub.add_parser("get").add_argument("uuid")
    sub.add_parser("delete").add_argument("uuid")
    args = parser.parse_args(argv)
    try:
        settings = Settings.load()
        if args.cmd in ("import", "install"):
            if args.cmd == "install":
                manifest_src, file_src = args.manifest, args.file
            elif args.source.endswith(TAR_SUFFIXES) and not is_url(args.source):
                stem = next(args.source[: -len(s)] for s in TAR_SUFFIXES if args.source.endswith(s))
                manifest_src, file_src = stem + ".json", args.source
            elif ti.is_uuid(args.source):
                raise InstanceError(f"import {args.source}: importing by UUID needs an image server (IMGAPI), "
                                    f"and this node has none configured; give the manifest's path or URL")
            else:
                manifest_src, file_src = args.source, None
            m, new = import_image(manifest_src, file_src, settings)
            what = f"{m['uuid']} ({m['name']}@{m['version']})"
            say(f"Imported image {what}" if new else f"Image {what} is already installed")
        elif args.cmd == "list":
            images = installed(settings)
            if args.json:
                say(json.dumps([{"manifest": m} for m in images], indent=2))
            else:
                rows = [[m["uuid"], m["name"], m["version"], m["os"], m["type"],
                         str(m.get("published_at", "-"))[:10]] for m in images]
                header = ["UUID", "NAME", "VERSION", "OS", "TYPE", "PUB"]
                widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
                for r in [header, *rows]:
                    say("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        elif args.cmd == "get":
            manifest = manifest_path(args.uuid, settings)
            if not ti.is_uuid(args.uuid) or not manifest.is_file():
                raise InstanceError(f"image {args.uuid} is not installed (see `imgadm list`)")
            say(manifest.read_text().rstrip())
        elif args.cmd == "delete":
            delete_image(args.uuid, settings)
            say(f"Deleted image {args.uuid}")
    except InstanceError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
