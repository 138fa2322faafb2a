"""Stamp the image (TRITON_RELEASE in os-release, /etc/product), write the
settings rendered from platform.yaml, index the kernel modules and byte-compile
the node's Python.

Runs as mkosi.postinst, on the host side of mkosi's sandbox, with the image
at $BUILDROOT. The stamp is decided here, once; mkosi.postoutput reads it back
from the image's os-release, so the platform directory and the root it holds
can never disagree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from hooks import osrelease
from hooks.bootfiles import UNIT_DIR
from hooks.config import INSTANCES_JSON, POOL_JSON, RUNTIME, PlatformConfig, load
from hooks.kernel import depmod_command
from hooks.render import render
from hooks.stamp import stamp_from_environment

NETWORK_DIR = "/usr/lib/systemd/network"


def stamp_image(root: Path, stamp: str, settings: PlatformConfig) -> None:
    os_release = root / "usr/lib/os-release"
    text = os_release.read_text()
    base = osrelease.parse_os_release(text).get("PRETTY_NAME", "Debian")
    os_release.write_text(
        osrelease.with_fields(text, {"TRITON_RELEASE": stamp, "IMAGE_VERSION": stamp})
    )
    (root / "etc/product").write_text(osrelease.product_file(settings.product, stamp, base))


def settings_files(settings: PlatformConfig) -> dict[str, str]:
    """What the node's tools read (triton_settings.load_pool, load_instances)."""
    return {
        str(POOL_JSON): json.dumps(settings.pool.as_json(), indent=2) + "\n",
        str(INSTANCES_JSON): json.dumps(settings.instances.as_json(), indent=2) + "\n",
    }


def instance_unit(settings: PlatformConfig) -> str:
    inst = settings.instances
    return render("units/triton-instance@.service.j2", pool=settings.pool.name, root_dir=inst.root_dir,
                  start_timeout=inst.start_timeout, stop_timeout=inst.stop_timeout, runtime=RUNTIME)


def unit_files(settings: PlatformConfig) -> dict[str, str]:
    """The root's units that hold platform.yaml's settings or the runtime
    paths (triton_settings.RUNTIME), rendered by their path in the image."""
    return {
        f"{UNIT_DIR}/triton-instance@.service": instance_unit(settings),
        f"{UNIT_DIR}/triton-persist-root.path": render("units/triton-persist-root.path.j2", runtime=RUNTIME),
        f"{UNIT_DIR}/triton-persist-root.service": render("units/triton-persist-root.service.j2", runtime=RUNTIME),
        f"{NETWORK_DIR}/99-triton-dhcp.network": render("network/99-triton-dhcp.network.j2", runtime=RUNTIME),
    }


def write_files(root: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


TRITON_LIB = Path("usr/lib/triton")


def drop_foreign_bytecode(root: Path) -> None:
    """A developer's interpreter may have left its own bytecode in mkosi.extra."""
    for stale in (root / TRITON_LIB).rglob("__pycache__"):
        shutil.rmtree(stale)


def compile_command() -> list[str]:
    """Byte-compile the node's own Python (CLIs, generators, triton-pool in
    the initrd) with the image's interpreter, so no boot compiles it again.
    Hash-checked, not by mtime: mkosi resets the image's timestamps."""
    return ["mkosi-chroot", "python3", "-m", "compileall", "-q", "--invalidation-mode", "checked-hash",
            f"/{TRITON_LIB}"]


def main() -> int:
    try:
        stamp = stamp_from_environment(os.environ)
    except ValueError as e:
        print(f"mkosi.postinst: {e}", file=sys.stderr)
        return 1
    settings = load()
    root = Path(os.environ["BUILDROOT"])
    stamp_image(root, stamp, settings)
    write_files(root, settings_files(settings))
    write_files(root, unit_files(settings))
    # Index the modules the build script added (ZFS, in updates/dkms): mkosi
    # applies KernelModulesExclude= right after this script and looks every
    # module up by name, so the index must know them already; mkosi reruns
    # depmod after filtering.
    subprocess.run(depmod_command(root), check=True)
    drop_foreign_bytecode(root)
    subprocess.run(compile_command(), check=True)
    print(f"platform stamp: {stamp}")
    return 0
