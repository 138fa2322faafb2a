"""The instances' datasets at boot: what interrupted creates and imports
left is destroyed, then every instance's dataset is mounted, before the
root's systemd looks for them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import triton_settings
from triton_common import UUID_RE
from triton_pool_state import PoolError, describe, run, say
from triton_settings import PoolSettings

INSTANCES = "instance datasets"


def instance_datasets(listing: str, settings: PoolSettings) -> list[str]:
    """From `zfs list -H -o name,canmount -d 1 <pool>`: the pool's children
    that vmadm made (named by UUID, canmount=on), to be mounted at boot."""
    out = []
    for line in listing.splitlines():
        fields = line.split("\t")
        if len(fields) != 2:
            continue
        name, canmount = fields
        parent, _, child = name.rpartition("/")
        if parent == settings.name and canmount == "on" and UUID_RE.fullmatch(child):
            out.append(name)
    return out


def mount_instances(settings: PoolSettings) -> Optional[str]:
    """Mount the instances' datasets, so the root's systemd finds their
    config (triton-instance-generator) from its first moment. One that
    does not mount leaves the others mounted."""
    try:
        unremoved = remove_unfinished(settings)
    except Exception as e:  # the instances mount whatever this does
        unremoved = [f"removing what interrupted creates left: {describe(e)}"]
    r = run("zfs", "list", "-H", "-o", "name,canmount", "-d", "1", settings.name, check=False)
    if r.returncode != 0:
        raise PoolError(f"cannot list the datasets of {settings.name}: {r.stderr.strip()}")
    names = instance_datasets(r.stdout, settings)
    failed = []
    for name in names:
        m = run("zfs", "mount", name, check=False)
        if m.returncode != 0 and "already mounted" not in m.stderr:
            failed.append(f"{name}: {m.stderr.strip()}")
    errors = [f"{len(failed)} of {len(names)} did not mount: {'; '.join(failed)}"] if failed else []
    if failed or unremoved:
        raise PoolError("; ".join(errors + unremoved))
    return f"mounted {len(names)} instance dataset(s)" if names else None


def remove_unfinished(settings: PoolSettings) -> list[str]:
    """Destroy what an interrupted `vmadm create` or `imgadm import` left
    (triton_instance.leftovers), before anything mounts or starts it, with a
    console line naming each. Here, in the initrd, no vmadm or imgadm can be
    at work on the pool. What could not be destroyed, and why."""
    import triton_instance as ti  # only here: the pool's import needs none of it
    r = run(*ti.LEFTOVERS_LISTING, settings.name, check=False)
    failed = []
    for left in ti.leftovers(r.stdout, settings.name):
        d = run("zfs", "destroy", "-r", left.dataset, check=False)
        if d.returncode != 0:
            failed.append(f"{left.dataset} ({left.why}) not removed: {d.stderr.strip()}")
            continue
        ti.remove_mountpoint(Path("/", left.dataset))
        say(f"removed {left.dataset}: {left.why}")
        try:
            if left.image:
                triton_settings.load_instances().manifest(left.image).unlink(missing_ok=True)
        except (OSError, ValueError, TypeError) as e:
            failed.append(f"{left.dataset} removed, but not its image's manifest: {describe(e)}")
    return failed
