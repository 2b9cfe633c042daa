# The two commands of the README: `make demo` (main job, embedded default) and `make test`.
# Both set up a fresh machine first (scripts/setup.sh is idempotent and fast when up to date).
SHELL := /bin/bash
VENV ?= .venv
JEMALLOC := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/aarch64-linux-gnu/libjemalloc.so.2))
RUN := $(if $(JEMALLOC),LD_PRELOAD=$(JEMALLOC) ,)
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck bench proto

setup:
	@bash scripts/setup.sh

demo: setup
	$(RUN)$(VENV)/bin/qdrant-sift demo

test: setup
	$(VENV)/bin/ruff check .
	bash scripts/typecheck.sh
	$(RUN)$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# mypy --strict over the qdrant_sift namespace ([tool.mypy] in pyproject.toml); cached in build/.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	bash scripts/typecheck.sh

typecheck: setup
	bash scripts/typecheck.sh

bench: setup
	$(RUN)$(VENV)/bin/python bench/bench_select.py

proto: setup
	bash scripts/gen_proto.sh
