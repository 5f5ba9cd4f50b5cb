//! The gates of an access decision, in the order their reasons are given: who the user is, the
//! integration, how the Mac was registered, targeting, duplicates, freshness, the macOS
//! version, and compliance. Each adds a reason for what it finds; the decision is made from
//! them (see [`super::decide_evaluated`]).

use super::{Failed, Message, REFRESH_TOKEN_LIFETIME_SECS, Reason, ReasonCode, minimum_macos};
use crate::domain::compliance::{ComplianceState, Evaluation, Freshness, StateCause};
use crate::domain::model::{ConnectorState, Device, NoPolicyTreatment, Registration, Timestamp};
use crate::domain::state::State;
use crate::domain::targeting::{self, EnrollmentTarget};

/// The reasons found so far, and the next instant at which time alone changes any of them.
pub(super) struct Gates {
    reasons: Vec<Reason>,
    next: Option<Timestamp>,
    now: Timestamp,
}

impl Gates {
    pub(super) fn new(next: Option<Timestamp>, now: Timestamp) -> Self {
        Gates { reasons: Vec::new(), next, now }
    }

    pub(super) fn finish(self) -> (Vec<Reason>, Option<Timestamp>) {
        (self.reasons, self.next)
    }

    fn add(&mut self, code: ReasonCode, message: impl Into<Message>) {
        self.reasons.push(Reason::new(code, message));
    }

    /// What this gate says holds until `t`.
    fn until(&mut self, t: Timestamp) {
        if t > self.now {
            self.next = Some(self.next.map_or(t, |n| n.min(t)));
        }
    }

    /// The primary user exists and holds both licences (cause 3).
    pub(super) fn identity(&mut self, state: &State, device: &Device) {
        let Some(u) = state.user(&device.user_id) else {
            let message = format!("the device's user {} is not in the directory; sync the directory", device.user_id);
            return self.add(ReasonCode::UserUnknown, message);
        };
        let mut missing = Vec::new();
        if !u.device_management_licence {
            missing.push("device management");
        }
        if !u.premium_identity_licence {
            missing.push("premium identity");
        }
        if !missing.is_empty() {
            let message = format!("user {} has no {} licence", u.user_principal_name, missing.join(" or "));
            self.add(ReasonCode::LicenceMissing, message);
        }
    }

    /// The integration must be on (cause 5); a terminated connector's Macs are removed later.
    pub(super) fn connector(&mut self, state: &State) {
        let connector = state.connector();
        match connector.state {
            ConnectorState::Enabled => {}
            ConnectorState::NotConfigured => self.add(
                ReasonCode::IntegrationDisabled,
                "the partner integration is not configured; enable the connector",
            ),
            ConnectorState::Terminated => match connector.removal_at {
                Some(removal) if self.now >= removal => self.add(
                    ReasonCode::DeviceRemoved,
                    format!("the partner connector was terminated; its Macs were removed at {removal}"),
                ),
                removal => {
                    if let Some(removal) = removal {
                        self.until(removal);
                    }
                    let removed = removal.map(|r| format!("; its Macs will be removed at {r}")).unwrap_or_default();
                    self.add(
                        ReasonCode::IntegrationDisabled,
                        format!(
                            "the partner integration is terminated and its Macs are noncompliant{removed}; re-enable \
                             the connector"
                        ),
                    )
                }
            },
        }
    }

    /// Registered through the partner's flow (cause 4).
    pub(super) fn registration(&mut self, device: &Device) {
        if device.registration == Registration::Direct {
            self.add(
                ReasonCode::NotRegisteredThroughPartner,
                "the Mac was registered directly, not through the partner's Self Service flow",
            );
        }
    }

    /// The primary user is sent to the partner: in an include group, in no exclude group.
    pub(super) fn targeting(&mut self, state: &State, device: &Device) {
        match targeting::target(state, &device.user_id, state.connector_targets()) {
            EnrollmentTarget::Partner => {}
            EnrollmentTarget::Direct => self.add(
                ReasonCode::UserNotTargeted,
                format!(
                    "user {} is excluded from partner enrollment by group {}; the Mac must enroll directly",
                    device.user_id,
                    targeting::resolve_saved(state, &device.user_id).exclude_group_ids.join(", ")
                ),
            ),
            EnrollmentTarget::NotTargeted => self.add(
                ReasonCode::UserNotTargeted,
                format!("user {} is in no include group of the partner connector", device.user_id),
            ),
        }
    }

    /// Duplicates are reported, never merged into an allow (cause 6).
    pub(super) fn duplicates(&mut self, state: &State, device: &Device) {
        let mut others: Vec<&str> =
            state.devices_with_serial(&device.serial_number).filter(|d| *d != &*device.id).collect();
        if !others.is_empty() {
            // Sorted, so that every replica words it alike.
            others.sort_unstable();
            let message = format!("serial {} is also registered as {}", device.serial_number, others.join(", "));
            self.add(ReasonCode::DuplicateRegistration, message);
        }
    }

    /// Never compliant on old data (rule 5): the check-in, the token, the partner's verdict, and
    /// the refresh token.
    pub(super) fn freshness(&mut self, device: &Device, freshness: &Freshness) {
        if freshness.unresponsive {
            let message = format!("no check-in with the partner since {} (24 hours or more)", device.last_check_in);
            self.add(ReasonCode::Unresponsive, message);
        }
        if freshness.token_stale {
            let message =
                format!("the directory token was last renewed at {} (over 24 hours ago)", device.last_token_renewal);
            self.add(ReasonCode::TokenStale, message);
        }
        if freshness.verdict_stale
            && let Some(v) = device.partner_verdict
        {
            let message = format!(
                "the partner's verdict was decided at {} (24 hours or more ago); it is not trusted",
                v.decided_at
            );
            self.add(ReasonCode::PartnerVerdictStale, message);
        }
        if let Some(issued) = device.refresh_token_issued {
            let lapses = issued.plus_secs(REFRESH_TOKEN_LIFETIME_SECS);
            if self.now >= lapses {
                self.add(
                    ReasonCode::SignInRequired,
                    "the refresh token has lapsed (7 days); the user must sign in again",
                );
            } else {
                self.until(lapses);
            }
        }
    }

    /// A supported macOS (rule 10).
    pub(super) fn macos(&mut self, device: &Device) {
        if device.os_version < minimum_macos() {
            let message = format!("macOS {} is older than the supported {}", device.os_version, minimum_macos());
            self.add(ReasonCode::UnsupportedOs, message);
        }
    }

    /// Compliance itself: what the evaluation found, beyond a plain pass.
    pub(super) fn compliance(&mut self, eval: &Evaluation) {
        for (policy, group) in &eval.device_group_policies {
            self.add(
                ReasonCode::PolicyTargetsDeviceGroup,
                format!(
                    "policy {policy} is assigned to device group {group}, which does not evaluate partner-managed Macs"
                ),
            );
        }
        match eval.cause {
            StateCause::ValidityExpired { reported_at, valid_until } => self.add(
                ReasonCode::ValidityExpired,
                format!("nothing reported since {reported_at} and the validity period ended at {valid_until}"),
            ),
            StateCause::PartnerVerdict { compliant: false, decided_at } => self.add(
                ReasonCode::PartnerVerdictNoncompliant,
                format!("the partner decided at {decided_at} that the device is noncompliant"),
            ),
            StateCause::PartnerVerdict { compliant: true, .. } => {}
            StateCause::NoPolicy(NoPolicyTreatment::Noncompliant) => self.add(
                ReasonCode::NoPolicy,
                "no compliance policy applies and the tenant counts such devices as noncompliant",
            ),
            StateCause::NoPolicy(NoPolicyTreatment::Compliant) => {}
            StateCause::Policies => {
                for p in &eval.policies {
                    let (code, failed) = match p.state {
                        ComplianceState::InGracePeriod => {
                            (ReasonCode::InGracePeriod, Failed::InGracePeriod(p.grace_period_ends.unwrap_or_default()))
                        }
                        ComplianceState::Noncompliant => (ReasonCode::Noncompliant, Failed::Noncompliant),
                        ComplianceState::Error | ComplianceState::Unknown | ComplianceState::Conflict => {
                            (ReasonCode::ComplianceError, Failed::CannotBeEvaluated)
                        }
                        _ => continue,
                    };
                    // The settings by name only: the answer to every sign-in stays short, and
                    // EvaluateDevice gives each one's expected and actual values.
                    let failing = p
                        .settings
                        .iter()
                        .filter(|s| s.state == ComplianceState::Noncompliant || s.state == ComplianceState::Error);
                    self.add(code, Message::policy(&p.policy.name, failed, failing.map(|s| s.setting)));
                }
            }
        }
    }
}
