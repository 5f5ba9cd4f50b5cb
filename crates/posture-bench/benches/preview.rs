//! PreviewPolicy at 100,000 Macs: every Mac decided as it is and as it would be with a draft
//! saved. Baselines from the same run: one pass deciding every Mac (what CheckAccess does for
//! each on a cache miss, on one thread) and a copy of the state (which the preview makes; its
//! indexes are shared until written).
//!
//!   cargo bench -p posture-bench --bench preview

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use posture::domain::access;
use posture::proto as pb;
use posture_bench::load;
use posture_bench::synthetic::{self, Spec};

const MACS: usize = 100_000;

fn preview_policy(c: &mut Criterion) {
    let spec = Spec { users: MACS, devices: MACS, groups: 1_000, ..Spec::default() };
    let engine = load::in_memory(spec).expect("the organisation loads");
    // "Raise the minimum macOS to 15.0": the synthetic Macs run 14, so most are locked out.
    let mut policy = synthetic::full_policy(0);
    policy.settings.as_mut().expect("settings").os_minimum_version = "15.0".into();
    let request = pb::PreviewPolicyRequest {
        draft: Some(pb::preview_policy_request::Draft::Policy(policy)),
        ..Default::default()
    };
    let answer = load::preview_policy(&engine, &request).expect("the preview answers");
    let total = answer.allow_to_deny + answer.deny_to_allow + answer.into_grace + answer.unchanged;
    assert_eq!(total, MACS as u64, "every Mac is counted once");
    assert!(answer.allow_to_deny + answer.into_grace > MACS as u64 / 2, "the draft changes most Macs: {answer:?}");
    eprintln!(
        "preview: {} locked out, {} let in, {} into grace, {} unchanged",
        answer.allow_to_deny, answer.deny_to_allow, answer.into_grace, answer.unchanged
    );

    let mut group = c.benchmark_group("preview");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.bench_function("preview_policy_100k_macs", |b| b.iter(|| load::preview_policy(&engine, black_box(&request))));
    group.bench_function("baseline_decide_every_mac_100k", |b| {
        b.iter(|| {
            load::read(&engine, |state, now| {
                state.devices().filter(|d| access::decide(state, &d.id, now).allow).count()
            })
        })
    });
    group.bench_function("baseline_clone_state_100k", |b| b.iter(|| load::read(&engine, |state, _| state.clone())));
    group.finish();
}

criterion_group!(benches, preview_policy);
criterion_main!(benches);
