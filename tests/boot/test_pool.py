"""The system pool `zones` across reboots, as an operator lives it.

One pair of blank disks goes through a node's life, each boot a fresh QEMU
process PXE-booted the way booter boots it: set up from an answers file,
booted with noimport=true, booted as another machine, booted again as itself
with a mirror disk missing, and factory-reset. The tests run in this order
and share the disks. A clean import with every disk is the compute node's
reboot (test_compute_node, no answers file) and the power-cut node's boots
(test_power_cuts, the answers file delivered every time), so this node's own
next import is the degraded one.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Sequence

import pytest

from hooks.bootfiles import Module
from tests.lib.pxe import PASSWORD, pxe_script
from tests.lib.node import Node

NODE = "5a1e0c1d-2b3c-4d5e-8f90-a1b2c3d4e5f6"      # this compute node's SMBIOS UUID
OTHER = "9b8a7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"     # another machine, given the same disks
MIRROR = ["/dev/disk/by-id/virtio-pool0", "/dev/disk/by-id/virtio-pool1"]
ANSWERS = json.dumps({"pool": {"layout": "mirror", "disks": MIRROR}})
TOKEN = "kept-across-reboots-4711"
BOOT_TIMEOUT = 480

# What the first boot saw, compared by the later ones.
first: dict[str, str] = {}


def hostid(system_uuid: str) -> str:
    return f"{zlib.crc32(system_uuid.upper().encode()):08x}"


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    d = tmp_path_factory.mktemp("disks")
    pool0, pool1 = d / "pool0.qcow2", d / "pool1.qcow2"
    for disk in (pool0, pool1):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "2G"], check=True)
    # A disk someone else uses: an MBR partition table, two partitions.
    parted = d / "parted.raw"
    with parted.open("wb") as f:
        f.truncate(256 * 2**20)
    subprocess.run(["sfdisk", "-q", str(parted)], input="label: dos\n,128M,L\n,,L\n", text=True, check=True)
    # A stick that carries someone else's exported pool (made on the first boot).
    foreign = d / "foreign.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(foreign), "256M"], check=True)
    return SimpleNamespace(pool0=pool0, pool1=pool1, parted=parted, foreign=foreign)


@pytest.fixture(scope="module")
def boot(platform, http, logs, tmp_path_factory):
    http.routes["/inject/answers.json"] = ANSWERS.encode()
    answers_module = Module(http.guest_url("/inject/answers.json"), "/etc/triton/answers.json")

    @contextlib.contextmanager
    def _boot(name: str, system_uuid: str, disks: Sequence[Path], args: Sequence[str] = (),
              answers: bool = False) -> Iterator[Node]:
        tftp = tmp_path_factory.mktemp(f"tftp-{name}")
        modules = [answers_module] if answers else []
        (tftp / "boot.ipxe").write_text(pxe_script(http, platform, list(args), modules))
        node = Node.pxe(tftp, "boot.ipxe", logs / f"pool-{name}.log", extra=Node.hardware(system_uuid, disks))
        try:
            yield node
        finally:
            node.close()
    return _boot


def ready(node: Node) -> None:
    node.up(PASSWORD, BOOT_TIMEOUT)


def boot_log(node: Node) -> str:
    return node.console(last=100000)


def test_first_boot_sets_up_zones_from_the_answers_file(boot, disks):
    with boot("first", NODE, [disks.pool0, disks.pool1, disks.parted, disks.foreign], answers=True) as node:
        node.wait_for_console(rf"triton-pool: hostid {hostid(NODE)} from the SMBIOS system UUID", BOOT_TIMEOUT)
        node.wait_for_console(r"triton-pool: created pool 'zones' \(mirror of /dev/vda /dev/vdb\)", 300)
        node.wait_for_console(r"triton-pool: pool 'zones' imported, ONLINE", 120)
        ready(node)
        assert node.succeed("zpool list -H -o name,health") == "zones\tONLINE"
        assert "pool 'zones' is healthy" in node.succeed("zpool status -x zones")
        for mountpoint, dataset in (("/zones", "zones"), ("/zones/config", "zones/config"),
                                    ("/opt", "zones/opt"), ("/var", "zones/var")):
            assert node.succeed(f"findmnt -rn -o SOURCE,FSTYPE {mountpoint}") == f"{dataset} zfs", mountpoint
        assert node.succeed("hostid") == hostid(NODE)
        node.succeed("test -e /zones/.system_pool && test ! -e /etc/zfs/zpool.cache")
        # /var holds the node's state; the package database is the image's.
        assert node.succeed("findmnt -rn -o FSTYPE /var/lib/dpkg") == "overlay"
        assert int(node.succeed("dpkg -l | grep -c '^ii'")) > 100
        status = json.loads(node.succeed("triton-pool status --json"))
        assert status["state"] == "imported" and status["setup"] is True and status["health"] == "ONLINE"
        node.succeed(f"echo {TOKEN} > /opt/persist-test && echo {TOKEN} > /var/persist-test && sync")
        first["machine-id"] = node.succeed("cat /etc/machine-id")
        first["ssh"] = node.succeed("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
        first["guid"] = node.succeed("zpool get -H -o value guid zones")
        # Setup is idempotent: asked again, it changes nothing.
        out = node.succeed("triton-pool setup --answers /run/triton/boot/answers.json")
        assert "already set up" in out
        assert node.succeed("zpool get -H -o value guid zones") == first["guid"]
        # For the next boot: a foreign pool whose datasets would cover the
        # node's paths; root's key given, then revoked; a host key's public
        # half lost from the pool.
        node.succeed("mkdir -p /root/.ssh && echo 'ssh-ed25519 AAAArevoked old' > /root/.ssh/authorized_keys")
        node.succeed("for i in $(seq 60); do test -s /zones/config/root/authorized_keys && break; sleep 1; done; "
                     "test -s /zones/config/root/authorized_keys")
        node.succeed("rm /root/.ssh/authorized_keys")
        node.succeed("for i in $(seq 60); do test -e /zones/config/root/authorized_keys || break; sleep 1; done; "
                     "test ! -e /zones/config/root/authorized_keys")
        first["ssh-fp"] = first["ssh"].split()[1]
        node.succeed("rm /zones/config/ssh/ssh_host_ed25519_key.pub && sync")
        node.succeed("zpool create -o cachefile=none -O mountpoint=/etc/cover foreign "
                     "/dev/disk/by-id/virtio-foreign && zfs create -o mountpoint=/root/.ssh foreign/keys "
                     "&& touch /etc/cover/planted && zpool export foreign")


def test_noimport_leaves_the_pool_alone(boot, disks):
    with boot("noimport", NODE, [disks.pool0, disks.pool1], args=["noimport=true"]) as node:
        node.wait_for_console(r"triton-pool: noimport=true: no pool imported", BOOT_TIMEOUT)
        ready(node)
        assert node.succeed("zpool list -H -o name") == ""
        assert node.succeed("findmnt -rn -o FSTYPE -T /var") == "overlay"
        assert "noimport" in node.succeed("triton-pool status")
        node.succeed("lsmod | grep -q '^zfs '")


def test_another_machine_neither_takes_over_nor_destroys_the_pool(boot, disks):
    """Same disks, another SMBIOS UUID (so another hostid), and an answers
    file naming the disks: the pool is not imported, setup refuses, and the
    node says why."""
    with boot("other", OTHER, [disks.pool0, disks.pool1, disks.parted], answers=True) as node:
        node.wait_for_console(r"triton-pool: zpool import: cannot import 'zones': pool was previously in use "
                              r"from another system", BOOT_TIMEOUT)
        line = node.wait_for_console(r"triton-pool: setup FAILED: ", 120)
        assert "/dev/vda holds ZFS pool 'zones'" in line and "Not destroying it" in line
        node.wait_for_console(r"triton-pool: node is NOT SET UP", 60)
        ready(node)
        assert node.succeed("hostid") == hostid(OTHER)
        assert node.succeed("zpool list -H -o name") == ""
        assert "NOT SET UP" in node.succeed("triton-pool status")
        # Partitions are someone's data: refused, and left as they were.
        out = node.fails("triton-pool setup --layout single vdc")
        assert "/dev/vdc has a dos partition table (2 partitions)" in out and "--force" in out
        assert node.succeed("lsblk -ln -o TYPE /dev/vdc | grep -c part") == "2"
        # Forced, setup still never replaces a pool that did not import.
        out = node.fails("triton-pool setup --force --yes --layout mirror vda vdb")
        assert "a pool named 'zones' is on this node's disks but was not imported" in out
        assert node.succeed("zpool list -H -o name") == ""


def test_a_later_boot_with_a_mirror_disk_missing_imports_degraded_and_keeps_the_node(boot, disks):
    """The node's own next import, with one mirror disk gone and the answers
    file still delivered (as booter does every boot): the pool is imported
    DEGRADED and said so, never set up anew, and the node is the same one."""
    assert first, "needs the first boot"
    with boot("degraded", NODE, [disks.pool0, disks.foreign], answers=True) as node:
        node.wait_for_console(r"triton-pool: pool\(s\) foreign left alone: imported but not mounted", BOOT_TIMEOUT)
        node.wait_for_console(r"triton-pool: pool 'zones' is DEGRADED", BOOT_TIMEOUT)
        ready(node)
        # The foreign pool covers nothing; revoked access stayed revoked; the
        # lost public key was made again from the private one.
        assert node.succeed("findmnt -rn -o SOURCE /etc/cover /root/.ssh || true") == ""
        node.succeed("test ! -e /etc/cover/planted && test ! -e /root/.ssh/authorized_keys")
        assert node.succeed("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").split()[1] == first["ssh-fp"]
        assert node.succeed("zpool list -H -o name | sort") == "foreign\nzones"
        node.succeed("zpool export foreign")
        assert "setting up from" not in boot_log(node)
        assert node.succeed("zpool get -H -o value guid zones") == first["guid"]
        assert "DEGRADED" in node.succeed("triton-pool status")
        assert "DEGRADED" in node.succeed("cat /run/issue.d/*.issue")
        assert node.succeed("hostid") == hostid(NODE)
        assert node.succeed("cat /opt/persist-test /var/persist-test") == f"{TOKEN}\n{TOKEN}"
        assert node.succeed("cat /etc/machine-id") == first["machine-id"]
        # The journal is on the pool too: the first boot is in it.
        assert int(node.succeed("journalctl --list-boots | grep -cE '^ *-?[0-9]+ '")) >= 2
        # A factory reset is never done without confirmation.
        out = node.fails("triton-pool factory-reset < /dev/null")
        assert "not confirmed" in out
        assert node.succeed("zfs get -H -o value smartdc:factoryreset zones/var") == "-"
        # The operator asks for a factory reset of this node.
        out = node.succeed("triton-pool factory-reset --yes")
        assert "destroyed at the next boot" in out
        assert node.succeed("zfs get -H -o value smartdc:factoryreset zones/var") == "yes"


def test_factory_reset_destroys_the_pool_and_setup_makes_a_new_one(boot, disks):
    with boot("reset", NODE, [disks.pool0, disks.pool1], answers=True) as node:
        node.wait_for_console(r"triton-pool: factory reset requested", BOOT_TIMEOUT)
        node.wait_for_console(r"triton-pool: factory reset: pool 'zones' destroyed", 120)
        node.wait_for_console(r"triton-pool: created pool 'zones' \(mirror", 300)
        ready(node)
        assert node.succeed("zpool get -H -o value guid zones") != first["guid"]
        assert "pool 'zones' is healthy" in node.succeed("zpool status -x zones")
        node.succeed("test ! -e /opt/persist-test && test ! -e /var/persist-test")
        assert node.succeed("cat /etc/machine-id") != first["machine-id"]
