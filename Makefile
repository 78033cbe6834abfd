# objdet — the two everyday commands are `make run` and `make test`; both set up what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CACHE        ?= $(CURDIR)/.cache
PORT         ?= 5000
HOST         ?= 127.0.0.1
ORT_DYLIB_PATH ?= $(CACHE)/ort/libonnxruntime.so
export ORT_DYLIB_PATH
CARGO        ?= cargo

.PHONY: help setup setup-test setup-lint setup-tools build run test lint fmt bench load-test

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## fetch the ONNX Runtime library (pinned PyPI wheel) into .cache/ort
	@scripts/setup.sh ort

setup-test: ## + moto (local S3) and AWS's Lambda Runtime Interface Emulator into .cache/test
	@scripts/setup.sh ort test

setup-lint: ## + sam, cfn-lint, checkov, hadolint into .cache/lint
	@scripts/setup.sh lint

setup-tools: ## + cargo-lambda into .cache/tools
	@scripts/setup.sh tools

build: setup ## release build of objdet and bootstrap
	$(CARGO) build --release --bins

run: setup ## serve the API on http://$(HOST):$(PORT) with the bundled model
	HOST=$(HOST) PORT=$(PORT) $(CARGO) run --release --bin objdet -- serve

test: setup-test ## all tests: real model, real ORT, real HTTP, local S3 and the Lambda emulator
	$(CARGO) build --release --bins
	$(CARGO) test --release --all-targets

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: setup ## per-stage timings vs bare session.run, cold start, peak RSS (see docs/performance.md)
	$(CARGO) build --release --bins
	$(CARGO) bench --bench stages
