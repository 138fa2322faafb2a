"""The container image the instance tests import: tests/images/debian-minimal
built by mkosi (a root filesystem tarball) and packed with its manifest by
tools/image_pack.py. Built once; reused while its inputs are unchanged."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from tools import image_pack

NAME = "debian-minimal"


def inputs_digest(repo: Path) -> str:
    h = hashlib.sha256()
    for top in (repo / "tests/images" / NAME, repo / "mkosi.pkgmngr"):
        for f in sorted(p for p in top.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(repo)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def build(repo: Path, log: Path) -> Path:
    """Build (or reuse) the image; the path of its manifest."""
    out = repo / "out/test-images"
    tarball = out / f"{NAME}.tar.zst"
    manifest = out / f"{NAME}.json"
    stamp = out / f"{NAME}.inputs"
    digest = inputs_digest(repo)
    if tarball.is_file() and manifest.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return manifest
    out.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        res = subprocess.run(["mkosi", "-C", str(repo / "tests/images" / NAME), "--force", "build"],
                             stdout=f, stderr=subprocess.STDOUT)
    if res.returncode != 0 or not tarball.is_file():
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"building the test container image failed (log: {log}):\n{tail}")
    image_pack.write_manifest(tarball, name=NAME, version="13." + digest[:8])
    stamp.write_text(digest)
    return manifest


def load(manifest: Path) -> dict:
    return json.loads(manifest.read_text())
