//! The access decision: may this user on this device get in? Every gate adds its own reason;
//! any deny reason denies. Time enters as `now`, and the decision says until when it holds.

use std::borrow::Cow;
use std::sync::Arc;

use super::compliance::{self, ComplianceState, Detail, Evaluation, StateCause};
use super::model::{Device, Timestamp};
use super::state::State;
use super::version::OsVersion;

mod gates;
mod message;

pub use message::{Failed, Message};

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
    /// The request named no user or no device (Envoy ext_authz: neither a header nor a claim).
    IdentityMissing,
    /// The user or device id the request named is not a valid id.
    IdentityInvalid,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 26] = [
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
        ReasonCode::IdentityMissing,
        ReasonCode::IdentityInvalid,
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
            IdentityMissing => "IDENTITY_MISSING",
            IdentityInvalid => "IDENTITY_INVALID",
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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reason {
    pub code: ReasonCode,
    pub message: Message,
}

impl Reason {
    pub fn new(code: ReasonCode, message: impl Into<Message>) -> Self {
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
    /// Shared, not owned: thousands of Macs fail in the same words, and whoever keeps many
    /// decisions (the watcher) keeps one copy of each list.
    pub reasons: Arc<[Reason]>,
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
    registered_to_another(decision, user_id).then(|| {
        Reason::new(
            ReasonCode::DeviceRegisteredToAnotherUser,
            format!("device {} is registered to another user, not to {user_id}", decision.device_id),
        )
    })
}

/// Whether the device is registered to another user than `user_id` (who is then denied).
fn registered_to_another(decision: &DeviceDecision, user_id: &str) -> bool {
    decision.primary_user_id.as_deref().is_some_and(|primary| primary != user_id)
}

/// A device's decision as one user sees it: another user than the primary user is denied, for
/// that first, then for the device's own deny reasons (its allowing ones do not apply to them).
pub struct SeenBy<'a> {
    pub allow: bool,
    other_user: Option<Reason>,
    decision: &'a DeviceDecision,
}

impl<'a> SeenBy<'a> {
    pub fn reasons(&self) -> impl Iterator<Item = &Reason> + Clone {
        let denied = self.other_user.is_some();
        self.other_user.iter().chain(self.decision.reasons.iter().filter(move |r| !denied || r.code.denies()))
    }

    /// The device's decision, for its state and until when it holds.
    pub fn decision(&self) -> &DeviceDecision {
        self.decision
    }

    /// The short answer (CheckAccess, Envoy's): each code once, in the order the codes first
    /// appear, with its first reason's message; a DENY lists only what denies. What this leaves
    /// out — a warning beside a denial, the second policy failed — is in EvaluateDevice.
    /// (An answer over 256 bytes also costs a write to the socket of its own: HTTP/2 sends
    /// such a payload apart from the frames before it.)
    pub fn brief(&self) -> impl Iterator<Item = Brief<'_>> {
        let allow = self.allow;
        let listed = self.reasons().filter(move |r| allow || r.code.denies());
        listed.clone().enumerate().filter_map(move |(i, reason)| {
            let same = |r: &&Reason| r.code == reason.code;
            (!listed.clone().take(i).any(|r| same(&r)))
                .then(|| Brief { reason, more: listed.clone().skip(i + 1).filter(same).count() })
        })
    }
}

/// One line of the short answer: a reason code, with the message of its first reason.
pub struct Brief<'a> {
    pub reason: &'a Reason,
    /// How many further reasons had the same code.
    pub more: usize,
}

impl<'a> Brief<'a> {
    pub fn message(&self) -> Cow<'a, str> {
        match self.more {
            0 => Cow::Borrowed(self.reason.message.as_str()),
            more => Cow::Owned(format!("{} (and {more} more)", self.reason.message)),
        }
    }
}

/// The decision for `user_id`, without copying the device's (the hot path renders from it).
pub fn seen_by<'a>(decision: &'a DeviceDecision, user_id: &str) -> SeenBy<'a> {
    let other_user = other_user_reason(decision, user_id);
    SeenBy { allow: decision.allow && other_user.is_none(), other_user, decision }
}

/// The same, as a decision of its own.
pub fn for_user(decision: &DeviceDecision, user_id: &str) -> AccessDecision {
    let seen = seen_by(decision, user_id);
    AccessDecision {
        allow: seen.allow,
        state: decision.state,
        reasons: seen.reasons().cloned().collect(),
        valid_until: decision.valid_until,
    }
}

/// Everything EvaluateDevice says of a device.
pub struct Explanation<'a> {
    pub device: &'a Device,
    /// Every applicable policy, with every configured setting.
    pub evaluation: Evaluation<'a>,
    /// The reasons that explain the state beyond the policies.
    pub reasons: Vec<Reason>,
}

/// `None`: the device is unknown.
pub fn explain<'a>(state: &'a State, device_id: &str, now: Timestamp) -> Option<Explanation<'a>> {
    let device = state.device(device_id)?;
    let evaluation = compliance::evaluate(state, device, now, Detail::All);
    let decision = decide_evaluated(state, device, &evaluation, now);
    let reasons = decision.reasons.iter().filter(|r| r.code.explains_state()).cloned().collect();
    Some(Explanation { device, evaluation, reasons })
}

/// Decides access to `device_id` for its primary user at `now`.
pub fn decide(state: &State, device_id: &str, now: Timestamp) -> DeviceDecision {
    let Some(device) = state.device(device_id) else {
        return DeviceDecision {
            device_id: device_id.to_string(),
            primary_user_id: None,
            allow: false,
            state: ComplianceState::Unknown,
            reasons: Arc::new([Reason::new(
                ReasonCode::DeviceUnknown,
                format!("no device {device_id} has been reported by the partner"),
            )]),
            valid_until: None,
        };
    };
    let eval = compliance::evaluate(state, device, now, Detail::Names);
    decide_evaluated(state, device, &eval, now)
}

/// The gates, given an evaluation already made: each adds its reasons; any that denies denies.
pub fn decide_evaluated(state: &State, device: &Device, eval: &Evaluation, now: Timestamp) -> DeviceDecision {
    let mut gates = gates::Gates::new(eval.next_change, now);
    gates.identity(state, device);
    gates.connector(state);
    gates.registration(device);
    gates.targeting(state, device);
    gates.duplicates(state, device);
    gates.freshness(device, &eval.freshness);
    gates.macos(device);
    gates.compliance(eval);
    let (mut reasons, valid_until) = gates.finish();
    let allow = allows(eval.state, &reasons);
    if allow && !reasons.iter().any(|r| r.code == ReasonCode::InGracePeriod) {
        reasons.insert(0, allowed_reason(eval));
    }
    DeviceDecision {
        device_id: device.id.to_string(),
        primary_user_id: Some(device.user_id.to_string()),
        allow,
        state: eval.state,
        reasons: reasons.into(),
        valid_until,
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
        reasons: Arc::new([Reason::new(ReasonCode::StoreUnavailable, message)]),
        valid_until: None,
    }
}
