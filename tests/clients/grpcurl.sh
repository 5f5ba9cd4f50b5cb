#!/usr/bin/env bash
# grpcurl against a real `posture serve --demo`, through server reflection alone (no proto
# files): every RPC of every service at least once, each answer checked, then a check that
# no method reflection lists was left out. The server runs on a free loopback port with its
# data in a temp dir, and is stopped at the end.
#
#   tests/clients/grpcurl.sh        # needs grpcurl and python3 on PATH (GRPCURL=… to override)
#
# The demo organisation is in src/demo.rs; what each answer means is in docs/domain.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

GRPCURL="${GRPCURL:-grpcurl}"
start_demo_server

ADMIN=demo-admin
GATEWAY=demo-gateway
PARTNER=demo-partner
CALLED=()

# grpcurl AS ARGS…: grpcurl with the bearer secret AS (none when AS is -), plaintext, at $ADDR.
call() {
  local secret=$1
  shift
  local headers=()
  [ "$secret" != - ] && headers=(-H "authorization: Bearer $secret")
  "$GRPCURL" -plaintext "${headers[@]}" "$@"
}

# rpc AS METHOD JSON EXPR…: calls METHOD (Service/Method) with the request JSON; each EXPR, a
# Python expression over the answer `r`, must hold (see jcheck.py).
rpc() {
  local secret=$1 method=$2 data=$3 out
  shift 3
  CALLED+=("$method")
  if ! out="$(call "$secret" -d "$data" "$ADDR" "$method" 2>&1)"; then
    fail "$method $data: $out"
    return
  fi
  if python3 "$CLIENTS_DIR/jcheck.py" "$@" <<<"$out"; then pass; else fail "$method $data"; fi
}

# rpc_fails AS METHOD JSON CODE: the call fails with the gRPC status CODE (grpcurl's spelling).
rpc_fails() {
  local secret=$1 method=$2 data=$3 code=$4 out
  CALLED+=("$method")
  if out="$(call "$secret" -d "$data" "$ADDR" "$method" 2>&1)"; then
    fail "$method $data: succeeded, expected $code: $out"
  elif grep -q "Code: $code" <<<"$out"; then
    pass
  else
    fail "$method $data: expected $code: $out"
  fi
}

# contains WHAT TEXT NEEDLE…: TEXT holds every NEEDLE.
contains() {
  local what=$1 text=$2 needle
  shift 2
  for needle in "$@"; do
    if ! grep -qF -- "$needle" <<<"$text"; then
      fail "$what: no \"$needle\" in: $text"
      return
    fi
  done
  pass
}

# ---- reflection: list and describe, as a user finds their way around ----

services="$(call - "$ADDR" list)"
contains "list" "$services" grpc.health.v1.Health grpc.reflection.v1alpha.ServerReflection \
  posture.v1.AdminService posture.v1.ComplianceService posture.v1.InventoryService posture.v1.TargetingService
contains "describe ComplianceService" "$(call - "$ADDR" describe posture.v1.ComplianceService)" \
  "rpc CheckAccess ( .posture.v1.CheckAccessRequest ) returns ( .posture.v1.CheckAccessResponse )" \
  "rpc WatchCompliance ( .posture.v1.WatchComplianceRequest ) returns ( stream .posture.v1.ComplianceEvent )"
contains "describe a message" "$(call - "$ADDR" describe posture.v1.DeviceReport)" \
  "string device_id = 1;" ".google.protobuf.Timestamp last_check_in = 10;"
contains "describe an enum" "$(call - "$ADDR" describe posture.v1.Decision)" "DECISION_ALLOW = 1;"

# ---- health ----

rpc - grpc.health.v1.Health/Check '{}' 'r["status"] == "SERVING"'
rpc - grpc.health.v1.Health/Check '{"service":"posture.v1.ComplianceService"}' 'r["status"] == "SERVING"'
rpc_fails - grpc.health.v1.Health/Check '{"service":"posture.v1.NoSuchService"}' NotFound
# Watch streams until the deadline; its first message is the current status.
CALLED+=(grpc.health.v1.Health/Watch)
out="$(call - -max-time 1 -d '{}' "$ADDR" grpc.health.v1.Health/Watch 2>/dev/null || true)"
if python3 "$CLIENTS_DIR/jcheck.py" 'r["status"] == "SERVING"' <<<"$out"; then pass; else fail "Health/Watch"; fi

# ---- ComplianceService and TargetingService, as a gateway ----

C=posture.v1.ComplianceService
T=posture.v1.TargetingService
rpc $GATEWAY $C/CheckAccess '{"user_id":"ada","device_id":"mac-ada"}' \
  'r["decision"] == "DECISION_ALLOW"' 'r["state"] == "COMPLIANCE_STATE_COMPLIANT"' \
  '[x["code"] for x in r["reasons"]] == ["COMPLIANT"]' 'int(r["revision"]) > 0'
rpc $GATEWAY $C/CheckAccess '{"user_id":"bob","device_id":"mac-bob"}' \
  'r["decision"] == "DECISION_DENY"' '"NONCOMPLIANT" in [x["code"] for x in r["reasons"]]'
rpc $GATEWAY $C/CheckAccess '{"user_id":"ada","device_id":"no-such-mac"}' \
  'r["decision"] == "DECISION_DENY"' '[x["code"] for x in r["reasons"]] == ["DEVICE_UNKNOWN"]'
rpc $GATEWAY $C/EvaluateDevice '{"device_id":"mac-bob"}' \
  'r["state"] == "COMPLIANCE_STATE_NONCOMPLIANT"' \
  '{s["setting"]: s["state"] for p in r["policies"] for s in p["settings"]}["storage_encryption"] == "COMPLIANCE_STATE_NONCOMPLIANT"'
rpc_fails $GATEWAY $C/EvaluateDevice '{"device_id":"no-such-mac"}' NotFound
rpc $GATEWAY $C/DiagnoseDevice '{"device_id":"mac-erin-1"}' \
  'r["decision"] == "DECISION_DENY"' '"DUPLICATE_REGISTRATION" in [f["cause"] for f in r["findings"]]'
rpc $GATEWAY $C/GetComplianceSummary '{}' \
  'r["devices"] == "9"' 'r["allowed"] == "2"' 'r["denied"] == "7"'
rpc $GATEWAY $T/ResolveEnrollment '{"user_id":"gus"}' \
  'r["target"] == "ENROLLMENT_TARGET_DIRECT"' 'r["excludeGroupIds"] == ["contractors"]'
rpc $GATEWAY $T/PreviewTargeting '{"include_group_ids":["mac-users"],"exclude_group_ids":["contractors","engineering"]}' \
  'r["usersToPartner"] == "5"' 'r["usersExcluded"] == "3"'
# A gateway may not report inventory, and the partner may call nothing but ReportInventory.
rpc_fails $PARTNER $C/CheckAccess '{"user_id":"ada","device_id":"mac-ada"}' PermissionDenied
rpc_fails - $C/CheckAccess '{"user_id":"ada","device_id":"mac-ada"}' Unauthenticated

# ---- the partner reports that Bob turned FileVault on; a watcher sees Bob's Mac let in ----

before="$(call $GATEWAY -d '{"user_id":"bob","device_id":"mac-bob"}' "$ADDR" $C/CheckAccess)"
revision="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["revision"])' <<<"$before")"
# From the revision before the report, so the change arrives whether the stream starts before
# the report (a live event) or after it (a snapshot event).
CALLED+=($C/WatchCompliance)
call $GATEWAY -max-time 20 -d '{"from_revision":'"$revision"',"device_ids":["mac-bob"]}' \
  "$ADDR" $C/WatchCompliance >"$WORK/watch.json" 2>"$WORK/watch.err" &
watch_pid=$!

NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
bob='{"device_id":"mac-bob","serial_number":"C02BOB0001","user_id":"bob","os_version":"14.2.1",
  "registration":"REGISTRATION_PARTNER","last_check_in":"'$NOW'","last_token_renewal":"'$NOW'",
  "system_integrity_protection":"SIP_STATE_ENABLED","file_vault":"FILE_VAULT_STATE_ALL_ENCRYPTED",
  "gatekeeper":"GATEKEEPER_STATE_APP_STORE_AND_IDENTIFIED_DEVELOPERS","firewall_enabled":true}'
I=posture.v1.InventoryService
rpc $PARTNER $I/ReportInventory '{"devices":['"$bob"']}' \
  'r["accepted"] == 1' 'r["results"][0]["changed"] is True' "int(r[\"revision\"]) == $revision + 1"
rpc $PARTNER $I/ReportInventory '{"devices":['"$bob"']}' \
  'r["accepted"] == 1' 'r["results"][0].get("changed", False) is False'
rpc $PARTNER $I/ReportInventory '{"devices":[{"device_id":"mac-x"}]}' \
  'r["rejected"] == 1' 'r["results"][0]["error"].startswith("devices[0].")'
rpc_fails $GATEWAY $I/ReportInventory '{"devices":['"$bob"']}' PermissionDenied
rpc $GATEWAY $C/CheckAccess '{"user_id":"bob","device_id":"mac-bob","min_revision":'$((revision + 1))'}' \
  'r["decision"] == "DECISION_ALLOW"'

for _ in $(seq 1 100); do
  grep -q DECISION_ALLOW "$WORK/watch.json" 2>/dev/null && break
  sleep 0.1
done
kill "$watch_pid" 2>/dev/null || true
wait "$watch_pid" 2>/dev/null || true
if python3 "$CLIENTS_DIR/jcheck.py" \
  'any(e["deviceId"] == "mac-bob" and e["decision"] == "DECISION_ALLOW" for e in rs)' <"$WORK/watch.json"; then
  pass
else
  fail "WatchCompliance: no ALLOW for mac-bob: $(cat "$WORK/watch.err")"
fi

# ---- AdminService ----

A=posture.v1.AdminService
rpc $ADMIN $A/GetSettings '{}' 'r["settings"]["validityDays"] == 30'
# Whose Macs would a minimum of macOS 15.0 lock out? The demo's Macs run 14.2.1; nothing is saved.
rpc $ADMIN $A/PreviewPolicy '{"policy":{"id":"baseline","name":"macOS baseline",
  "settings":{"os_minimum_version":"15.0"}}}' \
  'int(r["allowToDeny"]) > 0' '"mac-ada" in [d["deviceId"] for d in r["lockedOut"]]'
rpc_fails $ADMIN $A/PreviewPolicy '{}' InvalidArgument
rpc_fails $GATEWAY $A/PreviewPolicy '{"delete_policy_id":"baseline"}' PermissionDenied
rpc $GATEWAY $C/CheckAccess '{"user_id":"ada","device_id":"mac-ada"}' 'r["decision"] == "DECISION_ALLOW"'
rpc $ADMIN $A/UpdateSettings '{"settings":{"no_policy":"NO_POLICY_TREATMENT_COMPLIANT","validity_days":45}}' \
  'r["settings"]["validityDays"] == 45'
rpc $ADMIN $A/ListPolicies '{}' '[p["id"] for p in r["policies"]] == ["baseline", "engineering-passwords"]'
rpc $ADMIN $A/GetPolicy '{"policy_id":"baseline"}' \
  'r["policy"]["assignment"]["includeGroupIds"] == ["mac-users"]'
rpc $ADMIN $A/CreatePolicy '{"policy":{"id":"grpcurl-check","name":"grpcurl check","grace_period_hours":24,
  "settings":{"os_minimum_version":"12.0"}}}' 'r["policy"]["id"] == "grpcurl-check"'
rpc_fails $ADMIN $A/CreatePolicy '{"policy":{"id":"grpcurl-check","name":"again"}}' AlreadyExists
rpc $ADMIN $A/UpdatePolicy '{"policy":{"id":"grpcurl-check","name":"grpcurl check, renamed","grace_period_hours":48,
  "settings":{"os_minimum_version":"13.0"}}}' \
  'r["policy"]["name"] == "grpcurl check, renamed"' 'r["policy"]["gracePeriodHours"] == 48'
rpc $ADMIN $A/AssignPolicy '{"policy_id":"grpcurl-check","assignment":{"include_group_ids":["engineering"]}}' \
  'r["policy"]["assignment"]["includeGroupIds"] == ["engineering"]'
rpc_fails $ADMIN $A/AssignPolicy '{"policy_id":"baseline","assignment":{"include_group_ids":["lab-macs"]}}' \
  InvalidArgument
rpc $ADMIN $A/DeletePolicy '{"policy_id":"grpcurl-check"}' 'int(r["revision"]) > 0'
rpc_fails $ADMIN $A/GetPolicy '{"policy_id":"grpcurl-check"}' NotFound
rpc $ADMIN $A/SyncDirectory '{"users":[{"id":"ivy","user_principal_name":"ivy@example.com",
  "device_management_licence":true,"premium_identity_licence":true}],
  "groups":[{"id":"mac-users","name":"mac-users","kind":"GROUP_KIND_USER",
  "member_ids":["ada","bob","cara","dan","erin","finn","gus","hal","ivy"]}]}' 'int(r["revision"]) > 0'
rpc $GATEWAY $T/ResolveEnrollment '{"user_id":"ivy"}' 'r["target"] == "ENROLLMENT_TARGET_PARTNER"'
rpc $ADMIN $A/GetConnector '{}' \
  'r["connector"]["state"] == "CONNECTOR_STATE_ENABLED"' 'r["connector"]["partnerAppId"] == "jamf-demo"'
rpc $ADMIN $A/EnableConnector '{"partner_app_id":"jamf-demo","partner_version":"11.5.0",
  "include_group_ids":["mac-users"],"exclude_group_ids":["contractors"]}' \
  'r["connector"]["state"] == "CONNECTOR_STATE_ENABLED"' 'r["connector"]["partnerVersion"] == "11.5.0"'
# The remedy for Erin's duplicate registration: delete the stale record.
rpc $ADMIN $A/DeleteDevice '{"device_id":"mac-erin-2"}' 'int(r["revision"]) > 0'
rpc $GATEWAY $C/CheckAccess '{"user_id":"erin","device_id":"mac-erin-1"}' \
  '"DUPLICATE_REGISTRATION" not in [x["code"] for x in r["reasons"]]'
rpc_fails $GATEWAY $A/GetSettings '{}' PermissionDenied
# Envoy's external authorization: the same decisions, as Envoy wants them.
E=envoy.service.auth.v3.Authorization
signin() { printf '{"attributes":{"request":{"http":{"headers":{"x-posture-user-id":"%s","x-posture-device-id":"%s"}}}}}' "$1" "$2"; }
rpc $GATEWAY $E/Check "$(signin ada mac-ada)" '"okResponse" in r' \
  '{"key":"x-posture-decision","value":"allow"} in [h["header"] for h in r["okResponse"]["headers"]]'
rpc $GATEWAY $E/Check "$(signin ada no-such-mac)" 'r["status"]["code"] == 7' \
  '"DEVICE_UNKNOWN" in r["deniedResponse"]["body"]'
rpc_fails $PARTNER $E/Check "$(signin ada mac-ada)" PermissionDenied
# Last: terminating the connector denies every partner Mac and refuses further reports.
rpc $ADMIN $A/TerminateConnector '{}' \
  'r["connector"]["state"] == "CONNECTOR_STATE_TERMINATED"' '"removalAt" in r["connector"]'
rpc $GATEWAY $C/CheckAccess '{"user_id":"ada","device_id":"mac-ada"}' 'r["decision"] == "DECISION_DENY"'

# ---- every method that reflection lists was called ----

for service in $services; do
  case "$service" in
    grpc.reflection.*) continue ;; # grpcurl itself calls it for every command above
  esac
  for method in $(call - "$ADDR" list "$service"); do
    if printf '%s\n' "${CALLED[@]}" | sed 's#/#.#' | grep -qxF "$method"; then
      pass
    else
      fail "$method, listed by reflection, was never called"
    fi
  done
done

summary grpcurl
