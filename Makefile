# Kasse — the front door. `make up` runs the shop, `make test` tests it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# deploy/tools/bootstrap.sh puts the pinned uv and Go here when the machine has none (or another version); helm too.
export PATH := $(CURDIR)/.kasse/bin:$(PATH)
UV ?= uv
PYTHON ?= python3
BOOTSTRAP := deploy/tools/bootstrap.sh
STACK := $(PYTHON) deploy/local/stack.py
SHOP := $(UV) run --frozen python deploy/local/shop.py

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

.PHONY: bootstrap bootstrap-up bootstrap-uv sync
bootstrap: ## Install what make test needs and is missing (pinned uv and Go; JDK, Maven, npm, Chromium from Debian), or print the command
	@$(BOOTSTRAP) --for test
bootstrap-up: ## The same for make up (pinned uv and Go; JDK, Maven)
	@$(BOOTSTRAP) --for up
bootstrap-uv:
	@$(BOOTSTRAP) --for uv
sync: bootstrap-uv ## Install the workspace (all services, contracts, dev tools) from uv.lock
	# Bytecode compiled once here (~10 s): every service and test subprocess then starts without
	# compiling its dependencies again (2.5 s of CPU each where PYTHONDONTWRITEBYTECODE is set).
	$(UV) sync --frozen --compile-bytecode

.PHONY: stack-up stack-down stack-status stack-logs
stack-up: bootstrap-up ## Provision (first time: downloads) and start Kafka, FerretDB and stripe-mock on 127.0.0.1
	$(STACK) start
stack-down: ## Stop the local stack
	$(STACK) stop
stack-status: ## Show the local stack
	$(STACK) status
stack-logs: ## Tail the local stack's logs
	$(STACK) logs

.PHONY: up down status logs
up: bootstrap-up sync stack-up ## Run the shop: stack, the five services, sample catalogue; prints the URLs
	$(SHOP) start
down: ## Stop everything `make up` started (services, then the stack)
	-$(SHOP) stop
	$(STACK) stop
status: ## Show the stack and the services
	-$(STACK) status
	-$(SHOP) status
logs: ## Tail the services' logs
	$(SHOP) logs

.PHONY: tools
tools: bootstrap ## Offline checkers for deploy/ (helm from the Go module proxy, the Compose schema from npm); idempotent
	deploy/tools/install-helm.sh
	deploy/tools/install-compose-schema.sh

.PHONY: browser-deps
browser-deps: bootstrap ## The pinned axe-core (npm ci) the storefront's browser tests inject; Chromium comes from Debian
	npm ci --silent --no-audit --no-fund --prefix services/storefront/tests/browser

.PHONY: test test-unit test-integration
test: bootstrap sync tools contracts-compat browser-deps ## Run every test tier (unit, integration, e2e) on real Kafka, FerretDB and stripe-mock
	$(UV) run --frozen pytest
test-unit: bootstrap-up sync tools ## Only the unit tier (no infrastructure)
	$(UV) run --frozen pytest -m unit
test-integration: bootstrap sync browser-deps ## Only the integration and e2e tiers
	$(UV) run --frozen pytest -m "integration or e2e"

.PHONY: contracts contracts-compat
contracts-compat: sync ## The contract models vs the last 2 committed versions of the schemas (git history): no breaking change
	$(UV) run --frozen python -m kasse_contracts.compat --history 2
contracts: sync ## Regenerate the JSON Schemas and the AsyncAPI document from the contract models
	$(UV) run --frozen python -m kasse_contracts.codegen

.PHONY: bench bench-orders
ORDERS_BENCH_ORDERS ?= 100
BENCH_EVENTS ?= 5000000
BENCH_RSS_EARLY_EVENTS ?= 1000000
WEBHOOKS_BENCH_EVENTS ?= 1000
STOREFRONT_BENCH_SECONDS ?= 10
bench: bootstrap-up sync stack-up ## Metrics ingest vs a raw loop and Quix Streams, KPI freshness; webhooks deliveries/s and p99 vs plain Kafka; storefront pages vs a bare route; idle store CPU; the 20,000-order document bound; a burst of orders to payment (loopback only)
	$(UV) run --frozen --with quixstreams --with orjson --with confluent-kafka python services/metrics/bench/bench.py --events $(BENCH_EVENTS) --rss-early-events $(BENCH_RSS_EARLY_EVENTS)
	$(UV) run --frozen python services/webhooks/bench/bench.py --events $(WEBHOOKS_BENCH_EVENTS)
	$(UV) run --frozen python services/storefront/bench/bench.py --seconds $(STOREFRONT_BENCH_SECONDS)
	$(MAKE) bench-idle bench-bound bench-outage bench-orders

.PHONY: bench-idle bench-bound bench-outage
bench-orders: bootstrap-up sync ## A burst of 100 orders through the HTTP APIs, no faults: time to payment, orders/min placed->paid->shipped, where the time goes (own Kafka/FerretDB/stripe-mock, ports 19712-19716)
	$(UV) run --frozen python -m kasse_testkit.orders_bench --orders $(ORDERS_BENCH_ORDERS) --own-stack
IDLE_BENCH_ORDERS ?= 10000
IDLE_BENCH_WINDOW_S ?= 300
BOUND_BENCH_ORDERS ?= 20000
bench-idle: bootstrap-up sync ## The store's idle CPU on a fresh shop and after 10,000 orders' data (own Kafka/FerretDB/stripe-mock, ports 19632-19636)
	$(UV) run --frozen python services/common/bench/idle_bench.py --orders $(IDLE_BENCH_ORDERS) --window $(IDLE_BENCH_WINDOW_S)
bench-outage: bootstrap-up sync stack-up ## A store outage of 65 s (own FerretDB on port 37712) loses and dead-letters nothing; ~2 min, so not in make test
	$(UV) run --frozen pytest services/common/bench/store_outage_check.py -q -p no:cacheprovider
bench-bound: bootstrap-up sync stack-up ## 20,000 orders for one product: its document's size stays under the dedupe bound
	$(UV) run --frozen python services/common/bench/dedupe_bench.py --orders $(BOUND_BENCH_ORDERS)

.PHONY: lighthouse
lighthouse: bootstrap sync stack-up ## Lighthouse 12.2.3 (mobile) on the storefront's home, search, product, cart, checkout; prints the scores
	npm ci --silent --no-audit --no-fund --prefix services/storefront/bench/lighthouse
	CHROME_PATH=/usr/bin/chromium $(UV) run --frozen python services/storefront/bench/lighthouse.py

.PHONY: dlq
SERVICE ?= cart
ARGS ?= list
dlq: ## A service's dead letters: make dlq SERVICE=cart ARGS="list" | ARGS="show 0:12" | ARGS="redrive 0:12"
	$(UV) run --frozen python -m kasse_common.dead_letters $(SERVICE) $(ARGS)

.PHONY: chaos
CHAOS_ORDERS ?= 300
chaos: bootstrap-up sync ## Chaos on an OWN Kafka/FerretDB/stripe-mock (ports 19412-19416): orders while every part is killed -9
	$(UV) run --frozen python -m kasse_testkit.chaos --orders $(CHAOS_ORDERS) --own-stack

.PHONY: lint format
lint: sync ## ruff, and mypy on the contracts and every service's code (the kit and testkit included)
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy contracts/src $(wildcard services/*/src)

format: sync ## Apply ruff's formatting and safe fixes
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .
