import subprocess

from hooks import cpio


def test_archive_unpacks_with_cpio(tmp_path):
    data = cpio.newc_archive({"/etc/node.config": b"hostname='cn1'\n", "/usr/lib/triton/rootfs.env": b"A=1\n"})
    assert len(data) % 4 == 0
    res = subprocess.run(["cpio", "-idm", "--quiet"], input=data, cwd=tmp_path, capture_output=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "etc/node.config").read_bytes() == b"hostname='cn1'\n"
    assert (tmp_path / "usr/lib/triton/rootfs.env").read_text() == "A=1\n"
    assert (tmp_path / "usr/lib/triton").is_dir()


def test_listing_has_directories_first():
    data = cpio.newc_archive({"/a/b/c": b"x"})
    names = subprocess.run(["cpio", "-t", "--quiet"], input=data, capture_output=True).stdout.decode().split()
    assert names == ["a", "a/b", "a/b/c"]


def test_empty_directories_can_be_added(tmp_path):
    data = cpio.newc_archive({"/usr/lib/x": b"1"}, directories=["/etc/triton"])
    names = subprocess.run(["cpio", "-t", "--quiet"], input=data, capture_output=True).stdout.decode().split()
    assert names == ["etc", "etc/triton", "usr", "usr/lib", "usr/lib/x"]
