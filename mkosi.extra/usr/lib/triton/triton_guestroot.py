"""Files the host writes into an instance's root: root's password hash and
ssh keys, before the instance first boots. Standard library only.

The root comes from a tenant's image, so every path in it is hostile: a
component may be a symlink to a host path (`root/.ssh` -> `/root/.ssh`), a
file may be a FIFO that blocks a reader or a hard link the host must not
write through. So nothing here resolves a path in the usual way: each
component is opened relative to the one before with O_NOFOLLOW (a symlink
among the directories is refused, naming it), files are read only when they
are regular and small, and a file is replaced by writing a new one beside it
and renaming it over the old name (which replaces a symlink or hard link
instead of writing through it). New files get the owner of the instance's
root directory (its user namespace's root). No program of the image runs:
the password hash is computed here (SHA-512 crypt, as Debian's shadow
writes it).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path, PurePosixPath
from typing import Optional

# The most the host reads of a file in an image (/etc/shadow).
READ_LIMIT = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class GuestRootError(Exception):
    """The image's root cannot take the change; the message names the path."""


def _components(relpath: str) -> list[str]:
    parts = PurePosixPath(relpath).parts
    if not parts or parts[0] == "/" or any(p in (".", "..") for p in parts):
        raise ValueError(f"{relpath!r}: a relative path without . or .. components")
    return list(parts)


def _open_dirs(root: Path, parts: list[str], create: Optional[tuple[int, int, int]]) -> int:
    """An fd of the directory root/parts..., no component a symlink.
    create: (mode, uid, gid) of directories made on the way, or None."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for i, name in enumerate(parts):
            where = "/" + "/".join(parts[: i + 1])
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if create is None:
                    raise GuestRootError(f"{where}: not in the image")
                mode, uid, gid = create
                os.mkdir(name, 0o700, dir_fd=fd)
                # Opened without following, so what is chowned is what was made.
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.fchown(nfd, uid, gid)
                os.fchmod(nfd, mode)
            except OSError as e:
                raise GuestRootError(f"{where}: not a directory of the image "
                                     f"(a symlink or another file; not followed): {e.strerror}")
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def owner(root: Path) -> tuple[int, int]:
    """The instance's root user and group, as the host sees them."""
    st = os.lstat(root)
    return st.st_uid, st.st_gid


def read_file(root: Path, relpath: str, limit: int = READ_LIMIT) -> bytes:
    parts = _components(relpath)
    dfd = _open_dirs(root, parts[:-1], None)
    try:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            raise GuestRootError(f"/{relpath}: not in the image")
        except OSError as e:
            raise GuestRootError(f"/{relpath}: cannot read it (a symlink is not followed): {e.strerror}")
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise GuestRootError(f"/{relpath}: not a regular file in the image")
        if st.st_size > limit:
            raise GuestRootError(f"/{relpath}: {st.st_size} bytes, more than the {limit} read from an image")
        return os.read(fd, limit + 1)[:limit]
    finally:
        os.close(fd)


def file_mode(root: Path, relpath: str) -> Optional[tuple[int, int, int]]:
    """(mode, uid, gid) of a regular file in the image, or None."""
    parts = _components(relpath)
    dfd = _open_dirs(root, parts[:-1], None)
    try:
        st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    finally:
        os.close(dfd)
    if not stat.S_ISREG(st.st_mode):
        return None
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def write_file(root: Path, relpath: str, data: bytes, mode: int, uid: int, gid: int,
               dir_mode: Optional[int] = None) -> None:
    """Replace root/relpath with `data`; directories missing on the way are
    made with dir_mode (refused when dir_mode is None)."""
    parts = _components(relpath)
    dfd = _open_dirs(root, parts[:-1], None if dir_mode is None else (dir_mode, uid, gid))
    tmp = f".{parts[-1]}.triton-{secrets.token_hex(6)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, parts[-1], src_dir_fd=dfd, dst_dir_fd=dfd)
        os.fsync(dfd)
    except BaseException as e:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise GuestRootError(f"/{relpath}: cannot write it: {e.strerror}")
        raise
    finally:
        os.close(dfd)


# -- root's password -------------------------------------------------------------------------

_B64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# The byte order of SHA-512 crypt's output encoding (Drepper's specification).
_ORDER = [(0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
          (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
          (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41)]


def _b64(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = ""
    for _ in range(n):
        out += _B64[w & 0x3F]
        w >>= 6
    return out


def _repeat(digest: bytes, length: int) -> bytes:
    return (digest * (length // len(digest) + 1))[:length]


def sha512_crypt(password: str, salt: Optional[str] = None, rounds: int = 5000) -> str:
    """The crypt(3) "$6$" hash of `password` (what /etc/shadow holds)."""
    if salt is None:
        salt = "".join(secrets.choice(_B64) for _ in range(16))
    pw, s = password.encode(), salt.encode()[:16]
    b = hashlib.sha512(pw + s + pw).digest()
    a = hashlib.sha512(pw + s + _repeat(b, len(pw)))
    n = len(pw)
    while n:
        a.update(b if n & 1 else pw)
        n >>= 1
    da = a.digest()
    p = _repeat(hashlib.sha512(pw * len(pw)).digest(), len(pw))
    sb = _repeat(hashlib.sha512(s * (16 + da[0])).digest(), len(s))
    c = da
    for i in range(rounds):
        h = hashlib.sha512(p if i & 1 else c)
        if i % 3:
            h.update(sb)
        if i % 7:
            h.update(p)
        h.update(c if i & 1 else p)
        c = h.digest()
    encoded = "".join(_b64(c[x], c[y], c[z], 4) for x, y, z in _ORDER) + _b64(0, 0, c[63], 2)
    head = "$6$" + (f"rounds={rounds}$" if rounds != 5000 else "")
    return f"{head}{s.decode()}${encoded}"


def shadow_with_root_hash(shadow: str, pw_hash: str) -> str:
    """/etc/shadow's text with root's hash replaced (the other fields kept)."""
    if ":" in pw_hash or "\n" in pw_hash:
        raise ValueError("a crypt hash has no ':' or newline")
    lines = shadow.splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and len(fields) >= 2:
            fields[1] = pw_hash
            lines[i] = ":".join(fields)
            return "\n".join(lines) + "\n"
    raise GuestRootError("/etc/shadow: the image has no entry for root")


def set_root_password(root: Path, password: str) -> None:
    raw = read_file(root, "etc/shadow")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise GuestRootError("/etc/shadow: not text")
    found = file_mode(root, "etc/shadow")
    assert found is not None  # read_file checked it is a regular file
    mode, uid, gid = found
    write_file(root, "etc/shadow", shadow_with_root_hash(text, sha512_crypt(password)).encode(),
               mode, uid, gid)


def set_root_keys(root: Path, keys: str) -> None:
    uid, gid = owner(root)
    data = (keys if keys.endswith("\n") else keys + "\n").encode()
    write_file(root, "root/.ssh/authorized_keys", data, 0o600, uid, gid, dir_mode=0o700)
