"""Writing into a tenant's root from the host (triton_guestroot): nothing the
image holds is followed out of it, no program of the image runs, and the
password hash is the one crypt(3) computes."""

import os
import stat
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_guestroot as gr  # noqa: E402

SHADOW = "root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n"


# Drepper's specification's vectors, and ones libxcrypt computed.
@pytest.mark.parametrize("password,salt,rounds,expected", [
    ("Hello world!", "saltstring", 5000,
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("Hello world!", "saltstringsaltstring", 10000,
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/"
     "YTBmSK6H9qs/y3RnOaw5v."),
    ("", "ab", 5000,
     "$6$ab$xnh5Qsr2NdbFw1PgdZie7nLON3gv.S.23iQDBqAzkdoXPtDnVSpludXkM5UWybQO3OI7hBj9wHg9Ow6sUWD60/"),
    ("x" * 65, "saltsaltsaltsalt", 5000,
     "$6$saltsaltsaltsalt$oZGbPY7KYjiFIFPEzNoWksjF5Cfu3vB8dWop3OgxGy8KQvcr5GJyvOj/piDk2ikQ9ErmuJ5Vc4wB7yGx3m6pB/"),
    ("p\u00e4ss w0rd", "q", 5000,
     "$6$q$9FqpUtbbo1KNSiKpunqSvtSrf/EoILUgDZFbXXhs6nCWU7B4BxfKQHBpugY//blIAEvDNNz6S3sMDghonoR/O."),
])
def test_sha512_crypt(password, salt, rounds, expected):
    assert gr.sha512_crypt(password, salt, rounds) == expected


def test_a_random_salt_each_time():
    a, b = gr.sha512_crypt("pw"), gr.sha512_crypt("pw")
    assert a != b and a.startswith("$6$") and len(a.split("$")[2]) == 16


def test_shadow_gets_roots_hash_only():
    out = gr.shadow_with_root_hash(SHADOW, "$6$s$h")
    assert out == SHADOW.replace("root:*:", "root:$6$s$h:")
    with pytest.raises(gr.GuestRootError, match="no entry for root"):
        gr.shadow_with_root_hash("daemon:*:1::::::\n", "$6$s$h")


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc/shadow").write_text(SHADOW)
    (r / "etc/shadow").chmod(0o640)
    (r / "root").mkdir()
    return r


def test_keys_go_into_a_new_ssh_dir(root):
    gr.set_root_keys(root, "ssh-ed25519 AAAA tenant")
    ssh = root / "root/.ssh"
    assert (ssh / "authorized_keys").read_text() == "ssh-ed25519 AAAA tenant\n"
    assert stat.S_IMODE(ssh.stat().st_mode) == 0o700
    assert stat.S_IMODE((ssh / "authorized_keys").stat().st_mode) == 0o600
    assert [p.name for p in ssh.iterdir()] == ["authorized_keys"]


def test_a_symlinked_key_file_is_replaced_not_written_through(root, tmp_path):
    host = tmp_path / "host-authorized_keys"
    host.write_text("operator's key\n")
    (root / "root/.ssh").mkdir()
    (root / "root/.ssh/authorized_keys").symlink_to(host)
    gr.set_root_keys(root, "tenant's key")
    assert host.read_text() == "operator's key\n"
    assert not (root / "root/.ssh/authorized_keys").is_symlink()
    assert (root / "root/.ssh/authorized_keys").read_text() == "tenant's key\n"


def test_a_hard_linked_file_is_replaced_not_written_through(root):
    os.link(root / "etc/shadow", root / "etc/shadow-link")
    gr.set_root_password(root, "pw")
    assert (root / "etc/shadow-link").read_text() == SHADOW
    assert (root / "etc/shadow").read_text().startswith("root:$6$")
    assert stat.S_IMODE((root / "etc/shadow").stat().st_mode) == 0o640


@pytest.mark.parametrize("link", ["root/.ssh", "root", "etc"])
def test_a_symlinked_directory_is_refused_naming_it(root, tmp_path, link):
    outside = tmp_path / "outside"
    (outside / ".ssh").mkdir(parents=True)
    (outside / "shadow").write_text(SHADOW)
    target = root / link
    if target.exists():
        for p in sorted(target.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        target.rmdir()
    target.symlink_to(outside)
    with pytest.raises(gr.GuestRootError, match=f"/{link}: not a directory of the image"):
        if link == "etc":
            gr.set_root_password(root, "pw")
        else:
            gr.set_root_keys(root, "tenant's key")
    assert sorted(p.name for p in outside.rglob("*")) == [".ssh", "shadow"]
    assert (outside / "shadow").read_text() == SHADOW


def test_a_fifo_or_a_huge_shadow_is_not_read(root):
    (root / "etc/shadow").unlink()
    os.mkfifo(root / "etc/shadow")
    with pytest.raises(gr.GuestRootError, match="not a regular file"):
        gr.set_root_password(root, "pw")
    (root / "etc/shadow").unlink()
    (root / "etc/shadow").write_bytes(b"x" * (gr.READ_LIMIT + 1))
    with pytest.raises(gr.GuestRootError, match="more than"):
        gr.set_root_password(root, "pw")


def test_new_files_belong_to_the_instances_root(root):
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    os.chown(root, 0x6FFF0000, 0x6FFF0000)
    gr.set_root_keys(root, "k")
    for p in (root / "root/.ssh", root / "root/.ssh/authorized_keys"):
        assert (p.stat().st_uid, p.stat().st_gid) == (0x6FFF0000, 0x6FFF0000)
