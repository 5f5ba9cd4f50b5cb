//! An Envoy ext_authz check's user and device: a verified JWT's claim, else a request header.

use envoy_types::pb::envoy::service::auth::v3::{self as envoy_auth, attribute_context::HttpRequest};
use envoy_types::pb::google::protobuf::{Struct, value::Kind};

use crate::config::ExtAuthzConfig;
use crate::domain::access::{Reason, ReasonCode};

use super::*;

/// The metadata namespace Envoy's jwt_authn filter puts verified payloads in.
pub const JWT_AUTHN_NAMESPACE: &str = "envoy.filters.http.jwt_authn";

/// The user and the device a checked HTTP request names. For each, the claim of the JWT that
/// Envoy's jwt_authn filter verified wins over the request header: the issuer signed the
/// claim, while the header is whatever the HTTP client sent unless Envoy strips it. The header
/// serves what the token does not carry (typically the device). `Err`: the reasons to deny,
/// one for each id that is missing or invalid.
pub fn ext_authz_identity(
    req: &envoy_auth::CheckRequest,
    config: &ExtAuthzConfig,
) -> Result<(String, String), Vec<Reason>> {
    let attributes = req.attributes.as_ref();
    let http = attributes.and_then(|a| a.request.as_ref()).and_then(|r| r.http.as_ref());
    let claims = attributes
        .and_then(|a| a.metadata_context.as_ref())
        .and_then(|m| m.filter_metadata.get(JWT_AUTHN_NAMESPACE))
        .and_then(|jwt| jwt.fields.get(&config.jwt_payload_key))
        .and_then(|payload| match &payload.kind {
            Some(Kind::StructValue(s)) => Some(s),
            _ => None,
        });
    let user = identity("user", http, claims, &config.user_header, &config.user_claim);
    let device = identity("device", http, claims, &config.device_header, &config.device_claim);
    match (user, device) {
        (Ok(user), Ok(device)) => Ok((user, device)),
        (user, device) => Err(user.err().into_iter().chain(device.err()).collect()),
    }
}

/// One id, from the claim or else the header (empty counts as absent), validated as any id.
fn identity(
    what: &str,
    http: Option<&HttpRequest>,
    claims: Option<&Struct>,
    header: &str,
    claim: &str,
) -> Result<String, Reason> {
    let invalid = |e: Error| Reason::new(ReasonCode::IdentityInvalid, format!("the {what} id is invalid: {e}"));
    let from_claim = match claims.and_then(|c| c.fields.get(claim)).map(|v| &v.kind) {
        None => None,
        Some(Some(Kind::StringValue(s))) => Some((format!("claim {claim}"), s.clone())).filter(|_| !s.is_empty()),
        Some(_) => return Err(invalid(Error::invalid(format!("claim {claim}"), "is not a string"))),
    };
    let found = from_claim.or_else(|| header_value(http, header).map(|v| (format!("header {header}"), v)));
    let Some((source, value)) = found else {
        return Err(Reason::new(
            ReasonCode::IdentityMissing,
            format!("no {what} id: the request has no {header} header and no verified JWT with a {claim} claim"),
        ));
    };
    id(&source, &value).map_err(invalid)
}

/// A request header's value: from `headers`, or from `header_map` when Envoy sends raw
/// headers (`encode_raw_headers`), a repeated header joined with commas as in `headers`.
fn header_value(http: Option<&HttpRequest>, name: &str) -> Option<String> {
    let http = http?;
    if let Some(v) = http.headers.get(name).filter(|v| !v.is_empty()) {
        return Some(v.clone());
    }
    let values: Vec<String> = http
        .header_map
        .iter()
        .flat_map(|m| &m.headers)
        .filter(|h| h.key.eq_ignore_ascii_case(name))
        .map(|h| if h.raw_value.is_empty() { h.value.clone() } else { String::from_utf8_lossy(&h.raw_value).into() })
        .collect();
    Some(values.join(",")).filter(|v| !v.is_empty())
}
