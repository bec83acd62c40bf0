#!/usr/bin/env bash
# Builds .venv-otlp-clients: the GenAI instrumentations that tests/server/test_otlp_clients.py drives
# (OpenLLMetry, the contrib openai-v2, OpenInference, OpenLIT, Traceloop, Logfire, with openai<3),
# which need releases the main virtualenv cannot hold. Cached: rebuilt only when
# tests/server/otlp_clients/requirements.txt changes (its hash is kept in the venv). About a minute
# to build, nothing when cached. Usage: scripts/otlp-clients-venv.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-${PYTHON:-python3}}"
venv=.venv-otlp-clients
requirements=tests/server/otlp_clients/requirements.txt
want="$(sha256sum "$requirements" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version.split()[0])')"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "otlp-clients: building $venv from $requirements" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
log="$venv/pip.log"
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >"$log" 2>&1; then
  grep -v "^WARNING: Location" "$log" >&2
  echo "otlp-clients: pip install failed" >&2
  exit 1
fi
"$venv/bin/python" -c 'import openai, logfire, openlit, traceloop.sdk, openinference.instrumentation.openai, opentelemetry.instrumentation.openai_v2'
echo "$want" >"$venv/.requirements"
