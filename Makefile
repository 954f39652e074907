# omnibus — common tasks. `make test` brings up the real brokers first.

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
TEST_FLAGS  ?= -race -timeout 25m -p 1
PKGS        ?= ./...
BROKERS     ?=
VENV        ?= .venv

.PHONY: all up down status test test-unit lint demo venv

all: lint test

## up: install (when missing) and start RabbitMQ, Redis, Kafka and RocketMQ on 127.0.0.1
up:
	scripts/brokers up $(BROKERS)

## down: stop the brokers that `make up` started
down:
	scripts/brokers down $(BROKERS)

status:
	scripts/brokers status $(BROKERS)

## venv: the Python environment of the interop tests (pika)
venv: $(VENV)/.installed
$(VENV)/.installed: scripts/python-requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/python-requirements.txt
	touch $@

## interop: the Celery interop tests, against a real Celery worker and client
## from the venv; only the brokers they use are started
.PHONY: interop
interop: BROKERS = rabbitmq redis
interop: up venv
	$(GO) test -race -count=1 -run Celery ./celery/...

## test: start the brokers, then run every test with the race detector,
## one package at a time: the broker tests share two cores with the brokers
test: up venv chromium
	$(GO) test $(TEST_FLAGS) $(PKGS)

## test-unit: the tests that need no broker (broker tests skip locally, fail under CI=true)
test-unit:
	$(GO) test $(TEST_FLAGS) $(PKGS)

## lint: gofmt, go vet, staticcheck
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)

## demo: publish and consume on the in-process broker (no server needed)
demo:
	$(GO) run ./examples/quickstart

## bench: the standard benchmark workloads on BROKER (memory, rabbitmq, redis,
## kafka, rocketmq, all, a comma-separated list, or a URL); named local brokers are
## started first. Writes bench/results/<time>/{results.json,summary.md,report.html}.
## BENCH_FLAGS passes flags to `omnibus bench`, e.g. BENCH_FLAGS="-duration 10s -reps 5".
BROKER      ?= memory
BENCH_FLAGS ?=
BENCH_NOTE  ?=
BENCH_OUT   ?= bench/results/$(shell date +%Y%m%d-%H%M%S)

.PHONY: bench chromium
bench:
	@case "$(BROKER)" in \
	  all) scripts/brokers up ;; \
	  *) for b in $$(echo "$(BROKER)" | tr , ' '); do \
	       case "$$b" in rabbitmq|redis|kafka|rocketmq) scripts/brokers up "$$b" ;; esac; \
	     done ;; \
	esac
	$(GO) run -buildvcs=true ./cmd/omnibus bench -out $(BENCH_OUT) -note "$(BENCH_NOTE)" $(BENCH_FLAGS) $(BROKER)

## chromium: install Debian's chromium when missing; the HTML report test renders in it
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [ -n "$$CHROMIUM" ]; then exit 0; fi; \
	sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	echo "installing chromium (apt-get install chromium)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$sudo apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || { \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y --no-install-recommends chromium; }
