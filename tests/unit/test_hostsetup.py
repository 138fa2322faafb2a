import subprocess
from pathlib import Path

import pytest

from tools import hostsetup as hs

BOOKWORM = 'ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'


def test_bookworm_root_is_fine():
    hs.check_host(hs.host_from(BOOKWORM, 0))


def test_not_debian_says_so():
    with pytest.raises(hs.HostError, match="this host is fedora, not Debian"):
        hs.check_host(hs.host_from('ID=fedora\nVERSION_ID=40\n', 0))


def test_not_root_says_what_to_do():
    with pytest.raises(hs.HostError, match="sudo make"):
        hs.check_host(hs.host_from(BOOKWORM, 1000))


def test_old_debian():
    with pytest.raises(hs.HostError, match="Debian 11"):
        hs.check_host(hs.host_from('ID=debian\nVERSION_ID="11"\nVERSION_CODENAME=bullseye\n', 0))


def test_backports_detection():
    assert hs.has_backports(["deb http://deb.debian.org/debian bookworm-backports main\n"])
    assert hs.has_backports(["Types: deb\nSuites: bookworm-backports\n"])
    assert not hs.has_backports(["# deb http://x bookworm-backports main\n", "Suites: bookworm\n"])
    assert hs.needs_backports(hs.host_from(BOOKWORM, 0))


def test_missing_packages_checks_minimum_versions():
    ge = lambda a, b: tuple(map(int, a.split("."))) >= tuple(map(int, b.split(".")))  # noqa: E731
    installed = {"mkosi": "14.1", "squashfs-tools": "4.5"}
    assert hs.missing_packages(installed, ["mkosi", "squashfs-tools", "pigz"], {"mkosi": "24.3"}, ge) == [
        "mkosi", "pigz"]


def test_bookworms_qemu_is_upgraded_to_backports():
    """Debian's own version strings, compared by dpkg: bookworm's QEMU 7.2
    is too old for the boot tests' budget, backports' 10.0 is not."""
    wanted = ["qemu-system-x86", "mkosi"]
    old = {"qemu-system-x86": "1:7.2+dfsg-7+deb12u18+b3", "mkosi": "24.3-1~bpo12+1"}
    new = {"qemu-system-x86": "1:10.0.2+ds-2+deb13u1~bpo12+1", "mkosi": "24.3-1~bpo12+1"}
    assert hs.missing_packages(old, wanted, hs.BACKPORTED, hs.dpkg_version_ge) == ["qemu-system-x86"]
    assert hs.missing_packages(new, wanted, hs.BACKPORTED, hs.dpkg_version_ge) == []


DEB822 = """Types: deb
# a comment line, as the host may have
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_the_image_is_built_from_the_hosts_own_mirror():
    assert hs.host_mirrors([DEB822], "bookworm") == ("http://mirror.example/debian",
                                                     "http://mirror.example/debian-security")
    one_line = ("# deb http://old.example/debian bookworm main\n"
                "deb [arch=amd64] http://proxy:3142/debian bookworm main\n")
    assert hs.host_mirrors([one_line], "bookworm") == ("http://proxy:3142/debian", "http://proxy:3142/debian-security")
    text = hs.IMAGE_SOURCES.format(debian="http://proxy:3142/debian", security="http://proxy:3142/debian-security")
    assert "URIs: http://proxy:3142/debian\nSuites: trixie trixie-updates" in text
    assert "URIs: http://proxy:3142/debian-security\nSuites: trixie-security" in text


def test_no_debian_archive_says_what_to_do():
    disabled = DEB822.replace("Types: deb\n", "Types: deb\nEnabled: no\n")
    with pytest.raises(hs.HostError, match="no Debian archive for bookworm"):
        hs.host_mirrors([disabled, "deb-src http://x/debian bookworm main\n"], "bookworm")


def test_the_repository_names_no_mirror():
    """The sources are written from the host's; none is committed."""
    import subprocess
    top = hs.Path(hs.__file__).resolve().parents[1]
    tracked = subprocess.run(["git", "ls-files", "mkosi.pkgmngr"], capture_output=True, text=True,
                             cwd=top).stdout.split()
    assert str(hs.IMAGE_SOURCES_FILE.relative_to(top)) not in tracked
    grep = subprocess.run(["git", "grep", "-lE", "deb\\.debian\\.org|URIs: http", "--", ":!tests"],
                          capture_output=True, text=True, cwd=top).stdout.split()
    assert grep == [], grep


def test_unpack_downloads_installs_its_depends_and_replaces_a_half_done_try(tmp_path, monkeypatch):
    """apt-get download (again after apt-get update when the lists are
    missing), apt-get satisfy with the package's own Depends, dpkg-deb -x;
    a folder an earlier try left is replaced; done once."""
    monkeypatch.setattr(hs, "UNPACKED_DIR", tmp_path / "unpacked")
    (tmp_path / "unpacked/chrony/leftover").mkdir(parents=True)
    apt_calls, downloads = [], []

    def fake_run(argv, cwd=None, capture_output=False, text=False, **kw):
        if argv[:2] == ["apt-get", "-q"] and "download" in argv:
            downloads.append(argv)
            if len(downloads) == 1:
                return subprocess.CompletedProcess(argv, 100, "", "E: no lists")
            (Path(cwd) / "chrony_4.3_amd64.deb").write_bytes(b"deb")
            return subprocess.CompletedProcess(argv, 0, "", "")
        if argv[:2] == ["dpkg-deb", "-f"]:
            return subprocess.CompletedProcess(argv, 0, "libc6 (>= 2.34), libgnutls30 (>= 3.7.5)\n", "")
        if argv[:2] == ["dpkg-deb", "-x"]:
            (Path(argv[3]) / "usr/sbin").mkdir(parents=True)
            (Path(argv[3]) / "usr/sbin/chronyd").write_text("")
            return subprocess.CompletedProcess(argv, 0, "", "")
        raise AssertionError(f"unexpected {argv}")

    monkeypatch.setattr(hs.subprocess, "run", fake_run)
    monkeypatch.setattr(hs, "apt", lambda args: apt_calls.append(list(args)))
    hs.unpack("chrony", lambda msg: None)
    dest = tmp_path / "unpacked/chrony"
    assert (dest / "usr/sbin/chronyd").exists() and not (dest / "leftover").exists()
    assert (dest / ".unpacked").read_text() == "chrony_4.3_amd64.deb\n"
    assert apt_calls == [["update"], ["satisfy", "--no-install-recommends", "libc6 (>= 2.34), libgnutls30 (>= 3.7.5)"]]
    assert len(downloads) == 2
    hs.unpack("chrony", lambda msg: pytest.fail(msg))
    assert len(downloads) == 2


def test_unpack_says_what_to_do_when_the_archive_lacks_it(tmp_path, monkeypatch):
    monkeypatch.setattr(hs, "UNPACKED_DIR", tmp_path / "unpacked")
    monkeypatch.setattr(hs.subprocess, "run",
                        lambda argv, **kw: subprocess.CompletedProcess(argv, 100, "", "E: Unable to locate package"))
    monkeypatch.setattr(hs, "apt", lambda args: None)
    with pytest.raises(hs.HostError, match=r"'apt-get download chrony' failed.*sources.list"):
        hs.unpack("chrony", lambda msg: None)
    assert not (tmp_path / "unpacked/chrony").exists()
