# digest: two commands on a fresh machine -- `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_ENV := DIGEST_CONFIG=examples/demo/digest.toml DIGEST_DATABASE_URL=sqlite:///var/demo/digest.db \
	DIGEST_OUTBOX_DIR=var/demo/outbox DIGEST_VAR_DIR=var/demo DIGEST_TRANSPORT=file

.PHONY: demo test test-moved-clock lint typecheck unit bench serve-demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## demo: set up and run the daily job on the bundled demo content (no network, no keys)
demo: $(STAMP)
	@echo "==> writing the demo feeds (RSS 2.0, Atom, JSON Feed) with dates relative to now"
	@$(BIN)/python examples/demo/make_feeds.py --out examples/demo/feeds
	@echo "==> importing the demo subscribers (subscribers/example.csv) into var/demo/digest.db"
	@$(DEMO_ENV) $(BIN)/digest subscribers import subscribers/example.csv
	@echo "==> collect, then the daily job of the two days before today (a story thread runs over them)"
	@$(DEMO_ENV) $(BIN)/digest collect
	@$(DEMO_ENV) $(BIN)/python examples/demo/earlier_days.py
	@echo "==> the daily job: digest run (collect, then send through the file outbox)"
	@$(DEMO_ENV) $(BIN)/digest run || test $$? -eq 3
	@$(DEMO_ENV) $(BIN)/digest preview --output var/demo/preview.html
	@echo
	@echo "Done. Messages (one .eml per subscriber and edition): $(CURDIR)/var/demo/outbox/"
	@echo "HTML preview of today's edition:          $(CURDIR)/var/demo/preview.html"
	@echo "  (its Ford and Xiaomi story has an 'Earlier:' line: the deal and the talks of the two days before)"
	@echo "Run 'make demo' again: nothing is sent twice. 'make serve-demo' serves the landing page, unsubscribe and the archive (PORT=8080 for another port)."

## serve-demo: the web app (landing page, unsubscribe, preferences, archive) over the demo database;
## another port: make serve-demo PORT=8080 (the links in pages follow it)
PORT ?= 8000
serve-demo: $(STAMP)
	$(DEMO_ENV) DIGEST_BASE_URL=http://127.0.0.1:$(PORT) $(BIN)/digest serve --no-scheduler --port $(PORT)

## test: lint, type-check and the whole test suite
test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

## test-moved-clock: the test suite again with the system clock moved (default 400 days on), to
## prove that no test depends on the real date. Debian's libfaketime 0.9.10: `-m` is its
## thread-safe variant (the tests run SMTP, HTTP and scheduler threads); monotonic time stays
## real, so timed waits keep their length (with it faked, 0.9.10 leaves Python's lock waits
## unbounded); tests/moved_clock/sitecustomize.py works around its EINVAL on Python's sleeps.
## Servers keep the real time: PostgreSQL, Redis and RabbitMQ, and the chromium, redis-server and
## rabbitmqctl that tests start themselves (tests/moved_clock/bin runs them without libfaketime).
MOVED_CLOCK ?= +400d
test-moved-clock: $(STAMP)
	@command -v faketime >/dev/null || { echo "test-moved-clock needs faketime (apt-get install faketime)" >&2; exit 1; }
	FAKETIME_DONT_FAKE_MONOTONIC=1 PYTHONPATH=$(CURDIR)/tests/moved_clock PATH=$(CURDIR)/tests/moved_clock/bin:$$PATH \
		faketime -m -f "$(MOVED_CLOCK)" $(BIN)/pytest -q

## bench: every benchmark in benchmarks/, one table (QUICK=1: small counts, a smoke run)
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(if $(QUICK),--quick)

clean:
	rm -rf var/demo examples/demo/feeds .pytest_cache .mypy_cache .ruff_cache
