#!/usr/bin/env bash
# Copies, from the envoy-types crate that Cargo.lock pins, the protos that describe
# envoy.service.auth.v3.Authorization and everything they import (the well-known
# google/protobuf types come with protox). Only server reflection reads them: the Rust
# types are envoy-types' own. Run after changing the envoy-types version, then commit.
set -euo pipefail
cd "$(dirname "$0")"
crate=$(cargo metadata --format-version 1 --manifest-path ../../Cargo.toml |
    python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="envoy-types"))')
src=$(dirname "$crate")/proto
version=$(basename "$(dirname "$crate")")
python3 - "$src" <<'PY'
import os, re, shutil, sys
src = sys.argv[1]
roots = [os.path.join(src, r) for r in ("data-plane-api", "xds", "googleapis", "protoc-gen-validate")]
todo, seen = ["envoy/service/auth/v3/external_auth.proto"], set()
while todo:
    name = todo.pop()
    if name in seen or name.startswith("google/protobuf/"):
        continue
    seen.add(name)
    path = next(os.path.join(r, name) for r in roots if os.path.exists(os.path.join(r, name)))
    os.makedirs(os.path.dirname(name), exist_ok=True)
    shutil.copyfile(path, name)
    todo += re.findall(r'^import\s+(?:public\s+)?"([^"]+)"', open(path).read(), re.M)
print(len(seen), "files")
PY
echo "$version" > VERSION
