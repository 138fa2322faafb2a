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
    fetch_failure: str
    fetch_failure_delay: int


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str  # relative to the pool; "" is the pool's root dataset
    mountpoint: str
    seed: bool = False

    def full_name(self, pool: str) -> str:
        return f"{pool}/{self.name}" if self.name else pool


@dataclasses.dataclass(frozen=True)
class PoolSettings:
    name: str
    marker: str
    pool_properties: dict[str, str]
    fs_properties: dict[str, str]
    datasets: tuple[Dataset, ...]
    image_var: tuple[str, ...]
    config_dataset: str
    settle_timeout: int
    answers_file: str

    def dataset(self, name: str) -> Dataset:
        for d in self.datasets:
            if d.name == name:
                return d
        raise KeyError(name)

    def as_json(self) -> dict[str, Any]:
        """What the node's triton-pool reads (/usr/lib/triton/pool.json)."""
        return {**dataclasses.asdict(self), "datasets": [dataclasses.asdict(d) for d in self.datasets]}


@dataclasses.dataclass(frozen=True)
class InstanceSettings:
    snapshot: str
    root_dir: str
    config_dir: str
    manifests: str
    bridge_suffix: str
    defaults: dict[str, Any]
    start_timeout: int
    stop_timeout: int

    def as_json(self, pool: str) -> dict[str, Any]:
        """What the node's vmadm and imgadm read (/usr/lib/triton/instances.json)."""
        return {"pool": pool, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class MediaSettings:
    volume_prefix: str
    config_label: str
    config_mib: int
    menu_timeout: int
    toram: bool

    def volume_label(self, stamp: str) -> str:
        return f"{self.volume_prefix}{stamp}"


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


def _properties(data: dict[str, Any], dotted: str) -> dict[str, str]:
    props = _get(data, dotted, dict)
    for k, v in props.items():
        if not isinstance(v, (str, int)) or isinstance(v, bool):
            raise ConfigError(f"platform.yaml: '{dotted}.{k}' must be a string, got {v!r} (quote on/off)")
    return {str(k): str(v) for k, v in props.items()}


def _datasets(data: dict[str, Any]) -> tuple[Dataset, ...]:
    out = []
    for i, entry in enumerate(_get(data, "pool.datasets", list)):
        where = f"pool.datasets[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                or not isinstance(entry.get("mountpoint"), str):
            raise ConfigError(f"platform.yaml: '{where}' needs a string name and mountpoint, got {entry!r}")
        mountpoint = entry["mountpoint"]
        if not mountpoint.startswith("/") or mountpoint == "/" or ".." in mountpoint.split("/"):
            raise ConfigError(f"platform.yaml: '{where}.mountpoint' {mountpoint!r} must be an absolute path below /")
        unknown = set(entry) - {"name", "mountpoint", "seed"}
        if unknown:
            raise ConfigError(f"platform.yaml: '{where}' has unknown keys {sorted(unknown)}")
        out.append(Dataset(entry["name"], mountpoint.rstrip("/"), bool(entry.get("seed", False))))
    if not any(d.name == "" for d in out):
        raise ConfigError("platform.yaml: 'pool.datasets' must include the pool's root dataset (name: \"\")")
    return tuple(out)


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
            fetch_failure=_choice(data, "boot.fetch_failure", FETCH_FAILURE),
            fetch_failure_delay=_get(data, "boot.fetch_failure_delay", int),
        ),
        pool=_pool(data),
        instances=_instances(data),
        media=_media(data),
    )


def _media(data: dict[str, Any]) -> MediaSettings:
    import re
    media = MediaSettings(
        volume_prefix=_get(data, "media.volume_prefix", str),
        config_label=_get(data, "media.config_label", str),
        config_mib=_get(data, "media.config_mib", int),
        menu_timeout=_get(data, "media.menu_timeout", int),
        toram=_get(data, "media.toram", bool),
    )
    # ISO 9660 volume IDs: up to 32 of A-Z, 0-9 and _; the stamp takes 16.
    if not re.fullmatch(r"[A-Z0-9_]{1,16}", media.volume_prefix):
        raise ConfigError(f"platform.yaml: 'media.volume_prefix' {media.volume_prefix!r} must be 1-16 of A-Z, 0-9, _")
    if not re.fullmatch(r"[A-Z0-9_]{1,11}", media.config_label):
        raise ConfigError(f"platform.yaml: 'media.config_label' {media.config_label!r} must be a FAT label "
                          "(1-11 of A-Z, 0-9, _)")
    return media


FETCH_FAILURE = ("reboot", "halt", "shell")


def _choice(data: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = _get(data, name, str)
    if value not in choices:
        raise ConfigError(f"platform.yaml: '{name}' is {value!r}; one of {', '.join(choices)}")
    return value


INSTANCE_DEFAULTS = {"max_physical_memory": int, "cpu_shares": int, "cpu_cap": int,
                     "max_lwps": int, "quota": int, "autoboot": bool}


def _instances(data: dict[str, Any]) -> InstanceSettings:
    defaults = _get(data, "instances.defaults", dict)
    for key, kind in INSTANCE_DEFAULTS.items():
        _get(data, f"instances.defaults.{key}", kind)
    unknown = set(defaults) - set(INSTANCE_DEFAULTS)
    if unknown:
        raise ConfigError(f"platform.yaml: 'instances.defaults' has unknown keys {sorted(unknown)}")
    return InstanceSettings(
        snapshot=_get(data, "instances.snapshot", str),
        root_dir=_get(data, "instances.root_dir", str),
        config_dir=_get(data, "instances.config_dir", str),
        manifests=_get(data, "instances.manifests", str),
        bridge_suffix=_get(data, "instances.bridge_suffix", str),
        defaults=dict(defaults),
        start_timeout=_get(data, "instances.start_timeout", int),
        stop_timeout=_get(data, "instances.stop_timeout", int),
    )


def _pool(data: dict[str, Any]) -> PoolSettings:
    pool = PoolSettings(
        name=_get(data, "pool.name", str),
        marker=_get(data, "pool.marker", str),
        pool_properties=_properties(data, "pool.pool_properties"),
        fs_properties=_properties(data, "pool.fs_properties"),
        datasets=_datasets(data),
        image_var=tuple(_get(data, "pool.image_var", list)),
        config_dataset=_get(data, "pool.config_dataset", str),
        settle_timeout=_get(data, "pool.settle_timeout", int),
        answers_file=_get(data, "pool.answers_file", str),
    )
    try:
        pool.dataset(pool.config_dataset)
    except KeyError:
        raise ConfigError(f"platform.yaml: 'pool.config_dataset' {pool.config_dataset!r} is not in pool.datasets")
    return pool


def load(path: Path = DEFAULT_PATH) -> PlatformConfig:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the platform settings ({e.strerror})") from e
    try:
        return parse(yaml.safe_load(text))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
