//! Troubleshooting (DOMAIN rule 11): explain a device's denial with the cause codes of the
//! troubleshooting guide, each with the remediation a person should take.

use super::access::{self, DeviceDecision, ReasonCode};
use super::model::Timestamp;
use super::state::State;

/// The causes of the troubleshooting guide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Cause 1: the partner's application holds other permissions than "update device attributes".
    WrongPartnerPermissions,
    /// Cause 3: the user lacks a device-management or premium identity licence.
    LicenceMissing,
    /// Cause 4: the Mac was not registered through the partner's flow.
    NotRegisteredThroughPartner,
    /// Cause 5: the integration is disabled (or was never enabled).
    IntegrationDisabled,
    /// Cause 6: the Mac is registered more than once.
    DuplicateRegistration,
    /// A compliance policy aimed at a device group does not evaluate the device.
    PolicyTargetsDeviceGroup,
    /// No check-in for 24 hours, or the directory token not renewed.
    Unresponsive,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::WrongPartnerPermissions => "WRONG_PARTNER_PERMISSIONS",
            Cause::LicenceMissing => "LICENCE_MISSING",
            Cause::NotRegisteredThroughPartner => "NOT_REGISTERED_THROUGH_PARTNER",
            Cause::IntegrationDisabled => "INTEGRATION_DISABLED",
            Cause::DuplicateRegistration => "DUPLICATE_REGISTRATION",
            Cause::PolicyTargetsDeviceGroup => "POLICY_TARGETS_DEVICE_GROUP",
            Cause::Unresponsive => "UNRESPONSIVE",
        }
    }

    pub fn remediation(self) -> &'static str {
        match self {
            Cause::WrongPartnerPermissions => {
                "Give the partner's application exactly one permission, update device attributes, and nothing else; give its credential only the partner role."
            }
            Cause::LicenceMissing => {
                "Assign the user both a device-management licence and a premium identity licence, then sync the directory."
            }
            Cause::NotRegisteredThroughPartner => {
                "Remove the direct registration and register the Mac again by launching the Company Portal from the partner's Self Service."
            }
            Cause::IntegrationDisabled => "Enable the partner connector (AdminService/EnableConnector).",
            Cause::DuplicateRegistration => {
                "Delete the stale device records that share this serial number, then have the user register the Mac once through the partner."
            }
            Cause::PolicyTargetsDeviceGroup => {
                "Assign the compliance policy to user groups: policies aimed at device groups do not evaluate partner-managed Macs."
            }
            Cause::Unresponsive => {
                "Have the Mac's registered user sign in on it so that it checks in with the partner and renews its directory token."
            }
        }
    }
}

/// Whether the partner's credential is set up with least privilege (decided by the caller,
/// who knows the credentials; the core only reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartnerCredential {
    /// The connector's partner app id names a credential that may only report inventory.
    LeastPrivilege,
    /// The partner app id names a credential with more than the partner role.
    ExtraPermissions,
    /// No credential has the connector's partner app id: the partner cannot report.
    Missing,
    /// No credentials are configured at all (authentication is off).
    NotChecked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub cause: Cause,
    /// What was found, for this device.
    pub detail: String,
}

impl Finding {
    pub fn remediation(&self) -> &'static str {
        self.cause.remediation()
    }
}

/// A device's decision, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub decision: DeviceDecision,
    /// The partner credential's finding first, then one per reason that has a cause, in the
    /// order of the decision's reasons.
    pub findings: Vec<Finding>,
}

/// Every finding for `device_id`, or `None` when the device is unknown.
pub fn diagnose(state: &State, device_id: &str, credential: PartnerCredential, now: Timestamp) -> Option<Diagnosis> {
    state.device(device_id)?;
    let decision = access::decide(state, device_id, now);
    let mut findings = Vec::new();
    match credential {
        PartnerCredential::ExtraPermissions => findings.push(Finding {
            cause: Cause::WrongPartnerPermissions,
            detail: format!(
                "the credential of partner app {} holds more than the partner role",
                state.connector().partner_app_id
            ),
        }),
        PartnerCredential::Missing => findings.push(Finding {
            cause: Cause::WrongPartnerPermissions,
            detail: format!("no credential is configured for partner app {}", state.connector().partner_app_id),
        }),
        PartnerCredential::LeastPrivilege | PartnerCredential::NotChecked => {}
    }
    for r in decision.reasons.iter() {
        let cause = match r.code {
            ReasonCode::LicenceMissing => Cause::LicenceMissing,
            ReasonCode::NotRegisteredThroughPartner => Cause::NotRegisteredThroughPartner,
            ReasonCode::IntegrationDisabled | ReasonCode::DeviceRemoved => Cause::IntegrationDisabled,
            ReasonCode::DuplicateRegistration => Cause::DuplicateRegistration,
            ReasonCode::PolicyTargetsDeviceGroup => Cause::PolicyTargetsDeviceGroup,
            ReasonCode::Unresponsive | ReasonCode::TokenStale | ReasonCode::SignInRequired => Cause::Unresponsive,
            _ => continue,
        };
        findings.push(Finding { cause, detail: r.message.to_string() });
    }
    Some(Diagnosis { decision, findings })
}
