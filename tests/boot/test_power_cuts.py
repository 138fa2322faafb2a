"""Power cuts lose nothing (issue 16 item 17): a node's power is cut while
setup creates its pool, and again while an instance writes and `vmadm
create` makes another (one cut for both, as on a busy node); each next boot
imports the pool clean, keeps what was synced, and leaves either whole
things or no trace of them. (The clean reboot with two autoboot instances,
both back with everything they had, is test_instances'.)

One node with one blank disk serves the whole module; the tests run in
order and build on each other. Every boot is a fresh QEMU process, PXE-booted
with the answers file, as booter would deliver it every time (so a pool the
node failed to recognise would be set up anew, and the test would see the
loss). A power cut is SIGKILL to QEMU: SIGTERM or SIGINT would let QEMU
close its disks cleanly. The disk is not Node.hardware's (cache=unsafe
ignores the guest's flushes, so a killed QEMU loses what the guest had made
durable): it is a raw file with cache=writethrough, a disk without a
volatile write cache: what the guest saw written is on it, what was in
flight at the cut is lost. (cache=none, O_DIRECT with qcow2's metadata
held in QEMU until a flush, once left a CI run's next boot waiting forever
on its first read of the pool's labels; raw and writethrough have neither.)

VM time under TCG (QEMU 10), measured: the setup cut and the boot after it
118-127 s; image import, the writing instance, the cut create and the boot
after the cut 137-175 s.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from hooks.bootfiles import Module
from tests.lib.pxe import PASSWORD, pxe_script
from tests.conftest import REPO
from tests.lib import container_image
from tests.lib.node import Node
from tests.lib.zones import in_instance, pool_kept

NODE = "d15c0a11-7e57-4c0f-9a1e-0000000000c7"
DISK = "/dev/disk/by-id/virtio-cuts0"
ANSWERS = json.dumps({"pool": {"layout": "single", "disks": [DISK]}})
WRITER = "c0000000-0000-4000-8000-0000000000c1"  # autoboot, writing when the power goes
CUT = "c0000000-0000-4000-8000-0000000000c2"     # being created when the power goes
TOKEN = "synced-4711"
ROOT_PW = "power-cut-pw"
BOOT_TIMEOUT = 480
figures: dict[str, str] = {}


@pytest.fixture(scope="module")
def image(http, logs) -> SimpleNamespace:
    manifest_path = container_image.build(REPO, logs / "container-image-build.log")
    http.serve_dir("/images", manifest_path.parent)
    http.routes["/inject/power-cuts-answers.json"] = ANSWERS.encode()
    manifest = container_image.load(manifest_path)
    return SimpleNamespace(uuid=manifest["uuid"], url=http.guest_url(f"/images/{manifest_path.name}"))


@pytest.fixture(scope="module")
def disk(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("power-cuts") / "cuts0.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(d), "4G"], check=True)
    return d


def hardware(disk: Path) -> list[str]:
    return ["-uuid", NODE,
            "-drive", f"file={disk},if=none,id=disk0,format=raw,cache=writethrough",
            "-device", f"virtio-blk-pci,drive=disk0,serial={disk.stem}"]


@pytest.fixture(scope="module")
def node(platform, http, logs, tmp_path_factory, disk, image):
    """The node's boots: `state.boot(name)` starts a fresh QEMU (PXE, with
    the answers file) and returns it at the start of its boot."""
    answers = Module(http.guest_url("/inject/power-cuts-answers.json"), "/etc/triton/answers.json")

    def boot(name: str) -> Node:
        tftp = tmp_path_factory.mktemp(f"tftp-cuts-{name}")
        (tftp / "boot.ipxe").write_text(pxe_script(http, platform, [], [answers]))
        state.node = Node.pxe(tftp, "boot.ipxe", logs / f"power-cuts-{name}.log", extra=hardware(disk))
        return state.node

    state = SimpleNamespace(node=None, boot=boot, guid=None)
    yield state
    if state.node:
        state.node.close()
    print("\n" + "\n".join(f"figure: {k}: {v}" for k, v in figures.items()))


def ready(node: Node) -> float:
    """Logged in, the boot finished (autoboot instances up); seconds to login."""
    return node.up(PASSWORD, BOOT_TIMEOUT)


def boot_log(node: Node) -> str:
    return node.console(last=100000)


def payload(**kw) -> str:
    return json.dumps(kw)


def cut_payload(image_uuid: str) -> str:
    """The instance `vmadm create` is making when the power goes."""
    return payload(uuid=CUT, alias="cut", image_uuid=image_uuid, autoboot=True,
                   internal_metadata={"root_pw": ROOT_PW})


def write_payload(node: Node, body: str, path: str) -> None:
    encoded = base64.b64encode(body.encode()).decode()
    node.succeed(f"echo {encoded} | base64 -d > {path}")


def traces(node: Node, uuid: str) -> str:
    """Anything of an instance: datasets, directories, units, generated config."""
    return node.succeed(f"zfs list -H -o name -t all | grep {uuid}; ls -d /zones/{uuid}* 2>/dev/null; "
                        f"systemctl list-units --all --no-legend --plain 'triton-instance@{uuid}*'; "
                        f"ls -d /run/systemd/generator/*{uuid}* 2>/dev/null; true")


def test_a_setup_cut_half_way_is_reported_and_runs_again(node):
    n = node.boot("setup-cut")
    n.wait_for_console(r"triton-pool: setting up from .*answers.json", BOOT_TIMEOUT)
    # After the pool exists and before setup is done (it seeds /var next,
    # for seconds): the boot must find it unfinished. A cut at "setting up
    # from" lands before anything is on the disk, and leaves nothing to find.
    n.wait_for_console(r"triton-pool: setup: pool 'zones' created; making its datasets", 120)
    n.power_cut()
    n = node.boot("setup-again")
    found = n.wait_for_console(r"triton-pool: (setup was interrupted: pool 'zones' was created but setup never "
                               r"finished|pool 'zones' imported)", BOOT_TIMEOUT)
    assert "setup was interrupted" in found, f"the cut came after setup had finished: {found}"
    n.wait_for_console(r"triton-pool: setup was interrupted: discarding the unfinished pool 'zones' on /dev/vda", 120)
    n.wait_for_console(r"triton-pool: created pool 'zones' \(single of /dev/vda\)", 300)
    n.wait_for_console(r"triton-pool: pool 'zones' imported, ONLINE", 120)
    figures["boot to login after the setup cut (s)"] = f"{ready(n):.0f}"
    assert n.succeed("zpool status -x zones") == "pool 'zones' is healthy"
    assert n.succeed("zpool get -H -o value comment zones") in ("", "-")
    n.succeed("test -e /zones/.system_pool && test -s /zones/config/setup.json")
    status = json.loads(n.succeed("triton-pool status --json"))
    assert status["state"] == "imported" and "setup_interrupted" not in status
    assert any(m.startswith("setup was interrupted: pool 'zones'") for m in status["messages"])
    node.guid = n.succeed("zpool get -H -o value guid zones")


def test_an_instance_keeps_what_it_synced_when_the_power_goes(node, image):
    """One cut, while an instance writes and syncs and while `vmadm create`
    fills another instance's dataset (what a busy node does when its power
    goes): the next boot keeps what was synced. What the cut did to the
    create is the next test's, on the same boot."""
    n = node.node
    assert n.succeed(f"imgadm import {image.url}", 600).startswith(f"Imported image {image.uuid}")
    write_payload(n, payload(uuid=WRITER, alias="writer", image_uuid=image.uuid, autoboot=True), "/tmp/writer.json")
    began = time.monotonic()
    n.succeed("vmadm create -f /tmp/writer.json", 300)
    figures["vmadm create to running (s)"] = f"{time.monotonic() - began:.0f}"
    in_instance(n, WRITER, f"echo {TOKEN} > /root/token && sync")
    n.succeed(f"echo {TOKEN} > /opt/power-cut-token && sync")
    # Writing, and syncing, all the time, when the power goes.
    in_instance(n, WRITER, "systemd-run --unit=churn /bin/sh -c 'while :; do dd if=/dev/urandom "
                           "of=/root/churn bs=64k count=32 conv=fsync status=none; done'")
    in_instance(n, WRITER, "sleep 3; test -s /root/churn")
    write_payload(n, cut_payload(image.uuid), "/tmp/cut.json")
    # The power goes as soon as the second instance's dataset is on the
    # pool: while vmadm fills it, or just after it finished it.
    n.child.sendline(f"(vmadm create -f /tmp/cut.json >/tmp/cut.log 2>&1 &); "
                     f"until zfs list -H -o name zones/{CUT}-partial zones/{CUT} 2>/dev/null | grep -q .; "
                     f"do sleep 0.2; done; echo CUT-NOW-$((6*7))")
    n.expect(r"CUT-NOW-42", 120)
    n.power_cut()
    n = node.boot("after-cut")
    figures["boot to login after the cut (s)"] = f"{ready(n):.0f}"
    pool_kept(n, node.guid)
    assert n.succeed(f"systemctl -M {WRITER} is-system-running --wait", 300) == "running"
    assert in_instance(n, WRITER, "cat /root/token") == TOKEN
    assert n.succeed("cat /opt/power-cut-token") == TOKEN
    assert n.succeed(f"vmadm list -H -o uuid,state | grep {WRITER}").split() == [WRITER, "running"]


def test_a_create_cut_half_way_is_whole_or_leaves_no_trace(node, image):
    """The same cut, for the instance `vmadm create` was making."""
    n = node.node
    log = boot_log(n)
    if n.execute(f"zfs list -H -o name zones/{CUT}")[0] == 0:
        figures["the create cut left"] = "a whole instance"
        assert n.succeed(f"systemctl -M {CUT} is-system-running --wait", 300) == "running"
        assert json.loads(n.succeed(f"vmadm get {CUT}"))["state"] == "running"
        n.succeed(f"test -s /zones/{CUT}/config/vm.json && ! zfs list zones/{CUT}-partial 2>/dev/null")
        assert n.succeed(f"grep -c '^root:\\$6\\$' /zones/{CUT}/root/etc/shadow") == "1"
    else:
        # Either the partial dataset was on the disk (ZFS had written its
        # transaction group) and the boot removed it, or the power went
        # before ZFS wrote it: no trace either way.
        removed = f"triton-pool: removed zones/{CUT}-partial: a `vmadm create` cut short" in log
        figures["the create cut left"] = ("nothing (the boot removed the partial dataset)" if removed
                                          else "nothing (the cut came before ZFS wrote the partial dataset)")
        assert "FAILED" not in log.split("triton-pool-import.service")[-1] or removed
        assert traces(n, CUT) == ""
        assert CUT not in n.succeed("vmadm list -H")
        # The cut left nothing in the way: the same payload creates it now.
        write_payload(n, cut_payload(image.uuid), "/tmp/cut.json")
        n.succeed("vmadm create -f /tmp/cut.json", 300)
        assert n.succeed(f"systemctl -M {CUT} is-system-running --wait", 300) == "running"
    assert in_instance(n, WRITER, "cat /root/token") == TOKEN
    assert n.succeed(f"imgadm list | grep -c {image.uuid}") == "1"
