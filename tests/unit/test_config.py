import copy

import pytest
import yaml

from hooks import config

GOOD = yaml.safe_load(config.DEFAULT_PATH.read_text())


def test_repository_config_parses():
    c = config.load()
    assert c.squashfs.compression in ("zstd", "xz", "lz4")
    assert "boot" in c.squashfs.exclude
    assert c.zfs.modules == ("spl", "zfs")


def test_missing_setting_is_named():
    data = copy.deepcopy(GOOD)
    del data["squashfs"]["level"]
    with pytest.raises(config.ConfigError, match="squashfs.level"):
        config.parse(data)


def test_wrong_kind_is_named():
    data = copy.deepcopy(GOOD)
    data["platform"]["keep"] = "three"
    with pytest.raises(config.ConfigError, match="platform.keep.*int"):
        config.parse(data)


def test_unknown_compression_is_refused():
    data = copy.deepcopy(GOOD)
    data["squashfs"]["compression"] = "brotli"
    with pytest.raises(config.ConfigError, match="brotli"):
        config.parse(data)


def test_unreadable_file(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("platform: [unclosed\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(p)
