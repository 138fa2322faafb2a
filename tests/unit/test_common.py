"""The helpers the node's tools share (triton_common)."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "mkosi.extra/usr/lib/triton"))
import triton_common as common  # noqa: E402


def test_bootif_mac():
    assert common.bootif_mac("console=ttyS1 BOOTIF=01-52-54-00-12-34-56 x") == "52:54:00:12:34:56"
    assert common.bootif_mac("BOOTIF=52-54-00-12-34-56") == "52:54:00:12:34:56"
    assert common.bootif_mac("BOOTIF=garbage") is None and common.bootif_mac("") is None


def test_kernel_args():
    args = common.kernel_args("BOOT_IMAGE=x noimport console=ttyS1,115200n8 ip=10.0.2.15:::255.255.255.0::")
    assert args == {"BOOT_IMAGE": "x", "noimport": "", "console": "ttyS1,115200n8", "ip": "10.0.2.15:::255.255.255.0::"}


@pytest.mark.parametrize("value,mac", [
    ("52:54:0:12:34:56", "52:54:00:12:34:56"), ("52-54-00-12-34-56", "52:54:00:12:34:56"),
    ("52:54:00:12:34", None), ("zz:54:00:12:34:56", None), (5, None),
])
def test_normal_mac(value, mac):
    assert common.normal_mac(value) == mac


def test_is_uuid_takes_triton_s_lower_case_form_only():
    assert common.is_uuid("6f1c3a2b-9d8e-4f7a-b6c5-d4e3f2a1b0c9")
    assert not common.is_uuid("6F1C3A2B-9D8E-4F7A-B6C5-D4E3F2A1B0C9") and not common.is_uuid(None)


def test_a_failed_command_raises_the_callers_error_naming_it():
    class ToolError(Exception):
        pass

    with pytest.raises(ToolError, match=r"`sh -c echo nope >&2; exit 3` failed: nope"):
        common.run("sh", "-c", "echo nope >&2; exit 3", error=ToolError)
    assert common.run("sh", "-c", "exit 3", check=False).returncode == 3
    assert common.run("cat", input="in").stdout == "in"


def test_os_release_is_the_running_systems(monkeypatch):
    import platform
    assert common.os_release() == platform.freedesktop_os_release()
    assert common.os_release()["ID"]

    def none() -> dict[str, str]:
        raise FileNotFoundError(2, "No such file or directory", "/usr/lib/os-release")

    monkeypatch.setattr(platform, "freedesktop_os_release", none)
    assert common.os_release() == {}
