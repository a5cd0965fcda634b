# Two commands for a fresh machine with only Python: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU build of torch. Where the local wheel is not available, point pip at a CPU wheel index,
# e.g. `make serve TORCH_PIP_ARGS="--index-url <cpu wheel index>"`.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck check bench eval eval-retrieval clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/kefu kb bootstrap
	$(VENV)/bin/kefu keys demo --port $(PORT)
	$(VENV)/bin/kefu serve --host $(HOST) --port $(PORT)

# mypy (about a minute with a cold cache) runs beside the tests, which mostly keep one core busy;
# its report is printed after them and either failing fails the target.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@mkdir -p var; echo "$(VENV)/bin/mypy (beside the tests)"; \
	$(VENV)/bin/mypy > var/mypy.out 2>&1 & mypy_pid=$$!; \
	$(PY) -m pytest -q; tests=$$?; \
	wait $$mypy_pid; types=$$?; cat var/mypy.out; \
	test $$tests -eq 0 && test $$types -eq 0

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The bundled draft cases (eval/data/drafts_cases.jsonl) through the suggestion pipeline, against the
# demo KB, with the CI bars; writes var/eval/report.{json,md,html}. EVAL_ARGS adds options, e.g.
# `make eval EVAL_ARGS="--baseline var/eval/old.json"`.
EVAL_DIR ?= var/eval
EVAL_ARGS ?=
eval: $(STAMP)
	$(VENV)/bin/kefu eval drafts --report $(EVAL_DIR) $(EVAL_ARGS) \
		--fail-under error_rule_pass=1.0 groundedness=1.0 escalation_recall=1.0 intent_accuracy=0.9 openings_once=1.0

eval-retrieval: $(STAMP)
	$(VENV)/bin/kefu eval retrieval --kb ../shared/data/bq-dev/kb.jsonl --queries ../shared/data/bq-dev/queries.jsonl

# kefu bench: POST /v1/suggestions under 16 concurrent clients on a throwaway deployment of the demo KB.
# The 100,000-snippet KB: `make bench BENCH_ARGS="--kb 100k --keep var/bench100k"` (the first run sets it
# up: 45-60 min, mostly `kb tune`; later runs reuse it). Figures: docs/benchmarks.md.
BENCH_ARGS ?=
bench: $(STAMP)
	$(VENV)/bin/kefu bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
