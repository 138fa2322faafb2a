"""The platform's settings, each declared once. Standard library only: the
build hooks import it (hooks/config.py) and it ships in the image.

- `PoolSettings` and `InstanceSettings` are platform.yaml's `pool:` and
  `instances:` sections. The build parses them from platform.yaml and writes
  them into the image as JSON (/usr/lib/triton/pool.json, instances.json);
  the node's tools read them back with `load_pool` and `load_instances`.
  Both ways go through `from_dict`, which checks every field against its
  declared type and names the file and the field it refuses.
- `RUNTIME` holds the paths and names the initrd's shell, the units and the
  node's Python share (/run/triton/boot, the pool's mount flag, ...). They
  are the platform's own, not tunables, so they live here rather than in
  platform.yaml; the build renders them into the initrd's rootfs.env and
  into the units (hooks/bootfiles.py, hooks/postinst.py).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Optional, TypeVar

LIB = Path("/usr/lib/triton")
POOL_JSON = LIB / "pool.json"
INSTANCES_JSON = LIB / "instances.json"
# What a dataset is called while vmadm creates it or imgadm imports it, as
# SmartOS's imgadm names its imports. A name is given in the transaction
# that makes the dataset; a property is not (`zfs clone -o` and `zfs create
# -o` set theirs in a second one: "It would be nice to do this atomically",
# says OpenZFS's zfs_ioc_clone), so a power cut never leaves an unfinished
# dataset under its final name. The mountpoint is inherited from the pool's
# root, so it follows the rename that finishes the dataset, in the same
# transaction.
PARTIAL = "-partial"


class SettingsError(ValueError):
    """A setting is missing, unknown or of the wrong kind, or the file that
    holds the settings cannot be read; the message names file and field."""


# -- runtime paths ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Runtime:
    # Booter's files (node.config, networking.json, answers.json, ...), kept
    # unchanged by the initrd (save-boot-files, fetch-rootfs from a config
    # filesystem) and read by the booted node.
    boot_files: Path = Path("/run/triton/boot")
    # fetch-rootfs's work: the root's copy, the squashfs mounted as the
    # overlay's lower layer (lower/), and what was booted (source).
    rootfs: Path = Path("/run/triton/rootfs")
    # triton-pool's state (state.json) and scratch space.
    pool: Path = Path("/run/triton/pool")
    # What triton-node-config applied (sysinfo reads it).
    network_state: Path = Path("/run/triton/network.json")
    # Each running instance's files (network configs, nspawn.env).
    instances: Path = Path("/run/triton/instances")
    # Booter's DHCP server answers PXE clients only: the initrd's boot NIC
    # and the node's DHCP links ask as one.
    dhcp_vendor_class: str = "PXEClient.Linux.x86_64"

    @property
    def mount_flag(self) -> Path:
        """Written by triton-pool when it found the node's system pool: the
        initrd's mount units (and what needs the pool) run only then."""
        return self.pool / "mount"

    @property
    def pool_state(self) -> Path:
        return self.pool / "state.json"

    @property
    def rootfs_lower(self) -> Path:
        return self.rootfs / "lower"


RUNTIME = Runtime()


# -- platform.yaml's pool and instances sections ------------------------------------------

@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str  # relative to the pool; "" is the pool's root dataset
    mountpoint: str
    seed: bool = False  # setup copies the image's content in

    def full_name(self, pool: str) -> str:
        return f"{pool}/{self.name}" if self.name else pool

    def _checked(self, source: str, where: str) -> "Dataset":
        m = self.mountpoint
        if not m.startswith("/") or m == "/" or ".." in m.split("/"):
            raise SettingsError(f"{source}: '{_join(where, 'mountpoint')}' {m!r} must be an absolute path below /")
        return dataclasses.replace(self, mountpoint=m.rstrip("/"))


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

    def full(self, name: str) -> str:
        """A dataset's full name, from its name relative to the pool."""
        return f"{self.name}/{name}" if name else self.name

    @property
    def root(self) -> Dataset:
        return self.dataset("")

    @property
    def config_dir(self) -> Path:
        """Where the node's identity and settings are kept."""
        return Path(self.dataset(self.config_dataset).mountpoint)

    def as_json(self) -> dict[str, Any]:
        """What the build writes for the node (/usr/lib/triton/pool.json)."""
        return dataclasses.asdict(self)

    def _checked(self, source: str, where: str) -> "PoolSettings":
        if not any(d.name == "" for d in self.datasets):
            raise SettingsError(f"{source}: '{_join(where, 'datasets')}' must include the pool's root dataset "
                                f"(name: \"\")")
        if not any(d.name == self.config_dataset for d in self.datasets):
            raise SettingsError(f"{source}: '{_join(where, 'config_dataset')}' {self.config_dataset!r} is not in "
                                f"{_join(where, 'datasets')}")
        return self


@dataclasses.dataclass(frozen=True)
class InstanceDefaults:
    """What vmadm create fills in when a payload leaves a field out."""
    max_physical_memory: int  # MiB
    cpu_shares: int
    cpu_cap: int  # percent of one CPU; 0: no cap
    max_lwps: int
    quota: int  # GiB; 0: no quota
    autoboot: bool


@dataclasses.dataclass(frozen=True)
class InstanceSettings:
    pool: str  # the system pool's name (platform.yaml's pool.name)
    snapshot: str
    root_dir: str
    config_dir: str
    manifests: str
    imgadm_config: str  # imgadm.conf: its image sources
    image_sources: tuple[str, ...]  # imgadm's sources before any is set
    bridge_suffix: str
    defaults: InstanceDefaults
    start_timeout: int
    stop_timeout: int

    def dataset(self, uuid: str) -> str:
        return f"{self.pool}/{uuid}"

    def mountpoint(self, uuid: str) -> Path:
        return Path("/") / self.pool / uuid

    def root(self, uuid: str) -> Path:
        return self.mountpoint(uuid) / self.root_dir

    def config_file(self, uuid: str) -> Path:
        return self.mountpoint(uuid) / self.config_dir / "vm.json"

    def manifest(self, image: str) -> Path:
        """Where imgadm keeps an installed image's manifest."""
        return self.manifest_dir / f"{self.pool}-{image}.json"

    def partial(self, uuid: str) -> str:
        """The dataset while it is being made (see PARTIAL)."""
        return self.dataset(uuid + PARTIAL)

    @property
    def manifest_dir(self) -> Path:
        return Path(self.manifests)

    def bridge(self, nic_tag: str) -> str:
        return nic_tag + self.bridge_suffix

    def as_json(self) -> dict[str, Any]:
        """What the build writes for the node (/usr/lib/triton/instances.json)."""
        return dataclasses.asdict(self)


# -- reading them -------------------------------------------------------------------------

T = TypeVar("T")

KINDS = {str: "a string", int: "a whole number", bool: "true or false", list: "a list", dict: "a mapping"}


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind_error(source: str, where: str, kind: type, value: Any) -> SettingsError:
    return SettingsError(f"{source}: '{where}' must be {KINDS.get(kind, kind.__name__)} ({kind.__name__}), "
                         f"got {value!r}")


def _value(kind: Any, value: Any, source: str, where: str) -> Any:
    """`value` as a field declared `kind` holds it, or SettingsError."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return from_dict(kind, value, source, where)
    if origin is typing.Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise SettingsError(f"{source}: '{where}' is {value!r}; one of {', '.join(map(str, choices))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _kind_error(source, where, list, value)
        item = typing.get_args(kind)[0]
        return tuple(_value(item, v, source, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _kind_error(source, where, dict, value)
        if typing.get_args(kind)[1] is str:
            # Properties: YAML reads 12 as a number and off as false.
            for k, v in value.items():
                if not isinstance(v, (str, int)) or isinstance(v, bool):
                    raise SettingsError(f"{source}: '{where}.{k}' must be a string, got {v!r} (quote on/off)")
            return {str(k): str(v) for k, v in value.items()}
        return dict(value)
    if kind is Any:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _kind_error(source, where, kind, value)
    return value


def from_dict(cls: type[T], data: Any, source: str, where: str = "") -> T:
    """A settings dataclass from parsed YAML or JSON: every field present
    (or with a default) and of its declared type, no unknown key. `source`
    (a file) and `where` (the dotted path to `data` in it) name what is
    refused."""
    if not isinstance(data, dict):
        raise SettingsError(f"{source}: '{where}' must be a mapping, got {data!r}" if where else
                            f"{source}: must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(fields)
    if unknown:
        raise SettingsError(f"{source}: '{where}' has unknown keys {sorted(unknown)}" if where else
                            f"{source}: unknown keys {sorted(unknown)}")
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _value(hints[name], data[name], source, _join(where, name))
        elif f.default is dataclasses.MISSING:
            raise SettingsError(f"{source}: missing setting '{_join(where, name)}'")
    obj = cls(**values)
    checked: Optional[Any] = getattr(obj, "_checked", None)
    return checked(source, where) if checked else obj


def load_json(cls: type[T], path: Path) -> T:
    """Settings the platform build wrote into the image."""
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise SettingsError(f"{path}: cannot read the settings the platform build wrote "
                            f"({e.strerror or e})") from None
    except ValueError as e:
        raise SettingsError(f"{path}: the settings the platform build wrote are not valid JSON ({e})") from None
    return from_dict(cls, data, str(path))


def load_pool(path: Path = POOL_JSON) -> PoolSettings:
    return load_json(PoolSettings, path)


def load_instances(path: Path = INSTANCES_JSON) -> InstanceSettings:
    return load_json(InstanceSettings, path)
