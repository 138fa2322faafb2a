"""The platform stamp: the build's UTC time as YYYYMMDDTHHMMSSZ.

It names the platform directory (platform-<stamp>), is written to
etc/version/platform, and is baked into the image (TRITON_RELEASE in
os-release, /etc/product) so a booted node says which PI it runs.
"""

from __future__ import annotations

import datetime
import re
from typing import Mapping, Optional

STAMP_RE = re.compile(r"^\d{8}T\d{6}Z$")


def make_stamp(epoch: Optional[int] = None) -> str:
    """The stamp for `epoch` seconds (now when None)."""
    when = (
        datetime.datetime.now(datetime.timezone.utc)
        if epoch is None
        else datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    )
    return when.strftime("%Y%m%dT%H%M%SZ")


def stamp_from_environment(env: Mapping[str, str]) -> str:
    """Honour SOURCE_DATE_EPOCH so that a reproducible build gets a reproducible stamp."""
    sde = env.get("SOURCE_DATE_EPOCH", "").strip()
    if not sde:
        return make_stamp()
    if not sde.isdigit():
        raise ValueError(
            f"SOURCE_DATE_EPOCH={sde!r} is not a number of seconds; unset it or give e.g. "
            "SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)"
        )
    return make_stamp(int(sde))


def is_stamp(text: str) -> bool:
    return bool(STAMP_RE.match(text))
