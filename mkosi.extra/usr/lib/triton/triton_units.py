#!/usr/bin/python3 -IS
"""triton-units-generator: the units the node keeps on its pool, registered
at every boot (the platform itself is fresh each time).

- Triton's agents, installed under /opt/smartdc/agents (zones/opt), bring
  their own unit files: /opt/smartdc/agents/lib/node_modules/<agent>/systemd/
  (the layout linux-live's register-agent used).
- Operator hooks: /opt/custom/systemd/ (as SmartOS's /opt/custom/smf).

A systemd generator (it runs at boot and at every `systemctl daemon-reload`):
each unit file is linked into the generator directory and enabled the way
`systemctl enable` would, from its [Install] section (WantedBy=,
RequiredBy=); a service with no [Install] section is wanted by
multi-user.target, so it starts at every boot. A unit that would replace
one of the platform's own units is refused, and says so in the journal; so
is one that is not a unit systemd could load (its name or a WantedBy=/
RequiredBy= name not a unit name, a file that is unreadable, not UTF-8 or a
symlink loop). The others are registered all the same.

  triton_units.py generate DIR    what the generator does
  triton_units.py list            the units found, and what each is wanted by
"""

from __future__ import annotations

import json
import re
import stat
import sys
from pathlib import Path
from typing import Optional, Sequence

SOURCES = (
    ("agent", Path("/opt/smartdc/agents/lib/node_modules"), "*/systemd"),
    ("custom", Path("/opt/custom/systemd"), "."),
)
# Units the platform ships or an administrator put in /etc: never replaced.
SYSTEM_DIRS = (Path("/etc/systemd/system"), Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
KINDS = (".service", ".socket", ".timer", ".path", ".target", ".mount")
# What WantedBy=/RequiredBy= may name: systemd's unit types and name rules
# (unit_name_is_valid), so a name is never a path ('/', '.', '..').
UNIT_TYPES = ("service", "socket", "target", "device", "mount", "automount", "swap", "timer", "path",
              "slice", "scope")
PREFIX_RE = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?")
UNIT_NAME_MAX = 255
PROG = "triton-units-generator"


class Skip(Exception):
    """A unit file that is not registered; the others still are."""


def unit_name_ok(name: str, types: Sequence[str] = UNIT_TYPES) -> bool:
    prefix, dot, kind = name.rpartition(".")
    return bool(dot) and kind in types and len(name) <= UNIT_NAME_MAX and bool(PREFIX_RE.fullmatch(prefix))


def found(sources: Sequence[tuple[str, Path, str]] = SOURCES,
          problems: Optional[list[str]] = None) -> list[tuple[str, Path]]:
    """(kind, unit file) for every unit file the pool holds, in a stable order;
    also symlinks that lead nowhere, for generate() to name."""
    out = []
    for kind, root, pattern in sources:
        if not root.is_dir():
            continue
        for d in (sorted(root.glob(pattern)) if pattern != "." else [root]):
            if not d.is_dir():
                continue
            try:
                entries = sorted(d.iterdir())
            except OSError as e:
                if problems is not None:
                    problems.append(f"{d}: skipped: cannot be read: {e.strerror}")
                continue
            for f in entries:
                if f.suffix in KINDS and (f.is_file() or f.is_symlink()):
                    out.append((kind, f))
    return out


def install_section(text: str) -> dict[str, list[str]]:
    """[Install] WantedBy=/RequiredBy= of a unit file."""
    out: dict[str, list[str]] = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        if section != "[Install]":
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and key in ("WantedBy", "RequiredBy"):
            if not value.strip():
                out[key] = []
            else:
                out.setdefault(key, []).extend(value.split())
    return out


def wants_of(name: str, text: str) -> tuple[list[tuple[str, str]], Optional[str]]:
    """[(target, 'wants'|'requires')] for a unit, or a reason it is not enabled."""
    install = install_section(text)
    if "@" in name and name.split("@", 1)[1].startswith("."):
        return [], "a template: start instances of it by name"
    pairs = [(t, "wants") for t in install.get("WantedBy", [])]
    pairs += [(t, "requires") for t in install.get("RequiredBy", [])]
    if not pairs and name.endswith(".service") and "[Install]" not in text:
        pairs = [("multi-user.target", "wants")]
    if not pairs:
        return [], "its [Install] section wants it nowhere"
    return pairs, None


def unit_file(path: Path) -> tuple[list[tuple[str, str]], Optional[str]]:
    """wants_of() for a unit file on the pool; Skip says why it cannot be registered."""
    name = path.name
    if not unit_name_ok(name, [k[1:] for k in KINDS]):
        raise Skip(f"{name[:80]!r} is not a unit name")
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise Skip("not a regular file")
        text = path.read_bytes().decode()
    except OSError as e:
        raise Skip(f"cannot be read: {e.strerror}")
    except UnicodeDecodeError as e:
        raise Skip(f"not UTF-8 text: {e}")
    pairs, why = wants_of(name, text)
    bad = [t for t, _ in pairs if not unit_name_ok(t)]
    if bad:
        raise Skip("WantedBy=/RequiredBy= " + ", ".join(repr(t[:80]) for t in bad) + " is not a unit name")
    return pairs, why


def generate(out: Path, sources: Sequence[tuple[str, Path, str]] = SOURCES,
             system_dirs: Sequence[Path] = SYSTEM_DIRS) -> list[str]:
    """Link and enable the units; returns what it did, one line each."""
    report: list[str] = []
    seen: set[str] = set()
    for kind, path in found(sources, report):
        name = path.name
        try:
            pairs, why = unit_file(path)
            if name in seen or any((d / name).exists() for d in system_dirs):
                raise Skip(f"a unit named {name} already exists; give it a name of its own")
            (out / name).symlink_to(path)
            for target, how in pairs:
                d = out / f"{target}.{how}"
                d.mkdir(exist_ok=True)
                link = d / name
                if not link.exists():
                    link.symlink_to(path)
        except (Skip, OSError) as e:
            report.append(f"{path}: skipped: {e}")
            continue
        seen.add(name)
        targets = ", ".join(t for t, _ in pairs)
        report.append(f"{kind} unit {name} from {path.parent}: "
                      + (f"started by {targets}" if pairs else f"registered, not enabled ({why})"))
    return report


def log(lines: list[str], kmsg: bool) -> None:
    """A generator's stderr goes nowhere the operator looks: write to the
    kernel log, which the journal keeps (`journalctl -b -t triton-units-generator`)."""
    out = None
    if kmsg:
        try:
            # A path on the pool need not be UTF-8: escaped, not a crash.
            out = open("/dev/kmsg", "w", errors="backslashreplace")
        except OSError:
            out = None
    for line in lines:
        level = 4 if "skipped" in line else 6
        if out:
            out.write(f"<{level}>{PROG}: {line}\n")
            out.flush()
        else:
            print(f"{PROG}: {line}", file=sys.stderr)
    if out:
        out.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    prog = Path(sys.argv[0]).name
    if prog.endswith("generator"):
        # systemd calls generators with the normal, early and late dirs.
        args = ["generate", *args[:1]]
    if len(args) == 2 and args[0] == "generate":
        report = generate(Path(args[1]))
        log(report, kmsg=prog.endswith("generator"))
        return 0
    if args == ["list"]:
        units = []
        for kind, path in found():
            try:
                pairs, why = unit_file(path)
            except Skip as e:
                pairs, why = [], f"skipped: {e}"
            units.append({"kind": kind, "unit": path.name, "file": str(path),
                          "wanted_by": [t for t, _ in pairs], "not_enabled": why})
        print(json.dumps(units, indent=2))
        return 0
    print("usage: triton_units.py generate DIR | list", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
