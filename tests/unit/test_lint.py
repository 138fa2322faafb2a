"""flake8 (pyflakes and pycodestyle, from Debian) over every Python file in
the repository: the hooks, tools, tests, benches and the node's programs
(found by their #! line when they have no .py suffix)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def python_files() -> list[str]:
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, text=True, check=True).stdout.split()
    files = []
    for name in tracked:
        path = REPO / name
        if not path.is_file() or path.is_symlink():
            continue
        if name.endswith(".py"):
            files.append(name)
            continue
        with path.open("rb") as f:
            head = f.readline(128)
        if head.startswith(b"#!") and b"python" in head:
            files.append(name)
    return files


def test_python_files_are_found():
    files = python_files()
    # mkosi.extra/usr/sbin/triton-pool is a symlink to triton_pool.py (links are skipped); mkosi.postinst has no suffix
    for name in ("hooks/config.py", "mkosi.extra/usr/lib/triton/triton_pool.py", "mkosi.postinst"):
        assert name in files, files


def test_flake8_is_clean():
    res = subprocess.run([sys.executable, "-m", "flake8", "--max-line-length=120", *python_files()],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, f"flake8 (make setup installs it):\n{res.stdout}{res.stderr}"
