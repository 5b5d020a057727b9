# Everything runs inside .venv, created and installed on first use (Python 3.11 and pip suffice).
#   make test                       create .venv, install, run the test suite
#   make demo                       CPU end to end: classical engine, dev split, all tasks, the report, and
#                                   the declared example task examples/tweet-mood.yaml
#   make run ARGS="task=5 ..."      python main.py with hydra overrides (needs a served model)
#   make notebooks / make report    execute the notebooks / write reports/technical_report.{md,html}
#   make lab                        JupyterLab on notebooks/ with the venv (127.0.0.1; ARGS go to jupyter lab)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
OUT    ?= outputs

.PHONY: install test run demo notebooks lab report lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,notebooks]"
	@# Task 8's checker runs Triton kernels on the CPU: torch (CPU build, pinned) and triton.
	@$(BIN)/python -m pip install --quiet -e ".[kernels]" \
	  || echo "warning: the [kernels] extra did not install; task-8 checker tests will be skipped"
	@# engine=ray's tests (HTTP mode through Ray Data); never ray[llm], which brings vLLM.
	@$(BIN)/python -m pip install --quiet -e ".[ray]" \
	  || echo "warning: the [ray] extra did not install; engine=ray tests will be skipped"
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

run: $(STAMP)
	$(BIN)/python main.py $(ARGS)

demo: $(STAMP)
	$(BIN)/python main.py engine=classical split=dev task=all out_dir=$(OUT)/demo $(ARGS)
	$(BIN)/python -m longicl.report $(OUT)/demo -o reports
	$(BIN)/python main.py engine=classical split=dev task=examples/tweet-mood.yaml out_dir=$(OUT)/demo-tweet-mood

notebooks: $(STAMP)
	$(BIN)/python -m longicl.notebooks $(ARGS)

lab: $(STAMP)
	$(BIN)/python -m jupyterlab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 $(ARGS)

report: $(STAMP)
	@test -f $(OUT)/demo/run.json || $(MAKE) --no-print-directory demo
	$(BIN)/python -m longicl.report $(OUT)/demo -o reports $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_dryrun.py

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache reports/notebooks
