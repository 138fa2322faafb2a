"""Reading and extending os-release and writing /etc/product."""

from __future__ import annotations

import shlex


def parse_os_release(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        parts = shlex.split(value) if value else [""]
        fields[key] = parts[0] if parts else ""
    return fields


def with_fields(text: str, fields: dict[str, str]) -> str:
    """`text` with `fields` set: existing keys replaced in place, new ones appended."""
    out: list[str] = []
    pending = dict(fields)
    for line in text.splitlines():
        key = line.partition("=")[0].strip()
        if key in pending:
            out.append(f'{key}="{pending.pop(key)}"')
        else:
            out.append(line)
    out.extend(f'{k}="{v}"' for k, v in pending.items())
    return "\n".join(out) + "\n"


def product_file(product: str, stamp: str, base: str) -> str:
    """/etc/product, in the key: value form SmartOS and linux-live nodes carry."""
    return (
        f"Name: {product}\n"
        f"Image: triton-pi {stamp}\n"
        f"Live Image: {stamp}\n"
        f"Base: {base}\n"
    )
