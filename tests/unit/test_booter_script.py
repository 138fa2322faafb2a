"""The tests' booter writes boot.ipxe as sdc-booter does for a Linux
compute node: checked against the expectations of booter's own unit test
(test/unit/menulst.test.js, "Linux CN", LINUXCN-27 branch), minus the
.hash modules booter adds only for a platform with initrd.hash (ours has
none)."""

from tests.lib.booter import BootParams, boot_ipxe, script_name

PLAT = "20200203T051553Z"


def test_booters_linux_cn_vector():
    p = BootParams(mac="10:dd:b1:a2:57:bf", ip="10.99.99.124", debian12=True,
                   kernel_args={"rabbitmq": "guest:guest:10.99.99.16:5672", "debug": "y"})
    assert boot_ipxe(p, PLAT, "10.99.99.9", proto="tftp").splitlines() == [
        "#!ipxe",
        f"kernel /os/{PLAT}/platform/x86_64/vmlinuz boot=live console=tty0 console=ttyS1,115200n8 "
        "BOOTIF=01-10-dd-b1-a2-57-bf ip=10.99.99.124:::255.255.255.0:::none "
        "rabbitmq=guest:guest:10.99.99.16:5672 debug=y "
        f"fetch=tftp://10.99.99.9/os/{PLAT}/platform/x86_64/filesystem.squashfs",
        f"initrd tftp://10.99.99.9/os/{PLAT}/platform/x86_64/initrd",
        "module tftp://10.99.99.9/extra/joysetup/node.config /etc/node.config",
        "boot",
    ]


def test_master_ip_serial_none_and_bootfs_files():
    p = BootParams(mac="52:54:00:12:34:56", serial="none",
                   bootfs={"networking.json": b"{}", "root_authorized_keys": b"ssh-ed25519 x"})
    lines = boot_ipxe(p, PLAT, "10.0.2.2:8080").splitlines()
    assert " console=ttyS-1,115200n8 " in lines[1] and " ip=10.0.2.15:::255.255.255.0:: " in lines[1]
    assert lines[4:6] == ["module http://10.0.2.2:8080/bootfs/525400123456/networking.json /etc/triton-networking.json",
                          "module http://10.0.2.2:8080/bootfs/525400123456/root_authorized_keys "
                          "/etc/triton-root_authorized_keys"]
    assert script_name(p.mac) == "boot.ipxe.01525400123456"
