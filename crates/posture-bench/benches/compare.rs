//! The same macOS compliance check in three engines, in one run: posture, Cedar and Rego
//! (regorus).
//!
//!   cargo bench -p posture-bench --bench compare
//!
//! Inputs: `Spec { users: 100, devices: 100, groups: 10, .. }` written through posture's
//! validated writes into an in-memory engine (`load::in_memory`), i.e. 10 policies from
//! `synthetic::full_policy` (each configures all 19 macOS settings: min/max OS version, min/max
//! build, SIP, FileVault, firewall + block-all + stealth, Gatekeeper minimum, 8 password
//! rules, max threat level), all assigned to every user; the benchmarks run on the engine's
//! state (`load::read`). Two Macs of that state:
//! one posture allows (compliant), one it denies for noncompliance only (FileVault on the boot
//! volume only). The Cedar policies and the Rego data are generated from those same 10
//! `PolicySettings`, and the Cedar context / Rego input from those same `Device`s, by the
//! functions below; everything is built once, outside the timed loops.
//!
//! What each benchmark times:
//! - `compare/posture_*`: `access::decide(&state, device_id, now)`. This is more work than
//!   the other two: it also looks the device up, resolves which policies apply to its user,
//!   runs the access gates (licence, connector, targeting, check-in and token freshness),
//!   applies grace periods and builds a human-readable result per setting and the reasons.
//! - `compare/cedar_*`: `Authorizer::is_authorized` on a prepared `Request` (the inventory is
//!   the context record) against a `PolicySet` of one `permit` and, per posture policy, one
//!   `forbid(.., action == Action::"access", ..) unless { <its 19 settings> }`, with no
//!   entities.
//! - `compare/regorus_*`: `Engine::eval_rule("data.posture.allow")` on an engine with the
//!   policy, the 10 policies as data and the inventory as input already set (regorus keeps
//!   the input between evaluations, so it is not set per evaluation).
//!
//! Encodings (Cedar and Rego have no version type): a version a.b.c is the integer
//! a*1_000_000 + b*1_000 + c, a build 23C71 is 23*100_000_000 + index of C (2)*1_000_000 + 71;
//! both are computed from posture's `OsVersion` / `OsBuild` display strings, and checked to
//! order every compared pair as posture does. Gatekeeper and threat level are their ordinals
//! (declaration order, which is posture's order); SIP, FileVault and the password type are
//! strings compared for equality. An unreported fact is left out of the record: every engine
//! then fails the setting (posture: an error, which denies).
//!
//! Not modelled in Cedar and Rego: grace periods (time) and the access gates. The
//! noncompliant Mac is denied in posture by the policies with a 0-hour grace period (the
//! others are in grace); Cedar and Rego deny it on every policy. The verdicts are asserted
//! equal outside the timed loops, and Cedar is asserted to have evaluated without errors (a
//! `forbid` whose condition errors is skipped, which would allow).

use std::fmt::Write as _;
use std::hint::black_box;

use cedar_policy::{Authorizer, Context, Decision, Entities, EntityUid, PolicySet, Request};
use criterion::{Criterion, criterion_group, criterion_main};
use posture::domain::access::{self, ReasonCode};
use posture::domain::compliance::ComplianceState;
use posture::domain::model::{Device, FileVault, PasswordType, Policy, Sip};
use posture::domain::version::{OsBuild, OsVersion};
use posture::domain::{State, Timestamp};
use posture_bench::load;
use posture_bench::synthetic::{self, Spec};
use serde_json::{Map, Value, json};

/// a.b.c as a*1_000_000 + b*1_000 + c.
fn version_code(v: &OsVersion) -> i64 {
    let s = v.to_string();
    let parts: Vec<i64> = s.split('.').map(|p| p.parse().expect("a numeric version part")).collect();
    let part = |i: usize| parts.get(i).copied().unwrap_or(0);
    assert!(
        parts.len() <= 3 || parts[3..].iter().all(|p| *p == 0),
        "version {s}: a fourth component does not fit the integer encoding"
    );
    assert!(part(1) < 1_000 && part(2) < 1_000, "version {s} does not fit the integer encoding");
    part(0) * 1_000_000 + part(1) * 1_000 + part(2)
}

/// 23C71 as 23*100_000_000 + 2*1_000_000 + 71 (train letters A=0 .. Z=25).
fn build_code(b: &OsBuild) -> i64 {
    let s = b.to_string();
    let letter = s.find(|c: char| c.is_ascii_alphabetic()).expect("a train letter");
    let major: i64 = s[..letter].parse().expect("a numeric major");
    let train = i64::from(s.as_bytes()[letter].to_ascii_uppercase() - b'A');
    let rest = &s[letter + 1..];
    assert!(rest.bytes().all(|c| c.is_ascii_digit()), "build {s}: a suffix letter does not fit the integer encoding");
    let number: i64 = rest.parse().expect("a numeric build number");
    assert!(number < 1_000_000, "build {s} does not fit the integer encoding");
    major * 100_000_000 + train * 1_000_000 + number
}

fn sip_str(s: Sip) -> Option<&'static str> {
    match s {
        Sip::Enabled => Some("enabled"),
        Sip::Disabled => Some("disabled"),
        // posture counts "not collected" as not reported.
        Sip::NotCollected => None,
    }
}

fn file_vault_str(v: FileVault) -> &'static str {
    match v {
        FileVault::NotApplicable => "not_applicable",
        FileVault::NotEncrypted => "not_encrypted",
        FileVault::BootVolumeOnly => "boot_volume_only",
        FileVault::SomeEncrypted => "some_encrypted",
        FileVault::AllEncrypted => "all_encrypted",
    }
}

fn password_type_str(t: PasswordType) -> &'static str {
    match t {
        PasswordType::DeviceDefault => "device_default",
        PasswordType::Alphanumeric => "alphanumeric",
        PasswordType::Numeric => "numeric",
    }
}

/// The device's inventory as one flat record: the Cedar context and the Rego input.
/// Facts the partner did not report are left out.
fn inventory(d: &Device) -> Value {
    let f = &d.facts;
    let pw = &f.password;
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    put("os_version", Some(json!(version_code(&d.os_version))));
    put("os_build", d.os_build.as_ref().map(|b| json!(build_code(b))));
    put("sip", f.system_integrity_protection.and_then(sip_str).map(|s| json!(s)));
    put("file_vault", f.file_vault.map(|v| json!(file_vault_str(v))));
    put("firewall_enabled", f.firewall_enabled.map(|b| json!(b)));
    put("firewall_block_all_incoming", f.firewall_block_all_incoming.map(|b| json!(b)));
    put("firewall_stealth_mode", f.firewall_stealth_mode.map(|b| json!(b)));
    put("gatekeeper", f.gatekeeper.map(|g| json!(g as i64)));
    put("password_required", pw.required.map(|b| json!(b)));
    put("password_simple_blocked", pw.simple_blocked.map(|b| json!(b)));
    put("password_min_length", pw.min_length.map(|v| json!(v)));
    put("password_type", pw.kind.map(|k| json!(password_type_str(k))));
    put("password_min_character_sets", pw.min_character_sets.map(|v| json!(v)));
    put("password_minutes_of_inactivity_before_lock", pw.minutes_of_inactivity_before_lock.map(|v| json!(v)));
    put("password_expiry_days", pw.expiry_days.map(|v| json!(v)));
    put("password_previous_passwords_blocked", pw.previous_passwords_blocked.map(|v| json!(v)));
    put("threat_level", f.threat_level.map(|t| json!(t as i64)));
    Value::Object(m)
}

/// The integer encodings order every pair these benchmarks compare as posture does.
fn check_encodings(policies: &[Policy], devices: &[&Device]) {
    for p in policies {
        let s = &p.settings;
        for d in devices {
            let v = &d.os_version;
            if let Some(min) = &s.os_minimum_version {
                assert_eq!(v >= min, version_code(v) >= version_code(min), "{v} >= {min}");
            }
            if let Some(max) = &s.os_maximum_version {
                assert_eq!(v <= max, version_code(v) <= version_code(max), "{v} <= {max}");
            }
            if let Some(b) = &d.os_build {
                if let Some(min) = &s.os_minimum_build {
                    assert_eq!(b >= min, build_code(b) >= build_code(min), "{b} >= {min}");
                }
                if let Some(max) = &s.os_maximum_build {
                    assert_eq!(b <= max, build_code(b) <= build_code(max), "{b} <= {max}");
                }
            }
        }
    }
}

/// One policy's configured settings as Cedar conditions, each one failing when the fact is
/// not reported (posture: "not reported" is an error, which denies). Mirrors
/// `compliance::check_settings`: a setting that is not configured is not evaluated.
fn cedar_conditions(p: &Policy) -> Vec<String> {
    let s = &p.settings;
    let pw = &s.password;
    let mut c = Vec::new();
    let has = |k: &str, cond: String| format!("(context has {k} && {cond})");
    if let Some(v) = &s.os_minimum_version {
        c.push(format!("context.os_version >= {}", version_code(v)));
    }
    if let Some(v) = &s.os_maximum_version {
        c.push(format!("context.os_version <= {}", version_code(v)));
    }
    if let Some(b) = &s.os_minimum_build {
        c.push(has("os_build", format!("context.os_build >= {}", build_code(b))));
    }
    if let Some(b) = &s.os_maximum_build {
        c.push(has("os_build", format!("context.os_build <= {}", build_code(b))));
    }
    if s.system_integrity_protection_required == Some(true) {
        c.push(has("sip", r#"context.sip == "enabled""#.into()));
    }
    if s.storage_encryption_required == Some(true) {
        c.push(has("file_vault", format!(r#"context.file_vault == "{}""#, file_vault_str(FileVault::AllEncrypted))));
    }
    let flags = [
        ("firewall_enabled", s.firewall_enabled),
        ("firewall_block_all_incoming", s.firewall_block_all_incoming),
        ("firewall_stealth_mode", s.firewall_stealth_mode),
    ];
    for (k, required) in flags {
        // Only "required: true" is a requirement.
        if required == Some(true) {
            c.push(has(k, format!("context.{k}")));
        }
    }
    if let Some(g) = s.gatekeeper_minimum {
        c.push(has("gatekeeper", format!("context.gatekeeper >= {}", g as i64)));
    }
    for (k, required) in [("password_required", pw.required), ("password_simple_blocked", pw.block_simple)] {
        if required == Some(true) {
            c.push(has(k, format!("context.{k}")));
        }
    }
    if let Some(n) = pw.min_length {
        c.push(has("password_min_length", format!("context.password_min_length >= {n}")));
    }
    if let Some(k) = pw.kind.filter(|k| *k != PasswordType::DeviceDefault) {
        c.push(has("password_type", format!(r#"context.password_type == "{}""#, password_type_str(k))));
    }
    if let Some(n) = pw.min_character_sets {
        c.push(has("password_min_character_sets", format!("context.password_min_character_sets >= {n}")));
    }
    if let Some(n) = pw.max_minutes_of_inactivity_before_lock {
        let k = "password_minutes_of_inactivity_before_lock";
        c.push(has(k, format!("context.{k} <= {n}")));
    }
    if let Some(n) = pw.max_expiry_days {
        // A password that never expires (0) does not meet an expiry rule.
        let k = "password_expiry_days";
        c.push(has(k, format!("context.{k} > 0 && context.{k} <= {n}")));
    }
    if let Some(n) = pw.min_previous_passwords_blocked {
        let k = "password_previous_passwords_blocked";
        c.push(has(k, format!("context.{k} >= {n}")));
    }
    if let Some(t) = s.max_threat_level {
        c.push(has("threat_level", format!("context.threat_level <= {}", t as i64)));
    }
    c
}

fn cedar_policies(policies: &[Policy]) -> String {
    let mut text = String::from("@id(\"allow-all\")\npermit(principal, action, resource);\n");
    for p in policies {
        let conditions = cedar_conditions(p);
        assert_eq!(conditions.len(), 19, "{} should configure every macOS setting", p.id);
        writeln!(
            text,
            "@id(\"{}\")\nforbid(principal, action == Action::\"access\", resource) unless {{\n  {}\n}};",
            p.id,
            conditions.join("\n  && ")
        )
        .expect("write to a String");
    }
    text
}

/// The Rego policy: a policy is violated when any of its configured settings fails; a
/// setting absent from the policy's data is not configured and not evaluated; a fact absent
/// from the input fails the setting.
const REGO: &str = r#"
package posture

default allow := false

allow if {
	every p in data.policies {
		not violated(p)
	}
}

violated(p) if { min := p.os_minimum_version; not input.os_version >= min }
violated(p) if { max := p.os_maximum_version; not input.os_version <= max }
violated(p) if { min := p.os_minimum_build; not input.os_build >= min }
violated(p) if { max := p.os_maximum_build; not input.os_build <= max }
violated(p) if { p.sip_required; not input.sip == "enabled" }
violated(p) if { p.storage_encryption_required; not input.file_vault == "all_encrypted" }
violated(p) if { p.firewall_enabled; not input.firewall_enabled == true }
violated(p) if { p.firewall_block_all_incoming; not input.firewall_block_all_incoming == true }
violated(p) if { p.firewall_stealth_mode; not input.firewall_stealth_mode == true }
violated(p) if { min := p.gatekeeper_minimum; not input.gatekeeper >= min }
violated(p) if { p.password_required; not input.password_required == true }
violated(p) if { p.password_block_simple; not input.password_simple_blocked == true }
violated(p) if { min := p.password_min_length; not input.password_min_length >= min }
violated(p) if { kind := p.password_type; not input.password_type == kind }
violated(p) if { min := p.password_min_character_sets; not input.password_min_character_sets >= min }
violated(p) if {
	max := p.password_max_minutes_of_inactivity_before_lock
	not input.password_minutes_of_inactivity_before_lock <= max
}
violated(p) if { max := p.password_max_expiry_days; not expiry_within(max) }
violated(p) if { min := p.password_min_previous_passwords_blocked; not input.password_previous_passwords_blocked >= min }
violated(p) if { max := p.max_threat_level; not input.threat_level <= max }

# A password that never expires (0) does not meet an expiry rule.
expiry_within(max) if {
	input.password_expiry_days > 0
	input.password_expiry_days <= max
}
"#;

/// One policy's configured settings as Rego data (a setting that is not configured is absent).
fn rego_policy(p: &Policy) -> Value {
    let s = &p.settings;
    let pw = &s.password;
    let mut m = Map::new();
    m.insert("id".into(), json!(p.id));
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    let required = |b: Option<bool>| (b == Some(true)).then(|| json!(true));
    put("os_minimum_version", s.os_minimum_version.as_ref().map(|v| json!(version_code(v))));
    put("os_maximum_version", s.os_maximum_version.as_ref().map(|v| json!(version_code(v))));
    put("os_minimum_build", s.os_minimum_build.as_ref().map(|b| json!(build_code(b))));
    put("os_maximum_build", s.os_maximum_build.as_ref().map(|b| json!(build_code(b))));
    put("sip_required", required(s.system_integrity_protection_required));
    put("storage_encryption_required", required(s.storage_encryption_required));
    put("firewall_enabled", required(s.firewall_enabled));
    put("firewall_block_all_incoming", required(s.firewall_block_all_incoming));
    put("firewall_stealth_mode", required(s.firewall_stealth_mode));
    put("gatekeeper_minimum", s.gatekeeper_minimum.map(|g| json!(g as i64)));
    put("password_required", required(pw.required));
    put("password_block_simple", required(pw.block_simple));
    put("password_min_length", pw.min_length.map(|v| json!(v)));
    put("password_type", pw.kind.filter(|k| *k != PasswordType::DeviceDefault).map(|k| json!(password_type_str(k))));
    put("password_min_character_sets", pw.min_character_sets.map(|v| json!(v)));
    put("password_max_minutes_of_inactivity_before_lock", pw.max_minutes_of_inactivity_before_lock.map(|v| json!(v)));
    put("password_max_expiry_days", pw.max_expiry_days.map(|v| json!(v)));
    put("password_min_previous_passwords_blocked", pw.min_previous_passwords_blocked.map(|v| json!(v)));
    put("max_threat_level", s.max_threat_level.map(|t| json!(t as i64)));
    assert_eq!(m.len(), 1 + 19, "{} should configure every macOS setting", p.id);
    Value::Object(m)
}

/// One Mac, prepared for each engine.
struct Case {
    device_id: String,
    cedar_request: Request,
    rego: regorus::Engine,
}

impl Case {
    fn new(state: &State, device_id: &str, rego_data: &regorus::Value) -> Case {
        let d = state.device(device_id).expect("the device is in the state");
        let input = inventory(d);
        let principal: EntityUid = format!(r#"User::"{}""#, d.user_id).parse().expect("a principal uid");
        let action: EntityUid = r#"Action::"access""#.parse().expect("an action uid");
        let resource: EntityUid = format!(r#"Device::"{}""#, d.id).parse().expect("a resource uid");
        let context = Context::from_json_value(input.clone(), None).expect("the inventory as a Cedar context");
        let cedar_request = Request::new(principal, action, resource, context, None).expect("a Cedar request");
        let mut rego = regorus::Engine::new();
        rego.add_policy("posture.rego".into(), REGO.into()).expect("the Rego policy parses");
        rego.add_data(rego_data.clone()).expect("the policies as Rego data");
        rego.set_input(regorus::Value::from_json_str(&input.to_string()).expect("the inventory as Rego input"));
        Case { device_id: device_id.to_string(), cedar_request, rego }
    }

    /// Each engine's verdict, checked against posture's.
    fn assert_verdicts(&mut self, state: &State, now: Timestamp, cedar: &PolicySet, allow: bool) {
        let d = access::decide(state, &self.device_id, now);
        assert_eq!(d.allow, allow, "posture on {}: {d:?}", self.device_id);
        let r = Authorizer::new().is_authorized(&self.cedar_request, cedar, &Entities::empty());
        let errors: Vec<String> = r.diagnostics().errors().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "Cedar errors on {}: {errors:?}", self.device_id);
        let expected = if allow { Decision::Allow } else { Decision::Deny };
        assert_eq!(r.decision(), expected, "Cedar on {}: {:?}", self.device_id, r.diagnostics());
        let v = self.rego.eval_rule("data.posture.allow".into()).expect("the Rego rule evaluates");
        assert_eq!(v, regorus::Value::from(allow), "regorus on {}", self.device_id);
    }
}

fn compare(c: &mut Criterion) {
    let spec = Spec { users: 100, devices: 100, groups: 10, ..Default::default() };
    let engine = load::in_memory(spec).expect("the organisation loads");
    load::read(&engine, |state, now| compare_on(c, state, now));
}

fn compare_on(c: &mut Criterion, state: &State, now: Timestamp) {
    let mut policies: Vec<Policy> = state.policies().cloned().collect();
    policies.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(policies.len(), 10);

    // A Mac posture allows because it meets every policy, and one it denies for noncompliance
    // alone (no other gate denies it).
    let decide = |i: usize| access::decide(state, &synthetic::device_id(i), now);
    let compliant = (0..100)
        .find(|i| {
            let d = decide(*i);
            d.allow && d.state == ComplianceState::Compliant
        })
        .expect("a compliant Mac");
    let noncompliant = (0..100)
        .find(|i| {
            let d = decide(*i);
            let denying: Vec<ReasonCode> = d.reasons.iter().map(|r| r.code).filter(|c| c.denies()).collect();
            !d.allow && !denying.is_empty() && denying.iter().all(|c| *c == ReasonCode::Noncompliant)
        })
        .expect("a Mac denied for noncompliance only");
    let (compliant, noncompliant) = (synthetic::device_id(compliant), synthetic::device_id(noncompliant));
    let devices: Vec<&Device> =
        [&compliant, &noncompliant].iter().map(|id| state.device(id).expect("device")).collect();
    check_encodings(&policies, &devices);

    let cedar: PolicySet = cedar_policies(&policies).parse().expect("the Cedar policies parse");
    let rego_data = json!({ "policies": policies.iter().map(rego_policy).collect::<Vec<_>>() });
    let rego_data = regorus::Value::from_json_str(&rego_data.to_string()).expect("the Rego data");
    let authorizer = Authorizer::new();
    let entities = Entities::empty();
    let rule = String::from("data.posture.allow");

    let mut group = c.benchmark_group("compare");
    for (name, device_id, allow) in [("compliant", &compliant, true), ("noncompliant", &noncompliant, false)] {
        let mut case = Case::new(state, device_id, &rego_data);
        case.assert_verdicts(state, now, &cedar, allow);
        group.bench_function(format!("posture_{name}"), |b| {
            b.iter(|| access::decide(black_box(state), black_box(&case.device_id), now))
        });
        group.bench_function(format!("cedar_{name}"), |b| {
            b.iter(|| authorizer.is_authorized(black_box(&case.cedar_request), black_box(&cedar), &entities))
        });
        // eval_rule takes the rule path as an owned String: the clone is part of the call.
        group.bench_function(format!("regorus_{name}"), |b| {
            b.iter(|| case.rego.eval_rule(black_box(rule.clone())).expect("the Rego rule evaluates"))
        });
        // The engines still agree after the timed runs.
        case.assert_verdicts(state, now, &cedar, allow);
    }
    group.finish();
}

criterion_group!(benches, compare);
criterion_main!(benches);
