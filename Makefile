# omnibus — common tasks. `make test` brings up the real brokers first.

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
TEST_FLAGS  ?= -race -timeout 25m -p 1
# Every package of every module of the workspace (go.work).
PKGS        ?= github.com/omnibus-mq/omnibus/...
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

## venv: the Python environment of the interop tests (pika, Celery, kombu)
venv: $(VENV)/.installed
$(VENV)/.installed: scripts/python-requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/python-requirements.txt
	touch $@

## interop: the Celery interop tests, against a real Celery worker and client
## from the venv, every direction on RabbitMQ and on Redis (kombu's Redis
## transport, adapters/kombu); only the brokers they use are started
.PHONY: interop
interop: BROKERS = rabbitmq redis
interop: up venv
	$(GO) test -race -count=1 ./celery/... ./tools/internal/integration/celery/

## bench-celery: a real Celery worker (prefork, threads) and omnibus's workers
## drain the same preloaded queue of no-op tasks on RabbitMQ and on Redis;
## writes tools/comparisons/celery/results/<time>/{results.json,results.md}.
## BENCH_CELERY_FLAGS passes flags, e.g. BENCH_CELERY_FLAGS="-n 50000 -brokers redis".
BENCH_CELERY_FLAGS ?=
.PHONY: bench-celery
bench-celery: BROKERS = rabbitmq redis
bench-celery: up venv
	$(GO) run ./tools/comparisons/celery -python $(VENV)/bin/python $(BENCH_CELERY_FLAGS)

## test: start the brokers, then run every test of every module with the
## race detector, one package at a time: the broker tests share two cores
## with the brokers
test: up venv chromium
	$(GO) test $(TEST_FLAGS) $(PKGS)

## test-unit: the tests that need no broker (broker tests skip locally, fail under CI=true)
test-unit:
	$(GO) test $(TEST_FLAGS) $(PKGS)

## lint: gofmt, every module tidy, go vet, staticcheck
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@set -e; for m in $$($(GO) list -m -f '{{.Dir}}'); do \
	  (cd "$$m" && GOWORK=off $(GO) mod tidy -diff >/dev/null) || { echo "go.mod of $$m is not tidy: run go mod tidy there"; exit 1; }; \
	done
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
	$(GO) run -buildvcs=true ./tools/cmd/omnibus bench -out $(BENCH_OUT) -note "$(BENCH_NOTE)" $(BENCH_FLAGS) $(BROKER)

## compare: the same workloads through omnibus, the raw clients and watermill on
## BROKER (rabbitmq, redis, kafka, rocketmq or all; memory has nothing to compare), plus
## the SMS task workload and, on Redis, the pipelining measurement. Writes
## tools/comparisons/results/<broker>/COMPARISON.md. COMPARE_FLAGS passes flags.
COMPARE_FLAGS ?=
.PHONY: compare
compare:
	@b="$(BROKER)"; [ "$$b" = memory ] && b=all; \
	if [ "$$b" = all ]; then scripts/brokers up; else for x in $$(echo "$$b" | tr , ' '); do scripts/brokers up "$$x"; done; fi; \
	$(GO) run ./tools/comparisons -broker "$$b" $(COMPARE_FLAGS)

## chromium: install Debian's chromium when missing; the HTML report test renders in it
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [ -n "$$CHROMIUM" ]; then exit 0; fi; \
	sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	echo "installing chromium (apt-get install chromium)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$sudo apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || { \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y --no-install-recommends chromium; }

## chaos: fault injection on dedicated broker instances (tools/internal/chaos/README.md):
## brokers SIGKILLed and restarted under load, consumer processes SIGKILLed
## and SIGTERMed mid-work, handlers that panic, hang or always fail.
## CHAOS_MESSAGES per scenario on CHAOS_BROKERS; prints the table and writes
## it to tools/internal/chaos/results/<time>.md. `make test` runs the same tests, smaller.
CHAOS_MESSAGES ?= 2000
CHAOS_BROKERS  ?= redis,rabbitmq,kafka,rocketmq
comma := ,
.PHONY: chaos
chaos:
	scripts/brokers up $(subst $(comma), ,$(CHAOS_BROKERS))
	OMNIBUS_CHAOS_MESSAGES=$(CHAOS_MESSAGES) OMNIBUS_CHAOS_BROKERS=$(CHAOS_BROKERS) \
	OMNIBUS_CHAOS_RESULTS=$(CURDIR)/tools/internal/chaos/results \
	  $(GO) test -count=1 -v -timeout 30m -run '^TestChaos$$' ./tools/internal/chaos/

## fuzz: run every fuzz target for FUZZTIME each, one at a time (plain
## `go test` runs only their seed corpora, in testdata/fuzz and the f.Add calls)
FUZZTIME ?= 20s
.PHONY: fuzz
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; \
	    $(GO) test -run "^$$t\$$" -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -parallel 2 $$pkg; \
	  done; \
	done

## cluster-up / cluster-down: a replicated cluster of NAME (kafka, redis, rabbitmq, rocketmq) in network
## namespaces of its own (scripts/clusters; root). scripts/clusters exec CMD
## runs CMD where the cluster can be reached.
NAME ?= kafka
.PHONY: cluster-up cluster-down cluster-test cluster-chaos cluster-bench
cluster-up:
	scripts/clusters up $(NAME)

cluster-down:
	scripts/clusters down

## cluster-test: for each broker family with a cluster (CLUSTERS), bring the
## cluster up, run the conformance suite, the group and failure tests, the
## task tests and the SMS end-to-end test against it, and tear it down.
CLUSTERS ?= kafka redis rabbitmq rocketmq
cluster-test:
	scripts/brokers up kafka redis rabbitmq rocketmq
	scripts/cluster-test $(CLUSTERS)

## cluster-chaos: for each family of CLUSTERS, bring its cluster up and run
## every fault scenario (leader killed, isolated, cut off from its peers;
## a lossy, a slow and a high-latency client link; the negative control) with publishers
## and consumers running; tables to tools/internal/chaos/results.
## CLUSTER_CHAOS picks scenarios, e.g. CLUSTER_CHAOS=leader-kill,weak-partition.
CLUSTER_CHAOS ?=
cluster-chaos:
	scripts/brokers up kafka redis rabbitmq rocketmq
	OMNIBUS_CLUSTER_CHAOS=$(CLUSTER_CHAOS) scripts/cluster-test --chaos $(CLUSTERS)

## cluster-bench: what replication costs on the cluster of NAME (kafka, redis,
## rabbitmq): the bench workloads with and without replicated
## acknowledgements on the same nodes, interleaved, at the maximum and at
## equal fixed rates; results to bench/results/cluster-NAME-<time>.
cluster-bench:
	scripts/brokers up $(NAME)
	scripts/cluster-bench $(NAME) $(BENCH_FLAGS)
