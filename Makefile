# Everything the project needs is installed from here: a fresh Debian 12 machine
# has none of it. Run as root.
SHELL    := /bin/bash
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
DEMO_DIR ?= /tmp/tenantfpm-demo
APT_PKGS := php8.2-cgi php8.2-fpm php8.2-dev php8.2-opcache libphp8.2-embed libcap-dev gcc make python3-dev python3-venv python3-flask vagrant nftables
PYTEST_ARGS ?=

VM_PKGS  := linux-image-amd64 qemu-system-x86 busybox-static
VM_TESTS ?= tests/integration/test_escapes.py tests/integration/test_attacks.py tests/integration/test_sandbox.py tests/integration/test_cgroups_live.py tests/integration/test_warm.py tests/integration/test_descriptors.py tests/integration/test_access_log.py tests/integration/test_forged_scoreboard.py tests/integration/test_operator_views.py tests/integration/test_host_bounds.py tests/integration/test_web_server_freeze.py tests/test_resolver.py

# WordPress (Debian's package) on MariaDB for the WordPress scenario; `php` (the metapackage,
# satisfied by php8.2-fpm) keeps apt from choosing Apache's mod_php for wordpress
BENCH_PKGS := nginx wrk php8.2-cli php8.2-mysql mariadb-server wordpress php

SAPI_BIN := tenantfpm/libexec/tenantfpm-php tenantfpm/libexec/tenantfpm-php.so
SAPI_SRC := $(wildcard sapi/*.c sapi/*.h) sapi/Makefile

.PHONY: setup system-deps sapi test-deps run test lint wire clean vm-deps vm-test vagrant-test bench-deps bench bench-smoke deb deb-test

# apt-get install what is missing of $(1) (said as $(2)); policy-rc.d keeps packages such as
# nginx and php8.2-fpm from starting services: the tests and benchmarks start their own.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo ">> installing $(2):$$missing (apt-get update first)"; \
	  guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then guard=1; \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  rc=$$?; [ -z "$$guard" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi
endef

system-deps:
	$(call apt_install,$(APT_PKGS),system packages)

$(VENV)/.installed: pyproject.toml | system-deps
	@echo ">> creating $(VENV) and installing tenantfpm with its test tools"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The PHP SAPI and zygote (sapi/), built into the package so the sandbox sees it with it:
# for the php-cgi8.2 binary's engine and for libphp8.2-embed's (sapi/engine.c).
$(SAPI_BIN) &: $(SAPI_SRC) | system-deps
	@echo ">> building the PHP SAPI (sapi/) for php-cgi8.2 and libphp8.2-embed"
	$(MAKE) --no-print-directory -C sapi OUT=$(abspath tenantfpm/libexec)

sapi: $(SAPI_BIN)

setup: system-deps $(VENV)/.installed $(SAPI_BIN)

# The example tenant "hello" under $(DEMO_DIR), a master in the foreground.
run: setup
	@set -e; D=$(abspath $(DEMO_DIR)); \
	mkdir -p $$D/srv/hello $$D/srv/hello-flask $$D/etc/tenants.d $$D/etc/profiles; chmod 755 $$D $$D/srv $$D/srv/hello $$D/srv/hello-flask; \
	cp examples/hello/index.php $$D/srv/hello/; chmod 644 $$D/srv/hello/index.php; \
	cp examples/flask/app.py $$D/srv/hello-flask/; chmod 644 $$D/srv/hello-flask/app.py; \
	for u in tenantfpm-hello tenantfpm-flask; do id $$u >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin $$u; done; \
	printf '[paths]\ntenants_dir = "%s/etc/tenants.d"\nprofiles_dir = "%s/etc/profiles"\nrun_dir = "%s/run"\nlog_dir = "%s/log"\nstate_dir = "%s/lib"\n\n[master]\nlog_file = "stderr"\n' $$D $$D $$D $$D $$D > $$D/tenantfpm.toml; \
	sed "s|@DEMO@|$$D|" examples/hello.toml.in > $$D/hello.toml; \
	sed "s|@DEMO@|$$D|" examples/hello-flask.toml.in > $$D/hello-flask.toml; \
	export TENANTFPM_CONFIG=$$D/tenantfpm.toml; \
	$(BIN)/tenantfpm add --replace $$D/hello.toml; \
	$(BIN)/tenantfpm add --replace $$D/hello-flask.toml; \
	echo; echo ">> starting the master in the foreground (Ctrl-C stops it). In another shell:"; \
	echo "     export TENANTFPM_CONFIG=$$D/tenantfpm.toml"; \
	echo "     $(abspath $(BIN))/tenantfpm request hello /"; \
	echo "     $(abspath $(BIN))/tenantfpm request hello-flask /     # the python (Flask) tenant"; \
	echo "     $(abspath $(BIN))/tenantfpm status hello --full"; echo; \
	exec $(BIN)/tenantfpm run

# what only the tests use: clang for the SAPI's fuzzer, Apache httpd as a second web server
# in front of a tenant (nginx comes with the benchmark tools)
TEST_PKGS := clang libclang-rt-14-dev apache2
SAPI_ASAN := $(abspath sapi/build/tenantfpm-php-asan)
WIRE_PROBE := $(abspath sapi/build/wire-probe)

test-deps: system-deps
	$(call apt_install,$(TEST_PKGS),the test tools)

# the SAPI under AddressSanitizer + UBSan (tests/test_sapi.py runs it too) and its fuzzer
test: setup bench-deps test-deps
	$(BIN)/ruff check tenantfpm tests bench
	$(BIN)/mypy
	$(MAKE) --no-print-directory -C sapi asan probe fuzz
	TENANTFPM_PHP_ASAN=$(SAPI_ASAN) TENANTFPM_WIRE_PROBE=$(WIRE_PROBE) $(BIN)/pytest -q $(PYTEST_ARGS)
	$(MAKE) --no-print-directory -C sapi fuzz-run
	$(MAKE) --no-print-directory bench-smoke

lint: setup
	$(BIN)/ruff check tenantfpm tests bench
	$(BIN)/mypy

# sapi/wire.h from the one definition of each master-worker format (tenantfpm/wire/)
wire: setup
	$(BIN)/python -m tenantfpm.wire.cheader > sapi/wire.h

# The integration suite inside a throwaway VM on Debian's kernel (cgroup v2), booted by
# virtme-ng over a read-only view of this machine; see docs/development.md.
vm-deps: setup
	$(call apt_install,$(VM_PKGS),the VM's kernel and emulator)
	@test -x $(BIN)/vng || { echo ">> installing virtme-ng into $(VENV)"; $(BIN)/pip install -q 'virtme-ng>=1.30'; }

vm-test: vm-deps
	$(BIN)/python tests/vm/run.py $(VM_TESTS)

# The whole suite on real Debian 12 VMs (needs vagrant with a provider; not run here:
# no box can be downloaded on this machine). v1 needs a reboot into cgroup v1 first.
vagrant-test:
	cd vagrant && vagrant up v2 --provision && vagrant destroy -f v2
	cd vagrant && vagrant up v1 --provision && vagrant reload v1 --provision && vagrant destroy -f v1

# Benchmarks against PHP-FPM on this machine: nginx in front of both, wrk as the client.
bench-deps: setup
	$(call apt_install,$(BENCH_PKGS),the benchmark tools)
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || { echo ">> installing matplotlib into $(VENV)"; $(BIN)/pip install -q 'matplotlib>=3.7'; }
	@test -x $(BIN)/uwsgi && $(BIN)/python -c 'import flup' 2>/dev/null || { echo ">> installing uWSGI (compiled, about a minute) and flup into $(VENV)"; $(BIN)/pip install -q 'uwsgi>=2.0.22' 'flup>=1.0.3'; }

bench: bench-deps
	$(BIN)/python bench/run.py --out bench

bench-smoke: bench-deps
	@d=$$(mktemp -d); $(BIN)/python bench/run.py --smoke --out $$d; rc=$$?; rm -rf $$d; exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

# The Debian package (debian/: dh-virtualenv, the systemd unit, logrotate) into dist/
DEB_PKGS := dh-virtualenv debhelper dpkg-dev build-essential
deb: system-deps
	$(call apt_install,$(DEB_PKGS),the package build tools)
	@echo ">> building the Debian package (a virtualenv with tenantfpm and its dependencies; a few minutes)"
	@set -e; rm -rf build/deb; mkdir -p build/deb/src dist; \
	git ls-files -z | xargs -0 cp --parents -t build/deb/src; \
	cd build/deb/src && dpkg-buildpackage -b -us -uc > ../build.log 2>&1 \
	  || { tail -40 ../build.log; echo ">> the package build failed: build/deb/build.log"; exit 1; }; \
	cd ../../.. && mv build/deb/tenantfpm_*.deb dist/ && ls dist/tenantfpm_*.deb

# The package under a real systemd: install, a tenant behind nginx, reload, logrotate,
# stop with a request in flight, removal (tests/package/, in a systemd-nspawn container
# booted from this machine's own root under a throwaway overlay)
DEB_TEST_PKGS := systemd-container logrotate curl nginx
deb-test: setup deb
	$(call apt_install,$(DEB_TEST_PKGS),the package test tools)
	TENANTFPM_DEB=$(abspath $(wildcard dist/tenantfpm_*.deb)) $(BIN)/pytest -q -p no:cacheprovider tests/package
