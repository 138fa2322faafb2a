"""triton-units-generator: agents' and operators' units kept on the pool."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_units as tu  # noqa: E402

SERVICE = "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n"


def layout(tmp_path):
    agents = tmp_path / "opt/smartdc/agents/lib/node_modules"
    custom = tmp_path / "opt/custom/systemd"
    system = tmp_path / "usr/lib/systemd/system"
    for d in (agents / "cn-agent/systemd", agents / "vm-agent/systemd", custom, system):
        d.mkdir(parents=True)
    (agents / "cn-agent/systemd/triton-cn-agent.service").write_text(
        SERVICE + "[Install]\nWantedBy=multi-user.target\n")
    (agents / "vm-agent/systemd/triton-vm-agent.service").write_text(SERVICE + "[Install]\nRequiredBy=foo.target\n")
    (agents / "vm-agent/systemd/README").write_text("not a unit")
    (custom / "hello.service").write_text(SERVICE)                      # no [Install]: started anyway
    (custom / "hello.timer").write_text("[Timer]\nOnBootSec=1\n")       # no [Install]: registered only
    (custom / "ssh.service").write_text(SERVICE)                        # the platform's own name
    (custom / "tmpl@.service").write_text(SERVICE + "[Install]\nWantedBy=multi-user.target\n")
    (system / "ssh.service").write_text(SERVICE)
    sources = (("agent", agents, "*/systemd"), ("custom", custom, "."))
    return sources, (system,)


def test_units_are_linked_and_enabled_from_their_install_section(tmp_path):
    sources, system = layout(tmp_path)
    out = tmp_path / "gen"
    out.mkdir()
    report = "\n".join(tu.generate(out, sources, system))
    assert (out / "triton-cn-agent.service").resolve().name == "triton-cn-agent.service"
    assert (out / "multi-user.target.wants/triton-cn-agent.service").is_symlink()
    assert (out / "foo.target.requires/triton-vm-agent.service").is_symlink()
    assert (out / "multi-user.target.wants/hello.service").is_symlink()
    assert (out / "hello.timer").is_symlink() and not list(out.glob("*.wants/hello.timer"))
    assert not (out / "ssh.service").exists()
    assert "ssh.service: skipped: a unit named ssh.service already exists" in report
    assert (out / "tmpl@.service").is_symlink() and not (out / "multi-user.target.wants/tmpl@.service").exists()
    assert "agent unit triton-cn-agent.service from" in report and "started by multi-user.target" in report
    assert "README" not in report


def test_nothing_on_the_pool_generates_nothing(tmp_path):
    out = tmp_path / "gen"
    out.mkdir()
    assert tu.generate(out, (("agent", tmp_path / "none", "*/systemd"),), ()) == []
    assert list(out.iterdir()) == []


def test_install_section_parsing():
    text = "[Unit]\nWantedBy=not-here.target\n[Install]\nWantedBy=a.target b.target\n# WantedBy=c.target\n"
    assert tu.install_section(text) == {"WantedBy": ["a.target", "b.target"]}
