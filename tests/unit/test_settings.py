"""The pool and instance settings, declared once (triton_settings): what the
build parses from platform.yaml is what the node reads back from the JSON
the build writes, and a bad file or field is named."""

import ast
import copy
import dataclasses
import json
import sys
from pathlib import Path

import pytest
import yaml

from hooks import config, postinst

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_settings as ts  # noqa: E402

GOOD = yaml.safe_load(config.DEFAULT_PATH.read_text())


def test_the_hooks_and_the_node_share_one_declaration():
    assert config.PoolSettings is ts.PoolSettings and config.InstanceSettings is ts.InstanceSettings


@pytest.mark.parametrize("section,loader", [("pool", ts.load_pool), ("instances", ts.load_instances)])
def test_the_node_reads_back_what_the_build_writes(tmp_path, section, loader):
    built = getattr(config.load(), section)
    path = tmp_path / f"{section}.json"
    path.write_text(json.dumps(built.as_json(), indent=2))
    assert loader(path) == built


def test_instances_know_their_pool():
    c = config.load()
    assert c.instances.pool == c.pool.name
    assert c.instances.dataset("u") == f"{c.pool.name}/u" and c.instances.partial("u") == f"{c.pool.name}/u-partial"


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ts.SettingsError, match=r"missing.json: cannot read the settings the platform build wrote"):
        ts.load_pool(tmp_path / "missing.json")


def test_a_file_that_is_not_json_is_named(tmp_path):
    (tmp_path / "pool.json").write_text("{not json")
    with pytest.raises(ts.SettingsError, match=r"pool.json: the settings the platform build wrote are not valid JSON"):
        ts.load_pool(tmp_path / "pool.json")


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("marker"), "missing setting 'marker'"),
    (lambda d: d.update(settle_timeout="30"), "'settle_timeout' must be a whole number"),
    (lambda d: d.update(settle_timeout=True), "'settle_timeout' must be a whole number"),
    (lambda d: d.update(colour="blue"), "unknown keys ['colour']"),
    (lambda d: d["datasets"][1].update(mountpoint="zones/config"), "'datasets[1].mountpoint' 'zones/config'"),
    (lambda d: d["datasets"][2].pop("mountpoint"), "missing setting 'datasets[2].mountpoint'"),
    (lambda d: d.update(datasets=d["datasets"][1:]), "must include the pool's root dataset"),
    (lambda d: d.update(config_dataset="etc"), "'config_dataset' 'etc' is not in datasets"),
    (lambda d: d["fs_properties"].update(atime=False), "'fs_properties.atime' must be a string"),
])
def test_a_bad_pool_field_is_named_with_its_file(tmp_path, change, message):
    data = config.load().pool.as_json()
    change(data)
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ts.SettingsError) as e:
        ts.load_pool(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def test_a_bad_instance_default_is_named(tmp_path):
    data = config.load().instances.as_json()
    data["defaults"]["autoboot"] = "yes"
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ts.SettingsError, match=r"'defaults.autoboot' must be true or false"):
        ts.load_instances(path)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["pool"].pop("name"), "platform.yaml: missing setting 'pool.name'"),
    (lambda d: d["pool"]["datasets"][0].update(mountpoint="/"), "platform.yaml: 'pool.datasets[0].mountpoint' '/'"),
    (lambda d: d["instances"]["defaults"].update(colour=1), "platform.yaml: 'instances.defaults' has unknown keys"),
    (lambda d: d["instances"].update(stop_timeout="90s"), "platform.yaml: 'instances.stop_timeout' must be"),
    (lambda d: d["boot"].update(fetch_failure="retry"), "platform.yaml: 'boot.fetch_failure' is 'retry'; one of"),
])
def test_platform_yaml_errors_name_the_field(edit, message):
    data = copy.deepcopy(GOOD)
    edit(data)
    with pytest.raises(config.ConfigError) as e:
        config.parse(data)
    assert message in str(e.value)


def test_runtime_paths_hang_together():
    r = ts.RUNTIME
    assert r.mount_flag.parent == r.pool and r.pool_state.parent == r.pool
    assert all(str(p).startswith("/run/triton/") for p in (r.boot_files, r.rootfs, r.pool, r.instances))
    assert dataclasses.is_dataclass(r)


def test_units_that_need_runtime_paths_are_rendered_with_them():
    files = postinst.unit_files(config.load())
    for unit in ("triton-persist-root.path", "triton-persist-root.service"):
        assert f"ConditionPathExists={ts.RUNTIME.mount_flag}\n" in files[f"/usr/lib/systemd/system/{unit}"]
    network = files["/usr/lib/systemd/network/99-triton-dhcp.network"]
    assert f"VendorClassIdentifier={ts.RUNTIME.dhcp_vendor_class}\n" in network
    instance = files["/usr/lib/systemd/system/triton-instance@.service"]
    assert f"EnvironmentFile=-{ts.RUNTIME.instances}/%i/nspawn.env\n" in instance


def test_booters_dhcp_server_is_asked_as_a_pxe_client():
    # Booter's DHCP server answers "PXEClient" vendor classes only.
    assert ts.RUNTIME.dhcp_vendor_class == "PXEClient.Linux.x86_64"


def code_strings(path: Path) -> list[str]:
    """A Python file's string constants, docstrings left out."""
    tree = ast.parse(path.read_text())
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_each_runtime_path_is_written_once():
    """The paths and names declared in triton_settings.RUNTIME are written
    nowhere else: code, units and scripts take them from there (comments
    may name them)."""
    r = ts.RUNTIME
    values = tuple(str(v) for v in (r.boot_files, r.rootfs, r.pool, r.network_state, r.instances,
                                    r.dhcp_vendor_class))
    found = []
    for path in (REPO / "mkosi.extra/usr/lib/triton").glob("*.py"):
        if path.name != "triton_settings.py":
            found += [(path.name, s) for s in code_strings(path) if any(v in s for v in values)]
    for path in (REPO / "hooks").rglob("*.py"):
        found += [(path.name, s) for s in code_strings(path) if any(v in s for v in values)]
    others = [*(REPO / "hooks/templates").rglob("*.j2"), *(REPO / "mkosi.initrd/mkosi.extra/usr/lib/triton").iterdir(),
              *(p for p in (REPO / "mkosi.extra/usr/lib/systemd").rglob("*") if p.is_file())]
    for path in others:
        code = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        found += [(path.name, line) for line in code if any(v in line for v in values)]
    assert found == []
