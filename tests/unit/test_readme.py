"""The README's lists are the sources' own: the mkosi drop-ins, the kernel
arguments the initrd reads, the pool's datasets and mount units. A change
to either side without the other fails here, so the README cannot drift."""

import re
from pathlib import Path

from hooks import bootfiles
from hooks.config import load

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
INITRD_SCRIPTS = REPO / "mkosi.initrd/mkosi.extra/usr/lib/triton"
NODE_LIB = REPO / "mkosi.extra/usr/lib/triton"
POOL = load().pool


def ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def after(phrase: str, until: str) -> str:
    """The README's text from `phrase` to the first `until` after it."""
    start = README.index(phrase) + len(phrase)
    return README[start:README.index(until, start)]


def test_the_drop_ins_listed_are_mkosi_conf_d():
    listed = ticked(after("`mkosi.conf.d/` (", ")"))
    assert listed == sorted(p.stem for p in (REPO / "mkosi.conf.d").glob("*.conf"))


def kernel_args_table() -> set[str]:
    """The argument names in the README's kernel arguments table."""
    text = README[README.index("\nKernel arguments"):]
    rows = [line for line in text.split("\n\n| argument |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]]
    return {word.split("=")[0] for row in rows for arg in ticked(row.split(" | ")[0]) for word in arg.split()}


def initrd_kernel_args() -> set[str]:
    """What the initrd's scripts match on the kernel command line (their
    `case "$arg" in NAME=...)` branches) and what `triton-pool boot`, run
    in the initrd, looks up (args.get("NAME"))."""
    names = set()
    for script in INITRD_SCRIPTS.iterdir():
        # NAME=<glob>) with an optional extglob group: +([0-9]), @(a|b).
        names |= set(re.findall(r"(?:^\s*|in\s+)([A-Za-z][A-Za-z0-9_.]*)=[^\s'\"()]*(?:[+@*?!]\([^()\s]*\))?\)",
                                script.read_text(), re.M))
    for module in NODE_LIB.glob("triton_pool*.py"):
        names |= set(re.findall(r'args\.get\("([^"]+)"\)', module.read_text()))
    return names


def test_the_kernel_arguments_table_is_what_the_initrd_reads():
    read = initrd_kernel_args()
    assert {"fetch", "triton.rootfs", "BOOTIF", "ip", "noimport"} <= read  # the patterns still find them
    assert kernel_args_table() == read | {"console"}  # console=: the kernel's own


def test_the_mount_units_and_image_var_listed_are_the_pools():
    units = ticked(after("Mount units (", ")"))
    assert sorted(units) == sorted(bootfiles.mount_unit("/sysroot" + d.mountpoint) for d in POOL.datasets)
    image_var = ticked(after("The image's own ", " are overlaid"))
    assert image_var == [f"/var/{rel}" for rel in POOL.image_var]


def test_the_datasets_setup_creates_are_the_pools():
    text = after(f"It creates `{POOL.name}` (", ", marks it")
    properties, _, datasets = text.partition(") with")
    assert ticked(properties) == [f"{k}={v}" for k, v in {**POOL.pool_properties, **POOL.fs_properties}.items()]
    pairs = re.findall(r"`([^`]+)`\s+\(`([^`]+)`", datasets)
    assert pairs == [(POOL.full(d.name), d.mountpoint) for d in POOL.datasets if d.name]
    seeded = [d for d in POOL.datasets if d.seed]
    assert [f"`{d.mountpoint}`, seeded" in datasets for d in seeded] == [True] * len(seeded)


def test_the_contract_table_names_the_pools_marker_and_datasets():
    names = ",".join(d.name for d in POOL.datasets if d.name)
    assert f"| `{POOL.root.mountpoint}/{POOL.marker}`, `{POOL.name}/{{{names}}}`," in README
