# The two commands a newcomer needs:  `make run`  and  `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: run test setup browser lint bench bench-smoke clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch node_modules/.installed

setup: $(STAMP) node_modules/.installed
	$(BIN)/python -m formwork.ui.assets

## run: the server at http://$(HOST):$(PORT) on the embedded SQLite database, with the CRM installed and
## its automations running (`formwork run` supervises the web server and a worker; Ctrl-C stops both)
run: setup
	$(BIN)/formwork init --with-crm
	$(BIN)/formwork run --host $(HOST) --port $(PORT)

## browser: Debian's chromium and a CJK font for the browser tests (Playwright drives it; no browser download)
browser:
	@{ command -v chromium >/dev/null 2>&1 && fc-list :lang=zh 2>/dev/null | grep -q .; } || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null; }

## test: the whole suite; on PostgreSQL too when FORMWORK_TEST_DATABASE_URL is set (.ci/run sets it).
## --dist loadscope keeps each module on one worker, so a module's CRM copy, live server and chromium are
## set up once rather than on every worker its tests were spread over (tests/browser: 252 s -> 200 s).
test: setup browser
	$(BIN)/pytest -q -n 4 --dist loadscope

## lint: ruff over the code, tests and benchmarks; mypy (settings in pyproject.toml) over the code
lint: $(STAMP)
	$(BIN)/ruff check formwork formwork_templates tests bench
	$(BIN)/mypy formwork formwork_templates

bench: setup
	$(BIN)/python -m bench.run

## bench-smoke: every benchmark workload once at S (10k rows), on PostgreSQL too when FORMWORK_TEST_DATABASE_URL
## is set, so the harness never rots (.ci/run runs it; timings are printed, never asserted)
bench-smoke: $(STAMP)
	$(BIN)/python -m bench.run --rows 10000 --iterations 1 --import-rows 500 --import-iterations 1 \
	  --ddl-iterations 1 --soak-seconds 2 \
	  $(if $(FORMWORK_TEST_DATABASE_URL),--backend both --pg $(FORMWORK_TEST_DATABASE_URL),--backend sqlite)

clean:
	rm -rf $(VENV) node_modules instance formwork/ui/static/vendor
