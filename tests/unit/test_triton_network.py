"""triton-network's decisions: which NIC tags, and the networkd files."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_network as tn  # noqa: E402
import triton_pool as tp  # noqa: E402


def test_bootif_mac():
    assert tn.bootif_mac("console=ttyS1 BOOTIF=01-52-54-00-12-34-56 x") == "52:54:00:12:34:56"
    assert tn.bootif_mac("BOOTIF=52-54-00-12-34-56") == "52:54:00:12:34:56"
    assert tn.bootif_mac("BOOTIF=garbage") is None and tn.bootif_mac("") is None


def test_nic_tags_from_networking_json():
    tags, problems = tn.nic_tags({"nictags": [{"name": "admin", "mac": "52:54:00:12:34:56"},
                                              {"name": "external", "mac": "nope"},
                                              "junk"]}, "n.json")
    assert tags == {"admin": "52:54:00:12:34:56"}
    assert any("external" in p and "not a MAC" in p for p in problems) and len(problems) == 2
    assert tn.nic_tags([1, 2], "n.json")[1] == ["n.json: not a JSON object"]


def test_each_tag_is_a_bridge_with_its_nics_mac():
    files = tn.files({"admin": "52:54:00:12:34:56", "external": "52:54:00:aa:bb:cc"}, "0")
    assert "Kind=bridge" in files["10-triton-admin0.netdev"]
    assert "MACAddress=52:54:00:12:34:56" in files["10-triton-admin0.netdev"]
    assert "Bridge=admin0" in files["10-triton-admin0-port.network"]
    assert "PermanentMACAddress=52:54:00:12:34:56" in files["10-triton-admin0-port.network"]
    assert "DHCP=ipv4" in files["10-triton-admin0.network"]
    assert "DHCP" not in files["10-triton-external0.network"]


def test_instance_datasets_mounted_at_boot():
    settings = type("S", (), {"name": "zones"})()
    listing = ("zones\tnoauto\nzones/config\tnoauto\nzones/var\tnoauto\n"
               "zones/6f1c3a2b-9d8e-4f7a-b6c5-d4e3f2a1b0c9\ton\n"
               "zones/0b8e9a44-3c2d-4e5f-8a9b-0c1d2e3f4a5b\tnoauto\n")
    assert tp.instance_datasets(listing, settings) == ["zones/6f1c3a2b-9d8e-4f7a-b6c5-d4e3f2a1b0c9"]
