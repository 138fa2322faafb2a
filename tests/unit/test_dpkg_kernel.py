import pytest

from hooks import dpkg, kernel

STATUS = """\
Package: zfsutils-linux
Status: install ok installed
Version: 2.3.9-0+deb13u1
Description: tools
 continued line: with a colon

Package: removed-thing
Status: deinstall ok config-files
Version: 1.0

Package: systemd
Status: install ok installed
Version: 257.13-1~deb13u1
"""


def test_parse_status_keeps_installed_only():
    assert dpkg.parse_status(STATUS) == {
        "zfsutils-linux": "2.3.9-0+deb13u1",
        "systemd": "257.13-1~deb13u1",
    }


def test_image_kernel(tmp_path):
    (tmp_path / "usr/lib/modules/6.12.1-amd64/kernel").mkdir(parents=True)
    (tmp_path / "usr/lib/modules/6.12.1-amd64.old").mkdir()  # no kernel/ inside
    assert kernel.image_kernel(tmp_path) == "6.12.1-amd64"


def test_no_kernel(tmp_path):
    with pytest.raises(kernel.KernelError, match="no kernel"):
        kernel.image_kernel(tmp_path)


def test_two_kernels(tmp_path):
    for v in ("6.1.0-1-amd64", "6.12.1-amd64"):
        (tmp_path / f"usr/lib/modules/{v}/kernel").mkdir(parents=True)
    with pytest.raises(kernel.KernelError, match="more than one kernel"):
        kernel.image_kernel(tmp_path)


def test_postinst_indexes_the_image_kernels_modules_with_the_images_depmod(tmp_path):
    from hooks.kernel import depmod_command
    (tmp_path / "usr/lib/modules/6.12.1-amd64/kernel").mkdir(parents=True)
    assert depmod_command(tmp_path) == ["mkosi-chroot", "depmod", "--all", "6.12.1-amd64"]
    (tmp_path / "usr/lib/modules/6.12.1-amd64/kernel").rmdir()
    with pytest.raises(kernel.KernelError):
        depmod_command(tmp_path)


def test_postinst_compiles_the_nodes_python_and_drops_foreign_bytecode(tmp_path):
    from hooks.postinst import compile_command, drop_foreign_bytecode
    stale = tmp_path / "usr/lib/triton/__pycache__/triton_pool.cpython-311.pyc"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not this interpreter's")
    (tmp_path / "usr/lib/triton/triton_pool.py").write_text("")
    drop_foreign_bytecode(tmp_path)
    assert not stale.parent.exists() and (tmp_path / "usr/lib/triton/triton_pool.py").exists()
    cmd = compile_command()
    assert cmd[:3] == ["mkosi-chroot", "python3", "-m"] and cmd[-1] == "/usr/lib/triton"
    assert "checked-hash" in cmd
