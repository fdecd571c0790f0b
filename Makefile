# Two commands on a fresh machine: `make demo` and `make test`. Every target
# installs what it needs first (npm ci from the committed lockfiles).
SHELL := /bin/bash
NPM_FLAGS := --no-audit --no-fund

.PHONY: all install build test demo bench lint clean

all: build

node_modules/.package-lock.json: package-lock.json package.json proto/package.json client-shim/package.json sidecar/package.json collector/package.json test/package.json
	npm ci $(NPM_FLAGS)

install: node_modules/.package-lock.json

build: install
	npx tsc -b
	node client-shim/bundle.js

test: build
	@if [ ! -x /usr/bin/chromium ]; then echo "browser test skipped: chromium not installed"; fi
	node test/run.js

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
