"""How a network boot fails: each failure stops the boot before switch-root
with a console message that names what went wrong; none boots a bad root.
What the node does next (triton.fetch_failure: reboot, the default; halt;
shell) is checked on three of these boots, one each."""

from __future__ import annotations

import hashlib
import shutil
import socket
import threading

from tests.lib.pxe import NODE_CONFIG, PASSWORD, platform_url
from tests.lib.cpio_initrd import initrd_with_files
from tests.lib.http import HttpServer
from tests.lib.node import Node, qemu_base

CONSOLE = "console=ttyS1,115200n8"


def stopped_before_switch_root(node: Node) -> None:
    """The node never left the initrd: no root mounted, no login prompt."""
    console = node.console(last=100000)
    for sign in ("Switching root", "root verified", "login: ", "Reached target multi-user"):
        assert sign not in console, f"{sign!r} on the console of a boot that failed"


def boot(platform, url, logs, name, args=(), memory_mib=2048, initrd=None, reboot=False) -> Node:
    return Node.direct(platform.kernel, initrd or platform.initrd, [CONSOLE, f"fetch={url}", *args],
                       logs / f"{name}.log", memory_mib=memory_mib, reboot=reboot)


def test_damaged_root_is_refused_naming_url_and_hashes_then_the_node_reboots(platform, http, logs, tmp_path):
    """The default after a failure: print why, wait, reboot; the node comes
    back by itself (QEMU here lets it reboot and the same kernel boots again),
    as PXE would start over."""
    bad = tmp_path / "filesystem.squashfs"
    shutil.copyfile(platform.rootfs, bad)
    with bad.open("r+b") as f:
        f.seek(bad.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    actual = hashlib.sha256(bad.read_bytes()).hexdigest()
    expected = platform.manifest["files"]["x86_64/filesystem.squashfs"]["sha256"]
    http.routes["/damaged/filesystem.squashfs"] = bad
    url = http.guest_url("/damaged/filesystem.squashfs")
    with boot(platform, url, logs, "damaged-root", ["triton.fetch_failure_delay=2"], reboot=True) as node:
        line = node.wait_for_console(r"triton-fetch-rootfs: FAILED: checksum mismatch[^\r\n]*", 240, fatal=False)
        assert url in line and f"expected sha256 {expected}" in line and f"got {actual}" in line
        assert platform.stamp in line
        node.wait_for_console(r"triton-fetch-rootfs: reboot in 2s", 60, fatal=False)
        stopped_before_switch_root(node)
        node.expect(r"Linux version \d", 240, fatal=False)
        # The second boot tries again.
        node.wait_for_console(r"triton-fetch-rootfs: platform [^\r\n]*: fetching", 240, fatal=False)


def test_wrong_url_fails_after_the_bound_saying_404_and_halt_keeps_the_node_there(platform, http, logs):
    url = http.guest_url("/no-such-platform/filesystem.squashfs")
    with boot(platform, url, logs, "wrong-url", ["triton.fetch_timeout=12", "triton.fetch_failure=halt",
                                                 "triton.fetch_failure_delay=0"]) as node:
        node.wait_for_console(r"attempt 1 failed \([^\r\n]*404[^\r\n]*\); retrying", 240, fatal=False)
        line = node.wait_for_console(r"triton-fetch-rootfs: FAILED: giving up[^\r\n]*", 120, fatal=False)
        assert url in line and "404" in line
        node.expect(r"reboot: System halted", 120, fatal=False)
        stopped_before_switch_root(node)


def test_server_gone_fails_after_the_bound_and_shell_keeps_the_node_there(platform, logs):
    gone = HttpServer()  # a port nobody listens on
    url = gone.guest_url("/platform/x86_64/filesystem.squashfs")
    with boot(platform, url, logs, "server-gone", ["triton.fetch_timeout=10", "triton.fetch_failure=shell"]) as node:
        line = node.wait_for_console(r"triton-fetch-rootfs: FAILED: giving up[^\r\n]*", 240, fatal=False)
        assert url in line and "onnect" in line
        node.expect(r"emergency mode", 120, fatal=False)
        stopped_before_switch_root(node)


def test_a_server_that_comes_up_late_is_waited_for_and_a_direct_boot_uses_the_initrds_files(
        platform, logs, tmp_path):
    """-kernel/-initrd with the node's files appended to the initrd (no iPXE,
    no BOOTIF) and triton.rootfs= naming a server that is not up yet: the
    initrd retries until it answers, then boots the root; only the delivered
    password and key let anyone in."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDirectBootTestKeyOnlyForTheTestSuite0000 test@ci"
    late = HttpServer()
    late.serve_dir("/out", platform.path.parent)
    url = late.guest_url(f"/out/{platform.path.name}/x86_64/filesystem.squashfs")
    initrd = initrd_with_files(platform.initrd, tmp_path / "initrd", {
        "/etc/node.config": NODE_CONFIG.encode(),
        "/etc/triton/root_authorized_keys": (key + "\n").encode(),
    })
    with Node.direct(platform.kernel, initrd, [CONSOLE, f"triton.rootfs={url}"], logs / "late-server.log") as node:
        node.wait_for_console(r"attempt 2 failed[^\r\n]*retrying", 240)
        timer = threading.Timer(5, late.start)
        timer.start()
        try:
            node.wait_for_console(r"root verified", 240)
            node.wait_for_login()
            # No password is baked into the image: only the delivered one works.
            assert node.login_refused("not-" + PASSWORD)
            node.login(PASSWORD)
            assert node.succeed("findmnt -no FSTYPE /") == "overlay"
            assert f"TRITON_ROOTFS_URL={url}" in node.succeed("cat /run/triton/rootfs/source")
            assert node.succeed("cat /root/.ssh/authorized_keys") == key
            # Without BOOTIF the initrd used DHCP on every NIC.
            assert "Type=ether" in node.succeed("cat /run/systemd/network/10-triton-boot.network")
        finally:
            timer.cancel()
            late.stop()


def test_too_little_ram_is_refused_before_downloading(platform, http, logs):
    url = f"{platform_url(http, platform)}/x86_64/filesystem.squashfs"
    before = len(http.log)
    with boot(platform, url, logs, "small-ram", memory_mib=640) as node:
        line = node.wait_for_console(r"triton-fetch-rootfs: FAILED: this node has[^\r\n]*", 240, fatal=False)
        assert "MiB of RAM" in line and "needs at least" in line and platform.stamp in line
        stopped_before_switch_root(node)
    assert not [entry for entry in http.log[before:] if "filesystem.squashfs" in entry and "/out/" in entry]


def test_no_dhcp_answer_fails_within_the_bound(platform, logs):
    """No address at all (a NIC on a network without DHCP): the same bound
    as the download, and a FAILED line naming the boot NIC."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # A NIC whose frames go to a UDP port nobody reads: a link, no DHCP.
    no_net = ["-netdev", f"socket,id=n0,udp=127.0.0.1:9,localaddr=127.0.0.1:{port}",
              "-device", f"virtio-net-pci,netdev=n0,mac={Node.MAC}"]
    argv_extra = ["triton.fetch_timeout=15", f"BOOTIF=01-{Node.MAC.replace(':', '-')}"]
    node = Node([*qemu_base(2048), *no_net, "-kernel", str(platform.kernel), "-initrd", str(platform.initrd),
                 "-append", " ".join([CONSOLE, "fetch=http://10.0.2.2:1/x/filesystem.squashfs", *argv_extra])],
                logs / "no-dhcp.log")
    with node:
        line = node.wait_for_console(r"triton-fetch-rootfs: FAILED: no network[^\r\n]*", 300, fatal=False)
        assert Node.MAC in line and "no DHCP answer" in line
        stopped_before_switch_root(node)


def test_a_truncated_transfer_or_an_error_page_is_retried(platform, http, logs):
    """Status 200 with the wrong body (a proxy's error page) is retried, and
    the real root, once served, boots."""
    url_path = "/flaky/filesystem.squashfs"
    http.routes[url_path] = b"<html>proxy error</html>"
    url = http.guest_url(url_path)
    with boot(platform, url, logs, "error-page") as node:
        line = node.wait_for_console(r"attempt 1 failed[^\r\n]*", 240)
        assert "not the root's" in line and "an error page" in line
        http.routes[url_path] = platform.rootfs
        node.wait_for_console(r"root verified", 240)
