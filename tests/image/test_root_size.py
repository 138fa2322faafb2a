"""What the root leaves out (mkosi.conf.d/85-trim.conf), and what it must
keep: every node downloads, verifies and holds the whole squashfs in RAM."""

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

TRIM = REPO / "mkosi.conf.d/85-trim.conf"


def setting(text: str, key: str) -> list[str]:
    """The values of a list setting in an mkosi drop-in (`Key=` then
    indented lines, comments skipped)."""
    values, inside = [], False
    for line in text.splitlines():
        if line.startswith(f"{key}="):
            inside = True
            first = line.split("=", 1)[1].strip()
            if first:
                values.append(first)
        elif inside and line[:1].isspace() and line.strip() and not line.strip().startswith("#"):
            values.append(line.strip())
        elif inside and not line[:1].isspace():
            inside = False
    return values


@pytest.fixture(scope="module")
def moddir(platform, image_root) -> Path:
    return image_root.path / "usr/lib/modules" / platform.manifest["kernel"]


@pytest.fixture(scope="module")
def modules_dep(moddir) -> dict[str, list[str]]:
    """modules.dep: module path -> the module paths it needs."""
    dep = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        name, _, needs = line.partition(":")
        dep[name] = needs.split()
    return dep


def module_name(path: str) -> str:
    return Path(path).name.split(".")[0].replace("-", "_")


def test_trim_settings_are_read():
    assert "/kernel/sound/" in setting(TRIM.read_text(), "KernelModulesExclude")
    assert setting(TRIM.read_text(), "RemoveFiles") == ["/usr/share/locale/*/LC_*"]


def test_excluded_module_trees_hold_only_what_kept_modules_need(platform, modules_dep):
    """A module under an excluded tree stays only as another module's
    dependency (mkosi keeps those), never on its own."""
    patterns = setting(TRIM.read_text(), "KernelModulesExclude")
    kver = platform.manifest["kernel"]
    excluded = re.compile("|".join(patterns))
    needed = {d for needs in modules_dep.values() for d in needs}
    strays = [m for m in modules_dep if excluded.search(f"lib/modules/{kver}/{m}") and m not in needed]
    assert not strays, f"modules under excluded trees that nothing needs: {strays[:10]}"
    assert not any("/kernel/sound/" in m for m in modules_dep)


# What a compute node's hardware and workloads use: NICs it boots and runs
# from, disk controllers of the system pool, containers' networking and
# overlay, the consoles of server BMCs, USB keyboards, KVM and ZFS.
NODE_NEEDS = [
    "ixgbe", "i40e", "ice", "igb", "e1000e", "tg3", "bnx2x", "bnxt_en", "mlx4_en", "mlx5_core",
    "r8169", "virtio_net", "mpt3sas", "megaraid_sas", "aacraid", "smartpqi", "hpsa", "ahci",
    "nvme", "sd_mod", "sg", "virtio_scsi", "virtio_blk", "overlay", "veth", "bridge",
    "br_netfilter", "macvlan", "ipvlan", "vxlan", "bonding", "8021q", "nf_tables", "nft_nat",
    "nf_conntrack", "xt_conntrack", "ip_tables", "tun", "ast", "mgag200", "usbhid", "hid_generic",
    "xhci_pci", "usb_storage", "kvm_intel", "kvm_amd", "ipmi_si", "ipmi_devintf", "coretemp",
    "k10temp", "nfs", "cifs", "ext4", "xfs", "vfat", "isofs", "zfs", "spl",
]


@pytest.mark.parametrize("name", NODE_NEEDS)
def test_root_keeps_what_compute_nodes_need(modules_dep, name):
    assert name in {module_name(m) for m in modules_dep}, f"{name} is not in the root"


def test_module_index_matches_the_files(moddir, modules_dep):
    """depmod ran after the trim: every indexed module and dependency is a
    file, and every module file is indexed."""
    missing = [m for m in modules_dep if not (moddir / m).is_file()]
    missing += [d for needs in modules_dep.values() for d in needs if d not in modules_dep]
    assert not missing, missing[:10]
    files = {str(p.relative_to(moddir)) for p in moddir.rglob("*.ko*")}
    assert files == set(modules_dep)


def test_no_translations(image_root):
    locale = image_root.path / "usr/share/locale"
    assert locale.is_dir()
    assert not list(locale.glob("*/LC_*")), "message catalogs are back in /usr/share/locale"
