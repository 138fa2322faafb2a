"""triton-units-generator: a bad unit on the pool is skipped and named; the
units after it are still registered, and nothing lands outside the
generator directory."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_units as tu  # noqa: E402

SERVICE = "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n"
GOOD = SERVICE + "[Install]\nWantedBy=multi-user.target\n"


def tree(root: Path, but: Path = Path("/nowhere")) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p != but and but not in p.parents}


def test_each_bad_unit_is_skipped_and_named_the_others_register(tmp_path):
    agents = tmp_path / "opt/smartdc/agents/lib/node_modules"
    custom = tmp_path / "opt/custom/systemd"
    for d in (agents / "a-agent/systemd", agents / "b-agent/systemd", agents / "c-agent/systemd", custom):
        d.mkdir(parents=True)
    (agents / "a-agent/systemd/a-agent.service").write_text(GOOD)
    (agents / "b-agent/systemd/b-agent.service").write_text(SERVICE + "[Install]\nWantedBy=a/b.target\n")
    (agents / "c-agent/systemd/c-agent.service").write_text(GOOD)
    bad = {
        "b-agent.service": "WantedBy=/RequiredBy= 'a/b.target' is not a unit name",
        "c-dotdot.service": "'../../../escaped.target' is not a unit name",
        "e-dot.service": "'.' is not a unit name",
        "f-nosuffix.service": "'multi-user' is not a unit name",
        "g-char.service": "'foo$bar.target' is not a unit name",
        "h-latin1.service": "not UTF-8 text",
        "i-dangling.service": "cannot be read: No such file or directory",
        "j-loop.service": "cannot be read: Too many levels of symbolic links",
        "k bad.service": "'k bad.service' is not a unit name",
        "@l.service": "'@l.service' is not a unit name",
    }
    (custom / "c-dotdot.service").write_text(SERVICE + "[Install]\nWantedBy=../../../escaped.target\n")
    (custom / "d-good.service").write_text(GOOD)
    (custom / "e-dot.service").write_text(SERVICE + "[Install]\nRequiredBy=multi-user.target .\n")
    (custom / "f-nosuffix.service").write_text(SERVICE + "[Install]\nWantedBy=multi-user\n")
    (custom / "g-char.service").write_text(SERVICE + "[Install]\nWantedBy=foo$bar.target\n")
    (custom / "h-latin1.service").write_bytes(b"[Unit]\nDescription=caf\xe9\n[Service]\nExecStart=/bin/true\n")
    (custom / "i-dangling.service").symlink_to(custom / "nowhere")
    (custom / "j-loop.service").symlink_to("j-loop.service")
    (custom / "k bad.service").write_text(GOOD)
    (custom / "@l.service").write_text(GOOD)
    (custom / "m-good.timer").write_text("[Timer]\nOnBootSec=1\n[Install]\nWantedBy=timers.target\n")
    (custom / "z-good.service").write_text(SERVICE)
    out = tmp_path / "run/systemd/generator"
    out.mkdir(parents=True)
    before = tree(tmp_path, but=out)

    report = tu.generate(out, (("agent", agents, "*/systemd"), ("custom", custom, ".")), ())

    for unit, target in [("a-agent.service", "multi-user.target.wants"), ("c-agent.service", "multi-user.target.wants"),
                         ("d-good.service", "multi-user.target.wants"), ("m-good.timer", "timers.target.wants"),
                         ("z-good.service", "multi-user.target.wants")]:
        assert (out / unit).is_symlink() and (out / target / unit).is_symlink(), report
    for unit, why in bad.items():
        lines = [line for line in report if line.startswith(f"{unit}: skipped: ") or f"/{unit}: skipped: " in line]
        assert len(lines) == 1 and why in lines[0], (unit, report)
        assert not (out / unit).exists() and not list(out.glob(f"*/{unit}"))
    assert len(report) == 5 + len(bad)
    assert tree(tmp_path, but=out) == before
    assert tree(out) == {"a-agent.service", "c-agent.service", "d-good.service", "m-good.timer", "z-good.service",
                         "multi-user.target.wants", "timers.target.wants",
                         *(f"multi-user.target.wants/{u}" for u in ("a-agent.service", "c-agent.service",
                                                                    "d-good.service", "z-good.service")),
                         "timers.target.wants/m-good.timer"}


@pytest.mark.parametrize("name, ok", [
    ("multi-user.target", True), ("getty@tty1.service", True), ("foo@.service", True),
    ("dev-sda1.device", True), ("a\\x2db.mount", True),
    ("a/b.target", False), (".", False), ("..", False), ("../x.target", False), (".target", False),
    ("x.wants", False), ("x", False), ("@x.service", False), ("x@y@z.service", False),
    ("x" * 250 + ".target", False), ("caf\udce9.service", False),
])
def test_unit_names(name, ok):
    assert tu.unit_name_ok(name) is ok
