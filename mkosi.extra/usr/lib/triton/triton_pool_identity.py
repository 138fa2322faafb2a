"""The node's identity, kept on the pool: restored at every boot (machine-id,
ssh host keys, root's password and keys, booter's files) and root's
credentials saved whenever they change (triton-persist-root.path)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Collection, Mapping, Optional

from triton_common import read_text
from triton_pool_state import BOOT_FILES, PoolError, describe, read_state, restore_failures, run, say
from triton_settings import PoolSettings

# The steps of `restore`, as the console and `triton-pool status` name them.
MACHINE_ID = "machine-id"
SSH_HOST_KEYS = "ssh host keys"
ROOT_PASSWORD = "root password"
ROOT_KEYS = "root ssh keys"
KEEP_BOOT_FILES = "boot files"

ETC_MACHINE_ID = Path("/etc/machine-id")
ETC_SSH = Path("/etc/ssh")
SHADOW = Path("/etc/shadow")
ROOT_AUTHORIZED_KEYS = Path("/root/.ssh/authorized_keys")
BOOT_FILE_NAMES = ("node.config", "triton-networking.json")
SSH_KEY_TYPES = ("rsa", "ecdsa", "ed25519")


def read_bytes_if(path: Path) -> Optional[bytes]:
    """A file's bytes; None when there is none."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def read_saved(path: Path) -> Optional[str]:
    """A file kept on the pool (None: none). Bytes that are not UTF-8 read
    as U+FFFD, so a damaged file reads as damaged, not as an exception."""
    data = read_bytes_if(path)
    return None if data is None else data.decode(errors="replace")


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """All or nothing: a full pool or a crash leaves the previous copy whole."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from e  # named as the file, not its temporary
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def saved_machine_id(text: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """The saved machine-id, or None and what was wrong with the saved file
    (None, None: nothing saved yet, the node's first boot on this pool)."""
    if text is None:
        return None, None
    value = text.strip()
    if re.fullmatch(r"[0-9a-f]{32}", value):
        return value, None
    return None, f"damaged ({value[:40]!r} is not a machine-id)"


def restore_machine_id(cfg: Path) -> None:
    saved = cfg / "machine-id"
    value, damage = saved_machine_id(read_saved(saved))
    new = value is None
    value = value or os.urandom(16).hex()
    ETC_MACHINE_ID.write_text(value + "\n")
    if new:
        write_atomic(saved, (value + "\n").encode(), 0o644)
    if damage:
        raise PoolError(f"{saved} was {damage}: this node has a new machine-id, {value}")


def ssh_key_plan(saved: Collection[str]) -> dict[str, str]:
    """For each host key type, from the file names saved on the pool:
    "copy" both halves; "derive-public" when the .pub is lost (ssh-keygen -y
    makes it again, so the node keeps its key); "generate" a key when there
    is no private one (the first boot on this pool)."""
    plan = {}
    for t in SSH_KEY_TYPES:
        key = f"ssh_host_{t}_key"
        plan[t] = "generate" if key not in saved else "derive-public" if f"{key}.pub" not in saved else "copy"
    return plan


def restore_ssh_host_keys(cfg: Path) -> Optional[str]:
    """Each key type on its own: one that cannot be restored leaves sshd the others."""
    keys = cfg / "ssh"
    keys.mkdir(mode=0o700, exist_ok=True)
    plan = ssh_key_plan({p.name for p in keys.iterdir()})
    errors = []
    for t, action in plan.items():
        try:
            install_host_key(keys, t, action)
        except (OSError, PoolError) as e:
            errors.append(f"{t}: {describe(e)}")
    if errors:
        raise PoolError("; ".join(errors))
    derived = [t for t, action in plan.items() if action == "derive-public"]
    return f"ssh host keys: made the lost .pub of {', '.join(derived)} again from the private key" if derived else None


def install_host_key(keys: Path, key_type: str, action: str) -> None:
    key = keys / f"ssh_host_{key_type}_key"
    pub = keys / f"{key.name}.pub"
    if action == "generate":
        pub.unlink(missing_ok=True)
        run("ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", f"root@{os.uname().nodename}", "-f", str(key))
    elif action == "derive-public":
        try:
            public = run("ssh-keygen", "-y", "-P", "", "-f", str(key)).stdout
        except PoolError as e:
            raise PoolError(f"{e}; if {key} is damaged, remove it: the next boot makes a new key") from None
        write_atomic(pub, public.encode(), 0o644)
    for src, mode in ((key, 0o600), (pub, 0o644)):
        write_atomic(ETC_SSH / src.name, src.read_bytes(), mode)


def saved_root_hash(text: Optional[str]) -> Optional[str]:
    """root's password field as save-root kept it, exactly: a hash, a locked
    one ("!..."), "*", or empty. None: nothing saved. ValueError: damaged."""
    if text is None:
        return None
    if not text.endswith("\n") or "\n" in text[:-1]:
        raise ValueError("it is not one line ending in a newline (cut short?)")
    if not re.fullmatch(r"[\x21-\x39\x3b-\x7e]*", text[:-1]):
        raise ValueError("it holds characters no password field has")
    return text[:-1]


def restore_root_password(cfg: Path) -> None:
    saved = cfg / "root" / "shadow"
    try:
        value = saved_root_hash(read_saved(saved))
    except ValueError as e:
        aside = saved.with_name("shadow.damaged")
        saved.replace(aside)
        raise PoolError(f"{saved}: {e}; moved to {aside.name}, root's password is not restored: "
                        f"set it with passwd") from None
    if value is not None:
        run("usermod", "--password", value, "root")


def restore_root_keys(cfg: Path) -> None:
    """Exactly as saved: root's authorized_keys, or none at all when it
    was removed (save-root then removed the saved copy)."""
    data = read_bytes_if(cfg / "root" / "authorized_keys")
    if data is None:
        ROOT_AUTHORIZED_KEYS.unlink(missing_ok=True)
        return
    ROOT_AUTHORIZED_KEYS.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(ROOT_AUTHORIZED_KEYS, data, 0o600)


def keep_boot_files(cfg: Path) -> None:
    """The node's own config files as booter last delivered them. One that
    cannot be written (a full pool) leaves the copy an earlier boot kept."""
    dest = cfg / "boot"
    errors = []
    for name in BOOT_FILE_NAMES:
        src = BOOT_FILES / name
        if not src.is_file():
            continue
        try:
            dest.mkdir(mode=0o700, exist_ok=True)
            write_atomic(dest / name, src.read_bytes(), 0o600)
        except OSError as e:
            errors.append(describe(e))
    if errors:
        raise PoolError("; ".join(errors) + "; the copy an earlier boot kept is unchanged")


ROOT_SAVED = {"shadow": ROOT_PASSWORD, "authorized_keys": ROOT_KEYS}  # saved file: its restore step


def root_entry_hash(shadow: str) -> Optional[str]:
    """root's password field in /etc/shadow as it is: a hash, "!..." when
    locked, "*", or empty. None: no root entry."""
    for line in shadow.splitlines():
        fields = line.split(":")
        if fields[0] == "root" and len(fields) > 1:
            return fields[1]
    return None


def root_save_plan(shadow: str, keys: Optional[bytes], saved: Mapping[str, bytes],
                   not_restored: Collection[str]) -> tuple[dict[str, Optional[bytes]], list[str]]:
    """What save-root changes in <config>/root: {file: new content, or None
    to remove it}, and what it leaves alone and why. Saved as they are: a
    locked or emptied password, a removed authorized_keys (the saved copy
    goes, so the next boot has none). A saved copy this boot did not restore
    is kept: what is live then is not what the operator had."""
    password = root_entry_hash(shadow)
    live = {"shadow": None if password is None else f"{password}\n".encode(), "authorized_keys": keys}
    changes: dict[str, Optional[bytes]] = {}
    kept = []
    for name, data in live.items():
        if ROOT_SAVED[name] in not_restored and name in saved:
            kept.append(f"not saving {name}: this boot did not restore the saved copy (`triton-pool status`)")
        elif data is None and (name == "shadow" or name not in saved):
            continue
        elif data != saved.get(name):
            changes[name] = data
    return changes, kept


def saved_root_files(root: Path) -> dict[str, bytes]:
    found = {name: read_bytes_if(root / name) for name in ROOT_SAVED}
    return {name: data for name, data in found.items() if data is not None}


def apply_root_save(root: Path, changes: Mapping[str, Optional[bytes]]) -> None:
    for name, data in changes.items():
        if data is None:
            (root / name).unlink(missing_ok=True)
            say(f"removed {root / name}: root has no {name} now")
        else:
            write_atomic(root / name, data, 0o600)
            say(f"saved root's {name} to {root / name}")


def keep_identity(cfg: Path) -> list[str]:
    """A pool set up on a running node keeps the identity the node has now
    (never makes a new one under a running system): its machine-id, its
    ssh host keys, booter's files. What was kept, one name each."""
    kept = []
    machine_id = read_bytes_if(ETC_MACHINE_ID)
    if machine_id and saved_machine_id(machine_id.decode(errors="replace"))[0]:
        write_atomic(cfg / "machine-id", machine_id, 0o644)
        kept.append("machine-id")
    keys = cfg / "ssh"
    keys.mkdir(mode=0o700, exist_ok=True)
    for t in SSH_KEY_TYPES:
        key = ETC_SSH / f"ssh_host_{t}_key"
        pub = ETC_SSH / f"{key.name}.pub"
        if key.is_file() and pub.is_file():
            write_atomic(keys / key.name, key.read_bytes(), 0o600)
            write_atomic(keys / pub.name, pub.read_bytes(), 0o644)
            kept.append(f"ssh {t} host key")
    keep_boot_files(cfg)
    kept.append("boot files")
    return kept


def save_root(settings: PoolSettings) -> int:
    """Keep root's password field and authorized_keys on the pool as they
    are, removals and locks included (triton-persist-root.path)."""
    state = read_state()
    if state.get("state") != "imported":
        return 0
    if str(settings.config_dir) in state.get("unmounted", []):
        say(f"not saving root's credentials: {settings.config_dir} is not mounted")
        return 1
    root = settings.config_dir / "root"
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        # Again while they change: the .path unit does not see a change
        # made while this runs.
        for attempt in range(3):
            changes, kept = root_save_plan(read_text(SHADOW), read_bytes_if(ROOT_AUTHORIZED_KEYS),
                                           saved_root_files(root), restore_failures(state))
            for line in kept if attempt == 0 else []:
                say(line)
            if not changes:
                break
            apply_root_save(root, changes)
    except OSError as e:
        say(f"FAILED: saving root's credentials: {describe(e)}")
        return 1
    return 0
