# The first two targets are the README's two commands: `make serve`, `make test`.
# Both make the virtual environment themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_UP = pg_isready -q -h 127.0.0.1 -p 5432

.PHONY: serve test lint typecheck contracts unit pg sysdeps docs bench bench-quick benchdeps soak clean

# Debian tools the tests drive as independent peers (rclone checks the content
# hash, curl and wget resume downloads; Playwright drives Debian's chromium in
# tests/web, never a browser of its own; nginx balances two servers in
# tests/e2e/test_scale_out.py). Installed only when missing.
SYSDEPS := rclone:rclone wget:wget curl:curl chromium:chromium nginx:nginx

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/shelfsync serve

# The whole suite: style, types, layer contracts, then every test.
# The PostgreSQL restart test stops the cluster under everyone using it, so it
# runs alone, after the parallel run (either failing fails `make test`).
test: $(STAMP) pg sysdeps lint typecheck contracts
	$(BIN)/python -m pytest -n 2 -m "not pg_restart" -p no:cacheprovider
	$(BIN)/python -m pytest -m pg_restart -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)

typecheck: $(STAMP)
	$(BIN)/mypy src/shelfsync

contracts: $(STAMP)
	$(BIN)/lint-imports --no-cache

# Start the local PostgreSQL cluster when it is down (the tests create and drop
# databases of their own there).
pg:
	@$(PG_UP) || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 1 30); do $(PG_UP) && exit 0; sleep 1; done; echo "PostgreSQL did not start"; exit 1

# A temporary policy-rc.d keeps the nginx package from starting a system nginx
# on port 80 (the scale-out test runs its own, as this user, on a free port).
sysdeps:
	@missing=""; for pair in $(SYSDEPS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  PATH="$$PATH:/usr/sbin" command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; made_policy=""; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1; fi; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null); rc=$$?; \
	  [ -z "$$made_policy" ] || rm -f /usr/sbin/policy-rc.d; \
	  [ $$rc = 0 ] || { echo "could not install$$missing"; exit 1; }; fi

# Long runs, not part of `make test`: 100 simulated devices against one server
# (SQLite, then PostgreSQL; SOAK_ARGS, e.g. "--duration 60"), then 50 kill -9s.
SOAK_ARGS ?=
soak: $(STAMP) pg
	$(BIN)/python bench/soak.py $(SOAK_ARGS)
	SHELFSYNC_KILL_LOOPS=50 $(BIN)/python -m pytest -p no:cacheprovider -s tests/e2e/test_kill_loop.py

# Benchmarks (issue 7, docs/benchmarks.md): never part of `make test` or CI.
# `make bench` runs every script of BENCH_SCRIPTS (bench/NAME.py, each taking
# `--quick` and `--json OUT`) through bench/run_all.py, collects their JSON into
# one results file and rewrites the table in docs/benchmarks.md. A script that
# does not exist yet is listed as "not measured". `make bench QUICK=1` (or
# `make bench-quick`) passes --quick to each: under 3 minutes, smoke-test sized,
# not comparable with the goals; it leaves docs/ alone. BENCH_ARGS go to run_all.py
# (e.g. BENCH_ARGS="--out /tmp/mybench").
BENCH_SCRIPTS := e2e_sync transfer feed_report longpoll
BENCH_STAMP := $(VENV)/.bench-installed
QUICK ?=
BENCH_ARGS ?=
# Anchors and tools the bench scripts drive (../shared/bench/ uses nginx with its
# built-in WebDAV module, syncthing 1.19, hyperfine, rsync, jq, curl).
BENCHDEPS := syncthing:syncthing nginx:nginx hyperfine:hyperfine rsync:rsync jq:jq curl:curl

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Like sysdeps; a temporary policy-rc.d keeps the nginx package from starting a
# system nginx on port 80 (the scripts run their own on 127.0.0.1).
benchdeps:
	@missing=""; for pair in $(BENCHDEPS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; made_policy=""; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1; fi; \
	  (apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq $$missing >/dev/null); rc=$$?; \
	  [ -z "$$made_policy" ] || rm -f /usr/sbin/policy-rc.d; \
	  [ $$rc = 0 ] || { echo "could not install$$missing"; exit 1; }; fi

bench: $(BENCH_STAMP) benchdeps pg
	$(BIN)/python bench/run_all.py $(if $(QUICK),--quick) $(BENCH_ARGS) $(BENCH_SCRIPTS)

bench-quick:
	$(MAKE) bench QUICK=1

docs: $(STAMP)
	$(BIN)/python -m shelfsync.server.apidocs docs/api

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
