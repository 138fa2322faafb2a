"""The image's package database, read from outside the image."""

from __future__ import annotations

from pathlib import Path


def parse_status(text: str) -> dict[str, str]:
    """Installed packages in a dpkg status file: {name: version}."""
    packages: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1].isspace() or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages[fields["Package"]] = fields.get("Version", "")
    return packages


def installed(root: Path) -> dict[str, str]:
    return parse_status((root / "var/lib/dpkg/status").read_text())
