//! InventoryService through the real server: refused while the integration is off, judged
//! item by item, durable and idempotent on retry.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pb::{ComplianceState as S, Decision as D};
use posture::proto as pb;
use tonic::Code;

fn batch(devices: Vec<pb::DeviceReport>) -> pb::ReportInventoryRequest {
    pb::ReportInventoryRequest { devices }
}

/// (index, device_id, accepted, changed, error) of every result.
fn results(r: &pb::ReportInventoryResponse) -> Vec<(u32, &str, bool, bool, &str)> {
    r.results.iter().map(|x| (x.index, x.device_id.as_str(), x.accepted, x.changed, x.error.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_refused_until_the_connector_is_enabled_and_after_it_is_terminated() {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    let synced = seed_directory(&mut admin).await;
    let mut inventory = server.inventory();
    let err = inventory.report_inventory(batch(vec![mac("mac-ada", "ada", "C02ADA0001")])).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "the partner integration is not enabled: partner reports are refused until the connector is enabled \
         (AdminService/EnableConnector)"
    );
    assert_eq!(server.revision().await, synced);
    assert_decision(&server.check("ada", "mac-ada").await, D::Deny, S::Unknown, &["DEVICE_UNKNOWN"]);

    enable_connector(&mut admin, &["mac-users"], &[]).await;
    server.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await;
    let terminated = admin.terminate_connector(pb::TerminateConnectorRequest {}).await.unwrap().into_inner().revision;

    let mut ada = mac("mac-ada", "ada", "C02ADA0001");
    ada.file_vault = pb::FileVaultState::NotEncrypted as i32;
    let err = inventory.report_inventory(batch(vec![ada, mac("mac-bob", "bob", "C02BOB0001")])).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, &["the partner integration is terminated"]);
    assert_eq!(server.revision().await, terminated);
    // The stored report is unchanged; the Mac is denied, and marked noncompliant, because the
    // integration is terminated.
    assert_decision(&server.check("ada", "mac-ada").await, D::Deny, S::Noncompliant, &["INTEGRATION_DISABLED"]);
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Unknown, &["DEVICE_UNKNOWN"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_items_get_their_own_errors_and_good_items_are_stored() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let mut bad_version = mac("mac-bob", "bob", "C02BOB0001");
    bad_version.os_version = "10.x".into();
    let mut bad_enum = mac("mac-cara", "cara", "C02CARA001");
    bad_enum.file_vault = 99;
    let mut no_id = mac("", "dan", "C02DAN0001");
    no_id.device_id = String::new();
    let long_id = "m".repeat(129);
    let too_long = mac(&long_id, "erin", "C02ERIN001");
    let mut no_registration = mac("mac-finn", "finn", "C02FINN001");
    no_registration.registration = pb::Registration::Unspecified as i32;
    let mut no_check_in = mac("mac-gus", "gus", "C02GUS0001");
    no_check_in.last_check_in = None;
    let mut no_serial = mac("mac-hal", "hal", "");
    no_serial.serial_number = String::new();
    let mut no_user = mac("mac-ivy", "", "C02IVY0001");
    no_user.user_id = String::new();
    let mut bad_build = mac("mac-zed", "zed", "C02ZED0001");
    bad_build.os_build = "23-C71".into();
    let max_id = "m".repeat(128);
    let mut longest = mac(&max_id, "ada", "C02ADA0002");
    longest.partner_device_id = "jamf-1".into();
    let request = batch(vec![
        mac("mac-ada", "ada", "C02ADA0001"),
        bad_version,
        bad_enum,
        no_id,
        too_long,
        no_registration,
        no_check_in,
        no_serial,
        no_user,
        bad_build,
        longest,
    ]);
    let first = server.inventory().report_inventory(request.clone()).await.unwrap().into_inner();
    assert_eq!((first.accepted, first.rejected), (2, 9));
    assert_eq!(
        results(&first),
        vec![
            (0, "mac-ada", true, true, ""),
            (
                1,
                "mac-bob",
                false,
                false,
                "devices[1].os_version: \"10.x\" is not a version: use numbers separated by dots, such as 14.2.1"
            ),
            (2, "mac-cara", false, false, "devices[2].file_vault: 99 is not a known value"),
            (3, "", false, false, "devices[3].device_id: is required"),
            // An answer names an item by at most an id's length of its id.
            (4, &long_id[..128], false, false, "devices[4].device_id: is longer than 128 characters"),
            (5, "mac-finn", false, false, "devices[5].registration: is required (PARTNER or DIRECT)"),
            (6, "mac-gus", false, false, "devices[6].last_check_in: is required"),
            (7, "mac-hal", false, false, "devices[7].serial_number: is required"),
            (8, "mac-ivy", false, false, "devices[8].user_id: is required"),
            (
                9,
                "mac-zed",
                false,
                false,
                "devices[9].os_build: \"23-C71\" is not an Apple build number: use the form 23C71 (number, letter, \
                 number, optional letter)"
            ),
            (10, max_id.as_str(), true, true, ""),
        ]
    );
    // The good ones were stored, the bad ones not.
    let r = server.check("ada", "mac-ada").await;
    assert_decision(&r, D::Allow, S::Compliant, &["COMPLIANT"]);
    assert!(r.revision >= first.revision);
    assert_decision(&server.check("ada", &max_id).await, D::Allow, S::Compliant, &["COMPLIANT"]);
    for (user, device) in [("bob", "mac-bob"), ("cara", "mac-cara"), ("finn", "mac-finn"), ("zed", "mac-zed")] {
        assert_decision(&server.check(user, device).await, D::Deny, S::Unknown, &["DEVICE_UNKNOWN"]);
    }

    // The same batch again: nothing changes, the revision stays, the same errors.
    let retry = server.inventory().report_inventory(request).await.unwrap().into_inner();
    assert_eq!(retry.revision, first.revision);
    assert_eq!((retry.accepted, retry.rejected), (2, 9));
    let mut expected = first.results.clone();
    for r in &mut expected {
        r.changed = false;
    }
    assert_eq!(retry.results, expected);
    assert_eq!(server.revision().await, first.revision);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_mac_keeps_its_grace_period_start_across_reports() {
    let server = TestServer::start().await;
    seed_org_with(&server, 72).await;
    // Check-ins 40, 30, 20 and 10 minutes ago: the grace period runs from the first failing one.
    let at = |minutes_ago: i64| Some(ago(minutes_ago * MINUTE));
    let mut bob = mac("mac-bob", "bob", "C02BOB0001");
    bob.file_vault = pb::FileVaultState::BootVolumeOnly as i32;
    bob.last_check_in = at(40);
    let first_failure = bob.last_check_in.unwrap().seconds;
    let first = server.report(vec![bob.clone()]).await;
    let evaluate = async || {
        let r = server
            .compliance()
            .evaluate_device(pb::EvaluateDeviceRequest { device_id: "mac-bob".into(), ..Default::default() })
            .await;
        r.unwrap().into_inner().grace_period_ends.unwrap().seconds
    };
    assert_eq!(evaluate().await, first_failure + 72 * HOUR);
    assert_decision(&server.check("bob", "mac-bob").await, D::Allow, S::InGracePeriod, &["IN_GRACE_PERIOD"]);
    // The same report again changes nothing.
    let retry = server.report(vec![bob.clone()]).await;
    assert_eq!((retry.revision, results(&retry)), (first.revision, vec![(0, "mac-bob", true, false, "")]));
    // A later check-in that still fails keeps the grace period running from the first failure.
    bob.last_check_in = at(30);
    let later = server.report(vec![bob.clone()]).await;
    assert_eq!(results(&later), vec![(0, "mac-bob", true, true, "")]);
    assert!(later.revision > first.revision);
    assert_eq!(evaluate().await, first_failure + 72 * HOUR);
    // Fixed, then failing again: a new grace period from the new failure.
    bob.file_vault = pb::FileVaultState::AllEncrypted as i32;
    bob.last_check_in = at(20);
    server.report(vec![bob.clone()]).await;
    assert_decision(&server.check("bob", "mac-bob").await, D::Allow, S::Compliant, &["COMPLIANT"]);
    bob.file_vault = pb::FileVaultState::NotEncrypted as i32;
    bob.last_check_in = at(10);
    server.report(vec![bob.clone()]).await;
    assert_eq!(evaluate().await, bob.last_check_in.unwrap().seconds + 72 * HOUR);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_repeated_within_a_batch_is_refused_after_its_first_report() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let ada = mac("mac-ada", "ada", "C02ADA0001");
    let mut other = ada.clone();
    other.file_vault = pb::FileVaultState::NotEncrypted as i32;
    let r = server.inventory().report_inventory(batch(vec![ada.clone(), other])).await.unwrap().into_inner();
    let repeat = "devices[1].device_id: repeats devices[0].device_id: report each Mac once per batch";
    assert_eq!(results(&r), vec![(0, "mac-ada", true, true, ""), (1, "mac-ada", false, false, repeat)]);
    assert_decision(&server.check("ada", "mac-ada").await, D::Allow, S::Compliant, &["COMPLIANT"]);
    // The same batch again: the first report is already stored, the repeat refused again.
    let r = server.inventory().report_inventory(batch(vec![ada.clone(), ada])).await.unwrap().into_inner();
    assert_eq!(results(&r), vec![(0, "mac-ada", true, false, ""), (1, "mac-ada", false, false, repeat)]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_oversized_batch_is_refused_naming_devices() {
    let server = TestServer::start().await;
    let seeded = seed_org(&server).await;
    let mut inventory = server.inventory();
    let err = inventory.report_inventory(batch(vec![])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "devices: is empty: send 1 to 1000 reports");

    let many =
        |n: usize| (0..n).map(|i| mac(&format!("mac-{i:04}"), "ada", &format!("SERIAL{i:04}"))).collect::<Vec<_>>();
    let err = inventory.report_inventory(batch(many(1001))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "devices: has 1001 reports; send at most 1000 per batch");
    assert_eq!(server.revision().await, seeded);

    // 1000 is allowed, in one write.
    let r = server.report(many(1000)).await;
    assert_eq!((r.accepted, r.rejected, r.revision), (1000, 0, seeded + 1));
    assert_decision(&server.check("ada", "mac-0999").await, D::Allow, S::Compliant, &["COMPLIANT"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_in_the_future_is_an_item_error() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let in_an_hour = prost_types::Timestamp { seconds: now_secs() + HOUR, nanos: 0 };
    let mut check_in = mac("mac-bob", "bob", "C02BOB0001");
    check_in.last_check_in = Some(in_an_hour);
    let mut renewal = mac("mac-cara", "cara", "C02CARA001");
    renewal.last_token_renewal = Some(in_an_hour);
    let mut refresh = mac("mac-dan", "dan", "C02DAN0001");
    refresh.refresh_token_issued = Some(in_an_hour);
    let mut verdict = mac("mac-erin", "erin", "C02ERIN001");
    verdict.partner_verdict = Some(pb::PartnerVerdict { compliant: true, decided_at: Some(in_an_hour) });
    // A minute of clock skew is tolerated.
    let mut skewed = mac("mac-ada", "ada", "C02ADA0001");
    skewed.last_check_in = Some(prost_types::Timestamp { seconds: now_secs() + MINUTE, nanos: 0 });
    let r = server.inventory().report_inventory(batch(vec![check_in, renewal, refresh, verdict, skewed])).await;
    let r = r.unwrap().into_inner();
    let clock = "is in the future; check the partner's clock";
    assert_eq!(
        results(&r),
        vec![
            (0, "mac-bob", false, false, format!("devices[0].last_check_in: {clock}").as_str()),
            (1, "mac-cara", false, false, format!("devices[1].last_token_renewal: {clock}").as_str()),
            (2, "mac-dan", false, false, format!("devices[2].refresh_token_issued: {clock}").as_str()),
            (3, "mac-erin", false, false, format!("devices[3].partner_verdict.decided_at: {clock}").as_str()),
            (4, "mac-ada", true, true, ""),
        ]
    );
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Unknown, &["DEVICE_UNKNOWN"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_verdict_is_used_instead_of_the_policies() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    // FileVault is off, but the partner decided compliance itself.
    let mut ada = mac("mac-ada", "ada", "C02ADA0001");
    ada.file_vault = pb::FileVaultState::NotEncrypted as i32;
    ada.partner_verdict = Some(pb::PartnerVerdict { compliant: true, decided_at: Some(ago(5 * MINUTE)) });
    let mut bob = mac("mac-bob", "bob", "C02BOB0001");
    bob.partner_verdict = Some(pb::PartnerVerdict { compliant: false, decided_at: Some(ago(5 * MINUTE)) });
    let mut cara = mac("mac-cara", "cara", "C02CARA001");
    cara.partner_verdict = Some(pb::PartnerVerdict { compliant: true, decided_at: None });
    let r = server.inventory().report_inventory(batch(vec![ada, bob, cara])).await.unwrap().into_inner();
    assert_eq!(r.results[2].error, "devices[2].partner_verdict.decided_at: is required");
    let r = server.check("ada", "mac-ada").await;
    assert_decision(&r, D::Allow, S::Compliant, &["PARTNER_VERDICT_COMPLIANT"]);
    assert!(r.reasons[0].message.starts_with("the partner decided at"), "{:?}", r.reasons);
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Noncompliant, &["PARTNER_VERDICT_NONCOMPLIANT"]);
    // A verdict decided 25 hours ago is not trusted, however fresh the check-in.
    let mut fresh = mac("mac-cara", "cara", "C02CARA001");
    fresh.partner_verdict = Some(pb::PartnerVerdict { compliant: true, decided_at: Some(ago(25 * HOUR)) });
    server.report(vec![fresh]).await;
    assert_decision(&server.check("cara", "mac-cara").await, D::Deny, S::Unknown, &["PARTNER_VERDICT_STALE"]);
    server.stop().await;
}

fn with_check_in(mut r: pb::DeviceReport, minutes_ago: i64) -> pb::DeviceReport {
    r.last_check_in = Some(ago(minutes_ago * MINUTE));
    r
}

/// The newest report per Mac wins: a delayed, retried or reordered older one is acknowledged,
/// not applied, and its result says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_report_is_acknowledged_and_not_applied() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let compliant = with_check_in(mac("mac-bob", "bob", "C02BOB0001"), 20);
    let mut file_vault_off = with_check_in(mac("mac-bob", "bob", "C02BOB0001"), 10);
    file_vault_off.file_vault = pb::FileVaultState::NotEncrypted as i32;
    server.report(vec![file_vault_off.clone()]).await;
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Noncompliant, &["NONCOMPLIANT"]);
    let revision = server.revision().await;

    // The older "compliant" arrives late: acknowledged, not applied, and the DENY stays.
    let r = server.inventory().report_inventory(batch(vec![compliant.clone()])).await.unwrap().into_inner();
    assert_eq!((r.accepted, r.rejected, r.revision), (1, 0, revision));
    let item = &r.results[0];
    assert_eq!((item.accepted, item.changed, item.stale), (true, false, true));
    assert!(item.note.contains("older than the stored report"), "{}", item.note);
    assert!(item.error.is_empty());
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Noncompliant, &["NONCOMPLIANT"]);

    // A newer one is applied.
    let mut fixed = with_check_in(mac("mac-bob", "bob", "C02BOB0001"), 5);
    fixed.name = "fixed".into();
    let r = server.inventory().report_inventory(batch(vec![fixed.clone()])).await.unwrap().into_inner();
    assert_eq!(r.results.iter().map(|i| (i.changed, i.stale)).collect::<Vec<_>>(), [(true, false)]);
    assert_decision(&server.check("bob", "mac-bob").await, D::Allow, S::Compliant, &["COMPLIANT"]);

    // An older partner verdict is stale even with a newer check-in.
    let mut verdict = with_check_in(mac("mac-ada", "ada", "C02ADA0001"), 10);
    verdict.partner_verdict = Some(pb::PartnerVerdict { compliant: false, decided_at: Some(ago(10 * MINUTE)) });
    server.report(vec![verdict.clone()]).await;
    let mut older_verdict = with_check_in(verdict, 1);
    older_verdict.partner_verdict = Some(pb::PartnerVerdict { compliant: true, decided_at: Some(ago(20 * MINUTE)) });
    let r = server.inventory().report_inventory(batch(vec![older_verdict])).await.unwrap().into_inner();
    assert!(r.results[0].stale && r.results[0].note.contains("partner verdict"), "{:?}", r.results[0]);
    assert_decision(&server.check("ada", "mac-ada").await, D::Deny, S::Noncompliant, &["PARTNER_VERDICT_NONCOMPLIANT"]);
    server.stop().await;
}

/// No bookkeeping runs ahead of the server's clock: a check-in a few minutes "in the future"
/// (tolerated skew) counts as now, so it buys neither freshness nor grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_within_the_tolerated_skew_counts_as_now() {
    let server = TestServer::start().await;
    seed_org(&server).await; // baseline: grace 0
    let mut bob = mac("mac-bob", "bob", "C02BOB0001");
    bob.file_vault = pb::FileVaultState::NotEncrypted as i32;
    bob.last_check_in = Some(prost_types::Timestamp { seconds: now_secs() + 4 * MINUTE, nanos: 0 });
    server.report(vec![bob]).await;
    let before = now_secs();
    // Denied at once, not after five minutes of grace bought by the skew.
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Noncompliant, &["NONCOMPLIANT"]);
    let e = server
        .compliance()
        .evaluate_device(pb::EvaluateDeviceRequest { device_id: "mac-bob".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let ends = e.policies[0].grace_period_ends.unwrap().seconds;
    assert!(ends <= before + 1, "the grace period (0 hours) ended at {ends}, by now ({before})");
    server.stop().await;
}

/// A report that changes nothing but the check-in is stored as a check-in (a line in the log
/// and one column, not the device again), and it counts as one: an unresponsive Mac checking
/// in is let in again, across a restart too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_only_checks_in_brings_an_unresponsive_mac_back_across_a_restart() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let silent = with_check_in(mac("mac-bob", "bob", "C02BOB0001"), 25 * 60);
    server.report(vec![silent]).await;
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Unknown, &["UNRESPONSIVE"]);

    let back = with_check_in(mac("mac-bob", "bob", "C02BOB0001"), 1);
    let r = server.report(vec![back.clone()]).await;
    assert_eq!(r.results.iter().map(|i| (i.accepted, i.changed)).collect::<Vec<_>>(), [(true, true)]);
    assert_decision(&server.check("bob", "mac-bob").await, D::Allow, S::Compliant, &["COMPLIANT"]);

    let server = server.restart().await;
    assert_decision(&server.check("bob", "mac-bob").await, D::Allow, S::Compliant, &["COMPLIANT"]);
    // The same report again changes nothing.
    let r = server.report(vec![back]).await;
    assert_eq!(r.results.iter().map(|i| (i.accepted, i.changed)).collect::<Vec<_>>(), [(true, false)]);
    let dir = server.stop().await;

    // What the store holds: the check-in in its column and the log, the body as first reported.
    let url = format!("sqlite://{}", dir.path().join("posture.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (column,): (Option<i64>,) =
        sqlx::query_as("SELECT last_check_in FROM devices WHERE id = 'mac-bob'").fetch_one(&pool).await.unwrap();
    assert!(column.is_some_and(|at| (now_secs() - at - MINUTE).abs() < 30), "{column:?}");
    let logged: Vec<(String,)> =
        sqlx::query_as("SELECT changes FROM change_log ORDER BY revision").fetch_all(&pool).await.unwrap();
    let check_ins: Vec<&String> = logged.iter().map(|(c,)| c).filter(|c| c.contains("CheckIn")).collect();
    assert_eq!(check_ins.len(), 1, "{logged:?}");
    assert!(check_ins[0].len() < 100 && check_ins[0].contains("mac-bob"), "{}", check_ins[0]);
    pool.close().await;
}
