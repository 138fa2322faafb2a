"""Shared fixtures: the platform image, built once per test run (or reused
when out/platform-latest was built from the current sources), and its root
mounted read-only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


# -- time per test module (issue 17: CI time is reported per module) -------------------------

_module_seconds: dict[str, float] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Wall time of each test, setup and teardown included (so a module's
    booted node counts against the module that boots it)."""
    start = time.monotonic()
    yield
    module = item.nodeid.split("::", 1)[0]
    _module_seconds[module] = _module_seconds.get(module, 0.0) + time.monotonic() - start


def pytest_terminal_summary(terminalreporter) -> None:
    if not _module_seconds:
        return
    terminalreporter.section("seconds per test module")
    quick = [m for m, s in _module_seconds.items() if s < 1]
    for module, seconds in sorted(_module_seconds.items(), key=lambda kv: -kv[1]):
        if seconds >= 1:
            terminalreporter.write_line(f"{seconds:8.0f}  {module}")
    if quick:
        terminalreporter.write_line(f"{'< 1':>8}  {len(quick)} other module(s)")
    terminalreporter.write_line(f"{sum(_module_seconds.values()):8.0f}  total")
