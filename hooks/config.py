"""platform.yaml, parsed into typed settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "platform.yaml"


class ConfigError(Exception):
    """platform.yaml is missing a setting or has one of the wrong kind."""


@dataclasses.dataclass(frozen=True)
class SquashfsSettings:
    compression: str
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
    reserve_mib: int


@dataclasses.dataclass(frozen=True)
class PlatformConfig:
    product: str
    arch_dir: str
    keep: int
    squashfs: SquashfsSettings
    zfs: ZfsSettings
    boot: BootSettings


def _get(data: dict[str, Any], dotted: str, kind: type) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"platform.yaml: missing setting '{dotted}'")
        node = node[part]
    if not isinstance(node, kind) or (kind is int and isinstance(node, bool)):
        raise ConfigError(
            f"platform.yaml: '{dotted}' must be a {kind.__name__}, got {node!r}"
        )
    return node


def parse(data: Any) -> PlatformConfig:
    if not isinstance(data, dict):
        raise ConfigError("platform.yaml: the top level must be a mapping")
    compression = _get(data, "squashfs.compression", str)
    if compression not in ("zstd", "xz", "gzip", "lz4"):
        raise ConfigError(
            f"platform.yaml: squashfs.compression '{compression}' is not one of zstd, xz, gzip, lz4"
        )
    return PlatformConfig(
        product=_get(data, "platform.product", str),
        arch_dir=_get(data, "platform.arch_dir", str),
        keep=_get(data, "platform.keep", int),
        squashfs=SquashfsSettings(
            compression=compression,
            level=_get(data, "squashfs.level", int),
            block_size=_get(data, "squashfs.block_size", str),
            exclude=tuple(_get(data, "squashfs.exclude", list)),
        ),
        zfs=ZfsSettings(
            module_dir=_get(data, "zfs.module_dir", str),
            modules=tuple(_get(data, "zfs.modules", list)),
        ),
        boot=BootSettings(
            args=tuple(_get(data, "boot.args", list)),
            fetch_timeout=_get(data, "boot.fetch_timeout", int),
            reserve_mib=_get(data, "boot.reserve_mib", int),
        ),
    )


def load(path: Path = DEFAULT_PATH) -> PlatformConfig:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the platform settings ({e.strerror})") from e
    try:
        return parse(yaml.safe_load(text))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
