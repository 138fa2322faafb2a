"""The initrd's boot NIC configuration (mkosi.initrd/.../boot-network) from
booter's kernel arguments: both forms of booter's ip= give the address, a
bad one gives DHCP, and nothing in ip= reaches the .network file unchecked."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hooks import bootfiles, verity
from hooks.config import load

REPO = Path(__file__).resolve().parents[2]
BOOT_NETWORK = REPO / "mkosi.initrd/mkosi.extra/usr/lib/triton/boot-network"
MASK = REPO / "mkosi.initrd/mkosi.extra/etc/systemd/system/systemd-network-generator.service"
PRESET = REPO / "mkosi.extra/usr/lib/systemd/system-preset/10-triton.preset"
BOOTIF = "BOOTIF=01-52-54-00-12-34-56"


def rootfs_env(tmp: Path) -> Path:
    """The build's rootfs.env, as the initrd carries it."""
    tree = verity.HashTree(verity.params("ab" * 32, 8192), "cd" * 32)
    env = tmp / "rootfs.env"
    env.write_text(bootfiles.rootfs_env("S", "ab" * 32, 8192, tree, load(), "platform-S/x86_64/fs"))
    return env


def network(cmdline: str, tmp: Path) -> tuple[dict[str, list[str]], str]:
    """The .network file's settings ({key: [values]}) and the console line."""
    (tmp / "cmdline").write_text(cmdline + "\n")
    out = tmp / "10-triton-boot.network"
    res = subprocess.run(["bash", str(BOOT_NETWORK), str(tmp / "cmdline"), str(out), str(rootfs_env(tmp))],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    settings: dict[str, list[str]] = {}
    for line in out.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings.setdefault(key, []).append(value)
    return settings, res.stdout


@pytest.mark.parametrize("ip", [
    "ip=10.0.2.15:::255.255.255.0::",          # booter (master)
    "ip=10.0.2.15:::255.255.255.0:::none",     # booter's Debian 12 branch
])
def test_both_of_booters_ip_forms_give_the_static_address(tmp_path, ip):
    s, out = network(f"boot=live console=tty0 console=ttyS-1,115200n8 {BOOTIF} {ip} fetch=http://x/fs", tmp_path)
    assert s["MACAddress"] == ["52:54:00:12:34:56"]
    assert s["Address"] == ["10.0.2.15/24"]
    assert "Gateway" not in s and "DHCP" not in s
    assert "52:54:00:12:34:56, 10.0.2.15" in out


def test_a_gateway_and_another_mask(tmp_path):
    s, _ = network(f"{BOOTIF} ip=10.1.2.3::10.1.2.1:255.255.0.0:host:eth0:none", tmp_path)
    assert s["Address"] == ["10.1.2.3/16"] and s["Gateway"] == ["10.1.2.1"]


@pytest.mark.parametrize("cmdline", [f"{BOOTIF}", f"{BOOTIF} ip=dhcp", f"{BOOTIF} ip=on", f"{BOOTIF} ip="])
def test_no_address_is_dhcp_on_the_boot_nic(tmp_path, cmdline):
    s, _ = network(cmdline, tmp_path)
    assert s["DHCP"] == ["ipv4"] and "Address" not in s
    assert s["VendorClassIdentifier"] == ["PXEClient.Linux.x86_64"]
    assert s["MACAddress"] == ["52:54:00:12:34:56"]


def test_without_bootif_every_ethernet_nic(tmp_path):
    s, _ = network("ip=dhcp", tmp_path)
    assert s["Type"] == ["ether"] and "MACAddress" not in s


@pytest.mark.parametrize("ip", [
    "ip=10.0.2.15;reboot:::255.255.255.0::",
    "ip=10.0.2.15:::255.x.255.0::",
    "ip=10.0.2.15::$(reboot):255.255.255.0::",
    "ip=not-an-address:::255.255.255.0::",
    "ip=10.0.2.15:::255.255.255.0\\nDNS=1.1.1.1::",
])
def test_an_address_that_is_not_ipv4_gives_dhcp_and_says_so(tmp_path, ip):
    s, out = network(f"{BOOTIF} {ip}", tmp_path)
    assert s["DHCP"] == ["ipv4"] and "Address" not in s and "Gateway" not in s
    assert "not IPv4 addresses; using DHCP" in out


def test_without_the_builds_rootfs_env_it_says_so_and_writes_nothing(tmp_path):
    (tmp_path / "cmdline").write_text(BOOTIF + "\n")
    out = tmp_path / "10-triton-boot.network"
    res = subprocess.run(["bash", str(BOOT_NETWORK), str(tmp_path / "cmdline"), str(out), str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "has no TRITON_DHCP_VENDOR_CLASS" in res.stdout and not out.exists()


def test_systemd_network_generator_is_off_in_the_initrd_and_the_root():
    """It fails on ip=<ip>:::<mask>:: (a failed unit at every boot) and gives
    ip=<ip>:::<mask>:::none's address to every NIC."""
    assert MASK.is_symlink() and str(MASK.readlink()) == "/dev/null"
    assert "disable systemd-network-generator.service" in PRESET.read_text().splitlines()
