//! `posture probe`: asks a running server's standard health service whether it is SERVING,
//! for a container's HEALTHCHECK or a Kubernetes exec probe. The answer is the exit code; a
//! failure comes with one line saying why.

use std::fmt;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// What to ask, and for how long.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// The server's address, host:port (or a URL)
    #[arg(long, default_value = crate::config::DEFAULT_LISTEN)]
    pub addr: String,
    /// One service's status (e.g. posture.v1.ComplianceService) [default: the server as a whole]
    #[arg(long, default_value = "", hide_default_value = true)]
    pub service: String,
    /// How long connecting and answering may take together, e.g. 2s, 500ms
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Why a probe failed.
#[derive(Debug)]
pub enum ProbeError {
    /// The server answered with a status other than SERVING.
    NotServing(String),
    /// The call failed: NOT_FOUND for an unknown service, or the connection broke.
    Failed(tonic::Status),
    /// `--addr` is not an address.
    Address(String),
    /// No connection.
    Unreachable(String),
    /// No answer within the timeout.
    TimedOut(Duration),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::NotServing(status) => write!(f, "{status}"),
            ProbeError::Failed(s) if s.code() == tonic::Code::NotFound => {
                write!(f, "unknown service: {}", one_line(s.message()))
            }
            ProbeError::Failed(s) => write!(f, "{:?}: {}", s.code(), one_line(s.message())),
            ProbeError::Address(why) => write!(f, "not an address: {why}"),
            ProbeError::Unreachable(why) => write!(f, "unreachable: {why}"),
            ProbeError::TimedOut(t) => write!(f, "no answer within {}", humantime::format_duration(*t)),
        }
    }
}

impl std::error::Error for ProbeError {}

/// Ok when the server (or the one service asked about) is SERVING.
pub async fn probe(args: &ProbeArgs) -> Result<(), ProbeError> {
    let ask = async {
        let channel = connect(&args.addr, args.timeout).await?;
        let request = HealthCheckRequest { service: args.service.clone() };
        let answer = HealthClient::new(channel).check(request).await.map_err(ProbeError::Failed)?;
        match ServingStatus::try_from(answer.get_ref().status) {
            Ok(ServingStatus::Serving) => Ok(()),
            Ok(other) => Err(ProbeError::NotServing(other.as_str_name().to_string())),
            Err(_) => Err(ProbeError::NotServing(format!("unknown status {}", answer.get_ref().status))),
        }
    };
    tokio::time::timeout(args.timeout, ask).await.map_err(|_| ProbeError::TimedOut(args.timeout))?
}

/// The one place that opens the connection (TLS goes here).
async fn connect(addr: &str, timeout: Duration) -> Result<Channel, ProbeError> {
    let url = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
    let endpoint =
        Endpoint::from_shared(url).map_err(|e| ProbeError::Address(error_chain(&e)))?.connect_timeout(timeout);
    endpoint.connect().await.map_err(|e| ProbeError::Unreachable(error_chain(&e)))
}

/// An error and its causes on one line: "transport error: tcp connect error: Connection refused".
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    one_line(&text)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
