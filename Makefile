# tagrate: `make run` starts the whole system, `make test` runs the tests.
# Both create the virtual environment and generate the gRPC stubs first:
# `make run` installs what running needs (requirements.txt), `make test`,
# `make lint` and `make bench` add the test tools (requirements-test.txt).

PYTHON ?= python3
# Processes `make test` spreads the modules over (pytest-xdist; 0 runs them in one process).
TEST_WORKERS ?= 2
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tagrate-installed
TEST_STAMP := $(VENV)/.tagrate-test-installed
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check
# A step's line, like the supervisor's (`    run | ...`).
SAY := printf '%7s | %s\n' make
PROTOS := $(shell find protos -name '*.proto')
STUBS  := gen/tagrate/PROTOS_SHA256
# Source folders put on the venv's import path (no packaging step needed).
SRC_DIRS := common gen gateway dataset-service tagger-service rater-service trainer-service cli

.PHONY: run test lint typecheck format protos check-protos bench venv test-venv clean kubectl browser

run: $(STUBS)
	@$(SAY) "starting the services (the first start also exports the model to ONNX and quantizes it: under a minute)"
	@$(PY) -m tagrate_common.supervisor

test: $(STUBS) $(TEST_STAMP) kubectl browser
	$(PY) protos/generate.py --check
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(TEST_STAMP) typecheck
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache --no-logo

# mypy over the gateway with the typed gRPC stubs (pyproject.toml's [tool.mypy]).
typecheck: $(STUBS) $(TEST_STAMP)
	$(VENV)/bin/mypy

format: $(TEST_STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

protos: $(STAMP)
	$(PY) protos/generate.py

check-protos: $(STAMP)
	$(PY) protos/generate.py --check

# tests/deploy renders the Kubernetes manifests with kubectl's built-in
# kustomize: install kubectl when missing (apt-get, as root); without it those
# tests fail and say so.
kubectl:
	@command -v kubectl >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client; }; } || \
		echo "kubectl could not be installed; the deploy/ tests will fail" >&2

# tests/ui drive the browser UI in Debian's headless Chromium (Playwright's
# own browser download is not reachable offline): install it when missing
# (apt-get, as root); without it those tests skip and say so.
browser:
	@command -v chromium-headless-shell >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell; } || \
		echo "chromium-headless-shell could not be installed; the tests/ui browser tests will skip" >&2

bench: $(STUBS) $(TEST_STAMP)
	$(PY) -m bench $(BENCH_ARGS)

venv: $(STAMP)

test-venv: $(TEST_STAMP)

$(STAMP): requirements.txt
	@$(SAY) "installing what running needs (requirements.txt) into $(VENV)/: a few minutes the first time"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@start=$$(date +%s); $(PIP_INSTALL) -r requirements.txt && \
		$(SAY) "installed in $$(( $$(date +%s) - start )) s ($$(du -sm $(VENV) | cut -f1) MB)"
	@$(PY) -c 'import site, pathlib, sys; pathlib.Path(site.getsitepackages()[0], "tagrate.pth").write_text("".join(str(pathlib.Path(d).resolve()) + "\n" for d in sys.argv[1:]))' $(SRC_DIRS)
	@# The `tagrate` command line (cli/): a console script running this venv's Python.
	@printf '#!%s\nimport sys\nfrom tagrate_cli.main import main\nsys.exit(main())\n' "$(abspath $(PY))" > $(VENV)/bin/tagrate
	@chmod +x $(VENV)/bin/tagrate
	@touch $@

$(TEST_STAMP): requirements-test.txt $(STAMP)
	@$(SAY) "installing the test, lint and benchmark tools (requirements-test.txt)"
	@$(PIP_INSTALL) -r requirements-test.txt
	@touch $@

$(STUBS): $(PROTOS) protos/generate.py $(STAMP)
	@$(SAY) "generating the gRPC stubs (gen/)"
	@$(PY) protos/generate.py

clean:
	rm -rf $(VENV) gen .pytest_cache .ruff_cache
