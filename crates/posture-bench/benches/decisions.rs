//! The decision path, in process. Each benchmark states its inputs: a synthetic organisation
//! written through posture's validated writes into an in-memory engine.
//!
//!   cargo bench -p posture-bench --bench decisions

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use posture::domain::{access, compliance, targeting};
use posture_bench::load;
use posture_bench::synthetic::{self, Spec};

/// CheckAccess answered from the cache: 10,000 users and Macs, 10 full policies, one warm key.
fn cache_hit(c: &mut Criterion) {
    let spec = Spec { users: 10_000, devices: 10_000, groups: 1_000, ..Spec::default() };
    let engine = load::in_memory(spec).expect("the organisation loads");
    // Mac i belongs to user i; take the first one allowed (or denied).
    let first = |allow: bool| {
        load::read(&engine, |state, now| {
            (1..10_000).find(|i| access::decide(state, &synthetic::device_id(*i), now).allow == allow)
        })
    };
    let hit = |c: &mut Criterion, name: &str, i: usize| {
        let (user, device) = (synthetic::user_id(i), synthetic::device_id(i));
        c.bench_function(name, |b| {
            b.iter(|| {
                let (d, revision) = load::check_access(&engine, black_box(&device));
                (access::other_user_reason(&d, black_box(&user)), d.allow, revision)
            })
        });
    };
    let i = first(true).expect("an allowed Mac");
    let (warm, _) = load::check_access(&engine, &synthetic::device_id(i));
    let warm = access::for_user(&warm, &synthetic::user_id(i));
    assert!(warm.allow, "the benchmark Mac must be allowed: {warm:?}");
    hit(c, "check_access/cache_hit", i);
    // And a denied one: its answer carries a reason per failing policy.
    hit(c, "check_access/cache_hit_denied", first(false).expect("a denied Mac"));
}

/// A full evaluation of one Mac against 10 policies with every setting configured (22 each),
/// the Mac meeting all of them, plus the access gates: the work of a cache miss.
fn full_evaluation(c: &mut Criterion) {
    let spec = Spec { users: 100, devices: 100, groups: 10, ..Spec::default() };
    let engine = load::in_memory(spec).expect("the organisation loads");
    load::read(&engine, |state, now| {
        let i = (1..100).find(|i| access::decide(state, &synthetic::device_id(*i), now).allow).expect("an allowed Mac");
        let device = synthetic::device_id(i);
        let mac = state.device(&device).expect("device");
        let eval = compliance::evaluate(state, mac, now, compliance::Detail::Failing);
        assert_eq!(eval.policies.len(), 10);
        c.bench_function("evaluate/10_policies_all_settings", |b| {
            b.iter(|| access::decide(black_box(state), black_box(&device), now))
        });
    });
}

/// ResolveEnrollment for a user in 50 groups out of 100,000, with a connector that includes
/// 1,000 groups and excludes 100.
fn resolve_enrollment(c: &mut Criterion) {
    let spec = Spec { users: 10_000, devices: 0, groups: 100_000, groups_per_user: 50, policies: 0, seed: 7 };
    let engine = load::in_memory(spec).expect("the organisation loads");
    let include: Vec<String> = (0..1_000).map(|g| synthetic::group_id(g * 97)).collect();
    let exclude: Vec<String> = (0..100).map(|g| synthetic::group_id(g * 89 + 13)).collect();
    let targets = posture::domain::state::Targets::new(&include, &exclude);
    let user = synthetic::user_id(42);
    load::read(&engine, |state, _| {
        assert!(state.groups_of(&user).count() >= 45);
        c.bench_function("targeting/resolve_50_of_100k_groups", |b| {
            b.iter(|| targeting::resolve(black_box(state), black_box(&user), &targets))
        });
    });
}

/// PreviewTargeting over 1,000,000 users and 100,000 groups (5 groups per user), including
/// 10,000 groups and excluding 1,000.
fn preview_targeting(c: &mut Criterion) {
    let spec = Spec { users: 1_000_000, devices: 0, groups: 100_000, groups_per_user: 5, policies: 0, seed: 3 };
    let engine = load::in_memory(spec).expect("the organisation loads");
    let include: Vec<String> = (0..10_000).map(|g| synthetic::group_id(g * 10)).collect();
    let exclude: Vec<String> = (0..1_000).map(|g| synthetic::group_id(g * 100 + 5)).collect();
    let mut group = c.benchmark_group("targeting");
    group.sample_size(10);
    load::read(&engine, |state, _| {
        group.bench_function("preview_1m_users_100k_groups", |b| {
            b.iter(|| targeting::preview(black_box(state), &include, &exclude))
        });
    });
    group.finish();
}

criterion_group!(benches, cache_hit, full_evaluation, resolve_enrollment, preview_targeting);
criterion_main!(benches);
