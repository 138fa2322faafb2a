#!/usr/bin/python3
"""imgadm: container images on this node. Standard library only.

An image is a tarball of a root filesystem with a manifest (IMGAPI's, in
the subset that applies: uuid, name, version, os, type, files[0] with size
and sha256). Importing it extracts the tarball into <pool>/<uuid>/root,
verifies size and SHA-256 while it streams, and snapshots the dataset as
<pool>/<uuid>@final; instances are clones of that snapshot. Until it is
whole, the dataset is <pool>/<uuid>-partial (see triton_settings.PARTIAL).

  imgadm import MANIFEST            path or http(s) URL of the manifest; the
                                    file is files[0].path (or <manifest>.tar.*)
                                    beside it
  imgadm import FILE.tar.zst        with its manifest beside it as FILE.json
  imgadm install -m MANIFEST -f FILE
  imgadm list [-j] [-H]             -H: no header line
  imgadm sources [-j|-v]            the image servers, one URL a line
  imgadm sources [-f] -a URL [-t imgapi|docker|dsapi] [-k]
  imgadm sources [-f] -d URL
  imgadm sources -r                 back to the default
  imgadm get UUID
  imgadm delete UUID                refused while an instance uses the image

The image servers are kept in imgadm.conf (platform.yaml's imgadm_config,
under /usr/triton/config as on Triton's Linux nodes), written with the
default source by `imgadm list` or `imgadm sources` when there is none, as Triton's
joysetup.sh expects (it runs `imgadm list -H` to make it, edits it with
json, then replaces the sources with the datacenter's IMGAPI).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import triton_instance as ti  # noqa: E402
from triton_common import is_uuid  # noqa: E402
from triton_instance import InstanceError, load_settings, run  # noqa: E402
from triton_settings import InstanceSettings  # noqa: E402

PROG = "imgadm"
CHUNK = 1 << 20
COMPRESSION = {"zstd": "--zstd", "gzip": "--gzip", "xz": "--xz", "bzip2": "--bzip2", "none": None}
MAGIC = {b"\x28\xb5\x2f\xfd": "zstd", b"\x1f\x8b": "gzip", b"\xfd7zXZ": "xz", b"BZh": "bzip2"}
TAR_SUFFIXES = (".tar.zst", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar")
# While it is imported, an image may unpack to this many times its file's
# size (at least IMPORT_QUOTA_MIN): more is a decompression bomb, refused
# before it fills the pool. Root filesystems compress about 3-5x.
IMPORT_QUOTA_FACTOR = 20
IMPORT_QUOTA_MIN = 256 << 20


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
    if not is_uuid(data["uuid"]):
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


def manifest_path(uuid: str, settings: InstanceSettings) -> Path:
    return settings.manifest(uuid)


def installed(settings: InstanceSettings) -> list[dict[str, Any]]:
    out = []
    for p in sorted(settings.manifest_dir.glob(f"{settings.pool}-*.json")):
        try:
            m = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if ti.zfs_exists(f"{settings.dataset(m.get('uuid', ''))}@{settings.snapshot}"):
            out.append(m)
    return out


SOURCE_TYPES = ("imgapi", "docker", "dsapi")


def default_config(settings: InstanceSettings) -> dict[str, Any]:
    return {"sources": [{"url": u, "type": "imgapi"} for u in settings.image_sources]}


def write_config(path: Path, data: dict[str, Any]) -> None:
    """Whole or not at all: a reader never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ti.write_durable(path, json.dumps(data, indent=2) + "\n", 0o644)
    except OSError as e:
        raise InstanceError(f"{path}: cannot write it ({e.strerror or e})") from None


def load_config(settings: InstanceSettings) -> dict[str, Any]:
    """imgadm.conf, written with the default sources if there is none.
    Keys imgadm does not use (userAgentExtra, ...) are kept as they are."""
    path = Path(settings.imgadm_config)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        data = default_config(settings)
        write_config(path, data)
        return data
    except OSError as e:
        raise InstanceError(f"{path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise InstanceError(f"{path}: not valid JSON ({e}); fix it, or remove it to start again "
                            f"from the default sources") from None
    sources = data.get("sources", []) if isinstance(data, dict) else None
    if not isinstance(sources, list) or not all(isinstance(x, dict) and isinstance(x.get("url"), str)
                                                for x in sources):
        raise InstanceError(f"{path}: must be an object whose 'sources' is a list of "
                            f"{{\"url\": ..., \"type\": ...}}; fix it, or remove it to start again "
                            f"from the default sources")
    return data


def source_url(url: str) -> str:
    """An image server's URL as given, if it is one."""
    u = urllib.parse.urlparse(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise InstanceError(f"image source {url!r} is not an http(s) URL (e.g. http://imgapi.mydc.example.com)")
    return url


def same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def sources(settings: InstanceSettings, add: Optional[str], delete: Optional[str], reset: bool,
            kind: str, insecure: bool, as_json: bool, verbose: bool) -> None:
    """`imgadm sources`: list, add, delete or reset the image servers."""
    path = Path(settings.imgadm_config)
    cfg = load_config(settings)
    have: list[dict[str, Any]] = cfg.setdefault("sources", [])
    if add is not None:
        url = source_url(add)
        if any(same_url(x["url"], url) for x in have):
            say(f'Already have image source "{url}", no change')
            return
        have.append({"url": url, "type": kind, **({"insecure": True} if insecure else {})})
        write_config(path, cfg)
        say(f'Added image source "{url}" (type {kind})')
    elif delete is not None:
        keep = [x for x in have if not same_url(x["url"], delete)]
        if len(keep) == len(have):
            say(f'Do not have image source "{delete}", no change')
            return
        cfg["sources"] = keep
        write_config(path, cfg)
        say(f'Deleted image source "{delete}"')
    elif reset:
        cfg["sources"] = default_config(settings)["sources"]
        write_config(path, cfg)
        say("Image sources reset to the default: " + (", ".join(settings.image_sources) or "none"))
    elif as_json:
        say(json.dumps(have, indent=2))
    else:
        for x in have:
            say(f"{x['url']}  {x.get('type', 'imgapi')}{'  insecure' if x.get('insecure') else ''}"
                if verbose else x["url"])


CLONE_NEWUSER = 0x10000000
UID_RANGE = 65536
PR_SET_NO_NEW_PRIVS = 38


def spawn_unprivileged(argv: Sequence[str], cwd: Path, base: int, stdin: int, stderr: int) -> int:
    """Start argv in `cwd` in a new user namespace whose users 0-65535 are
    the host's base..base+65535, as its root: it can write only where that
    range may, make no device node, set no host-effective file capability,
    and what it creates is owned by the range, never by the host's root."""
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    dirfd = os.open(cwd, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    pid = os.fork()
    if pid == 0:  # the child: nothing here may return
        try:
            os.close(ready_r)
            os.close(go_w)
            os.dup2(stdin, 0)
            os.dup2(stderr, 1)
            os.dup2(stderr, 2)
            os.fchdir(dirfd)
            if libc.unshare(CLONE_NEWUSER) != 0:
                os.write(ready_w, os.strerror(ctypes.get_errno()).encode())
                os._exit(126)
            os.write(ready_w, b"u")
            if os.read(go_r, 1) != b"g":
                os._exit(126)
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            os.execvp(argv[0], list(argv))
        finally:
            os._exit(127)
    os.close(dirfd)
    os.close(ready_w)
    os.close(go_r)
    try:
        ready = os.read(ready_r, 200)
        if ready != b"u":
            raise InstanceError(f"cannot make a user namespace to unpack the image in: "
                                f"{ready.decode(errors='replace') or 'its process died'}")
        for kind in ("uid_map", "gid_map"):
            Path(f"/proc/{pid}/{kind}").write_text(f"0 {base} {UID_RANGE}\n")
        os.write(go_w, b"g")
    except BaseException:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(ready_r)
        os.close(go_w)
    return pid


def extract(src: str, fileinfo: dict[str, Any], root: Path, uid_base: int) -> None:
    """Stream `src` into an unprivileged tar (see spawn_unprivileged), hashing
    as it goes; stop as soon as it is longer than the manifest says; raise
    if size or hash differ."""
    h = hashlib.sha256()
    size, limit = 0, fileinfo["size"]
    os.chown(root, uid_base, uid_base)
    with open_source(src) as f, tempfile.TemporaryFile() as errors:
        first = f.read(CHUNK)
        compression = str(fileinfo.get("compression") or next(
            (c for m, c in MAGIC.items() if first.startswith(m)), "none"))
        flag = COMPRESSION[compression]
        # The image's own /dev is never used (instances get a fresh one), so
        # its device nodes are not even tried; one anywhere else fails.
        argv = ["tar", "-x", "--numeric-owner", "--same-permissions", "--same-owner", "--no-overwrite-dir",
                "--xattrs", "--xattrs-include=user.*", "--xattrs-include=security.capability",
                "--anchored", "--exclude=dev/*", "--exclude=./dev/*"] + ([flag] if flag else [])
        # tar's complaints go to a file: a pipe nobody reads while we feed
        # tar could fill and stall both.
        stdin_r, stdin_w = os.pipe()
        pid = spawn_unprivileged(argv, root, uid_base, stdin_r, errors.fileno())
        os.close(stdin_r)
        chunk, too_long = first, False
        try:
            while chunk:
                h.update(chunk)
                size += len(chunk)
                if size > limit:
                    too_long = True
                    break
                os.write(stdin_w, chunk)
                chunk = f.read(CHUNK)
        except BrokenPipeError:
            pass
        finally:
            os.close(stdin_w)
            if too_long:
                os.kill(pid, 9)
            status = os.waitpid(pid, 0)[1]
        rc = os.waitstatus_to_exitcode(status)
        # tar's last lines say why it stopped.
        size_err = errors.seek(0, os.SEEK_END)
        errors.seek(max(0, size_err - 4096))
        err = "\n".join(errors.read().decode(errors="replace").splitlines()[-6:])
    if too_long:
        raise InstanceError(f"{src}: the file is longer than the manifest's files[0].size "
                            f"({limit} bytes): stopped reading it")
    if size != limit or h.hexdigest() != fileinfo["sha256"]:
        raise InstanceError(f"{src}: the file is not the one the manifest describes: expected "
                            f"{limit} bytes with SHA-256 {fileinfo['sha256']}, got {size} bytes "
                            f"with SHA-256 {h.hexdigest()}")
    if rc != 0:
        if "quota exceeded" in err:
            raise InstanceError(f"{src}: the image unpacks to more than its import quota "
                                f"({IMPORT_QUOTA_FACTOR}x its {limit} bytes, at least "
                                f"{IMPORT_QUOTA_MIN >> 20} MiB): refused as a bomb")
        raise InstanceError(f"{src}: cannot unpack the image ({compression}): {err.strip()}")


def import_quota(file_size: int) -> int:
    """Bytes an image may unpack to while it is imported."""
    return max(IMPORT_QUOTA_FACTOR * file_size, IMPORT_QUOTA_MIN)


def import_image(manifest_src: str, file_src: Optional[str], settings: InstanceSettings) -> tuple[dict[str, Any], bool]:
    """Crash-atomic: the image is unpacked into <pool>/<uuid>-partial,
    snapshotted, its manifest written, and only then renamed to <pool>/<uuid>.
    A power cut before the rename leaves a -partial dataset that the next
    boot removes (with the manifest); after it, an installed image."""
    manifest = load_manifest(manifest_src)
    uuid = manifest["uuid"]
    ti.require_pool(settings)
    dataset = settings.dataset(uuid)
    if any(m["uuid"] == uuid for m in installed(settings)):
        return manifest, False
    if ti.zfs_exists(dataset):
        raise InstanceError(f"{dataset} already exists and is not an installed image (an instance, or an "
                            f"image without its manifest {manifest_path(uuid, settings)}); not importing over it")
    if ti.zfs_exists(settings.partial(uuid)):
        raise InstanceError(f"image {uuid} is being imported, or its import was cut short "
                            f"({settings.partial(uuid)} exists; the next boot removes it, or "
                            f"`zfs destroy -r {settings.partial(uuid)}`)")
    src = file_src or file_beside(manifest_src, manifest)
    created = False
    try:
        # Nothing in an image is a device, runs or is setuid on the host
        # (instances are clones, which take their properties from the pool).
        # The mountpoint is inherited: /zones/<uuid>-partial, then /zones/<uuid>.
        run("zfs", "create", "-o", "devices=off", "-o", "setuid=off", "-o", "exec=off",
            "-o", f"quota={import_quota(manifest['files'][0]['size'])}", settings.partial(uuid))
        created = True
        unpack(src, manifest, settings)
        write_manifest(manifest, settings)
        ti.finish(uuid, settings)
    except BaseException:
        if created and ti.zfs_exists(settings.partial(uuid)):
            ti.discard(uuid, settings)
            manifest_path(uuid, settings).unlink(missing_ok=True)
        raise
    return manifest, True


def unpack(src: str, manifest: dict[str, Any], settings: InstanceSettings) -> None:
    """The image's root into its unfinished dataset, snapshotted @final."""
    partial = settings.partial(manifest["uuid"])
    where = Path(ti.zfs_get(partial, "mountpoint"))
    # Only root on the host goes in (the clones keep this mode).
    where.chmod(0o700)
    root = where / settings.root_dir
    root.mkdir(mode=0o755)
    extract(src, manifest["files"][0], root, ti.IMAGE_UID_BASE)
    # ZFS checks a quota per transaction group, so a fast writer can end a
    # little past it without an error: what was written is what counts, and
    # `used` is only current once the pool has synced its transaction group.
    run("zpool", "sync", settings.pool)
    limit = import_quota(manifest["files"][0]["size"])
    if int(ti.zfs_get(partial, "used")) > limit:
        raise InstanceError(f"{src}: the image unpacks to more than its import quota "
                            f"({IMPORT_QUOTA_FACTOR}x its {manifest['files'][0]['size']} bytes, at least "
                            f"{IMPORT_QUOTA_MIN >> 20} MiB): refused as a bomb")
    if not (root / "etc").is_dir() or (root / "etc").is_symlink():
        raise InstanceError(f"{src}: the tarball holds no root filesystem (no etc/ at its top)")
    run("zfs", "set", "quota=none", partial)
    run("zfs", "snapshot", f"{partial}@{settings.snapshot}")
    # Instances are clones; the image itself need not stay mounted.
    run("zfs", "set", "canmount=noauto", partial)
    run("zfs", "unmount", partial, check=False)
    ti.remove_mountpoint(where)


def write_manifest(manifest: dict[str, Any], settings: InstanceSettings) -> None:
    """Before the rename that finishes the image: an installed image always
    has its manifest (the boot removes the manifest of one never finished)."""
    settings.manifest_dir.mkdir(parents=True, exist_ok=True)
    ti.write_durable(manifest_path(manifest["uuid"], settings),
                     json.dumps(manifest, indent=2, sort_keys=True) + "\n", 0o644)


def delete_image(uuid: str, settings: InstanceSettings) -> None:
    if not is_uuid(uuid):
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
    p = sub.add_parser("list", help="the installed images")
    p.add_argument("-j", dest="json", action="store_true", help="as JSON")
    p.add_argument("-H", dest="no_header", action="store_true", help="no header line")
    p = sub.add_parser("sources", help="the image servers imgadm imports from")
    action = p.add_mutually_exclusive_group()
    action.add_argument("-a", dest="add", metavar="URL", help="add an image server")
    action.add_argument("-d", dest="delete", metavar="URL", help="remove an image server")
    action.add_argument("-r", dest="reset", action="store_true", help="back to the default image server")
    action.add_argument("-j", dest="json", action="store_true", help="list as JSON")
    action.add_argument("-v", dest="verbose", action="store_true", help="list with each one's type")
    p.add_argument("-t", dest="type", choices=SOURCE_TYPES, default="imgapi", help="with -a: the server's kind")
    p.add_argument("-k", dest="insecure", action="store_true", help="with -a: do not check its TLS certificate")
    p.add_argument("-f", dest="force", action="store_true",
                   help="do not check that the server answers (imgadm never checks it here)")
    sub.add_parser("get").add_argument("uuid")
    sub.add_parser("delete").add_argument("uuid")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.cmd == "list":
            # Made here if there is none, as joysetup.sh expects of `imgadm
            # list -H`; a broken one does not keep the images from being listed.
            try:
                load_config(settings)
            except InstanceError as e:
                print(f"{PROG}: warning: {e}", file=sys.stderr)
        if args.cmd == "sources":
            sources(settings, args.add, args.delete, args.reset, args.type, args.insecure, args.json, args.verbose)
        elif args.cmd in ("import", "install"):
            if args.cmd == "install":
                manifest_src, file_src = args.manifest, args.file
            elif args.source.endswith(TAR_SUFFIXES) and not is_url(args.source):
                stem = next(args.source[: -len(s)] for s in TAR_SUFFIXES if args.source.endswith(s))
                manifest_src, file_src = stem + ".json", args.source
            elif is_uuid(args.source):
                raise InstanceError(f"import {args.source}: this imgadm cannot import by UUID from an image "
                                    f"server yet; give the image's manifest (a path or an http(s) URL)")
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
                for r in rows if args.no_header else [header, *rows]:
                    say("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        elif args.cmd == "get":
            manifest = manifest_path(args.uuid, settings)
            snap = f"{settings.dataset(args.uuid)}@{settings.snapshot}"
            if not is_uuid(args.uuid) or not manifest.is_file() or not ti.zfs_exists(snap):
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
