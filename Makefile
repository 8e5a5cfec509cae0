# zonewall build and test entry points. `make test` is what CI runs (.ci/run).
#
# Kernel tests are the point of this project: they need root and network
# namespaces, and `make test` refuses to run (fails loudly) without them rather than
# letting pytest skip them.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.zonewall-installed
DEB_PACKAGES := nftables iproute2 conntrack iperf3 iputils-ping libnftables1 chromium postgresql git
PYTEST_ARGS ?= -p xdist -n 2 --dist loadgroup -q
DEMO_ARGS ?=

LOCK := requirements.lock
# What real hypervisors need in the tests (tests/kernel/libvirt, `make demo DEMO_ARGS=--libvirt`)
# and what `make deb` and its test need.
HYPERVISOR_PACKAGES := qemu-system-x86 linux-image-amd64 busybox-static libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu
DEB_BUILD_PACKAGES := dpkg-dev fakeroot python3-venv systemd cpio kmod adduser
DEB_PACKAGES += $(HYPERVISOR_PACKAGES) $(DEB_BUILD_PACKAGES)
VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: venv deps test lint guard demo clean lock wheel deb

venv: $(STAMP)

# Reinstall only when the dependency ranges or the lock change; the exact tested set
# comes from the lock file (constraints), the ranges from pyproject.toml.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c $(LOCK) -e '.[test,lint]'

	touch $@

# A new lock: the newest versions pyproject.toml's ranges allow, in a fresh virtualenv.
lock:
	rm -rf build/lock-venv && $(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/python -m pip install --quiet --disable-pip-version-check '.[test,lint]'
	{ sed -n '1,3p' $(LOCK); build/lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^zonewall'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf build/lock-venv

wheel: venv
	rm -rf dist/zonewall-*.whl
	$(VENV)/bin/python -m pip wheel --quiet --disable-pip-version-check --no-deps -w dist .

# The Debian package: a self-contained virtualenv under /opt/zonewall (Debian's
# python3, the lock file's exact set), the units, /etc/zonewall, the libvirt hook.
deb: deps wheel
	tools/build-deb dist/zonewall-$(VERSION)-py3-none-any.whl $(LOCK) dist

deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "deps: missing:$$missing (run as root)" >&2; exit 1; fi; \
	echo "deps: installing$$missing"; \
	apt-get update; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing

# Fail (never skip) when kernel tests cannot run: not root, or no namespaces/nftables.
guard:
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "FATAL: make test must run as root: kernel tests create network namespaces" >&2; exit 1; fi
	@ns=zwt-$$$$-guard; \
	if ! ip netns add $$ns 2>/dev/null; then \
	  echo "FATAL: cannot create network namespaces (ip netns add): kernel tests cannot run" >&2; exit 1; fi; \
	ok=1; ip netns exec $$ns nft add table inet zwguard || ok=0; \
	ip netns delete $$ns; \
	if [ $$ok = 0 ]; then echo "FATAL: nftables does not work in a namespace" >&2; exit 1; fi
	@# The neighbour tables are shared by every namespace (sized in the initial one only):
	@# parallel labs of many guests overflow the default 1,024 entries and probes time out.
	@for fam in ipv4 ipv6; do \
	  sysctl -qw net.$$fam.neigh.default.gc_thresh1=4096 net.$$fam.neigh.default.gc_thresh2=16384 \
	    net.$$fam.neigh.default.gc_thresh3=32768; \
	done

test: deps venv guard
	CI=$${CI:-1} $(VENV)/bin/pytest $(PYTEST_ARGS)

# The lint gate: ruff and mypy as configured in pyproject.toml, zero findings.
lint: venv
	$(VENV)/bin/ruff check zonewall tests bench tools
	$(VENV)/bin/mypy

demo: deps venv
	$(VENV)/bin/zonewall demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
