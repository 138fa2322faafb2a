"""platform.yaml, parsed into typed settings.

The pool and instances sections are declared once, in the node's own
triton_settings (it ships in the image, which reads them back from the JSON
the build writes); this module declares the build's own sections. Every
section is checked the same way (triton_settings.from_dict): a missing
setting, an unknown key or a value of the wrong kind is refused, naming it.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any, Literal

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PATH = REPO / "platform.yaml"
# The node's Python (/usr/lib/triton in the image), for triton_settings.
NODE_LIB = REPO / "mkosi.extra/usr/lib/triton"
if str(NODE_LIB) not in sys.path:
    sys.path.append(str(NODE_LIB))

from triton_settings import (  # noqa: E402
    INSTANCES_JSON, POOL_JSON, RUNTIME, Dataset, InstanceDefaults, InstanceSettings, PoolSettings, Runtime,
    SettingsError, from_dict,
)

__all__ = ["INSTANCES_JSON", "POOL_JSON", "RUNTIME", "Dataset", "InstanceDefaults", "InstanceSettings", "PoolSettings",
           "Runtime",
           "ConfigError", "PlatformConfig", "SquashfsSettings", "ZfsSettings", "BootSettings", "MediaSettings",
           "parse", "load"]

SOURCE = "platform.yaml"


class ConfigError(SettingsError):
    """platform.yaml is missing a setting or has one of the wrong kind."""


@dataclasses.dataclass(frozen=True)
class _Platform:
    product: str
    arch_dir: str
    keep: int


@dataclasses.dataclass(frozen=True)
class SquashfsSettings:
    compression: Literal["zstd", "xz", "gzip", "lz4"]
    level: int
    block_size: str
    exclude: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ZfsSettings:
    module_dir: str
    modules: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class BootSettings:
    args: tuple[str, ...]
    fetch_timeout: int
    fetch_failure: Literal["reboot", "halt", "shell"]
    fetch_failure_delay: int
    reserve_mib: int


@dataclasses.dataclass(frozen=True)
class MediaSettings:
    volume_prefix: str
    config_label: str
    config_mib: int
    menu_timeout: int
    toram: bool

    def volume_label(self, stamp: str) -> str:
        return f"{self.volume_prefix}{stamp}"

    def _checked(self, source: str, where: str) -> "MediaSettings":
        # ISO 9660 volume IDs: up to 32 of A-Z, 0-9 and _; the stamp takes 16.
        if not re.fullmatch(r"[A-Z0-9_]{1,16}", self.volume_prefix):
            raise ConfigError(f"{source}: '{where}.volume_prefix' {self.volume_prefix!r} must be 1-16 of A-Z, 0-9, _")
        if not re.fullmatch(r"[A-Z0-9_]{1,11}", self.config_label):
            raise ConfigError(f"{source}: '{where}.config_label' {self.config_label!r} must be a FAT label "
                              "(1-11 of A-Z, 0-9, _)")
        return self


@dataclasses.dataclass(frozen=True)
class PlatformConfig:
    product: str
    arch_dir: str
    keep: int
    squashfs: SquashfsSettings
    zfs: ZfsSettings
    boot: BootSettings
    pool: PoolSettings
    instances: InstanceSettings
    media: MediaSettings


def parse(data: Any) -> PlatformConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{SOURCE}: the top level must be a mapping")
    try:
        platform = from_dict(_Platform, data.get("platform"), SOURCE, "platform")
        pool = from_dict(PoolSettings, data.get("pool"), SOURCE, "pool")
        instances = data.get("instances")
        if isinstance(instances, dict):
            # The instances' datasets are children of the system pool.
            instances = {"pool": pool.name, **instances}
        return PlatformConfig(
            product=platform.product,
            arch_dir=platform.arch_dir,
            keep=platform.keep,
            squashfs=from_dict(SquashfsSettings, data.get("squashfs"), SOURCE, "squashfs"),
            zfs=from_dict(ZfsSettings, data.get("zfs"), SOURCE, "zfs"),
            boot=from_dict(BootSettings, data.get("boot"), SOURCE, "boot"),
            pool=pool,
            instances=from_dict(InstanceSettings, instances, SOURCE, "instances"),
            media=from_dict(MediaSettings, data.get("media"), SOURCE, "media"),
        )
    except ConfigError:
        raise
    except SettingsError as e:
        raise ConfigError(str(e)) from None


def load(path: Path = DEFAULT_PATH) -> PlatformConfig:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the platform settings ({e.strerror})") from e
    try:
        return parse(yaml.safe_load(text))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
