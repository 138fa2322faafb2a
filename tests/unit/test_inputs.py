from pathlib import Path

from hooks import inputs

REPO = Path(__file__).resolve().parents[2]


def _copy(tmp_path: Path) -> Path:
    top = tmp_path / "repo"
    (top / "mkosi.conf.d").mkdir(parents=True)
    (top / "mkosi.conf").write_text("[Output]\n")
    (top / "mkosi.conf.d/10-base.conf").write_text("[Content]\n")
    (top / "hooks/__pycache__").mkdir(parents=True)
    (top / "hooks/a.py").write_text("x = 1\n")
    (top / "README.md").write_text("docs\n")
    return top


def test_digest_changes_with_inputs(tmp_path):
    top = _copy(tmp_path)
    before = inputs.source_digest(top)
    (top / "mkosi.conf.d/10-base.conf").write_text("[Content]\nPackages=vim\n")
    assert inputs.source_digest(top) != before


def test_digest_ignores_docs_and_bytecode(tmp_path):
    top = _copy(tmp_path)
    before = inputs.source_digest(top)
    (top / "README.md").write_text("more docs\n")
    (top / "hooks/__pycache__/a.cpython-311.pyc").write_bytes(b"\0")
    assert inputs.source_digest(top) == before


def test_digest_sees_mode(tmp_path):
    top = _copy(tmp_path)
    before = inputs.source_digest(top)
    (top / "hooks/a.py").chmod(0o755)
    assert inputs.source_digest(top) != before


def test_repository_inputs_include_the_scripts():
    names = {p.relative_to(REPO).as_posix() for p in inputs.input_files(REPO)}
    assert {"mkosi.conf", "mkosi.build", "mkosi.postoutput", "platform.yaml"} <= names
