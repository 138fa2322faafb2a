"""/usr/triton/bin/config.sh: node.config as CONFIG_<key> for the scripts
that source it (agents' postinstall, joysetup.sh, agentsetup.sh). node.config
is data: whatever it holds, sourcing it runs nothing."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
CONFIG_SH = REPO / "mkosi.extra/usr/triton/bin/config.sh"

# Prints every variable with the prefix, NUL-separated, after loading.
DUMP = 'for __v in $(compgen -v "$P"); do printf "%s\\0%s\\0" "$__v" "${!__v}"; done'


def load(text: Optional[str], tmp: Path, prefix: str = "", options: str = "set -euo pipefail",
         env: Optional[dict[str, str]] = None, raw: Optional[bytes] = None) -> tuple[dict[str, str], str, int]:
    """({variable: value}, stderr, status) of sourcing config.sh and
    load_sdc_config [prefix] with node.config holding `text`."""
    cfg = tmp / "node.config"
    if raw is not None:
        cfg.write_bytes(raw)
    elif text is not None:
        cfg.write_text(text)
    script = (f"{options}\n. {shlex.quote(str(CONFIG_SH))}\nload_sdc_config {shlex.quote(prefix)}\n"
              f"P={shlex.quote(prefix or 'CONFIG_')}\n{DUMP}\n")
    base = {"PATH": "/usr/bin:/bin", "SDC_CONFIG_FILENAME": str(cfg),
            "SDC_CONFIG_TEMP_FILENAME": str(tmp / "absent")}
    res = subprocess.run(["bash", "-c", script], cwd=tmp, capture_output=True, timeout=30,
                         env={**base, **(env or {})})
    parts = res.stdout.split(b"\0")[:-1]
    values = {parts[i].decode(errors="replace"): parts[i + 1].decode(errors="replace")
              for i in range(0, len(parts), 2)}
    return values, res.stderr.decode(errors="replace"), res.returncode


def config(values: dict[str, str], prefix: str = "CONFIG_") -> dict[str, str]:
    return {k.removeprefix(prefix): v for k, v in values.items() if k != prefix + "config_inc_dir"}


def test_node_config_as_booter_writes_it(tmp_path):
    values, err, rc = load("# node.config\nroot_shadow='$6$salt$hash'\ndatacenter_name='us-east-1'\n"
                           "sapi_domain='sapi.us-east-1.example.com'\nntp_hosts='10.0.0.1'\nswap=0.25x\n"
                           "dns_resolvers='8.8.8.8,8.8.4.4'\n", tmp_path)
    assert rc == 0 and err == ""
    assert config(values) == {"root_shadow": "$6$salt$hash", "datacenter_name": "us-east-1",
                              "sapi_domain": "sapi.us-east-1.example.com", "ntp_hosts": "10.0.0.1",
                              "swap": "0.25x", "dns_resolvers": "8.8.8.8,8.8.4.4"}
    assert values["CONFIG_config_inc_dir"] == str(tmp_path)


@pytest.mark.parametrize("line,value", [
    ("k='single quoted'", "single quoted"),
    ('k="double quoted"', "double quoted"),
    ("k=bare", "bare"),
    ("k=", ""),
    ("k=''", ""),
    ("k='a=b=c'", "a=b=c"),
    ("k=a=b", "a=b"),
    ("k='it'\\''s'", "it's"),
    ("k='a'\"b\"c", "abc"),
    ('k="say \\"hi\\" \\\\ \\$HOME \\` \\n"', 'say "hi" \\ $HOME ` \\n'),
    ("k=a\\ b", "a b"),
    ("k='x'  # a comment", "x"),
    ("k=x # a comment", "x"),
    ("k='a b'  trailing words", "a b"),
    ("   k='leading blanks'", "leading blanks"),
    ("\tk='leading tab'", "leading tab"),
    ("k='crlf'\r", "crlf"),
    ("k='#not a comment'", "#not a comment"),
])
def test_quoting(tmp_path, line, value):
    values, err, rc = load(line + "\n", tmp_path)
    assert rc == 0 and config(values) == {"k": value}, err


def test_comments_blank_lines_and_lines_not_starting_with_a_letter_are_skipped(tmp_path):
    values, err, rc = load("# k='comment'\n\n   \n  # indented comment\n_x=1\n1x=2\n-x=3\n=4\nk='kept'\n", tmp_path)
    assert rc == 0 and config(values) == {"k": "kept"} and err == ""


def test_lines_that_are_not_assignments_are_skipped_with_a_warning(tmp_path):
    values, err, rc = load("k='kept'\nthis is junk\nkey = value\nopen='never closed\nlast=1", tmp_path)
    assert rc == 0 and config(values) == {"k": "kept", "last": "1"}
    assert "line 2: not key=value; skipped" in err and "line 3: not key=value" in err
    assert "line 4: open: a quote is not closed; skipped" in err


def test_the_last_value_of_a_key_wins(tmp_path):
    values, _, _ = load("k=1\nk='2'\n", tmp_path)
    assert config(values) == {"k": "2"}


HOSTILE = [
    "a='$(touch {c})'",
    'a="$(touch {c})"',
    "a=$(touch {c})",
    "a=`touch {c}`",
    'a="`touch {c}`"',
    "a=x;touch {c}",
    "a='x'; touch {c}",
    "a='x' && touch {c}",
    "a='x' | touch {c}",
    "a=x[$(touch {c})]",
    "a[$(touch {c})]=1",
    "x=1 touch {c}",
    "touch {c}",
    "$(touch {c})",
    "`touch {c}`",
    "a=${{x:=$(touch {c})}}",
    "a=$((1+$(touch {c})))",
    "a='unclosed $(touch {c})",
    "a=\"unclosed $(touch {c})",
    "a=x\\",
    "PATH='{t}'; touch {c}",
    "BASH_ENV={t}/evil",
]


@pytest.mark.parametrize("line", HOSTILE)
def test_hostile_lines_run_nothing(tmp_path, line):
    canary = tmp_path / "ran"
    (tmp_path / "evil").write_text(f"touch {canary}\n")
    text = line.format(c=canary, t=tmp_path) + "\nafter='still read'\n"
    values, err, rc = load(text, tmp_path)
    assert rc == 0, err
    assert not canary.exists(), f"{line!r} ran a command"
    assert config(values)["after"] == "still read"


@pytest.mark.parametrize("line,value", [
    ("a='$(touch C)'", "$(touch C)"),
    ("a=$(touch C)", "$(touch C)"),
    ("a=`touch C`", "`touch C`"),
    ("a=x;touch C", "x;touch"),
    ('a="$HOME and `id`"', "$HOME and `id`"),
    ("a=x[$(touch C)]", "x[$(touch C)]"),
    ("a=$", "$"),
])
def test_expansions_stay_text(tmp_path, line, value):
    values, _, rc = load(line + "\n", tmp_path)
    assert rc == 0 and config(values)["a"] == value


def test_safe_under_errexit_nounset_and_xtrace_which_does_not_show_the_values(tmp_path):
    values, err, rc = load("root_shadow='$6$secret$hash'\nbad line\n", tmp_path, options="set -euxo pipefail")
    assert rc == 0 and config(values) == {"root_shadow": "$6$secret$hash"}
    # (The test's own dump of the values, after it, is traced.)
    assert "secret" not in err.partition("+ P=")[0] and "+ load_sdc_config" in err
    # xtrace is on again after it.
    res = subprocess.run(["bash", "-c", f"set -x; . {CONFIG_SH}; load_sdc_config; echo after"],
                         capture_output=True, text=True, env={"SDC_CONFIG_FILENAME": str(tmp_path / "node.config"),
                                                              "PATH": "/usr/bin:/bin"})
    assert "+ echo after" in res.stderr


def test_a_prefix(tmp_path):
    values, _, rc = load("k='v'\n", tmp_path, prefix="MY_")
    assert rc == 0 and values == {"MY_k": "v", "MY_config_inc_dir": str(tmp_path)}


@pytest.mark.parametrize("prefix", ["a;touch x;", "1X_", "A-B", "X[$(touch x)]"])
def test_a_prefix_that_is_not_a_name_is_refused(tmp_path, prefix):
    script = f". {CONFIG_SH}; load_sdc_config {shlex.quote(prefix)}; echo rc=$?"
    res = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={"SDC_CONFIG_FILENAME": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"})
    assert "rc=1" in res.stdout and "not a variable name prefix" in res.stderr
    assert not (tmp_path / "x").exists()


def test_no_node_config_says_so_and_sets_only_the_include_dir(tmp_path):
    values, err, rc = load(None, tmp_path)
    assert rc == 0 and values == {"CONFIG_config_inc_dir": str(tmp_path)}
    assert "no node.config" in err


def test_which_file(tmp_path):
    """Before setup (no node.config on the pool), the copy `sdc-server
    setup` fetched wins over this boot's, as on an unset-up SmartOS compute
    node: CNAPI puts the disk settings joysetup.sh hands disklayout at its
    top. Once set up, $TRITON_CONFIG_DIR/node.config (the pool's). With
    neither a pool's nor a fetched copy, this boot's. SDC_CONFIG_FILENAME
    always wins."""
    for d in ("usr", "var", "opt"):
        (tmp_path / d).mkdir()
    var, usr, pool = tmp_path / "var/node.config", tmp_path / "usr/node.config", tmp_path / "opt/node.config"
    usr.write_text("from='usr/triton/config'\n")
    script = (f". {CONFIG_SH}; load_sdc_config; echo \"$CONFIG_from $SDC_CONFIG_FILENAME "
              f"$COMPUTE_NODE_CONFIG_FILENAME $SDC_CONFIG_INC_DIR\"")

    def run(**env: str) -> str:
        res = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "TRITON_CONFIG_DIR": str(tmp_path / "usr"),
                                  "SDC_CONFIG_TEMP_FILENAME": str(var), "TRITON_POOL_CONFIG_FILENAME": str(pool),
                                  **env})
        return res.stdout.strip()

    # Not set up, nothing fetched: this boot's, from booter.
    assert run() == f"usr/triton/config {usr} {usr} {tmp_path / 'usr'}"
    # Not set up, `sdc-server setup` fetched its copy: that one.
    var.write_text("from='var/tmp'\nlayout='mirror'\n")
    assert run() == f"var/tmp {var} {var} {tmp_path / 'var'}"
    # Set up (joysetup.sh moved it onto the pool): the platform's path again.
    pool.write_text("from='pool'\n")
    assert run() == f"usr/triton/config {usr} {usr} {tmp_path / 'usr'}"
    usr.unlink()
    assert run() == f"{usr} {usr} {tmp_path / 'usr'}"
    assert run(SDC_CONFIG_FILENAME=str(var)).startswith(f"var/tmp {var} ")


def test_the_generic_file_is_read_first(tmp_path):
    (tmp_path / "generic").write_text("a='generic'\nb='generic'\n")
    values, _, rc = load("b='node'\n", tmp_path)
    assert rc == 0 and config(values) == {"a": "generic", "b": "node"}


def test_bytes_that_are_not_text_are_kept_as_they_are(tmp_path):
    values, err, rc = load(None, tmp_path, raw=b"a='\xff\xfe'\nb='\x01x'\nc='caf\xc3\xa9'\n\x00\x00\nd=1\n")
    assert rc == 0, err
    assert config(values)["c"] == "café" and config(values)["d"] == "1"


def test_json_mode(tmp_path):
    (tmp_path / "node.config").write_text("b='x \"y\" \\\\ z'\na=$(touch C)\nc='tab\there'\n")
    res = subprocess.run(["bash", str(CONFIG_SH), "-json"], cwd=tmp_path, capture_output=True, text=True,
                         env={"SDC_CONFIG_FILENAME": str(tmp_path / "node.config"), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"a": "$(touch C)", "b": 'x "y" \\\\ z', "c": "tab\there",
                                      "config_inc_dir": str(tmp_path)}
    assert not (tmp_path / "C").exists()


def test_sourcing_it_with_arguments_does_not_print_json(tmp_path):
    res = subprocess.run(["bash", "-c", f". {CONFIG_SH} -json; echo sourced"], capture_output=True, text=True,
                         env={"SDC_CONFIG_FILENAME": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"})
    assert res.stdout == "sourced\n"


# -- properties -----------------------------------------------------------------------------

VALUE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\n\r"), max_size=40)


def single_quoted(v: str) -> str:
    return "'" + v.replace("'", "'\\''") + "'"


def double_quoted(v: str) -> str:
    return '"' + "".join("\\" + ch if ch in '"\\$`' else ch for ch in v) + '"'


@settings(max_examples=60, deadline=None)
@given(values=st.lists(VALUE, min_size=1, max_size=6), quote=st.sampled_from([single_quoted, double_quoted]))
def test_a_quoted_value_is_read_back_exactly(tmp_path_factory, values, quote):
    tmp = tmp_path_factory.mktemp("q")
    text = "".join(f"k{i}={quote(v)}\n" for i, v in enumerate(values))
    got, err, rc = load(text, tmp)
    assert rc == 0, err
    assert config(got) == {f"k{i}": v for i, v in enumerate(values)}


FRAGMENTS = st.sampled_from(["$(touch C)", "`touch C`", ";touch C", "&& touch C", "| touch C", "'", '"', "\\",
                             "=", " ", "\t", "#", "$", "(", ")", "[", "]", "{", "}", "a", "k", "x=", "\\'"])


@settings(max_examples=80, deadline=None)
@given(lines=st.lists(st.lists(FRAGMENTS, max_size=8).map("".join), max_size=6))
def test_any_text_runs_nothing(tmp_path_factory, lines):
    tmp = tmp_path_factory.mktemp("h")
    _, err, rc = load("\n".join(lines) + "\n", tmp)
    assert rc == 0, err
    assert not (tmp / "C").exists(), lines
