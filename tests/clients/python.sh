#!/usr/bin/env bash
# The Python example client against a real `posture serve --demo`: stubs generated from
# proto/ by grpcio-tools into a temp dir (they are not committed), then python_client.py.
#
#   tests/clients/python.sh     # python3 with examples/python/requirements.txt installed
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PYTHON="${PYTHON:-python3}"
start_demo_server
mkdir "$WORK/stubs"
"$PYTHON" -m grpc_tools.protoc -I "$REPO_DIR/proto" --python_out="$WORK/stubs" --grpc_python_out="$WORK/stubs" \
  "$REPO_DIR"/proto/posture/v1/*.proto
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$WORK/stubs:$REPO_DIR/examples/python" "$PYTHON" "$CLIENTS_DIR/python_client.py" "$ADDR"
