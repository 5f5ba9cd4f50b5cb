#!/usr/bin/env bash
# Validates envoy.yaml: with Envoy's own `--mode validate` where an envoy binary is installed;
# otherwise every field, enum value and "@type" against Envoy's v3 API protos (check_config.py,
# in a virtualenv with xds-protos), which does not check the protos' validation rules.
set -euo pipefail
cd "$(dirname "$0")"
if command -v envoy >/dev/null; then
    exec envoy --mode validate -c envoy.yaml
fi
echo "no envoy binary here: checking envoy.yaml against Envoy's v3 API protos instead" >&2
venv=${POSTURE_ENVOY_CHECK_VENV:-${TMPDIR:-/tmp}/posture-envoy-check}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet xds-protos pyyaml
fi
exec "$venv/bin/python" check_config.py envoy.yaml
