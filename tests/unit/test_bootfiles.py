import subprocess
from pathlib import Path

import pytest

from hooks import bootfiles, verity
from hooks.config import RUNTIME, load
from hooks.platform_dir import layout

S = load()
INITRD_LIB = Path(__file__).resolve().parents[2] / "mkosi.initrd/mkosi.extra/usr/lib/triton"
PATHS = layout("20261125T000000Z", "x86_64")


def test_rootfs_env_binds_hash_size_and_stamp():
    tree = verity.HashTree(verity.params("ab" * 32, 8192), "cd" * 32)
    env = bootfiles.rootfs_env("20261125T000000Z", "ab" * 32, 1234, tree, S,
                               f"platform-20261125T000000Z/{PATHS['rootfs']}")
    assert "TRITON_PLATFORM=20261125T000000Z\n" in env
    assert "TRITON_ROOTFS_PATH=platform-20261125T000000Z/x86_64/filesystem.squashfs\n" in env
    assert f"TRITON_ROOTFS_SHA256={'ab' * 32}\n" in env
    assert "TRITON_ROOTFS_SIZE=1234\n" in env
    assert f"TRITON_ROOTFS_VERITY_ROOTHASH={'cd' * 32}\n" in env
    assert "TRITON_ROOTFS_VERITY_OPTIONS='--no-superblock " in env
    assert f"TRITON_FETCH_TIMEOUT={S.boot.fetch_timeout}\n" in env
    assert f"TRITON_FETCH_FAILURE={S.boot.fetch_failure}\n" in env
    assert f"TRITON_FETCH_FAILURE_DELAY={S.boot.fetch_failure_delay}\n" in env
    # The runtime paths the initrd's shell shares with the root (triton_settings).
    assert f"TRITON_ROOTFS_DIR={RUNTIME.rootfs}\n" in env and f"TRITON_BOOT_FILES={RUNTIME.boot_files}\n" in env
    assert f"TRITON_DHCP_VENDOR_CLASS={RUNTIME.dhcp_vendor_class}\n" in env


def test_the_initrds_scripts_take_the_runtime_paths_from_rootfs_env():
    """No path or name that the root's Python also uses is written into them."""
    for script in ("fetch-rootfs", "save-boot-files", "boot-network"):
        text = (INITRD_LIB / script).read_text()
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert ". /usr/lib/triton/rootfs.env" in body or 'env=${3:-/usr/lib/triton/rootfs.env}' in body, script
        for value in (RUNTIME.rootfs, RUNTIME.boot_files, RUNTIME.dhcp_vendor_class):
            assert str(value) not in body, (script, value)


def test_boot_ipxe_boots_booters_way():
    text = bootfiles.boot_ipxe("20261125T000000Z", PATHS, S)
    assert text.startswith("#!ipxe\n")
    kernel = next(line for line in text.splitlines() if line.startswith("kernel "))
    assert kernel.startswith("kernel ${base-url}/x86_64/vmlinuz ")
    for arg in ("boot=live", "console=tty0", "console=ttyS1,115200n8",
                "fetch=${base-url}/x86_64/filesystem.squashfs", "BOOTIF=01-${netX/mac:hexhyp}"):
        assert arg in kernel.split(), arg
    assert "initrd ${base-url}/x86_64/initrd" in text
    assert "http://${next-server}/os/20261125T000000Z/platform" in text
    assert text.rstrip().endswith("boot")


def test_boot_ipxe_modules_are_booters_module_lines():
    text = bootfiles.boot_ipxe("S", PATHS, S, modules=[bootfiles.Module("http://h/node.config", "/etc/node.config")],
                               extra_args=["triton.fetch_timeout=20"])
    assert "module http://h/node.config /etc/node.config\n" in text
    assert text.index("module ") > text.index("initrd ") and text.index("module ") < text.index("\nboot")
    assert "triton.fetch_timeout=20" in text


@pytest.mark.parametrize("path", ["/sysroot/var", "/sysroot/zones/config", "/sysroot/a-b/c.d", "/sysroot/x y"])
def test_mount_unit_names_are_systemds(path):
    expected = subprocess.run(["systemd-escape", "--path", "--suffix=mount", path],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert bootfiles.mount_unit(path) == expected


def test_initrd_pool_units_come_from_platform_yaml():
    units = bootfiles.initrd_units(S)
    mounts = {k: v for k, v in units.items() if k.endswith(".mount")}
    assert len(mounts) == len(S.pool.datasets) + len(S.pool.image_var)
    for rel in S.pool.image_var:
        unit = mounts[f"{bootfiles.UNIT_DIR}/{bootfiles.mount_unit('/sysroot/var/' + rel)}"]
        assert "Type=overlay\n" in unit and f"lowerdir={RUNTIME.rootfs}/lower/var/{rel}," in unit
        assert "Requires=sysroot-var.mount\n" in unit
    for d in S.pool.datasets:
        unit = mounts[f"{bootfiles.UNIT_DIR}/{bootfiles.mount_unit('/sysroot' + d.mountpoint)}"]
        assert f"What={d.full_name(S.pool.name)}\n" in unit
        assert f"Where=/sysroot{d.mountpoint}\n" in unit
        assert "Type=zfs\n" in unit
        assert f"ConditionPathExists={bootfiles.MOUNT_FLAG}\n" in unit
    wants = units[f"{bootfiles.UNIT_DIR}/initrd-fs.target.d/triton-pool.conf"]
    for name in mounts:
        assert f"Wants={name.rsplit('/', 1)[1]}\n" in wants
    imp = units[f"{bootfiles.UNIT_DIR}/triton-pool-import.service"]
    assert f"--timeout={S.pool.settle_timeout}" in imp
    assert "triton_pool.py boot" in imp
