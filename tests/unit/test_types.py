"""mypy over the Python the image runs (/usr/lib/triton), the build hooks and the tools.

It catches what no single unit test reaches: a call to a function a module
does not have, a misspelt name, a wrong number of arguments (a rename once
left `tn.from_tn.kernel_args` in triton-node-config; every boot without
networking.json failed on it). Every error code is on.
"""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


NODE_LIB = REPO / "mkosi.extra/usr/lib/triton"


def mypy(*paths: Path) -> subprocess.CompletedProcess:
    # The hooks import the node's triton_settings from NODE_LIB (hooks/config.py).
    return subprocess.run(["mypy", "--python-version", "3.11", "--ignore-missing-imports", "--no-incremental",
                           "--cache-dir", "/dev/null", *map(str, paths)],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "MYPYPATH": str(NODE_LIB)})


def test_image_python_has_no_type_errors():
    res = mypy(*sorted(NODE_LIB.glob("*.py")))
    assert res.returncode == 0, res.stdout + res.stderr


def test_hooks_and_tools_have_no_type_errors():
    res = mypy(REPO / "hooks", REPO / "tools")
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_check_finds_a_call_to_a_missing_function(tmp_path):
    (tmp_path / "lib.py").write_text("def kernel_args(cmdline: str) -> dict[str, str]:\n    return {}\n")
    (tmp_path / "user.py").write_text("import lib\n\nlib.from_kernel_args('x')\n")
    res = mypy(tmp_path / "lib.py", tmp_path / "user.py")
    assert res.returncode == 1 and 'has no attribute "from_kernel_args"' in res.stdout, res.stdout + res.stderr
