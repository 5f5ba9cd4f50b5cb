//! A synthetic organisation passes posture's validation whole and has the shape the
//! benchmarks and load scripts count on.
#![allow(clippy::unwrap_used)]

use posture::domain::access;
use posture::domain::model::ConnectorState;
use posture_bench::load;
use posture_bench::synthetic::{ALL_USERS, Spec, device_id, group_id, user_id};

#[test]
fn an_organisation_loads_through_validation_with_its_shape() {
    let spec = Spec { users: 300, devices: 400, groups: 20, groups_per_user: 3, policies: 4, seed: 9 };
    let engine = load::in_memory(spec).unwrap();
    load::read(&engine, |state, now| {
        assert_eq!((state.user_count(), state.device_count()), (300, 400));
        assert_eq!(state.groups().count(), 21);
        assert_eq!(state.group(ALL_USERS).unwrap().member_count(), 300);
        assert!((2..=4).contains(&state.groups_of(&user_id(7)).count()), "up to 3 groups and all-users");
        assert_eq!(state.policies().count(), 4);
        assert!(state.policies().all(|p| state.assignment(&p.id).unwrap().include_group_ids == [ALL_USERS]));
        let connector = state.connector();
        assert_eq!(connector.state, ConnectorState::Enabled);
        assert_eq!(connector.include_group_ids, [ALL_USERS]);
        assert_eq!(connector.exclude_group_ids, [group_id(0)]);
        // Mac i belongs to user i mod users; most are allowed.
        assert_eq!(state.device(&device_id(310)).unwrap().user_id, user_id(10).into());
        let allowed = (0..400).filter(|i| access::decide(state, &device_id(*i), now).allow).count();
        assert!(allowed > 200, "{allowed} of 400 allowed");
    });
}

#[test]
fn the_same_seed_makes_the_same_organisation() {
    let spec = Spec { users: 50, devices: 50, groups: 5, ..Spec::default() };
    let decisions = |seed| {
        let engine = load::in_memory(Spec { seed, ..spec }).unwrap();
        load::read(&engine, |state, now| {
            (0..50).map(|i| access::decide(state, &device_id(i), now).allow).collect::<Vec<_>>()
        })
    };
    assert_eq!(decisions(1), decisions(1));
    assert_ne!(decisions(1), decisions(2));
}
