#!/usr/bin/env bash
# The LiteLLM proxy, the peer for the gateway benches, in its own venv (never in the project's deps).
# Idempotent: does nothing when the venv already has the pinned version (plus uvloop and httptools,
# which Atrium's uvicorn uses too, so both proxies run on the same event loop and HTTP parser).
#
#   bash bench/peers/setup_litellm.sh            # -> bench/.venv-litellm
#   LITELLM_VENV=/some/dir bash bench/peers/setup_litellm.sh
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${LITELLM_VENV:-$here/.venv-litellm}"
version="1.100.5"  # later versions are not installable here (this one pins openai<3)
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import importlib.metadata as m, sys; \
    sys.exit(0 if m.version('litellm') == '$version' and m.version('httptools') else 1)" 2>/dev/null; then
    echo "litellm $version already in $venv"
    exit 0
fi
[ -x "$venv/bin/python" ] || uv venv --python 3.11 "$venv"
# uvloop and httptools: the same event loop and HTTP parser that Atrium's uvicorn gets, for a fair peer
uv pip install --python "$venv/bin/python" "litellm[proxy]==$version" aiohttp uvloop httptools
LITELLM_LOCAL_MODEL_COST_MAP=True "$venv/bin/python" -c "import litellm, aiohttp; print('litellm $version ready in $venv')"
