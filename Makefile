# The first two targets are the README's two commands: `make serve`, `make test`.
# Both make the virtual environment themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_UP = pg_isready -q -h 127.0.0.1 -p 5432

.PHONY: serve test lint typecheck contracts unit pg sysdeps docs bench soak clean

# Debian tools the tests drive as independent peers (rclone checks the content
# hash, curl and wget resume downloads). Installed only when missing.
SYSDEPS := rclone:rclone wget:wget curl:curl

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

sysdeps:
	@missing=""; for pair in $(SYSDEPS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	  || { echo "could not install$$missing"; exit 1; }; fi

# Long runs, not part of `make test`: 100 simulated devices against one server
# (SQLite, then PostgreSQL; SOAK_ARGS, e.g. "--duration 60"), then 50 kill -9s.
SOAK_ARGS ?=
soak: $(STAMP) pg
	$(BIN)/python bench/soak.py $(SOAK_ARGS)
	SHELFSYNC_KILL_LOOPS=50 $(BIN)/python -m pytest -p no:cacheprovider -s tests/e2e/test_kill_loop.py

docs: $(STAMP)
	$(BIN)/python -m shelfsync.server.apidocs docs/api

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
