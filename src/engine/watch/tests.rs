//! The watcher on an in-memory engine and a manual clock.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::auth::Credentials;
use crate::clock::{Clock, ManualClock};
use crate::domain::access::ReasonCode;
use crate::domain::compliance::ComplianceState;
use crate::store::memory::MemoryStore;

const T0: Timestamp = Timestamp(1_800_000_000);

async fn demo_engine() -> (Arc<Engine>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::open(Arc::new(MemoryStore::default()), clock.clone(), 1_000, Arc::new(Credentials::default()))
        .await
        .unwrap();
    crate::demo::seed(&engine).await.unwrap();
    (Arc::new(engine), clock)
}

fn codes(e: &WatchEvent) -> Vec<ReasonCode> {
    e.decision.reasons.iter().map(|r| r.code).collect()
}

async fn next(sub: &mut Subscription) -> Arc<WatchEvent> {
    tokio::time::timeout(Duration::from_secs(5), sub.next()).await.expect("an event within 5 s").unwrap().unwrap()
}

#[tokio::test]
async fn time_passing_emits_time_passed_events_at_the_instant_the_decision_stopped_holding() {
    let (engine, clock) = demo_engine().await;
    let (_stop, shutdown) = watch::channel(false);
    let (watcher, _task) = Watcher::spawn(engine.clone(), WatchConfig::default(), shutdown);
    let mut sub = watcher.subscribe("", Start::Now, vec!["mac-ada".into(), "mac-cara".into()]).await.unwrap();

    // The demo's healthy Macs renewed their token an hour ago: stale over 24 hours after.
    let stale_at = T0.plus_secs(-3600 + Timestamp::DAY + 1);
    clock.set(stale_at.plus_secs(-1));
    watcher.tick_now();
    clock.set(stale_at);
    watcher.tick_now();
    let mut seen = [next(&mut sub).await, next(&mut sub).await];
    seen.sort_by(|a, b| a.decision.device_id.cmp(&b.decision.device_id));
    // Cara is also within the 72 hours' grace of the engineering password policy.
    let expected = [
        ("mac-ada", vec![ReasonCode::TokenStale]),
        ("mac-cara", vec![ReasonCode::TokenStale, ReasonCode::InGracePeriod]),
    ];
    for (e, (device, reasons)) in seen.iter().zip(expected) {
        assert_eq!(e.decision.device_id, device);
        assert_eq!((e.cause, e.at, e.revision), (Cause::TimePassed, stale_at, engine.revision()));
        assert_eq!((e.decision.allow, e.decision.state), (false, ComplianceState::Unknown));
        assert_eq!(codes(e), reasons);
    }

    // Another tick at the same instant changes nothing more.
    assert_eq!(watcher.tick_now(), 0);
    // A day later the check-in is 24 hours old too: UNRESPONSIVE joins the reasons.
    clock.set(T0.plus_secs(-600 + Timestamp::DAY));
    watcher.tick_now();
    let e = next(&mut sub).await;
    assert_eq!(e.decision.device_id, "mac-ada", "devices due at one instant come in id order");
    assert_eq!(codes(&e), [ReasonCode::Unresponsive, ReasonCode::TokenStale], "{e:?}");
    assert_eq!(e.at, T0.plus_secs(-600 + Timestamp::DAY));
}

#[tokio::test]
async fn writes_emit_data_changed_events_and_snapshots_start_where_asked() {
    let (engine, clock) = demo_engine().await;
    let (stop, shutdown) = watch::channel(false);
    let (watcher, task) = Watcher::spawn(engine.clone(), WatchConfig::default(), shutdown);
    let mut all = watcher.subscribe("", Start::Now, vec![]).await.unwrap();
    let before = engine.revision();

    // Bob turns FileVault on: NONCOMPLIANT → COMPLIANT. A repeat of Ada's report changes nothing.
    let now = clock.now();
    let stored = |id: &str| engine.read(|s, _| s.device(id).cloned()).0.unwrap();
    let mut bob = stored("mac-bob");
    bob.facts.file_vault = Some(crate::domain::model::FileVault::AllEncrypted);
    bob.last_check_in = now.plus_secs(-60);
    let mut ada = stored("mac-ada");
    ada.last_check_in = now.plus_secs(-60);
    engine.report_inventory(None, vec![("mac-ada".into(), Ok(ada))]).await.unwrap();
    let revision = engine.report_inventory(None, vec![("mac-bob".into(), Ok(bob))]).await.unwrap().revision;
    let e = next(&mut all).await;
    assert_eq!(e.decision.device_id, "mac-bob");
    assert_eq!((e.cause, e.revision, e.user_id.as_str()), (Cause::DataChanged, revision, "bob"));
    assert_eq!(codes(&e), [ReasonCode::Compliant]);

    // A snapshot from before the write holds Bob only; from the write's revision, nothing.
    let mut snap = watcher.subscribe("", Start::FromRevision(before), vec![]).await.unwrap();
    let s = next(&mut snap).await;
    assert_eq!((s.snapshot, s.cause, s.cursor, s.revision), (true, Cause::Snapshot, e.cursor, revision));
    assert_eq!(s.decision, e.decision);
    let mut none = watcher.subscribe("", Start::FromRevision(revision), vec![]).await.unwrap();

    // A deleted device's users are denied: deleting Bob's user changes his Mac.
    let r = engine.sync_directory(vec![], vec![], vec!["bob".into()], vec![]).await.unwrap();
    for sub in [&mut all, &mut snap, &mut none] {
        let e = next(sub).await;
        assert_eq!((e.decision.device_id.as_str(), e.revision, e.snapshot), ("mac-bob", r, false));
        assert_eq!(codes(&e)[0], ReasonCode::UserUnknown);
    }

    let _ = stop.send(true);
    task.await.unwrap();
    let end = all.next().await;
    assert!(
        matches!(&end, Some(Err(Error::Unavailable(m))) if m.contains("shutting down")),
        "the stream ends saying the server is shutting down: {end:?}"
    );
    assert!(all.next().await.is_none(), "and then ends");
    assert!(matches!(watcher.subscribe("", Start::Now, vec![]).await, Err(Error::Unavailable(_))));
}

#[tokio::test]
async fn a_full_buffer_ends_the_stream_and_the_ring_resumes_it() {
    let (engine, clock) = demo_engine().await;
    let (_stop, shutdown) = watch::channel(false);
    let limits = WatchLimits { retained_events: 6, ..WatchLimits::default() };
    let config = WatchConfig { buffer: 2, limits, ..WatchConfig::default() };
    let (watcher, _task) = Watcher::spawn(engine.clone(), config, shutdown);
    let mut slow = watcher.subscribe("", Start::Now, vec![]).await.unwrap();
    let start = watcher.head();
    // Caught up (nothing yet), the stream waits for live events in its buffer.
    assert!(tokio::time::timeout(Duration::from_millis(50), slow.next()).await.is_err());
    // Two days on, every Mac's decision has changed by time: more than 2 events at once.
    clock.advance(2 * Timestamp::DAY);
    watcher.tick_now();
    assert!(watcher.head() - start > 6, "{} events", watcher.head() - start);
    let err = slow.next().await.unwrap().unwrap_err();
    assert!(matches!(&err, Error::ResourceExhausted(m) if m.contains(&format!("after_cursor {start} "))), "{err}");
    assert!(slow.next().await.is_none());

    // The last `retain` events can be resumed from; older cursors cannot.
    let head = watcher.head();
    let mut resumed = watcher.subscribe("", Start::AfterCursor(head - 6), vec![]).await.unwrap();
    for cursor in head - 5..=head {
        assert_eq!(next(&mut resumed).await.cursor, cursor);
    }
    let err = watcher.subscribe("", Start::AfterCursor(head - 7), vec![]).await.err().unwrap();
    assert!(matches!(&err, Error::OutOfRange(m) if m.contains("from_revision")), "{err}");
    let err = watcher.subscribe("", Start::AfterCursor(head + 1), vec![]).await.err().unwrap();
    assert!(matches!(&err, Error::OutOfRange(m) if m.contains("another server process")), "{err}");
}

#[test]
fn the_journal_keeps_one_copy_of_each_list_of_reasons() {
    use crate::domain::access::Reason;
    let list = |s: &str| -> Arc<[Reason]> { Arc::new([Reason::new(ReasonCode::Noncompliant, s.to_string())]) };
    let mut shared = journal::SharedReasons::default();
    let mut first = list("fails policy p: firewall");
    shared.share(&mut first, None);
    // The same words from another Mac, and from the same Mac again: the copy kept.
    let mut other = list("fails policy p: firewall");
    shared.share(&mut other, None);
    assert!(Arc::ptr_eq(&first, &other));
    let mut again = list("fails policy p: firewall");
    shared.share(&mut again, Some(&first));
    assert!(Arc::ptr_eq(&first, &again));
    let mut different = list("fails policy p: gatekeeper");
    shared.share(&mut different, Some(&first));
    assert!(!Arc::ptr_eq(&first, &different));
    assert_eq!(different[0].message, "fails policy p: gatekeeper");

    // Lists no decision holds any more are dropped as the set grows, not kept for ever.
    for i in 0..10_000 {
        let mut l = list(&format!("fails policy p{i}: firewall"));
        shared.share(&mut l, None);
    }
    let mut again = list("fails policy p: firewall");
    shared.share(&mut again, None);
    assert!(Arc::ptr_eq(&first, &again), "a list still in use is kept");
    assert!(shared.len() < 4_096, "{} lists kept for 3 in use", shared.len());
}

#[tokio::test]
async fn a_shutdown_does_not_wait_for_the_first_pass_over_every_device() {
    let (engine, _clock) = demo_engine().await;
    let (stop, shutdown) = watch::channel(false);
    stop.send_replace(true);
    let (watcher, task) = Watcher::spawn(engine, WatchConfig::default(), shutdown);
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("the watcher ends").unwrap();
    // It stopped before deciding any device, and takes no stream.
    assert_eq!(watcher.journal.lock().devices.len(), 0);
    let refused = watcher.subscribe("", Start::Now, Vec::new()).await.err().expect("refused");
    assert!(matches!(refused, Error::Unavailable(_)), "{refused:?}");
}
