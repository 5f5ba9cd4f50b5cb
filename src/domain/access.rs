//! The access decision: may this user on this device get in? Every gate adds its own reason;
//! any deny reason denies. Time enters as `now`, and the decision says until when it holds.

use std::borrow::Cow;

use super::compliance::{self, ComplianceState, Detail, Evaluation, Freshness, StateCause};
use super::model::{ConnectorState, Device, NoPolicyTreatment, Registration, Timestamp};
use super::state::State;
use super::targeting::{self, EnrollmentTarget};
use super::version::OsVersion;

pub use super::compliance::{TOKEN_STALE_AFTER_SECS, UNRESPONSIVE_AFTER_SECS};
/// A refresh token is issued every 7 days; once it lapses the user must sign in again.
pub const REFRESH_TOKEN_LIFETIME_SECS: i64 = 7 * Timestamp::DAY;
/// Macs of a terminated connector are removed 90 days after termination.
pub const REMOVAL_AFTER_DAYS: i64 = 90;
/// The oldest macOS the integration supports.
pub fn minimum_macos() -> OsVersion {
    OsVersion::new(&[10, 12])
}

/// The oldest partner version the integration supports.
pub fn minimum_partner_version() -> OsVersion {
    OsVersion::new(&[10, 1, 0])
}

/// Stable reason codes: callers may branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReasonCode {
    Compliant,
    InGracePeriod,
    DeviceUnknown,
    DeviceRegisteredToAnotherUser,
    UserUnknown,
    LicenceMissing,
    IntegrationDisabled,
    DeviceRemoved,
    NotRegisteredThroughPartner,
    UserNotTargeted,
    DuplicateRegistration,
    Unresponsive,
    TokenStale,
    SignInRequired,
    UnsupportedOs,
    Noncompliant,
    ComplianceError,
    ValidityExpired,
    NoPolicy,
    PartnerVerdictNoncompliant,
    PolicyTargetsDeviceGroup,
    /// Allowed on the partner's own verdict (the partner decided, not posture's policies).
    PartnerVerdictCompliant,
    /// The partner's verdict is 24 hours old or more.
    PartnerVerdictStale,
    /// This replica has lost its store for longer than the allowed staleness.
    StoreUnavailable,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 24] = [
        ReasonCode::Compliant,
        ReasonCode::InGracePeriod,
        ReasonCode::DeviceUnknown,
        ReasonCode::DeviceRegisteredToAnotherUser,
        ReasonCode::UserUnknown,
        ReasonCode::LicenceMissing,
        ReasonCode::IntegrationDisabled,
        ReasonCode::DeviceRemoved,
        ReasonCode::NotRegisteredThroughPartner,
        ReasonCode::UserNotTargeted,
        ReasonCode::DuplicateRegistration,
        ReasonCode::Unresponsive,
        ReasonCode::TokenStale,
        ReasonCode::SignInRequired,
        ReasonCode::UnsupportedOs,
        ReasonCode::Noncompliant,
        ReasonCode::ComplianceError,
        ReasonCode::ValidityExpired,
        ReasonCode::NoPolicy,
        ReasonCode::PartnerVerdictNoncompliant,
        ReasonCode::PolicyTargetsDeviceGroup,
        ReasonCode::PartnerVerdictCompliant,
        ReasonCode::PartnerVerdictStale,
        ReasonCode::StoreUnavailable,
    ];

    /// The SCREAMING_SNAKE name used on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        use ReasonCode::*;
        match self {
            Compliant => "COMPLIANT",
            InGracePeriod => "IN_GRACE_PERIOD",
            DeviceUnknown => "DEVICE_UNKNOWN",
            DeviceRegisteredToAnotherUser => "DEVICE_REGISTERED_TO_ANOTHER_USER",
            UserUnknown => "USER_UNKNOWN",
            LicenceMissing => "LICENCE_MISSING",
            IntegrationDisabled => "INTEGRATION_DISABLED",
            DeviceRemoved => "DEVICE_REMOVED",
            NotRegisteredThroughPartner => "NOT_REGISTERED_THROUGH_PARTNER",
            UserNotTargeted => "USER_NOT_TARGETED",
            DuplicateRegistration => "DUPLICATE_REGISTRATION",
            Unresponsive => "UNRESPONSIVE",
            TokenStale => "TOKEN_STALE",
            SignInRequired => "SIGN_IN_REQUIRED",
            UnsupportedOs => "UNSUPPORTED_OS",
            Noncompliant => "NONCOMPLIANT",
            ComplianceError => "COMPLIANCE_ERROR",
            ValidityExpired => "VALIDITY_EXPIRED",
            NoPolicy => "NO_POLICY",
            PartnerVerdictNoncompliant => "PARTNER_VERDICT_NONCOMPLIANT",
            PolicyTargetsDeviceGroup => "POLICY_TARGETS_DEVICE_GROUP",
            PartnerVerdictCompliant => "PARTNER_VERDICT_COMPLIANT",
            PartnerVerdictStale => "PARTNER_VERDICT_STALE",
            StoreUnavailable => "STORE_UNAVAILABLE",
        }
    }

    /// Does this reason deny access on its own? Only the listed ones do not, so a reason
    /// added later denies unless it is added here on purpose.
    pub fn denies(self) -> bool {
        !matches!(
            self,
            ReasonCode::Compliant
                | ReasonCode::InGracePeriod
                | ReasonCode::PolicyTargetsDeviceGroup
                | ReasonCode::PartnerVerdictCompliant
        )
    }
}

impl ReasonCode {
    /// Does this reason say why a device's compliance state is what it is, beyond its policy
    /// results? (EvaluateDevice lists these beside the policies.)
    pub fn explains_state(self) -> bool {
        use ReasonCode::*;
        matches!(
            self,
            NoPolicy
                | ValidityExpired
                | PartnerVerdictNoncompliant
                | PartnerVerdictCompliant
                | PartnerVerdictStale
                | PolicyTargetsDeviceGroup
                | Unresponsive
                | TokenStale
                | IntegrationDisabled
                | DeviceRemoved
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: ReasonCode,
    pub message: Cow<'static, str>,
}

impl Reason {
    pub fn new(code: ReasonCode, message: impl Into<Cow<'static, str>>) -> Self {
        Reason { code, message: message.into() }
    }
}

/// The decision for a device's own primary user. Decisions for other users derive from it
/// (see [`for_user`]), so one cached value per device serves every caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceDecision {
    pub device_id: String,
    /// `None` when the device is unknown.
    pub primary_user_id: Option<String>,
    pub allow: bool,
    pub state: ComplianceState,
    pub reasons: Vec<Reason>,
    /// Until when this decision holds by time alone (`None`: until something changes).
    pub valid_until: Option<Timestamp>,
}

/// The decision for one user on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessDecision {
    pub allow: bool,
    pub state: ComplianceState,
    pub reasons: Vec<Reason>,
    pub valid_until: Option<Timestamp>,
}

/// The extra reason a caller who is not the device's primary user is denied with.
pub fn other_user_reason(decision: &DeviceDecision, user_id: &str) -> Option<Reason> {
    let primary = decision.primary_user_id.as_deref()?;
    (primary != user_id).then(|| {
        Reason::new(
            ReasonCode::DeviceRegisteredToAnotherUser,
            format!("device {} is registered to another user, not to {user_id}", decision.device_id),
        )
    })
}

/// Applies the caller's identity to a device decision: another user is denied, with the
/// device's own deny reasons after the mismatch.
pub fn for_user(decision: &DeviceDecision, user_id: &str) -> AccessDecision {
    let other = other_user_reason(decision, user_id);
    let denied = other.is_some();
    AccessDecision {
        allow: decision.allow && !denied,
        state: decision.state,
        reasons: other
            .into_iter()
            .chain(decision.reasons.iter().filter(|r| !denied || r.code.denies()).cloned())
            .collect(),
        valid_until: decision.valid_until,
    }
}

/// Decides access to `device_id` for its primary user at `now`.
pub fn decide(state: &State, device_id: &str, now: Timestamp) -> DeviceDecision {
    let Some(device) = state.device(device_id) else {
        return DeviceDecision {
            device_id: device_id.to_string(),
            primary_user_id: None,
            allow: false,
            state: ComplianceState::Unknown,
            reasons: vec![Reason::new(
                ReasonCode::DeviceUnknown,
                format!("no device {device_id} has been reported by the partner"),
            )],
            valid_until: None,
        };
    };
    let eval = compliance::evaluate(state, device, now, Detail::Failing);
    decide_evaluated(state, device, &eval, now)
}

/// The gates, given an evaluation already made.
pub fn decide_evaluated(state: &State, device: &Device, eval: &Evaluation, now: Timestamp) -> DeviceDecision {
    let mut reasons = Vec::new();
    let mut next = eval.next_change;
    let mut until = |t: Timestamp| {
        if t > now {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
    };
    let deny = |reasons: &mut Vec<Reason>, code, msg: String| reasons.push(Reason::new(code, msg));

    // Who: the primary user exists and holds both licences (cause 3).
    match state.user(&device.user_id) {
        None => deny(
            &mut reasons,
            ReasonCode::UserUnknown,
            format!("the device's user {} is not in the directory; sync the directory", device.user_id),
        ),
        Some(u) => {
            let mut missing = Vec::new();
            if !u.device_management_licence {
                missing.push("device management");
            }
            if !u.premium_identity_licence {
                missing.push("premium identity");
            }
            if !missing.is_empty() {
                deny(
                    &mut reasons,
                    ReasonCode::LicenceMissing,
                    format!("user {} has no {} licence", u.user_principal_name, missing.join(" or ")),
                );
            }
        }
    }

    // The integration must be on (cause 5); a terminated connector's Macs are removed later.
    let connector = state.connector();
    match connector.state {
        ConnectorState::Enabled => {}
        ConnectorState::NotConfigured => deny(
            &mut reasons,
            ReasonCode::IntegrationDisabled,
            "the partner integration is not configured; enable the connector".into(),
        ),
        ConnectorState::Terminated => match connector.removal_at {
            Some(removal) if now >= removal => deny(
                &mut reasons,
                ReasonCode::DeviceRemoved,
                format!("the partner connector was terminated; its Macs were removed at {removal}"),
            ),
            removal => {
                if let Some(removal) = removal {
                    until(removal);
                }
                let removed = removal.map(|r| format!("; its Macs will be removed at {r}")).unwrap_or_default();
                deny(
                    &mut reasons,
                    ReasonCode::IntegrationDisabled,
                    format!(
                        "the partner integration is terminated and its Macs are noncompliant{removed}; re-enable the connector"
                    ),
                )
            }
        },
    }

    // How it was registered (cause 4) and whether its user is targeted at all.
    if device.registration == Registration::Direct {
        deny(
            &mut reasons,
            ReasonCode::NotRegisteredThroughPartner,
            "the Mac was registered directly, not through the partner's Self Service flow".into(),
        );
    }
    match targeting::target(state, &device.user_id, state.connector_targets()) {
        EnrollmentTarget::Partner => {}
        EnrollmentTarget::Direct => deny(
            &mut reasons,
            ReasonCode::UserNotTargeted,
            format!(
                "user {} is excluded from partner enrollment by group {}; the Mac must enroll directly",
                device.user_id,
                targeting::resolve_saved(state, &device.user_id).exclude_group_ids.join(", ")
            ),
        ),
        EnrollmentTarget::NotTargeted => deny(
            &mut reasons,
            ReasonCode::UserNotTargeted,
            format!("user {} is in no include group of the partner connector", device.user_id),
        ),
    }

    // Duplicates are reported, never merged into an allow (cause 6).
    let same_serial = state.devices_with_serial(&device.serial_number);
    if same_serial.len() > 1 {
        let others: Vec<&str> = same_serial.iter().filter(|d| **d != device.id).map(String::as_str).collect();
        deny(
            &mut reasons,
            ReasonCode::DuplicateRegistration,
            format!("serial {} is also registered as {}", device.serial_number, others.join(", ")),
        );
    }

    // Freshness (rule 5): never compliant on old data.
    let Freshness { unresponsive, token_stale, verdict_stale, .. } = eval.freshness;
    if unresponsive {
        deny(
            &mut reasons,
            ReasonCode::Unresponsive,
            format!("no check-in with the partner since {} (24 hours or more)", device.last_check_in),
        );
    }
    if token_stale {
        deny(
            &mut reasons,
            ReasonCode::TokenStale,
            format!("the directory token was last renewed at {} (over 24 hours ago)", device.last_token_renewal),
        );
    }
    if verdict_stale && let Some(v) = device.partner_verdict {
        deny(
            &mut reasons,
            ReasonCode::PartnerVerdictStale,
            format!("the partner's verdict was decided at {} (24 hours or more ago); it is not trusted", v.decided_at),
        );
    }
    if let Some(issued) = device.refresh_token_issued {
        let lapses = issued.plus_secs(REFRESH_TOKEN_LIFETIME_SECS);
        if now >= lapses {
            deny(
                &mut reasons,
                ReasonCode::SignInRequired,
                "the refresh token has lapsed (7 days); the user must sign in again".into(),
            );
        } else {
            until(lapses);
        }
    }
    if device.os_version < minimum_macos() {
        deny(
            &mut reasons,
            ReasonCode::UnsupportedOs,
            format!("macOS {} is older than the supported {}", device.os_version, minimum_macos()),
        );
    }

    // Compliance itself.
    compliance_reasons(eval, &mut reasons);

    let allow = allows(eval.state, &reasons);
    if allow && !reasons.iter().any(|r| r.code == ReasonCode::InGracePeriod) {
        reasons.insert(0, allowed_reason(eval));
    }
    DeviceDecision {
        device_id: device.id.clone(),
        primary_user_id: Some(device.user_id.clone()),
        allow,
        state: eval.state,
        reasons,
        valid_until: next,
    }
}

/// ALLOW needs both: a state that lets in, and no reason that denies. (So neither a state nor a
/// reason code added later can allow by accident.)
pub fn allows(state: ComplianceState, reasons: &[Reason]) -> bool {
    state.allows_access() && !reasons.iter().any(|r| r.code.denies())
}

/// Why an allowed device is allowed (outside a grace period).
fn allowed_reason(eval: &Evaluation) -> Reason {
    match eval.cause {
        StateCause::PartnerVerdict { decided_at, .. } => Reason::new(
            ReasonCode::PartnerVerdictCompliant,
            format!("the partner decided at {decided_at} that the device is compliant"),
        ),
        StateCause::NoPolicy(_) => Reason::new(
            ReasonCode::Compliant,
            "no compliance policy applies and the tenant counts such devices as compliant",
        ),
        _ => Reason::new(ReasonCode::Compliant, "the device meets every policy that applies"),
    }
}

/// The decision of a replica that cannot vouch for its data: it has not confirmed the store's
/// latest revision for longer than it may serve without.
pub fn store_unavailable(device_id: &str, message: String) -> DeviceDecision {
    DeviceDecision {
        device_id: device_id.to_string(),
        primary_user_id: None,
        allow: false,
        state: ComplianceState::Unknown,
        reasons: vec![Reason::new(ReasonCode::StoreUnavailable, message)],
        valid_until: None,
    }
}

fn compliance_reasons(eval: &Evaluation, reasons: &mut Vec<Reason>) {
    for (policy, group) in &eval.device_group_policies {
        reasons.push(Reason::new(
            ReasonCode::PolicyTargetsDeviceGroup,
            format!(
                "policy {policy} is assigned to device group {group}, which does not evaluate partner-managed Macs"
            ),
        ));
    }
    match eval.cause {
        StateCause::ValidityExpired { reported_at, valid_until } => reasons.push(Reason::new(
            ReasonCode::ValidityExpired,
            format!("nothing reported since {} and the validity period ended at {}", reported_at, valid_until),
        )),
        StateCause::PartnerVerdict { compliant: false, decided_at } => reasons.push(Reason::new(
            ReasonCode::PartnerVerdictNoncompliant,
            format!("the partner decided at {decided_at} that the device is noncompliant"),
        )),
        StateCause::PartnerVerdict { compliant: true, .. } => {}
        StateCause::NoPolicy(t) => {
            if t == NoPolicyTreatment::Noncompliant {
                reasons.push(Reason::new(
                    ReasonCode::NoPolicy,
                    format!("no compliance policy applies and the tenant counts such devices as {t:?}").to_lowercase(),
                ));
            }
        }
        StateCause::Policies => {
            for p in &eval.policies {
                let failing: Vec<String> = p
                    .settings
                    .iter()
                    .filter(|s| s.state == ComplianceState::Noncompliant || s.state == ComplianceState::Error)
                    .map(|s| format!("{} (expected {}, actual {})", s.setting, s.expected, s.actual))
                    .collect();
                let list = failing.join("; ");
                match p.state {
                    ComplianceState::InGracePeriod => reasons.push(Reason::new(
                        ReasonCode::InGracePeriod,
                        format!(
                            "fails policy {} but its grace period ends at {}: {list}",
                            p.policy.name,
                            p.grace_period_ends.unwrap_or_default()
                        ),
                    )),
                    ComplianceState::Noncompliant => reasons
                        .push(Reason::new(ReasonCode::Noncompliant, format!("fails policy {}: {list}", p.policy.name))),
                    ComplianceState::Error | ComplianceState::Unknown | ComplianceState::Conflict => {
                        reasons.push(Reason::new(
                            ReasonCode::ComplianceError,
                            format!("policy {} cannot be evaluated: {list}", p.policy.name),
                        ))
                    }
                    _ => {}
                }
            }
        }
    }
}
