import pytest

from hooks import hostsetup as hs

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
