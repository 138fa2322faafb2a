"""Network boot: the path every compute node takes at every boot.

Booted with the platform's own boot.ipxe (iPXE script over TFTP, kernel,
initrd and root over HTTP, the kernel arguments booter gives and the files
it injects), then looked at from the node's console. The script booter
itself writes (tests/lib/booter.py) boots the node of test_compute_node.py;
a boot with -kernel/-initrd alone is test_fetch_failures.py's late server.
"""

from __future__ import annotations

import hashlib
import re
import zlib

from tests.lib.pxe import NETWORKING, NODE_CONFIG, platform_url
from tests.lib.node import Node


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rootfs_sha(platform) -> str:
    return platform.manifest["files"]["x86_64/filesystem.squashfs"]["sha256"]


def test_pxe_boot_runs_the_verified_root_under_a_tmpfs_overlay(pxe_node, platform):
    assert pxe_node.succeed("findmnt -no FSTYPE /") == "overlay"
    source = pxe_node.succeed("cat /run/triton/rootfs/source")
    assert f"TRITON_ROOTFS_SHA256={rootfs_sha(platform)}" in source
    assert f"TRITON_PLATFORM={platform.stamp}" in source
    lower_dev = pxe_node.succeed("findmnt -no SOURCE /run/triton/rootfs/lower")
    # The loop device under the root is backed by the verified file on the
    # download tmpfs (same inode and device).
    back = pxe_node.succeed(f"losetup -nO BACK-INO,BACK-MAJ:MIN {lower_dev}").split()
    media = pxe_node.succeed("stat -c '%i %Hd:%Ld' /run/triton/rootfs/media/filesystem.squashfs").split()
    assert back == media
    assert pxe_node.succeed("findmnt -no FSTYPE /run/triton/rootfs/media") == "tmpfs"
    assert pxe_node.succeed("findmnt -no FSTYPE /run/triton/rootfs/lower") == "squashfs"
    assert pxe_node.succeed("findmnt -no FSTYPE /run/triton/rootfs/overlay") == "tmpfs"
    on_node = pxe_node.succeed("sha256sum /run/triton/rootfs/media/filesystem.squashfs").split()[0]
    assert on_node == rootfs_sha(platform)
    # The root is writable (overlay), the squashfs under it is not.
    pxe_node.succeed("touch /usr/lib/written-at-runtime && test -f /usr/lib/written-at-runtime")
    pxe_node.fails("touch /run/triton/rootfs/lower/x")


def test_node_says_which_platform_it_runs(pxe_node, platform):
    assert f'TRITON_RELEASE="{platform.stamp}"' in pxe_node.succeed("cat /etc/os-release")
    assert f"Live Image: {platform.stamp}" in pxe_node.succeed("cat /etc/product")


def test_the_platforms_boot_ipxe_arguments_arrived_unchanged(pxe_node, http, platform):
    cmdline = pxe_node.succeed("cat /proc/cmdline").split()
    for arg in ("boot=live", "console=tty0", "console=ttyS1,115200n8", "BOOTIF=01-52-54-00-12-34-56",
                f"fetch={platform_url(http, platform)}/x86_64/filesystem.squashfs"):
        assert arg in cmdline


def test_files_booter_injects_arrive_unchanged(pxe_node):
    got = pxe_node.succeed("sha256sum /run/triton/boot/node.config /run/triton/boot/triton-networking.json")
    assert f"{sha256(NODE_CONFIG.encode())}  /run/triton/boot/node.config" in got
    assert f"{sha256(NETWORKING.encode())}  /run/triton/boot/triton-networking.json" in got


def boot_nic(node) -> str:
    """The physical NIC booter booted from (its bridge has the same MAC)."""
    nic = node.succeed(f"for d in /sys/class/net/*; do [ -e $d/device ] && "
                       f"[ $(cat $d/address) = {Node.MAC} ] && basename $d; done; true")
    assert nic and "\n" not in nic, f"the boot NIC is not there: {nic!r}"
    return nic


def test_boot_nic_keeps_its_address_after_switch_root(pxe_node):
    """The address DHCP gave the boot NIC's MAC stays with that MAC: on the
    admin0 bridge, whose port the NIC now is (NIC tag admin)."""
    nic = boot_nic(pxe_node)
    assert pxe_node.succeed(f"basename $(readlink /sys/class/net/{nic}/master)") == "admin0"
    assert pxe_node.succeed("cat /sys/class/net/admin0/address") == Node.MAC
    assert "inet 10.0.2.15/24" in pxe_node.succeed("ip -color=never -4 addr show dev admin0")
    assert "MACAddress=52:54:00:12:34:56" in pxe_node.succeed("cat /run/systemd/network/10-triton-boot.network")
    assert "default via 10.0.2.2 dev admin0" in pxe_node.succeed("ip -color=never -4 route")


def test_booted_systems_networkd_manages_the_boot_nic(pxe_node):
    """The initrd's networkd is stopped before switch-root
    (triton-stop-initrd-network.service), so the booted system's own runs,
    with the NIC tags triton-node-config made from booter's networking.json."""
    out = pxe_node.succeed("networkctl status --no-pager -n0 admin0")
    assert "10.0.2.15" in out and "10-triton-admin0.network" in out
    out = pxe_node.succeed(f"networkctl status --no-pager -n0 {boot_nic(pxe_node)}")
    assert "enslaved" in out and "10-triton-admin0-port.network" in out
    assert "NIC tags admin on admin0 (52:54:00:12:34:56); admin by DHCP" in \
        pxe_node.succeed("journalctl -b -u triton-node-config -o cat")


def test_zfs_is_the_one_built_for_this_kernel(pxe_node, platform):
    """The initrd already loaded ZFS; what it loaded must be the module the
    build compiled for this kernel, the version the manifest records, and
    the tools must agree with it."""
    kernel, zfs = platform.manifest["kernel"], platform.manifest["zfs"]
    upstream = zfs.split("-")[0]
    assert pxe_node.succeed("uname -r") == kernel
    assert pxe_node.succeed("cat /sys/module/zfs/version").startswith(upstream)
    path = pxe_node.succeed("modinfo -n zfs")
    assert path == f"/lib/modules/{kernel}/updates/dkms/zfs.ko" or \
        path == f"/usr/lib/modules/{kernel}/updates/dkms/zfs.ko", path
    assert pxe_node.succeed("modinfo -F vermagic zfs").split()[0] == kernel
    assert f"zfs-kmod-{upstream}" in pxe_node.succeed("zfs version")
    assert "no pools available" in pxe_node.succeed("zpool list")


def test_a_node_without_disks_boots_not_set_up_and_says_so(pxe_node):
    assert "NOT SET UP" in pxe_node.succeed("triton-pool status")
    assert "NOT SET UP" in pxe_node.succeed("cat /run/issue.d/50-triton-pool.issue")
    assert pxe_node.succeed("findmnt -rn -o FSTYPE -T /var") == "overlay"
    # QEMU gives no SMBIOS UUID here: the hostid comes from the boot NIC.
    assert pxe_node.succeed("hostid") == f"{zlib.crc32(Node.MAC.upper().encode()):08x}"


def test_no_boot_is_a_first_boot_yet_a_node_not_set_up_has_ssh_host_keys(pxe_node):
    """With the image's empty machine-id, systemd does not take a node
    without its pool for a first boot (no presets applied again, no
    systemd-firstboot); the host keys Debian makes only on a first boot are
    made because the node has none, once the login prompts are up (the
    prompt waits for nothing that needs them)."""
    assert re.fullmatch(r"[0-9a-f]{32}", pxe_node.succeed("cat /etc/machine-id"))
    prompts_up = int(pxe_node.succeed("systemctl show -P ActiveEnterTimestampMonotonic getty.target"))
    keygen_began = int(pxe_node.succeed("systemctl show -P InactiveExitTimestampMonotonic sshd-keygen.service"))
    assert 0 < prompts_up <= keygen_began, (prompts_up, keygen_began)
    assert pxe_node.succeed("systemctl show -P ConditionResult systemd-firstboot.service") == "no"
    assert pxe_node.succeed("systemctl show -P ConditionResult sshd-keygen.service") == "yes"
    for kind in ("ed25519", "ecdsa", "rsa"):
        pxe_node.succeed(f"test -s /etc/ssh/ssh_host_{kind}_key && test -s /etc/ssh/ssh_host_{kind}_key.pub")
    assert pxe_node.succeed("systemctl is-active ssh.service") == "active"


def test_system_is_running_with_no_failed_units(pxe_node):
    pxe_node.system_ready()
    assert pxe_node.succeed("systemctl is-system-running") == "running"
