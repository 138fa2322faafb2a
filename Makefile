# The two commands: `make` builds the platform image, `make check` runs every
# test. Both first make the host ready (tools/hostsetup.py).

# Debian's interpreter: mkosi's scripts run with it, and the tests' modules
# (pytest, pexpect, yaml, jinja2) are installed for it from Debian packages.
PYTHON := /usr/bin/python3
MKOSI  := mkosi

.PHONY: all setup build check unit clean distclean bench

all: build

setup:
	@test -x $(PYTHON) || { echo "make: $(PYTHON) not found: the PI builds on Debian (apt-get install python3)" >&2; exit 1; }
	@$(PYTHON) -m tools.hostsetup
	@mkdir -p out mkosi.cache mkosi.builddir

build: setup
	$(MKOSI) --force build
	$(PYTHON) -m hooks.media out/platform-latest
	@$(PYTHON) -m hooks.platform_dir prune out

# Unit tests first (seconds, no root needed), then the tests that build (or
# reuse) the image and boot it. The slowest steps and the seconds per module
# are printed at the end (CI's time is budgeted per module).
check: setup
	$(PYTHON) -m pytest --durations=25 tests/unit tests/image tests/boot

unit:
	$(PYTHON) -m pytest tests/unit

bench: setup
	$(PYTHON) bench/build.py

clean:
	-$(MKOSI) clean
	rm -rf out

distclean: clean
	rm -rf mkosi.cache mkosi.builddir
