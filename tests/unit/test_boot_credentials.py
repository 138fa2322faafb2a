import importlib.machinery
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_path = REPO / "mkosi.extra/usr/lib/triton/boot-credentials"
_loader = importlib.machinery.SourceFileLoader("boot_credentials", str(_path))
_spec = importlib.util.spec_from_loader("boot_credentials", _loader)
bc = importlib.util.module_from_spec(_spec)
_loader.exec_module(bc)


def test_node_config_values():
    values, problems = bc.parse_node_config(
        "# booter\nroot_shadow='$6$salt$hash'\nhostname=cn1\ndns_domain='example.com'\n\n")
    assert values == {"root_shadow": "$6$salt$hash", "hostname": "cn1", "dns_domain": "example.com"}
    assert problems == []


def test_malformed_lines_are_reported_not_fatal():
    values, problems = bc.parse_node_config("good='1'\nthis is not config\nbad='unterminated\n")
    assert values == {"good": "1"}
    assert len(problems) == 2 and "line 2" in problems[0] and "line 3" in problems[1]
