# Two commands on a fresh machine: `make demo` and `make test`. Every target
# installs what it needs first (npm ci from the committed lockfiles).
SHELL := /bin/bash
NPM_FLAGS := --no-audit --no-fund

.PHONY: all install build test test-deps test-faults soak demo bench lint clean

# Debian packages the tests drive, installed by `test-deps` when missing (a test whose package
# cannot be installed skips and says so): chromium for the browser test of the collector page,
# the DogStatsD clients of the end-to-end tests, PostgreSQL for the store's tests (servers of their
# own in temporary directories; the cluster the package makes is dropped by the install script).
APT_TEST_PACKAGES := chromium python3-statsd python3-aiodogstatsd postgresql

all: build

node_modules/.package-lock.json: package-lock.json package.json proto/package.json client-shim/package.json sidecar/package.json collector/package.json test/package.json
	npm ci $(NPM_FLAGS)

install: node_modules/.package-lock.json

build: install
	npx tsc -b
	node client-shim/bundle.js

test-deps:
	@bash test/install-apt-packages.sh $(APT_TEST_PACKAGES)

test: build test-deps
	@if [ ! -x /usr/bin/chromium ]; then echo "browser test skipped: chromium not installed"; fi
	APM_REQUIRE_POSTGRES=1 APM_ARTIFACTS_DIR=$(CURDIR)/test/artifacts node test/run.js

# The whole fault suite at full scale; rewrites test/faults/figures.json and test/RELIABILITY.md.
test-faults: build
	APM_FAULT_LEVEL=full APM_FAULT_REPORT=write TEST_TIMEOUT_MS=900000 node test/run.js faults/

# The long variants (100,000 fuzz cases, minutes-long randomised runs); SEED=… replays one.
soak: build
	APM_FAULT_LEVEL=soak TEST_TIMEOUT_MS=3600000 node test/run.js faults/

demo: build
	bash examples/demo.sh

bench/node_modules/.package-lock.json: bench/package-lock.json bench/package.json
	npm ci --prefix bench $(NPM_FLAGS)

bench: build bench/node_modules/.package-lock.json
	node bench/run.js

lint: install
	npx tsc -b
	npm exec --yes -- @biomejs/biome@2.6.8 check .

clean:
	npx tsc -b --clean
	rm -rf test/dist
