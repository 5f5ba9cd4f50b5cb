//! The decision path, in process. Each benchmark states its inputs.
//!
//!   cargo bench -p posture-bench --bench decisions

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use posture::auth::Credentials;
use posture::clock::{Clock, SystemClock};
use posture::domain::{access, compliance, targeting};
use posture::engine::Engine;
use posture::store::memory::MemoryStore;
use posture::synthetic::{self, Spec};

fn now() -> posture::domain::Timestamp {
    SystemClock.now()
}

/// CheckAccess answered from the cache: 10,000 users and Macs, 10 full policies, one warm key.
fn cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let engine = rt.block_on(async {
        let spec = Spec { users: 10_000, devices: 10_000, groups: 1_000, now: now(), ..Spec::default() };
        let store = Arc::new(MemoryStore::default());
        let mut chunks = Vec::new();
        synthetic::organisation(spec, |ch| chunks.push(ch), 10_000);
        for ch in chunks {
            posture::store::Store::commit(store.as_ref(), &ch, 0).await.expect("commit");
        }
        Engine::open(store, Arc::new(SystemClock), 100_000, Arc::new(Credentials::default())).await.expect("engine")
    });
    // Mac i belongs to user i; take the first one that is allowed.
    let i =
        (1..10_000).find(|i| engine.check_access_uncached(&synthetic::user_id(*i), &synthetic::device_id(*i)).allow);
    let i = i.expect("an allowed Mac");
    let (user, device) = (synthetic::user_id(i), synthetic::device_id(i));
    let (warm, _) = engine.check_access(&device);
    let warm = posture::domain::access::for_user(&warm, &user);
    assert!(warm.allow, "the benchmark Mac must be allowed: {warm:?}");
    c.bench_function("check_access/cache_hit", |b| {
        b.iter(|| {
            let (d, revision) = engine.check_access(black_box(&device));
            (access::other_user_reason(&d, black_box(&user)), d.allow, revision)
        })
    });
    // And a denied one: its answer carries a reason per failing policy.
    let j =
        (1..10_000).find(|i| !engine.check_access_uncached(&synthetic::user_id(*i), &synthetic::device_id(*i)).allow);
    let j = j.expect("a denied Mac");
    let (user, device) = (synthetic::user_id(j), synthetic::device_id(j));
    c.bench_function("check_access/cache_hit_denied", |b| {
        b.iter(|| {
            let (d, revision) = engine.check_access(black_box(&device));
            (access::other_user_reason(&d, black_box(&user)), d.allow, revision)
        })
    });
}

/// A full evaluation of one Mac against 10 policies with every setting configured (22 each),
/// the Mac meeting all of them, plus the access gates: the work of a cache miss.
fn full_evaluation(c: &mut Criterion) {
    let now = now();
    let state = synthetic::state(Spec { users: 100, devices: 100, groups: 10, now, ..Spec::default() });
    let i = (1..100).find(|i| access::decide(&state, &synthetic::device_id(*i), now).allow).expect("an allowed Mac");
    let device = synthetic::device_id(i);
    let d = access::decide(&state, &device, now);
    assert!(d.allow, "{d:?}");
    let mac = state.device(&device).expect("device");
    let eval = compliance::evaluate(&state, mac, now, compliance::Detail::Failing);
    assert_eq!(eval.policies.len(), 10);
    c.bench_function("evaluate/10_policies_all_settings", |b| {
        b.iter(|| access::decide(black_box(&state), black_box(&device), now))
    });
}

/// ResolveEnrollment for a user in 50 groups out of 100,000, with a connector that includes
/// 1,000 groups and excludes 100.
fn resolve_enrollment(c: &mut Criterion) {
    let state = synthetic::state(Spec {
        users: 10_000,
        devices: 0,
        groups: 100_000,
        groups_per_user: 50,
        policies: 0,
        seed: 7,
        now: now(),
    });
    let include: Vec<String> = (0..1_000).map(|g| synthetic::group_id(g * 97)).collect();
    let exclude: Vec<String> = (0..100).map(|g| synthetic::group_id(g * 89 + 13)).collect();
    let targets = targeting::Targets::new(&include, &exclude);
    let user = synthetic::user_id(42);
    assert!(state.groups_of(&user).len() >= 45);
    c.bench_function("targeting/resolve_50_of_100k_groups", |b| {
        b.iter(|| targeting::resolve(black_box(&state), black_box(&user), &targets))
    });
}

/// PreviewTargeting over 1,000,000 users and 100,000 groups (5 groups per user), including
/// 10,000 groups and excluding 1,000.
fn preview_targeting(c: &mut Criterion) {
    let state = synthetic::state(Spec {
        users: 1_000_000,
        devices: 0,
        groups: 100_000,
        groups_per_user: 5,
        policies: 0,
        seed: 3,
        now: now(),
    });
    let include: Vec<String> = (0..10_000).map(|g| synthetic::group_id(g * 10)).collect();
    let exclude: Vec<String> = (0..1_000).map(|g| synthetic::group_id(g * 100 + 5)).collect();
    let mut group = c.benchmark_group("targeting");
    group.sample_size(10);
    group.bench_function("preview_1m_users_100k_groups", |b| {
        b.iter(|| targeting::preview(black_box(&state), &include, &exclude))
    });
    group.finish();
}

criterion_group!(benches, cache_hit, full_evaluation, resolve_enrollment, preview_targeting);
criterion_main!(benches);
