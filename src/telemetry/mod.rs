//! Telemetry: one tower layer, [`Telemetry`], observes every call: its span (exported over
//! OTLP when configured, see [`trace`]), its metrics (see [`metrics`]) and its log line (see
//! [`logs`]). What only the inside knows — the credential, the decision, its reason codes,
//! whether the cache answered, the revision — the handlers note in a per-call task-local
//! ([`credential`], [`decided`]), which the layer reads when the call is answered.

pub mod logs;
pub mod metrics;
mod repeats;
pub mod trace;

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::domain::access::{Reason, ReasonCode, SeenBy};
use crate::error::code_name;
use metrics::{MethodHandles, Metrics};
use repeats::Repeats;
use trace::TARGET;

use crate::layers::BoxFuture;

/// A method posture serves, by its path.
struct Method {
    /// `posture.v1.ComplianceService/CheckAccess`: the metrics' `method` label, the span's name.
    label: String,
    service: String,
    name: String,
}

/// Every method of every service the server registers, from their descriptors, and last one
/// for any other path (so that a caller cannot make up label values).
static METHODS: LazyLock<Vec<Method>> = LazyLock::new(|| {
    use prost::Message;
    let sets = [
        crate::proto::FILE_DESCRIPTOR_SET,
        crate::grpc::ext_authz::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = Vec::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
        for file in &set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                for method in &service.method {
                    let label = format!("{name}/{}", method.name());
                    if !methods.iter().any(|m: &Method| m.label == label) {
                        methods.push(Method { label, service: name.clone(), name: method.name().to_string() });
                    }
                }
            }
        }
    }
    methods.push(Method { label: "unknown".into(), service: "unknown".into(), name: "unknown".into() });
    methods
});

static BY_PATH: LazyLock<HashMap<String, usize, foldhash::fast::FixedState>> =
    LazyLock::new(|| METHODS.iter().enumerate().map(|(i, m)| (format!("/{}", m.label), i)).collect());

fn method_index(path: &str) -> usize {
    BY_PATH.get(path).copied().unwrap_or(METHODS.len() - 1)
}

/// What a call's handler noted for the layer.
#[derive(Default)]
struct Note {
    credential: Option<Arc<str>>,
    decided: Option<Decided>,
    /// Who and what was denied, for the log line (not kept for an allowed call).
    denied: Option<(Box<str>, Box<str>)>,
}

struct Decided {
    allow: bool,
    /// The codes the caller was answered with.
    reasons: Codes,
    /// `None` when the decision was made without the cache (a request naming no valid identity).
    cache_hit: Option<bool>,
    revision: Option<u64>,
}

/// A set of reason codes, in the codes' order (a set, so noting it on the hot path copies
/// nothing).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
struct Codes(u32);

const _: () = assert!(ReasonCode::ALL.len() <= 32);

impl FromIterator<ReasonCode> for Codes {
    fn from_iter<I: IntoIterator<Item = ReasonCode>>(codes: I) -> Self {
        Codes(codes.into_iter().fold(0, |set, c| set | 1 << c as u32))
    }
}

impl Codes {
    fn iter(self) -> impl Iterator<Item = ReasonCode> {
        ReasonCode::ALL.into_iter().filter(move |&c| self.0 & 1 << c as u32 != 0)
    }

    fn joined(self) -> String {
        self.iter().map(ReasonCode::as_str).collect::<Vec<_>>().join(",")
    }

    /// The same for a span: a single code (the usual answer) is its static name, not a copy.
    fn value(self) -> opentelemetry::StringValue {
        let mut codes = self.iter();
        match (codes.next(), codes.next()) {
            (Some(only), None) => only.as_str().into(),
            (None, _) => "".into(),
            _ => self.joined().into(),
        }
    }
}

tokio::task_local! {
    static NOTE: RefCell<Note>;
}

fn note(f: impl FnOnce(&mut Note)) {
    let _ = NOTE.try_with(|n| f(&mut n.borrow_mut()));
}

/// Runs `call` as `credential`'s: the call's span and log line name it.
pub async fn as_credential<F: Future>(credential: Option<Arc<str>>, call: F) -> F::Output {
    if credential.is_some() {
        note(|n| n.credential = credential);
    }
    call.await
}

/// Notes the access decision a call answered with, as `user_id` sees it.
pub fn decided(seen: &SeenBy<'_>, user_id: &str, revision: u64, cache_hit: bool) {
    let reasons = seen.brief().map(|b| b.reason.code).collect();
    note(|n| {
        n.decided = Some(Decided { allow: seen.allow, reasons, cache_hit: Some(cache_hit), revision: Some(revision) });
        if !seen.allow {
            n.denied = Some((user_id.into(), seen.decision().device_id.as_str().into()));
        }
    });
}

/// Notes a denial made without a decision: the request named no valid user or device.
pub fn denied_for(reasons: &[Reason]) {
    let reasons = reasons.iter().map(|r| r.code).collect();
    note(|n| n.decided = Some(Decided { allow: false, reasons, cache_hit: None, revision: None }));
}

/// The outermost layer of the server stack: every call's span, metrics and log line.
#[derive(Clone)]
pub struct Telemetry {
    metrics: Option<Arc<Metrics>>,
    handles: Arc<[MethodHandles]>,
    /// Set when spans are exported ([`trace::install`]).
    tracer: Option<SdkTracer>,
    repeats: Arc<Repeats<Subject>>,
}

impl Telemetry {
    /// Counts into `metrics` when given (`--metrics-listen`); spans when the process exports
    /// them; log lines either way.
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        let handles = METHODS.iter().map(|_| MethodHandles::default()).collect();
        Telemetry { metrics, handles, tracer: trace::tracer(), repeats: Arc::default() }
    }

    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Writes the count of each denial and error logged once and repeated since, every
    /// [`repeats::WINDOW`] until `stop`, and once more then.
    pub async fn write_repeats(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let stopping = tokio::select! {
                _ = stop.changed() => true,
                () = tokio::time::sleep(repeats::WINDOW) => false,
            };
            self.repeats.flush(Instant::now(), |subject, times| subject.write_repeats(times));
            if stopping {
                return;
            }
        }
    }
}

impl<S> Layer<S> for Telemetry {
    type Service = Observed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Observed { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    layer: Telemetry,
}

impl<S> Service<Request<Body>> for Observed<S>
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
        let started = Instant::now();
        let index = method_index(req.uri().path());
        let method = &METHODS[index];
        // Straight on the SDK's tracer, not through a tracing subscriber: a call's span costs
        // one span, sampled at its start (an unsampled one records nothing), and none at all
        // without an exporter. The method's names are static: no string is copied.
        let span = self.layer.tracer.as_ref().map(|tracer| {
            let builder = tracer.span_builder(method.label.as_str()).with_kind(SpanKind::Server);
            let mut span = builder.start_with_context(tracer, &trace::parent(req.headers()));
            // After sampling (the samplers posture offers do not read attributes): an
            // unsampled span builds none.
            if span.is_recording() {
                span.set_attributes([
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", method.service.as_str()),
                    KeyValue::new("rpc.method", method.name.as_str()),
                ]);
            }
            span
        });
        let traceparent = req.headers().get("traceparent").cloned();
        let call = NOTE.scope(RefCell::new(Note::default()), self.inner.call(req));
        let observation = Observation { layer: self.layer.clone(), index, method, started, span, traceparent };
        Box::pin(async move {
            // Declared before the call, so dropped after it: a call dropped unanswered (the
            // client went away) is still counted, as CANCELLED.
            let mut guard = Unanswered(Some(observation));
            let mut call = pin!(call);
            let answer = call.as_mut().await;
            let note = call.as_mut().take_value().map(RefCell::into_inner).unwrap_or_default();
            let code = match &answer {
                Ok(response) => status_of(response.headers()),
                Err(_) => Code::Internal,
            };
            if let Some(observation) = guard.0.take() {
                observation.finish(code, note);
            }
            answer
        })
    }
}

/// What the layer knows of a call from its start.
struct Observation {
    layer: Telemetry,
    index: usize,
    method: &'static Method,
    started: Instant,
    span: Option<Span>,
    traceparent: Option<http::HeaderValue>,
}

impl Observation {
    fn finish(mut self, code: Code, note: Note) {
        let took = self.started.elapsed();
        if let Some(m) = &self.layer.metrics {
            let handles = &self.layer.handles[self.index];
            m.call(&self.method.label, handles, code, took);
            if let Some(d) = &note.decided {
                m.decision(&self.method.label, handles, d.allow, d.reasons.iter(), d.cache_hit);
            }
        }
        if let Some(span) = &mut self.span
            && span.is_recording()
        {
            record(span, code, &note);
        }
        log(&self, code, took, note);
        if let Some(mut span) = self.span.take() {
            span.end();
        }
    }
}

struct Unanswered(Option<Observation>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(observation) = self.0.take() {
            observation.finish(Code::Cancelled, Note::default());
        }
    }
}

/// A response's status: in its headers when it is an error (trailers-only), else OK (a stream
/// that fails later reports its status in trailers, after this).
fn status_of(headers: &http::HeaderMap) -> Code {
    match headers.get("grpc-status") {
        None => Code::Ok,
        Some(v) => Code::from_bytes(v.as_bytes()),
    }
}

/// Server errors as OpenTelemetry's gRPC conventions count them (a refusal is not one).
fn server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

fn record(span: &mut Span, code: Code, note: &Note) {
    if server_error(code) {
        span.set_status(Status::error(code_name(code)));
    }
    let status = Some(KeyValue::new("rpc.grpc.status_code", code as i64));
    let credential = note.credential.as_ref().map(|c| KeyValue::new("posture.credential", c.clone()));
    let d = note.decided.as_ref();
    let decision = d.map(|d| KeyValue::new("posture.decision", if d.allow { "allow" } else { "deny" }));
    let reasons = d.map(|d| KeyValue::new("posture.reason_codes", d.reasons.value()));
    let cache = d.and_then(|d| d.cache_hit).map(|hit| KeyValue::new("posture.cache", if hit { "hit" } else { "miss" }));
    let revision =
        d.and_then(|d| d.revision).map(|r| KeyValue::new("posture.revision", i64::try_from(r).unwrap_or(i64::MAX)));
    // At once, so that the span's attributes grow once.
    span.set_attributes([status, credential, decision, reasons, cache, revision].into_iter().flatten());
}

/// What a denial's or an error's line says of its call beyond its timing, trace id and
/// revision: calls with the same subject are logged once a window (see [`repeats`]).
#[derive(PartialEq, Eq, Hash)]
struct Subject {
    method: usize,
    code: Code,
    credential: Option<Arc<str>>,
    /// The user and the device denied.
    denied: Option<(Box<str>, Box<str>)>,
    /// The decision, allowed or not, and its reason codes.
    decided: Option<(bool, Codes)>,
}

/// The fields of a notable line, for the `tracing` macros.
macro_rules! notable {
    ($s:expr, $($rest:tt)*) => {
        tracing::info!(
            target: TARGET,
            rpc = %METHODS[$s.method].label,
            code = %code_name($s.code),
            credential = $s.credential.as_deref(),
            user = $s.denied.as_ref().map(|d| &*d.0),
            device = $s.denied.as_ref().map(|d| &*d.1),
            decision = $s.decided.map(|d| display(if d.0 { "allow" } else { "deny" })),
            reason_codes = $s.decided.map(|d| display(d.1.joined())),
            $($rest)*
        )
    };
}

impl Subject {
    fn message(&self) -> &'static str {
        if self.code == Code::Ok { "access denied" } else { "call failed" }
    }

    fn write_repeats(&self, times: u64) {
        let message = if self.code == Code::Ok { "access denied again" } else { "call failed again" };
        notable!(self, repeats = times, "{message}");
    }
}

/// One line per call at debug; at info for a denial or an error, the same one repeated
/// within a window counted rather than written again.
fn log(call: &Observation, code: Code, took: std::time::Duration, note: Note) {
    let denied = note.decided.as_ref().is_some_and(|d| !d.allow);
    let notable = denied || code != Code::Ok;
    let enabled = if notable {
        tracing::enabled!(target: TARGET, tracing::Level::INFO)
    } else {
        tracing::enabled!(target: TARGET, tracing::Level::DEBUG)
    };
    if !enabled {
        return;
    }
    let trace_id = trace_id(call.span.as_ref(), call.traceparent.as_ref());
    let d = note.decided.as_ref();
    let cache = d.and_then(|d| d.cache_hit).map(|hit| tracing::field::display(if hit { "hit" } else { "miss" }));
    let revision = d.and_then(|d| d.revision);
    let micros = took.as_micros() as u64;
    // Values posture makes up itself (names, codes, hex) are written as they are: in the text
    // format, quoting and escaping them was a third of a line's cost. The credential id,
    // which the configuration names, and the ids the caller sent stay quoted.
    if !notable {
        tracing::debug!(
            target: TARGET,
            rpc = %call.method.label,
            code = %code_name(code),
            micros,
            credential = note.credential.as_deref(),
            decision = d.map(|_| display("allow")),
            reason_codes = d.map(|d| display(d.reasons.joined())),
            cache,
            revision,
            trace_id = trace_id.as_deref().map(display),
            "call answered"
        );
        return;
    }
    let subject = Subject {
        method: call.index,
        code,
        credential: note.credential,
        denied: note.denied,
        decided: d.map(|d| (d.allow, d.reasons)),
    };
    call.layer.repeats.note(subject, call.started, |s| {
        notable!(s, micros, cache, revision, trace_id = trace_id.as_deref().map(display), "{}", s.message());
    });
}

/// The call's trace id: its span's when spans are exported (continued or new), else the
/// caller's `traceparent`'s.
fn trace_id(span: Option<&Span>, traceparent: Option<&http::HeaderValue>) -> Option<String> {
    if let Some(span) = span {
        let id = span.span_context().trace_id();
        if id != opentelemetry::trace::TraceId::INVALID {
            return Some(id.to_string());
        }
    }
    traceparent.and_then(|v| v.to_str().ok()).and_then(trace::trace_id_of).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_method_has_its_own_label() {
        for path in [
            "/posture.v1.ComplianceService/CheckAccess",
            "/posture.v1.AdminService/SyncDirectory",
            "/envoy.service.auth.v3.Authorization/Check",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(format!("/{}", METHODS[method_index(path)].label), path);
        }
        assert_eq!(METHODS[method_index("/posture.v1.ComplianceService/Made/Up")].label, "unknown");
    }
}
