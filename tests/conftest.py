"""Shared fixtures: the platform image, built once per test run (or reused
when out/platform-latest was built from the current sources), and its root
mounted read-only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hooks import inputs  # noqa: E402
from tests.lib.image import ImageRoot, Platform  # noqa: E402


def _current(latest: Path, digest: str) -> bool:
    try:
        manifest = json.loads((latest / "etc/version/manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("build", {}).get("source", {}).get("digest") == digest


@pytest.fixture(scope="session")
def platform() -> Platform:
    """The platform directory of a build of the current sources."""
    latest = REPO / "out/platform-latest"
    digest = inputs.source_digest(REPO)
    if os.environ.get("TRITON_PI_REBUILD") == "1" or not _current(latest, digest):
        log = REPO / "out/build.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("w") as f:
            res = subprocess.run(["make", "-C", str(REPO), "build"], stdout=f, stderr=subprocess.STDOUT)
        if res.returncode != 0:
            tail = "\n".join(log.read_text().splitlines()[-40:])
            pytest.fail(f"the image build failed (full log: {log}):\n{tail}", pytrace=False)
        if not _current(latest, digest):
            pytest.fail("the build finished but out/platform-latest does not record the current sources")
    return Platform(latest.resolve())


@pytest.fixture(scope="session")
def image_root(platform: Platform, tmp_path_factory: pytest.TempPathFactory):
    """The platform's squashfs, mounted read-only."""
    with ImageRoot(platform.rootfs, tmp_path_factory.mktemp("image")) as root:
        yield root
