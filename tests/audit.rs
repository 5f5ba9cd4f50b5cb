//! The audit trail and the logs of a real `posture serve` over mutual TLS, used with every
//! kind of secret: what an administrator changed is recorded as theirs, every refused call and
//! handshake is recorded with who and from where, a flood of refusals is rate-limited with
//! what was left out counted, and no secret (nor its digest) ever reaches the logs.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::binary::Served;
use common::pki::{self, Ca};
use common::*;
use posture::auth::{CredentialConfig, Role, sha256_hex};
use posture::proto::{
    self as pb, admin_service_client::AdminServiceClient, compliance_service_client::ComplianceServiceClient,
    inventory_service_client::InventoryServiceClient,
};
use serde_json::Value;

const ADMIN: &str = "audit-admin-secret-5f1c";
const GATEWAY_OLD: &str = "audit-gateway-old-91ab";
const GATEWAY_NEW: &str = "audit-gateway-new-77de";
const PARTNER: &str = "audit-partner-secret-c3d0";
const GUESS: &str = "an-attackers-guess-0042";
const FLOODED: &str = "/posture.v1.TargetingService/ResolveEnrollment";
const ALL: [&str; 5] = [ADMIN, GATEWAY_OLD, GATEWAY_NEW, PARTNER, GUESS];

fn credentials(gateway: &[&str]) -> Vec<CredentialConfig> {
    vec![
        credential("ops-admin", Role::Admin, &[ADMIN]),
        credential("sign-in-gateway", Role::Gateway, gateway),
        credential(PARTNER_APP, Role::Partner, &[PARTNER]),
    ]
}

/// A run that uses every secret: writes as the admin, reports as the partner, decisions and a
/// Watch stream with both gateway secrets, each secret where its role may not go, a guess, a
/// rotation that revokes the old gateway secret (then used again), a certificate from an
/// unknown CA, and a flood of refusals. Returns the whole log and the number of refusals
/// the flood was.
async fn session(rust_log: &str) -> (String, usize) {
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let server = server_ca.server();
    let cert = pki::write(files.path(), "server.crt", &server.cert);
    let key = pki::write(files.path(), "server.key", &server.key);
    let clients = pki::write(files.path(), "clients.crt", &client_ca.pem);
    let config = write_credentials(files.path(), &credentials(&[GATEWAY_OLD, GATEWAY_NEW]));
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let args = [
        "--config".to_string(),
        path(&config),
        "--data-dir".into(),
        path(data.path()),
        "--tls-cert".into(),
        path(&cert),
        "--tls-key".into(),
        path(&key),
        "--tls-client-ca".into(),
        path(&clients),
        "--reload-interval".into(),
        "1h".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let identity = client_ca.issue(&["any-client"], None);
    let served = Served::start_tls(&args, rust_log, Some(pki::client_tls(&[&server_ca], Some(&identity)))).await;
    let channel = served.channel();
    let admin = |secret| AdminServiceClient::with_interceptor(channel.clone(), Bearer::new(Some(secret)));
    let compliance = |secret| ComplianceServiceClient::with_interceptor(channel.clone(), Bearer::new(Some(secret)));
    let inventory = |secret| InventoryServiceClient::with_interceptor(channel.clone(), Bearer::new(Some(secret)));

    seed_org_through(&mut admin(ADMIN), 0).await;
    let mut updated = baseline_policy(0);
    updated.grace_period_hours = 48;
    admin(ADMIN).update_policy(pb::UpdatePolicyRequest { policy: Some(updated) }).await.unwrap();
    // A preview changes nothing, so it is no admin change (the list of changes below is exact).
    let mut draft = baseline_policy(0);
    draft.settings.as_mut().unwrap().os_minimum_version = "15.0".into();
    let draft = pb::PreviewPolicyRequest {
        draft: Some(pb::preview_policy_request::Draft::Policy(draft)),
        ..Default::default()
    };
    admin(ADMIN).preview_policy(draft).await.unwrap();
    let devices = vec![mac("mac-ada", "ada", "C02ADA0001")];
    inventory(PARTNER).report_inventory(pb::ReportInventoryRequest { devices }).await.unwrap();
    let check = pb::CheckAccessRequest { user_id: "ada".into(), device_id: "mac-ada".into(), ..Default::default() };
    for secret in [GATEWAY_OLD, GATEWAY_NEW, ADMIN] {
        compliance(secret).check_access(check.clone()).await.unwrap();
    }
    let watch =
        pb::WatchComplianceRequest { device_ids: vec!["mac-ada".into()], from_revision: 1, ..Default::default() };
    let mut stream = compliance(GATEWAY_NEW).watch_compliance(watch).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some());
    drop(stream);

    // Each secret where its role may not go, and a guess.
    assert!(compliance(PARTNER).check_access(check.clone()).await.is_err());
    assert!(admin(GATEWAY_NEW).get_settings(pb::GetSettingsRequest::default()).await.is_err());
    assert!(inventory(ADMIN).report_inventory(pb::ReportInventoryRequest::default()).await.is_err());
    assert!(admin(GUESS).get_settings(pb::GetSettingsRequest::default()).await.is_err());

    // The rotation ends; the old secret is then refused.
    write_credentials(files.path(), &credentials(&[GATEWAY_NEW]));
    served.signal("HUP");
    let mut revoked = false;
    for _ in 0..200 {
        if compliance(GATEWAY_OLD).check_access(check.clone()).await.is_err() {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(revoked, "the old gateway secret is revoked after SIGHUP");

    // A client certificate from a CA the server does not know.
    let strangers = Ca::new("unknown CA");
    let stranger = served.channel_with_tls(pki::client_tls(&[&server_ca], Some(&strangers.issue(&["x"], None))));
    assert!(raw::call(stranger, "/grpc.health.v1.Health/Check", vec![], None).await.is_err());

    // A flood of refusals, then one more after a pause, which counts what the flood left out.
    const FLOOD: usize = 600;
    let resolve = async || raw::call(channel.clone(), FLOODED, vec![], Some(GUESS)).await.is_err();
    for _ in 0..FLOOD {
        assert!(resolve().await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(resolve().await);
    (served.stop().await, FLOOD)
}

/// The audit events in `log`, each a JSON document on the `posture::audit` target.
fn audit_events(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| l.contains(posture::audit::TARGET))
        .map(|l| serde_json::from_str(&l[l.find('{').unwrap()..]).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_even_at_trace() {
    let (log, _) = session("trace").await;
    assert!(log.lines().count() > 1_000, "a trace run logs plenty: {} lines", log.lines().count());
    for secret in ALL {
        assert!(!log.contains(secret), "the secret {secret} is in the log");
        assert!(!log.contains(&sha256_hex(secret)), "the digest of {secret} is in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_and_refusals_are_audited() {
    let (log, flood) = session("info").await;
    let events = audit_events(&log);
    let of = |kind: &str| events.iter().filter(|e| e["event"] == kind).collect::<Vec<_>>();

    // Every admin change, as its admin's, with its RPC, its revision and what it changed.
    let changes = of("admin_change");
    let rpcs: Vec<&str> = changes.iter().map(|e| e["rpc"].as_str().unwrap()).collect();
    assert_eq!(
        rpcs,
        [
            "posture.v1.AdminService/SyncDirectory",
            "posture.v1.AdminService/CreatePolicy",
            "posture.v1.AdminService/CreatePolicy",
            "posture.v1.AdminService/AssignPolicy",
            "posture.v1.AdminService/AssignPolicy",
            "posture.v1.AdminService/EnableConnector",
            "posture.v1.AdminService/UpdatePolicy",
        ]
    );
    assert!(changes.iter().all(|e| e["who"] == "ops-admin"), "{changes:#?}");
    let revisions: Vec<u64> = changes.iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "revisions rise: {revisions:?}");
    let update = changes.last().unwrap()["changes"].as_array().unwrap();
    assert_eq!(update[0], "policy baseline: grace_period_hours 0 → 48", "{update:?}");
    assert!(changes[0]["changes"].as_array().unwrap().iter().any(|c| c == "user ada added"));
    // Reports are the partner's traffic, not administration.
    assert!(!log.contains("device mac-ada reported"));

    // Refusals: whose credential (or none), which RPC, from where.
    let refused = of("refused");
    let find = |credential: Value, rpc: &str| {
        refused
            .iter()
            .find(|e| e["credential"] == credential && e["rpc"] == rpc)
            .copied()
            .unwrap_or_else(|| panic!("no refusal of {credential} on {rpc} in {refused:#?}"))
    };
    let partner = find(PARTNER_APP.into(), "posture.v1.ComplianceService/CheckAccess");
    assert_eq!(partner["code"], "PERMISSION_DENIED");
    assert!(partner["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{partner}");
    find("sign-in-gateway".into(), "posture.v1.AdminService/GetSettings");
    find("ops-admin".into(), "posture.v1.InventoryService/ReportInventory");
    let guess = find(Value::Null, "posture.v1.AdminService/GetSettings");
    assert_eq!((&guess["code"], &guess["reason"]), (&"UNAUTHENTICATED".into(), &"unknown or revoked secret".into()));
    let handshake = find(Value::Null, "TLS handshake");
    assert!(handshake["reason"].as_str().unwrap().contains("certificate"), "{handshake}");

    // The flood: recorded up to the rate limit, the rest counted on the next event recorded.
    let flooded: Vec<&&Value> = refused.iter().filter(|e| e["rpc"] == FLOODED.trim_start_matches('/')).collect();
    // Each recorded event counts the refusals left out since the one before it.
    let suppressed: usize = flooded.iter().map(|e| e["suppressed"].as_u64().unwrap_or(0) as usize).sum();
    assert!(flooded.len() < flood, "the flood was rate-limited: {} of {flood} recorded", flooded.len());
    assert!(suppressed > 0, "some refusals were left out and counted");
    // The flood and the one after the pause.
    assert_eq!(flooded.len() + suppressed, flood + 1, "every refusal is recorded or counted");
}
