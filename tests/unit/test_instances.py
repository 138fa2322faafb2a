"""vmadm/imgadm's decisions, without root, ZFS or systemd: payload checks,
and what an instance's config becomes (unit limits, nspawn settings, its
NIC's networkd file). The boot tests run the real thing."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hooks.config import load

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_instance as ti  # noqa: E402
import triton_instance_generator as tgen  # noqa: E402
import triton_instance_payload as tpay  # noqa: E402
import triton_instance_prepare as tprep  # noqa: E402
import triton_imgadm as ia  # noqa: E402
import triton_vmadm as va  # noqa: E402

IMAGE = "0b8e9a44-3c2d-4e5f-8a9b-0c1d2e3f4a5b"
VM = "6f1c3a2b-9d8e-4f7a-b6c5-d4e3f2a1b0c9"


@pytest.fixture
def settings(tmp_path):
    return load().instances


def payload(**kw):
    return {"uuid": VM, "image_uuid": IMAGE, "alias": "web0",
            "nics": [{"nic_tag": "admin", "ip": "10.0.2.100", "netmask": "255.255.255.0",
                      "gateway": "10.0.2.2"}], **kw}


def test_defaults_come_from_platform_yaml(settings):
    vm = tpay.check_payload({"image_uuid": IMAGE}, settings)
    d = load().instances.defaults
    assert vm["max_physical_memory"] == d.max_physical_memory
    assert vm["cpu_shares"] == d.cpu_shares and vm["max_lwps"] == d.max_lwps
    assert vm["quota"] == d.quota and vm["autoboot"] is d.autoboot
    assert vm["nics"] == [] and vm["resolvers"] == []


@pytest.mark.parametrize("bad,field", [
    ({"image_uuid": "not-a-uuid"}, "image_uuid"),
    ({"uuid": "ABC"}, "uuid"),
    ({"max_physical_memory": -5}, "max_physical_memory"),
    ({"max_physical_memory": "lots"}, "max_physical_memory"),
    ({"max_physical_memory": 2**40}, "max_physical_memory"),
    ({"cpu_cap": 1.5}, "cpu_cap"),
    ({"max_lwps": 0}, "max_lwps"),
    ({"quota": True}, "quota"),
    ({"autoboot": "yes"}, "autoboot"),
    ({"hostname": "bad_name!"}, "hostname"),
    ({"resolvers": ["8.8.8.x"]}, "resolvers"),
    ({"nics": [{"nic_tag": "admin", "ip": "10.0.2.300", "netmask": "255.255.255.0"}]}, "nics[0].ip"),
    ({"nics": [{"nic_tag": "admin", "ip": "10.0.2.3"}]}, "nics[0].netmask"),
    ({"nics": [{"nic_tag": "Admin!", "ip": "dhcp"}]}, "nics[0].nic_tag"),
    ({"nics": [{"nic_tag": "admin", "ip": "dhcp", "mac": "01:00:5e:00:00:01"}]}, "nics[0].mac"),
    ({"customer_metadata": {"a": 1}}, "customer_metadata"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_payloads_name_the_field(settings, bad, field):
    with pytest.raises(ti.InstanceError) as e:
        tpay.check_payload(payload(**bad), settings)
    assert field in str(e.value)


def test_missing_image_is_named(settings):
    with pytest.raises(ti.InstanceError, match="image_uuid: required"):
        tpay.check_payload({"alias": "x"}, settings)


def test_limits_become_unit_properties(settings):
    vm = tpay.check_payload(payload(max_physical_memory=512, cpu_cap=50, cpu_shares=200, max_lwps=300), settings)
    props = ti.unit_properties(vm)
    assert props == {"MemoryMax": "512M", "MemorySwapMax": "0", "CPUWeight": "200", "TasksMax": "300",
                     "CPUQuota": "50%"}
    assert ti.unit_properties({**vm, "cpu_cap": 0})["CPUQuota"] == ""
    dropin = tgen.unit_dropin(vm)
    assert "MemoryMax=512M" in dropin and "Description=Triton instance web0 (" + VM in dropin


def test_nspawn_settings_isolate_and_attach_to_the_tags_bridge(settings):
    vm = tpay.check_payload(payload(hostname="web0"), settings)
    text = tprep.nspawn_settings(vm, settings)
    assert "PrivateUsers=pick" in text and "Hostname=web0" in text
    # The port is ours to name, so its filter and bridge are set up before it exists.
    port = tprep.port_name(VM, 0)
    assert f"VirtualEthernetExtra={port}:host0" in text and "Private=yes" in text and len(port) <= 15
    network = tprep.port_network(port, "admin0")
    assert f"Name={port}" in network and "Bridge=admin0" in network
    assert "NotifyReady=yes" in text
    assert tprep.nspawn_args(vm) == \
        f"TRITON_NSPAWN_ARGS=--load-credential=network.network.50-net0:/run/triton/instances/{VM}/net0.network\n"
    assert "Private=yes" in tprep.nspawn_settings(tpay.check_payload(payload(nics=[]), settings), settings)


def test_network_file_static_and_dhcp(settings):
    vm = tpay.check_payload(payload(resolvers=["10.0.2.3"]), settings)
    text = tprep.network_file(vm["nics"][0], vm["resolvers"])
    assert "Address=10.0.2.100/24" in text and "Gateway=10.0.2.2" in text and "DNS=10.0.2.3" in text
    assert f"MACAddress={vm['nics'][0]['mac']}" in text
    dhcp = tpay.check_payload(payload(nics=[{"nic_tag": "admin", "ip": "dhcp"}]), settings)
    assert "DHCP=ipv4" in tprep.network_file(dhcp["nics"][0], [])


def test_generated_macs_are_local_unicast():
    for _ in range(50):
        first = int(tpay.random_mac()[:2], 16)
        assert first & 0x02 and not first & 0x01


def test_update_keeps_nics_and_checks_fields(settings):
    vm = {**tpay.check_payload(payload(), settings), "create_timestamp": "t"}
    new = tpay.check_update(vm, {"max_physical_memory": 1024, "alias": "web1"}, settings)
    assert new["max_physical_memory"] == 1024 and new["alias"] == "web1"
    assert new["nics"] == vm["nics"] and new["uuid"] == VM and new["create_timestamp"] == "t"
    with pytest.raises(ti.InstanceError, match="cannot change image_uuid"):
        tpay.check_update(vm, {"image_uuid": IMAGE}, settings)
    with pytest.raises(ti.InstanceError, match="max_lwps"):
        tpay.check_update(vm, {"max_lwps": -1}, settings)


def test_generator_writes_limits_and_autoboot_wants(tmp_path, settings):
    top = tmp_path / "zones"
    s = dataclasses.replace(settings, pool=str(top))
    for u, autoboot in ((VM, True), (IMAGE, False)):
        cfg = s.config_file(u)
        cfg.parent.mkdir(parents=True)
        cfg.write_text(json.dumps(tpay.check_payload(payload(uuid=u, autoboot=autoboot), s)))
    (top / "not-an-instance").mkdir()
    out = tmp_path / "gen"
    out.mkdir()
    tgen.generate(out, s)
    assert (out / f"triton-instance@{VM}.service.d/50-instance.conf").read_text().count("MemoryMax=256M") == 1
    assert (out / f"triton-instance@{IMAGE}.service.d/50-instance.conf").exists()
    wants = sorted(p.name for p in (out / "machines.target.wants").iterdir())
    assert wants == [f"triton-instance@{VM}.service"]


def test_vmadm_assignments():
    assert va.parse_assignments(["max_physical_memory=512", "alias=db", "autoboot=false"]) == \
        {"max_physical_memory": 512, "alias": "db", "autoboot": False}
    with pytest.raises(ti.InstanceError, match="field=value"):
        va.parse_assignments(["oops"])


def test_image_manifest_checks(tmp_path):
    good = {"uuid": IMAGE, "name": "d", "version": "1", "os": "linux", "type": "lx-dataset",
            "files": [{"size": 10, "sha256": "a" * 64, "compression": "zstd"}]}
    assert ia.check_manifest(good, "m") == good
    for change, what in (({"os": "smartos"}, "os"), ({"uuid": "x"}, "uuid"), ({"files": []}, "files"),
                         ({"files": [{"size": 10, "sha256": "xyz"}]}, "sha256")):
        with pytest.raises(ti.InstanceError, match=what):
            ia.check_manifest({**good, **change}, "m")
    assert ia.file_beside("http://h/x/img.json", good) == "http://h/x/img.tar.zst"
    assert ia.file_beside("/srv/img.json", {**good, "files": [{"path": "a.tar.gz"}]}) == "/srv/a.tar.gz"


def test_image_pack_round_trip(tmp_path):
    from tools import image_pack
    tarball = tmp_path / "img.tar.zst"
    tarball.write_bytes(b"\x28\xb5\x2f\xfd" + b"x" * 100)
    m = json.loads(image_pack.write_manifest(tarball, name="img", version="1").read_text())
    assert ia.check_manifest(m, "m")["files"][0]["size"] == 104
    assert m["uuid"] == image_pack.manifest(tarball, name="img", version="1")["uuid"]


# -- strings from a payload that land in files other programs parse ------------------------

@pytest.mark.parametrize("field,value,error", [
    ("alias", "web\x00[Service]\nExecStartPre=/bin/sh", "alias: must be up to 100 printable"),
    ("alias", "web\\", "alias: must be up to 100 printable"),
    ("alias", "web\u2028x", "alias: must be up to 100 printable"),
    ("dns_domain", "example.com\nnameserver 10.6.6.6", "dns_domain: not a DNS domain"),
    ("dns_domain", ["example.com"], "dns_domain: not a DNS domain"),
    ("resolvers", ["fe80::1%eth0\nsearch evil"], "resolvers: 'fe80::1%eth0\\nsearch evil': a resolver takes no"),
    ("quota", "\u00b2", "quota: must be a whole number"),
    ("quota", "\u0663", "quota: must be a whole number"),
    ("nics", [{"nic_tag": "admin", "ip": "dhcp", "mtu": 10**9}], "nics[0].mtu: must be 576 to 9216"),
    ("nics", [{"nic_tag": "admin", "ip": "10.0.0.2", "netmask": "255.0.0.0", "gateways": "10.0.0.1"}],
     "nics[0].gateways: must be a list"),
])
def test_hostile_strings_are_refused_naming_the_field(settings, field, value, error):
    with pytest.raises(ti.InstanceError) as e:
        tpay.check_payload(payload(**{field: value}), settings)
    assert error in str(e.value)


def test_update_is_held_to_the_same_rules(settings):
    vm = tpay.check_payload(payload(), settings)
    with pytest.raises(ti.InstanceError, match="alias: must be up to 100 printable"):
        tpay.check_update(vm, {"alias": "x\x00y"}, settings)


def test_alias_specifiers_are_escaped_in_the_unit(settings):
    vm = tpay.check_payload(payload(alias="100% web %i %n"), settings)
    dropin = tgen.unit_dropin(vm)
    assert f"Description=Triton instance 100%% web %%i %%n ({VM})" in dropin.splitlines()
    # A vm.json written by hand (or by an older vmadm) cannot inject lines either.
    with pytest.raises(ti.InstanceError):
        tgen.unit_dropin({**vm, "alias": "x\n[Service]\nExecStart=/bin/sh"})


def test_resolvers_and_gateways_are_written_canonical(settings):
    vm = tpay.check_payload(payload(resolvers=["2001:DB8::0001", "010.0.2.3".lstrip("0")],
                                    dns_domain="example.com"), settings)
    assert vm["resolvers"] == ["2001:db8::1", "10.0.2.3"]
    assert tprep.resolv_conf(vm) == "# From the instance's resolvers (vmadm).\nsearch example.com\n" \
                                    "nameserver 2001:db8::1\nnameserver 10.0.2.3\n"


def test_quota_zero_is_no_quota_as_on_smartos(settings):
    assert tpay.check_payload(payload(quota=0), settings)["quota"] == 0


def test_import_quota_bounds_a_bomb():
    assert ia.import_quota(1 << 20) == ia.IMPORT_QUOTA_MIN
    assert ia.import_quota(1 << 30) == ia.IMPORT_QUOTA_FACTOR << 30


def port_vm(settings, **nic):
    return tpay.check_payload(payload(nics=[{"nic_tag": "admin", "ip": "10.0.2.100", "netmask": "255.255.255.0",
                                            "mac": "02:11:22:33:44:55", **nic}]), settings)


def test_a_port_passes_only_its_own_mac_and_ip_and_no_servers(settings):
    rules = tprep.port_rules(port_vm(settings))
    port = f'iifname "{tprep.port_name(VM, 0)}"'
    for rule in ("ether saddr != 02:11:22:33:44:55 drop", "arp saddr ip != 10.0.2.100 drop",
                 "ip saddr != 10.0.2.100 drop", "udp sport { 67, 4011 } drop", "nd-router-advert drop",
                 "ether type != { ip, arp, ip6 } drop"):
        assert any(line.strip().startswith(port) and line.rstrip().endswith(rule) for line in rules.splitlines()), rule


@pytest.mark.parametrize("flag,gone", [("allow_mac_spoofing", "ether saddr !="),
                                       ("allow_ip_spoofing", "ip saddr !="),
                                       ("allow_dhcp_spoofing", "udp sport"),
                                       ("allow_restricted_traffic", "ether type != {")])
def test_smartos_spoofing_switches_each_lift_one_protection(settings, flag, gone):
    assert gone in tprep.port_rules(port_vm(settings))
    assert gone not in tprep.port_rules(port_vm(settings, **{flag: True}))
    with pytest.raises(ti.InstanceError, match=f"nics\\[0\\].{flag}: must be true or false"):
        port_vm(settings, **{flag: "yes"})


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft")
# (No protocol names: nft resolves them through /etc/protocols, which a node
# or a minimal host may lack.)
def test_port_rules_load_and_reload_in_nftables(settings, tmp_path):
    """The kernel's nftables takes them, twice in a row (a restart replaces them)."""
    script = tmp_path / "rules.nft"
    script.write_text(tprep.port_rules(port_vm(settings, ip="dhcp")) + tprep.port_rules(port_vm(settings)))
    res = subprocess.run(["unshare", "--net", "sh", "-c", f"nft -f {script} && nft -f {script} && nft list ruleset"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("chain ports") == 1 and "02:11:22:33:44:55" in res.stdout


# -- imgadm's image sources (imgadm.conf), as Triton's joysetup.sh drives them -------------

def test_imgadm_sources_as_joysetup_drives_them(tmp_path, monkeypatch, capsys):
    """joysetup.sh: `imgadm list -H` makes imgadm.conf; json adds
    userAgentExtra; every source is deleted (`sources -f -d`) and the
    datacenter's IMGAPI added (`sources -f -a`). Keys imgadm does not use
    are kept."""
    conf = tmp_path / "config/imgadm/imgadm.conf"
    s = dataclasses.replace(load().instances, imgadm_config=str(conf), manifests=str(tmp_path / "images"))
    monkeypatch.setattr(ia, "load_settings", lambda: s)
    assert ia.main(["list", "-H"]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(conf.read_text()) == {"sources": [{"url": u, "type": "imgapi"} for u in s.image_sources]}
    data = json.loads(conf.read_text())
    conf.write_text(json.dumps({**data, "userAgentExtra": "server/6b5a4f3e"}))
    assert ia.main(["sources"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == list(s.image_sources)
    for url in listed:
        assert ia.main(["sources", "-f", "-d", url]) == 0
    assert ia.main(["sources", "-f", "-a", "http://imgapi.dc.example"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == 'Added image source "http://imgapi.dc.example" (type imgapi)'
    assert json.loads(conf.read_text()) == {"sources": [{"url": "http://imgapi.dc.example", "type": "imgapi"}],
                                            "userAgentExtra": "server/6b5a4f3e"}
    # Again: no change, and said so; -v and -j list it.
    assert ia.main(["sources", "-a", "http://imgapi.dc.example/"]) == 0
    assert ia.main(["sources", "-d", "http://nowhere.example"]) == 0
    assert ia.main(["sources", "-v"]) == 0
    assert ia.main(["sources", "-j"]) == 0
    out = capsys.readouterr().out
    assert 'Already have image source "http://imgapi.dc.example/", no change' in out
    assert 'Do not have image source "http://nowhere.example", no change' in out
    assert "http://imgapi.dc.example  imgapi\n" in out
    assert ia.main(["sources", "-r"]) == 0
    assert [x["url"] for x in json.loads(conf.read_text())["sources"]] == list(s.image_sources)


@pytest.mark.parametrize("text,says", [
    ("{not json", "not valid JSON"),
    ('{"sources": "http://x"}', "'sources' is a list"),
    ('[1]', "'sources' is a list"),
])
def test_imgadm_refuses_a_broken_imgadm_conf_and_keeps_it(tmp_path, monkeypatch, capsys, text, says):
    conf = tmp_path / "imgadm.conf"
    conf.write_text(text)
    s = dataclasses.replace(load().instances, imgadm_config=str(conf), manifests=str(tmp_path / "images"))
    monkeypatch.setattr(ia, "load_settings", lambda: s)
    assert ia.main(["sources", "-a", "http://imgapi.dc.example"]) == 1
    err = capsys.readouterr().err
    assert str(conf) in err and says in err and "remove it" in err
    assert conf.read_text() == text


@pytest.mark.parametrize("url", ["imgapi.dc.example", "ftp://x.example", "http://", "file:///etc/passwd"])
def test_imgadm_sources_takes_only_http_urls(tmp_path, monkeypatch, capsys, url):
    conf = tmp_path / "imgadm.conf"
    s = dataclasses.replace(load().instances, imgadm_config=str(conf), manifests=str(tmp_path / "images"))
    monkeypatch.setattr(ia, "load_settings", lambda: s)
    assert ia.main(["sources", "-a", url]) == 1
    assert f"image source {url!r} is not an http(s) URL" in capsys.readouterr().err
    assert [x["url"] for x in json.loads(conf.read_text())["sources"]] == list(s.image_sources)
