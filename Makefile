# objdet — the two everyday commands are `make run` and `make test`; both set up what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CACHE        ?= $(CURDIR)/.cache
PORT         ?= 5000
HOST         ?= 127.0.0.1
ORT_DYLIB_PATH ?= $(CACHE)/ort/libonnxruntime.so
export ORT_DYLIB_PATH
CARGO        ?= cargo

.PHONY: help setup setup-test setup-lint setup-tools build run test ui-test lint fmt bench tune load-test split-experiment int8-experiment quantize scaled-decode-study test-models \
        contract-test fuzz fuzz-smoke soak

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## fetch the ONNX Runtime library (pinned PyPI wheel) into .cache/ort, and nasm (JPEG SIMD)
	@scripts/setup.sh ort nasm

setup-test: ## + moto (local S3) and AWS's Lambda Runtime Interface Emulator into .cache/test
	@scripts/setup.sh ort nasm test

setup-lint: ## + sam, cfn-lint, checkov, hadolint into .cache/lint
	@scripts/setup.sh lint

setup-tools: ## + cargo-lambda into .cache/tools
	@scripts/setup.sh tools

build: setup ## release build of objdet and bootstrap (as the Lambda image has it: without the CLI feature)
	$(CARGO) build --release --bin objdet
	$(CARGO) build --release --no-default-features --bin bootstrap

run: setup ## serve the API on http://$(HOST):$(PORT) with the bundled model
	HOST=$(HOST) PORT=$(PORT) ORT_OPTIMIZED_MODEL_PATH=$${ORT_OPTIMIZED_MODEL_PATH:-$(CACHE)/ort/optimized.onnx} \
	  $(CARGO) run --release --bin objdet -- serve

test: setup-test ## all tests: real model, real ORT, real HTTP, local S3 and the Lambda emulator
	XDG_CACHE_HOME=$(CACHE) $(CARGO) test --release --lib --bins --tests

ui-test: build setup-test ## the browser page in Debian's chromium via playwright-core (installs both; screenshots in target/ui-artifacts)
	scripts/ui-test.sh

lint: setup ## rustfmt, clippy (warnings are errors), no import cycle between the modules of src/
	python3 scripts/import-cycles.py > /dev/null
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	$(CARGO) clippy --release --no-default-features --lib --bin bootstrap -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: setup ## stage timings vs bare session.run, thread layouts, Python reference, cold start, peak RSS
	@scripts/setup.sh pyref
	$(CARGO) bench --bench stages

TUNE_MEMORY ?= 512,1024,1536,1769,2048,3008,3538,5307
tune: build setup-test ## Lambda memory sizes emulated (root, cgroup v1): 10 study-size photos per invocation, table + tune.csv + tune.svg in target/tune
	@mkdir -p target/tune
	@test -f target/tune/images/img-009.jpg || target/release/objdet dataset --count 10 --out target/tune/images > /dev/null
	target/release/objdet tune --memory $(TUNE_MEMORY) --images target/tune/images --batch 10 --warm 5 \
	  --out target/tune/tune.csv --plot target/tune/tune.svg --bootstrap target/release/bootstrap

split-experiment: build ## split offloading, one core per side, 20/50/200 images at 8 and 80 Mbit/s (docs/split-this-machine.*)
	bash scripts/split-experiment.sh

test-models: ## rebuild the detector fixtures and their oracles (Ultralytics + torch, TensorFlow; several GB, ~1 h on 2 cores; not run by CI)
	scripts/test-models.sh

MODEL ?= tests/fixtures/models/shapes-yolo11n.onnx
DATA  ?= tests/fixtures/shapes/data.yaml
quantize: build ## int8 variants of MODEL (s8s8 as Ultralytics, u8s8 reduce_range) calibrated through objdet's pipeline on DATA; eval + floors table (not in CI)
	@scripts/setup.sh int8
	.cache/int8/bin/python python/quantize/quantize.py --model $(MODEL) --data $(DATA) --calib-data $(or $(CALIB),$(DATA)) --out $(or $(OUT),target/quantize)

scaled-decode-study: build ## JPEG_SCALED_DECODE on vs off: mAP and ms per image on 100 labelled 12 MP photos (docs/scaled-decode.md)
	scripts/scaled-decode-study.sh

int8-experiment: ## optional int8 variants vs fp32 (agreement and speed); none met the targets here
	@scripts/setup.sh int8
	.cache/int8/bin/python python/int8/quantize_eval.py

load-test: setup ## closed-loop load at 1, 2, 4, 8 concurrent clients against objdet serve
	$(CARGO) bench --bench load

contract-test: build setup-test ## schemathesis from src/openapi.json against objdet serve (+ moto): no 5xx, every answer in schema
	scripts/contract-test.sh $(or $(EXAMPLES),100)

FUZZ_RUNS ?= 1000000
FUZZ_TARGETS := body_scanner image_decode lambda_event
fuzz: ## cargo fuzz (nightly), each target FUZZ_RUNS (1,000,000) executions from fuzz/corpus
	@scripts/fuzz.sh $(FUZZ_RUNS) $(FUZZ_TARGETS)

fuzz-smoke: ## a short run of every fuzz target (CI)
	@scripts/fuzz.sh 20000 $(FUZZ_TARGETS)

soak: setup ## 10 minutes of 8 clients mixing good, bad and slow requests; RSS sampled every 5 s
	SOAK_SECS=$${SOAK_SECS:-600} $(CARGO) bench --bench soak

LAMBDA_PORT ?= 9000
.PHONY: lambda-watch verify-model

lambda-watch: setup setup-tools ## cargo lambda watch: the bootstrap behind a local Lambda/function-URL emulator
	PATH=$(CACHE)/tools/bin:$$PATH cargo lambda watch -A 127.0.0.1 -P $(LAMBDA_PORT) --release --bin bootstrap \
	  --env-var ORT_DYLIB_PATH=$(ORT_DYLIB_PATH),MODEL_PATH=$(CURDIR)/models/centernet_mobilenetv3_coco.onnx

verify-model: ## check the bundled model and labels against models/SHA256SUMS
	cd models && sha256sum -c SHA256SUMS

# ---- IaC, images and deployment (docs/deploy.md) -------------------------------------------------
TEMPLATE   ?= template.yaml
EVENT      ?= events/apigw-http-detect-inline.json
PLATFORM   ?= linux/amd64
IMAGE_TAG  ?= v1
.PHONY: lint-iac test-iac check-glibc image sam-build deploy deploy-guided local-invoke start-api push-server

lint-iac: ## sam validate --lint, samtranslator + cfn-lint, checkov, hadolint (TEMPLATE=template.yaml)
	scripts/lint-iac.sh $(TEMPLATE)

test-iac: ## template.yaml's promises (auth per route, limits per function), and a cyclic template must fail lint-iac
	scripts/setup.sh lint
	$(CACHE)/lint/bin/python scripts/sam-translate.py template.yaml target/iac/checked.cfn.json
	$(CACHE)/lint/bin/python scripts/sam-translate.py infra/ec2.yaml target/iac/ec2.cfn.json
	scripts/test-template.py target/iac/checked.cfn.json
	scripts/test-template.py --must-fail
	scripts/test-lint-iac.sh

check-glibc: ## release binaries must need at most GLIBC_2.34 (AWS Lambda AL2023)
	scripts/check-glibc.sh 2.34 target/release/objdet target/release/bootstrap $(CACHE)/ort/libonnxruntime.so

image: ## docker build both targets (objdet-lambda, objdet-server) for PLATFORM
	docker build --platform $(PLATFORM) --target lambda -t objdet-lambda:$(IMAGE_TAG) .
	docker build --platform $(PLATFORM) --target server -t objdet-server:$(IMAGE_TAG) .

sam-build: ## sam build (builds the lambda image from the Dockerfile)
	$(CACHE)/lint/bin/sam build --template-file $(TEMPLATE)

deploy-guided: sam-build ## first deployment: asks for parameters and writes samconfig.toml
	$(CACHE)/lint/bin/sam deploy --guided

deploy: sam-build ## deploy with samconfig.toml
	$(CACHE)/lint/bin/sam deploy

FUNCTION   ?= $(if $(findstring s3-,$(EVENT)),UploadTriggerFunction,DetectApiFunction)
local-invoke: ## sam local invoke with EVENT=events/....json (needs Docker; s3-* events go to the trigger)
	$(CACHE)/lint/bin/sam local invoke $(FUNCTION) --event $(EVENT)

start-api: ## sam local start-api on 127.0.0.1:3000 (needs Docker)
	$(CACHE)/lint/bin/sam local start-api --host 127.0.0.1 --port 3000

push-server: ## push the server image to the EC2 variant's ECR repository (STACK=objdet)
	scripts/push-server.sh $(or $(STACK),objdet) $(PLATFORM)
