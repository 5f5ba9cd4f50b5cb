//! The tower layers of the server stack that bound what a caller can ask of posture: a
//! deadline for every call, a limit on calls in flight that sheds the excess at once, and
//! answers for requests that are not a message at all (too large, not protobuf) that say what
//! is wrong with them instead of blaming the server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::telemetry::metrics::Counter;

/// The future of every tower layer of the server stack.
pub(crate) type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// How long after a call's deadline the server gives up on it for the handler.
const DEADLINE_GRACE: Duration = Duration::from_millis(100);

/// How the server bounds calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The deadline of a call that carries none (`grpc-timeout`); a caller's own deadline is
    /// honoured, up to this long.
    pub default_deadline: Duration,
    /// Calls in flight at once (health checks aside); beyond it, RESOURCE_EXHAUSTED at once.
    pub max_concurrent_calls: usize,
    /// Calls one connection may have open at once (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS);
    /// a client queues the rest itself. Without it a single connection could pile up calls
    /// without bound while the CPU is busy, before any of them reaches this stack.
    pub max_streams_per_connection: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default_deadline: Duration::from_secs(30),
            max_concurrent_calls: 1024,
            max_streams_per_connection: 200,
        }
    }
}

/// Calls a limit never sheds: the health checks that tell load balancers how posture is doing.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

/// The whole stack, outermost first: answers for malformed requests, shedding, deadlines.
#[derive(Clone)]
pub struct Bounds {
    limits: Limits,
    permits: Arc<Semaphore>,
    shed: Option<Counter>,
}

impl Bounds {
    pub fn new(limits: Limits) -> Self {
        let permits = Arc::new(Semaphore::new(limits.max_concurrent_calls.max(1)));
        Bounds { limits, permits, shed: None }
    }

    /// Counts each shed call into `shed` (the metrics' `posture_shed_calls_total`).
    pub fn counting_shed(self, shed: Counter) -> Self {
        Bounds { shed: Some(shed), ..self }
    }
}

impl<S> Layer<S> for Bounds {
    type Service = Bounded<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Bounded { inner, limits: self.limits.clone(), permits: self.permits.clone(), shed: self.shed.clone() }
    }
}

#[derive(Clone)]
pub struct Bounded<S> {
    inner: S,
    limits: Limits,
    permits: Arc<Semaphore>,
    shed: Option<Counter>,
}

impl<S> Service<Request<Body>> for Bounded<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let path = req.uri().path().to_string();
        let permit = if exempt(&path) {
            None
        } else {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let max = self.limits.max_concurrent_calls;
                    if let Some(shed) = &self.shed {
                        shed.inc();
                    }
                    tracing::debug!(%path, max, "call shed");
                    let status = Status::resource_exhausted(format!(
                        "posture is serving its limit of {max} calls at once: retry with backoff, or ask another replica"
                    ));
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
            }
        };
        let deadline = deadline(&req).unwrap_or(self.limits.default_deadline).min(self.limits.default_deadline);
        let call = self.inner.call(req);
        Box::pin(async move {
            // A handler that waits (min_revision) answers at the deadline itself, saying what it
            // waited for; this is the backstop for one that does not.
            let answer = match tokio::time::timeout(deadline + DEADLINE_GRACE, call).await {
                Ok(answer) => answer,
                Err(_) => {
                    let message = format!("the call did not finish within its deadline of {deadline:?}");
                    Ok(Status::deadline_exceeded(message).into_http())
                }
            };
            drop(permit);
            answer.map(wire_errors)
        })
    }
}

/// A call's deadline from its `grpc-timeout` header: an integer and a unit (H, M, S, m, u, n).
pub fn deadline<B>(req: &Request<B>) -> Option<Duration> {
    let v = req.headers().get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(v)
}

pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The codec's answers to a request that is not a message, which blame the server (INTERNAL)
/// or the range of something (OUT_OF_RANGE), put as what they are: the caller sent bytes that
/// are not a valid message (INVALID_ARGUMENT), or one larger than the server takes
/// (RESOURCE_EXHAUSTED); and a request whose client went away before sending it whole
/// (UNKNOWN), as the cancelled call it is (CANCELLED), so that the metrics and the logs do not
/// count it as posture's failure. posture's own errors never use INTERNAL or UNKNOWN, nor
/// these messages.
fn wire_errors(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers();
    let (Some(code), Some(message)) = (headers.get("grpc-status"), headers.get("grpc-message")) else {
        return response;
    };
    let code = code.to_str().ok().and_then(|c| c.parse::<i32>().ok()).map(Code::from_i32);
    let message = percent_decode(message.as_bytes());
    let remapped = match code {
        Some(Code::Internal)
            if message.starts_with("failed to decode Protobuf message")
                || message.starts_with("protocol error")
                || message.starts_with("Unexpected EOF decoding stream") =>
        {
            Status::invalid_argument(format!("the request is not a valid message: {message}"))
        }
        Some(Code::Unknown) if message.starts_with("h2 protocol error: error reading a body from connection") => {
            Status::cancelled(format!("the client went away before sending its whole request: {message}"))
        }
        Some(Code::OutOfRange) if message.starts_with("Error, decoded message length too large") => {
            Status::resource_exhausted(format!("the request is larger than this server accepts: {message}"))
        }
        _ => return response,
    };
    let (code, message) = (remapped.code() as i32, remapped.message().to_string());
    let headers = response.headers_mut();
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
        headers.insert("grpc-message", v);
    }
    response
}

fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        if bytes[i] == b'%'
            && let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// gRPC's percent-encoding of a status message: printable ASCII but `%` as is, the rest as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: Code, message: &str) -> Response<Body> {
        Status::new(code, message).into_http()
    }

    fn code_of(response: &Response<Body>) -> Code {
        Code::from_bytes(response.headers()["grpc-status"].as_bytes())
    }

    #[test]
    fn a_request_its_client_abandoned_counts_as_cancelled_and_posture_s_own_unknown_stays() {
        let abandoned = wire_errors(answer(Code::Unknown, "h2 protocol error: error reading a body from connection"));
        assert_eq!(code_of(&abandoned), Code::Cancelled);
        let other = wire_errors(answer(Code::Unknown, "something else"));
        assert_eq!(code_of(&other), Code::Unknown);
        let undecodable = wire_errors(answer(Code::Internal, "failed to decode Protobuf message: x"));
        assert_eq!(code_of(&undecodable), Code::InvalidArgument);
    }
}
