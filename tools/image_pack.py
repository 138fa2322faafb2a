"""Package a root filesystem tarball as a container image for `imgadm import`:
the tarball plus its manifest (IMGAPI's fields, the subset that applies).

    python3 -m tools.image_pack TARBALL --name NAME --version VERSION [--uuid UUID]

writes TARBALL's manifest beside it as <stem>.json. The UUID defaults to one
derived from the tarball's SHA-256, so packing the same file twice gives the
same image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any, Optional, Sequence

from hooks.files import sha256_file

SUFFIXES = {".tar.zst": "zstd", ".tar.gz": "gzip", ".tgz": "gzip", ".tar.xz": "xz", ".tar": "none"}


def stem_and_compression(tarball: Path) -> tuple[str, str]:
    for suffix, compression in SUFFIXES.items():
        if tarball.name.endswith(suffix):
            return tarball.name[: -len(suffix)], compression
    raise ValueError(f"{tarball}: not a tarball ({', '.join(SUFFIXES)})")


def manifest(tarball: Path, name: str, version: str, image_uuid: Optional[str] = None,
             description: str = "", published: Optional[float] = None) -> dict[str, Any]:
    _, compression = stem_and_compression(tarball)
    digest = sha256_file(tarball)
    return {
        "v": 2,
        "uuid": image_uuid or str(uuidlib.UUID(digest[:32], version=4)),
        "name": name,
        "version": version,
        "os": "linux",
        "type": "lx-dataset",
        "description": description or f"{name} {version}",
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(published or tarball.stat().st_mtime)),
        "files": [{"path": tarball.name, "size": tarball.stat().st_size, "sha256": digest,
                   "compression": compression}],
    }


def write_manifest(tarball: Path, **kwargs: Any) -> Path:
    stem, _ = stem_and_compression(tarball)
    target = tarball.with_name(stem + ".json")
    target.write_text(json.dumps(manifest(tarball, **kwargs), indent=2) + "\n")
    return target


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="image_pack", description=__doc__.splitlines()[0])
    p.add_argument("tarball", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--uuid")
    args = p.parse_args(argv)
    try:
        path = write_manifest(args.tarball, name=args.name, version=args.version, image_uuid=args.uuid)
    except (ValueError, OSError) as e:
        print(f"image_pack: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
