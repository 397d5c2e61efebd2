# psremote: every set-up step the tests and the demo need lives here, so a fresh machine
# of this kind needs nothing but `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP_PKGS := -r testserver/requirements.txt
export PSREMOTE_PYTHON := $(abspath $(VPY))
# psremote honours the environment's http_proxy/https_proxy/all_proxy as requests does: the tests'
# loopback traffic must never go to a proxy this machine's environment names (the proxy tests
# start their own and name them explicitly, or clear no_proxy themselves).
comma := ,
export no_proxy := $(if $(no_proxy),$(no_proxy)$(comma))127.0.0.1,localhost

.PHONY: dist dist-check ssh-deps venv test demo fmt-check clippy rust-test py-test no-default-features header header-check bench bench-smoke python-package c-deps krb-deps proxy-deps install c-test fuzz fuzz-seeds fuzz-smoke files-1g bench-fleet

# MIT Kerberos for the endpoint's Kerberos tests: the KDC, kadmin.local and kinit run a throwaway
# realm (testserver/psremote_testserver/kdc.py), and pip builds gssapi, krb5 and pykerberos from
# source against libkrb5-dev (PyPI has no Linux wheels of them). No system KDC is set up: the
# packages' services find no database, and policy-rc.d or a missing init keeps them stopped anyway.
KRB_PKGS := krb5-kdc krb5-admin-server krb5-user libkrb5-dev
krb-deps:
	@test -x /usr/sbin/krb5kdc && test -x /usr/sbin/kadmin.local && command -v kinit >/dev/null && command -v krb5-config >/dev/null || \
	  { export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q $(KRB_PKGS) >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -q $(KRB_PKGS) >/dev/null; }; }

# Real proxies for the proxy tests (core/tests/proxy.rs, the Python and C ones), started by the
# tests on 127.0.0.1: tinyproxy (HTTP CONNECT, Basic) and microsocks (SOCKS5, user/password).
# Both are a binary and nothing else: no service, no user, nothing started on install.
PROXY_PKGS := tinyproxy-bin microsocks
proxy-deps:
	@command -v tinyproxy >/dev/null && command -v microsocks >/dev/null || \
	  { export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q --no-install-recommends $(PROXY_PKGS) >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -q --no-install-recommends $(PROXY_PKGS) >/dev/null; }; }

# Debian's OpenSSH server and client for the SSH transport's tests: psremote_testserver.sshd starts a
# throwaway sshd on 127.0.0.1 (its own config, keys and port) with the endpoint's out-of-process mode
# as the powershell subsystem. The package's own service is never configured or started (policy-rc.d
# and the missing init keep it stopped on these machines). /run/sshd is sshd's privilege separation
# directory; the fixture creates its password-logon account itself on first use (testserver/README.md).
SSH_PKGS := openssh-server openssh-client
ssh-deps:
	@test -x /usr/sbin/sshd && command -v ssh-keygen >/dev/null && command -v ssh >/dev/null || \
	  { export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q $(SSH_PKGS) >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -q $(SSH_PKGS) >/dev/null; }; }
	@mkdir -p /run/sshd && chmod 755 /run/sshd

$(VENV)/.ok: testserver/requirements.txt testserver/pyproject.toml bindings-python/requirements-test.txt ansible/requirements-test.txt docs/requirements.txt | krb-deps proxy-deps
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check $(PIP_PKGS) -r bindings-python/requirements-test.txt -r ansible/requirements-test.txt -r docs/requirements.txt
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps -e testserver
	touch $@

venv: $(VENV)/.ok

# pypsrp 1.0.0b1 in a virtualenv of its own (it cannot live beside pypsrp 0.9.1): the independent
# client of the endpoint's out-of-process mode (testserver/tests/test_outofproc*.py run it).
VENV_PSRP10 := .venv-psrp
$(VENV_PSRP10)/.ok: testserver/requirements-psrp10.txt
	$(PYTHON) -m venv $(VENV_PSRP10)
	$(VENV_PSRP10)/bin/python -m pip install --quiet --disable-pip-version-check -r testserver/requirements-psrp10.txt
	touch $@

# The native module built into the virtualenv (editable install of the psremote package).
PY_NATIVE := bindings-python/python/psremote/_native.abi3.so
$(PY_NATIVE): $(VENV)/.ok $(shell find core/src bindings-python/src -name '*.rs') bindings-python/Cargo.toml core/Cargo.toml pyproject.toml
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --quiet --locked

python-package: $(PY_NATIVE)

CARGO ?= cargo
CBINDGEN_VERSION := 0.29.2
CBINDGEN := .tools/bin/cbindgen

test: krb-deps proxy-deps ssh-deps venv fmt-check clippy no-default-features header-check rust-test py-test docs docs-test ansible-test c-test bench-smoke

# CI (.ci/run) runs `make test`, then `make dist-check` (the release artifacts, below): a release
# build of its own, kept out of `make test` so the two can run apart.

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The sans-IO tier must build without tokio, hyper or sockets.
no-default-features:
	$(CARGO) build -p psremote --no-default-features --locked
	@if $(CARGO) tree -p psremote --no-default-features --locked | grep -E ' (tokio|hyper|hyper-util|mio|socket2) '; then \
	  echo "the sans-IO tier pulls in I/O crates" >&2; exit 1; fi

rust-test: venv ssh-deps
	$(CARGO) test --workspace --exclude psremote-python --locked

py-test: venv ssh-deps python-package $(VENV_PSRP10)/.ok
	$(VPY) -m pytest testserver/tests -q
	$(VPY) -m mypy.stubtest psremote._native
	$(VPY) -m mypy bindings-python/python/psremote
	$(VPY) -m pytest bindings-python -q

# ---- Documentation (docs/README.md) --------------------------------------------------------
# Sphinx + MyST pages, the Python reference from the installed package's docstrings, the C one
# from include/psremote.h and the CLI's from its parser (docs/_ext). Warnings are errors
# (-W, nitpicky -n), every page is read afresh (-E: an unchanged page's warnings still count);
# HTML lands in target/docs/html.
.PHONY: docs docs-test
docs: venv python-package
	$(VPY) -m sphinx -b html -E -W --keep-going -n -q -d target/docs/doctrees docs target/docs/html
	@echo "documentation: target/docs/html/index.html"

# Every ```python and ```console sample of every page, run against loopback endpoints through
# a CONNECT proxy that plays *.example.com (docs/tests/).
docs-test: venv python-package
	$(VPY) -m pytest docs/tests -q

# The Ansible collection (ansible/ansible_collections/psremote/remote): its connection plugin under
# ansible-core from PyPI (ansible/requirements-test.txt), against loopback endpoints, side by side
# with the built-in psrp plugin.
.PHONY: ansible-test
ansible-test: venv python-package
	$(VPY) -m pytest ansible -q

demo: venv python-package
	testserver/with-endpoint.sh $(VPY) examples/quickstart.py

$(CBINDGEN):
	$(CARGO) install --locked --quiet cbindgen --version $(CBINDGEN_VERSION) --root .tools

header: $(CBINDGEN)
	$(CBINDGEN) --config bindings-c/cbindgen.toml --crate psremote-c --output include/psremote.h bindings-c

# The committed header must equal a fresh generation.
header-check: $(CBINDGEN)
	$(CBINDGEN) --config bindings-c/cbindgen.toml --crate psremote-c --output target/psremote.h.fresh bindings-c
	diff -u include/psremote.h target/psremote.h.fresh || { echo "include/psremote.h is stale: run make header" >&2; exit 1; }

# psremote's Python package built for the benchmarks in the `profiling` profile (release
# optimisation with debug info for perf; see Cargo.toml), installed apart from the virtualenv's
# debug build (which `make test` uses and this never touches): bench/sidebyside.py puts
# $(BENCH_SITE) first on its contenders' PYTHONPATH.
BENCH_SITE := target/bench/site
BENCH_NATIVE := $(BENCH_SITE)/psremote/_native.abi3.so
$(BENCH_NATIVE): $(VENV)/.ok $(shell find core/src bindings-python/src bindings-python/python -name '*.rs' -o -name '*.py' -o -name '*.pyi') bindings-python/Cargo.toml core/Cargo.toml pyproject.toml Cargo.lock
	rm -rf target/bench/wheels $(BENCH_SITE)
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin build --profile profiling --locked --quiet -o target/bench/wheels
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps --no-index --target $(BENCH_SITE) target/bench/wheels/*.whl

# Release-mode benchmarks (the profiling profile): CLIXML in Rust, then psremote side by side with pypsrp, psrpcore and
# pywinrm (bench/sidebyside.py) through a delay proxy (bench/delayproxy.py) at 0 and 20 ms of round
# trip, one table each (also in target/bench/results.md and .json). Numbers go to bench/RESULTS.md
# by hand, never asserted by tests.
bench: venv $(BENCH_NATIVE)
	$(CARGO) build --profile profiling --locked -q -p psremote-bench
	target/profiling/clixml-decode
	$(VPY) bench/sidebyside.py --psremote-site $(BENCH_SITE) --decode-bin target/profiling/clixml-decode

# `ansible -m raw` on 50 hosts with the psremote connection plugin (the release build) and with the
# built-in psrp plugin, side by side (bench/ansible_side_by_side.py; results in bench/RESULTS.md).
.PHONY: bench-ansible
bench-ansible: venv $(BENCH_NATIVE)
	$(VPY) bench/ansible_side_by_side.py --psremote-site $(BENCH_SITE) --out target/bench/ansible.md

# A tiny run of the benchmarks inside `make test`, so they keep working: every scenario and
# contender once, on small inputs, with the debug builds, through the delay proxy at 20 ms; it
# checks outputs and that the proxy counted each contender's traffic, never times.
bench-smoke: venv python-package
	BENCH_BYTES=1000000 ROWS=200 $(CARGO) run --locked -q -p psremote-bench --bin clixml-decode
	$(VPY) -m pytest bench/test_delayproxy.py -q
	$(VPY) bench/sidebyside.py --smoke --decode-bin target/debug/clixml-decode --out target/bench/smoke
	$(VPY) bench/fleet_scale.py --hosts 50 --endpoints 2 --throttle 20

# One script on 1,000 hosts (distinct loopback addresses, 4 endpoint processes) with psremote.run_many
# and with pypsrp in a thread pool: wall time, client CPU and peak memory (issue 14).
bench-fleet: venv $(BENCH_NATIVE)
	$(VPY) bench/fleet_scale.py --psremote-site $(BENCH_SITE) --out target/bench/fleet.md

# 1 GiB through copy and fetch with the release build, checking the client's peak memory stays
# flat (issue 13); `make test` runs the same test at 100 MiB.
files-1g: venv
	PSREMOTE_FILES_MB=1024 $(CARGO) test --release --locked -p psremote --test files_memory -- --nocapture

# ---- Fuzzing -------------------------------------------------------------------------------
# cargo-fuzz targets over every parser of server bytes (fuzz/, its own crate outside the workspace;
# the functions are psremote::fuzzing). libFuzzer builds on stable with `-s none` (no sanitizer:
# Rust's checks and the fuzzer's own crash detection). Each target runs FUZZ_SECONDS from the
# committed seeds (fuzz/corpus/<target>, read-only) into a scratch corpus under fuzz/target/; a
# crash lands in fuzz/artifacts/<target>/ and belongs in fuzz/corpus/<target>/ with its fix.
# `make fuzz-smoke` (and `make rust-test`) replays the committed corpus on stable, no libFuzzer.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := clixml psrp_defrag psrp_message psrp_pool wsman_reply encryption der krb5_conf outofproc proxy_http proxy_socks5
CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ := .tools/bin/cargo-fuzz

$(CARGO_FUZZ):
	$(CARGO) install --locked --quiet cargo-fuzz --version $(CARGO_FUZZ_VERSION) --root .tools

fuzz: $(if $(shell command -v cargo-fuzz),,$(CARGO_FUZZ))
	cd fuzz && PATH="$(abspath .tools/bin):$$PATH" $(CARGO) fuzz build -s none
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/target/corpus/$$t; \
	  echo "== $$t ($(FUZZ_SECONDS) s)"; \
	  (cd fuzz && PATH="$(abspath .tools/bin):$$PATH" $(CARGO) fuzz run -s none $$t target/corpus/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >target/$$t.log 2>&1) || \
	    { tail -n 40 fuzz/target/$$t.log; echo "fuzz target $$t failed: the input is in fuzz/artifacts/$$t" >&2; exit 1; }; \
	  grep -E '^Done|^stat::(number_of_executed_units|new_units_added)' fuzz/target/$$t.log || true; \
	done

fuzz-seeds: venv
	$(VPY) fuzz/make_seeds.py

fuzz-smoke:
	$(CARGO) test -p psremote --locked --test fuzz_corpus

# ---- C library ----------------------------------------------------------------------------
PREFIX ?= /usr/local
# The Cargo profile `make install` builds: `profiling` by default (release optimisation with debug
# information, which install.sh moves into lib/.debug), `release` (no debug information) or `debug`.
C_PROFILE ?= profiling
C_PROFILE_DIR := $(if $(filter debug dev,$(C_PROFILE)),debug,$(C_PROFILE))
C_PROFILE_FLAG := $(if $(filter debug dev,$(C_PROFILE)),,--profile $(C_PROFILE))
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# What the static library needs from the system (`cargo rustc -- --print native-static-libs`).
LIBS_PRIVATE := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

# Tools the C tests need; installed from Debian when missing.
c-deps:
	@command -v cmake >/dev/null && command -v pkg-config >/dev/null && command -v valgrind >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake pkg-config valgrind >/dev/null; }

C_PREFIX = $(abspath $(PREFIX))
# Installs lib/libpsremote.so.$(VERSION) (stripped; its debug information in lib/.debug/, named by
# its .gnu_debuglink), the SONAME link libpsremote.so.<ABI> and libpsremote.so, libpsremote.a,
# include/psremote.h, lib/pkgconfig/psremote.pc and the CMake package lib/cmake/psremote
# (bindings-c/install.sh). INSTALL_STRIP=0 installs the libraries as built.
INSTALL_STRIP ?= 1
install:
	$(CARGO) build --locked -q $(C_PROFILE_FLAG) -p psremote-c
	BUILT=target/$(C_PROFILE_DIR) PREFIX='$(C_PREFIX)' DESTDIR='$(DESTDIR)' VERSION='$(VERSION)' \
	  LIBS_PRIVATE='$(LIBS_PRIVATE)' INSTALL_STRIP='$(INSTALL_STRIP)' bash bindings-c/install.sh

# C tests four ways (shared, static, C++, ASan+UBSan) and valgrind, then `make install`'s layout
# (SONAME, links, stripping, CMake package) and the agent example built against an installed
# prefix through pkg-config (plain Makefile) and find_package (CMake), shared and static.
c-test: venv c-deps ssh-deps
	bash bindings-c/tests/run.sh
	bash bindings-c/tests/example.sh

# ---- Release artifacts -------------------------------------------------------------------------
# `make dist`: into dist/, the abi3 wheel for x86_64 Linux tagged manylinux2014 (manylinux_2_17:
# glibc >= 2.17: RHEL 8, Ubuntu 20.04 and Amazon Linux 2 too) and the sdist. maturin links with zig
# (ziglang from PyPI, .venv-dist) against glibc 2.17's symbols, no manylinux Docker image; the
# module is stripped (debug info for profiling lives in the `profiling` profile, see Cargo.toml).
# check_wheel.py then fails unless `auditwheel show` finds the wheel manylinux_2_17 (or older)
# compatible, the module stripped and the typing and license files inside; it prints the sizes.
# The build has a target directory of its own (target/dist): zig's C compiler and linker never mix
# with the host-linked release build.
DIST_VENV := .venv-dist
DIST_ENV = PATH="$(abspath $(DIST_VENV))/bin:$$PATH" VIRTUAL_ENV="$(abspath $(DIST_VENV))"
$(DIST_VENV)/.ok: bindings-python/requirements-dist.txt
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bindings-python/requirements-dist.txt
	touch $@

dist: $(DIST_VENV)/.ok
	rm -rf dist
	$(DIST_ENV) CARGO_TARGET_DIR=target/dist maturin build --release --locked --zig --compatibility manylinux2014 --strip --quiet -o dist
	$(DIST_ENV) maturin sdist -o dist
	$(DIST_VENV)/bin/python bindings-python/tests/dist/check_wheel.py dist/psremote-$(VERSION)-*.whl

# `make dist-check` (CI runs it after `make test`): `make dist`; the sdist checked for every
# tracked file of the core and the binding and built from scratch (pip's isolated build, no cache,
# a fresh Cargo target directory, a dev build); then the release wheel and the sdist's wheel each
# installed into a clean virtualenv with no Rust toolchain reachable, running examples/quickstart.py
# against the loopback endpoint and checking that `psremote --version`, psremote.__version__ and
# the wheel's metadata say $(VERSION).
dist-check: dist venv
	bindings-python/tests/dist/check_sdist.sh dist/psremote-$(VERSION).tar.gz target/dist/sdist-build
	bindings-python/tests/dist/test_wheel.sh dist/psremote-$(VERSION)-*.whl
	bindings-python/tests/dist/test_wheel.sh target/dist/sdist-build/psremote-$(VERSION)-*.whl
