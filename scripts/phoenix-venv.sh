#!/usr/bin/env bash
# Builds .venv-phoenix/: Arize Phoenix, the independent OTLP receiver that
# tests/exporters/test_otlp_phoenix.py runs on loopback to decode the OTLP exporter's spans. It lives
# in its own virtualenv because arize-phoenix pins its own OpenTelemetry, SQLAlchemy, FastAPI and
# grpcio versions, which need not match llmpulse's. Cached: nothing is done when the stamp of the
# pinned version is there (a fresh build took ~50 s here, mostly downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
PHOENIX_VERSION=20.26.1
VENV=.venv-phoenix
STAMP="$VENV/.installed-arize-phoenix-$PHOENIX_VERSION"
[ -f "$STAMP" ] && exit 0
echo "phoenix-venv: building $VENV (arize-phoenix==$PHOENIX_VERSION)" >&2
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV"
# this machine's pip configuration names local mirrors that may be absent: drop those warnings only
"$VENV/bin/pip" install --quiet --disable-pip-version-check "arize-phoenix==$PHOENIX_VERSION" 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
"$VENV/bin/phoenix" --help >/dev/null
touch "$STAMP"
