//! Telemetry of the real binary: OTLP spans received by a collector in this process, the
//! Prometheus metrics after known traffic, and the JSON logs.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::binary::{Served, sample, scrape};

/// The demo's gateway secret (see `posture::demo`).
const DEMO_GATEWAY: &str = "demo-gateway";

/// `posture serve --demo` in a data directory of its own.
async fn demo(args: &[&str], rust_log: &str, env: &[(&str, &str)]) -> (Served, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_string();
    let mut all = vec!["--demo", "--data-dir", &dir];
    all.extend_from_slice(args);
    (Served::start_with_env(&all, rust_log, env).await, data)
}

/// SIGTERM; every line it wrote, once it has exited.
async fn stop(served: Served) -> Vec<String> {
    served.stop().await.lines().map(String::from).collect()
}
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use posture::proto::{self as pb, compliance_service_client::ComplianceServiceClient};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn traceparent(parent_span: &str) -> String {
    format!("00-{TRACE_ID}-{parent_span}-01")
}

/// A CheckAccess request with these credentials and trace context.
fn check(
    user: &str,
    device: &str,
    secret: Option<&str>,
    traceparent: Option<&str>,
) -> tonic::Request<pb::CheckAccessRequest> {
    let mut req =
        tonic::Request::new(pb::CheckAccessRequest { user_id: user.into(), device_id: device.into(), min_revision: 0 });
    if let Some(secret) = secret {
        req.metadata_mut().insert("authorization", format!("Bearer {secret}").parse().unwrap());
    }
    if let Some(tp) = traceparent {
        req.metadata_mut().insert("traceparent", tp.parse().unwrap());
    }
    req
}

/// An OTLP trace collector: keeps every span exported to it, with its service's name.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().unwrap();
        for resource in req.into_inner().resource_spans {
            let attrs = resource.resource.map(|r| r.attributes).unwrap_or_default();
            let service = attrs.iter().find(|a| a.key == "service.name").map(|a| text(&a.value)).unwrap_or_default();
            for scope in resource.scope_spans {
                kept.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).map(|a| text(&a.value))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_is_a_span_in_the_callers_trace_with_its_decision_and_is_flushed_at_shutdown() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let receiving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // A batch delay far beyond the test: the spans arrive only because shutdown flushes them.
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "600000")];
    let (served, _data) = demo(&[], "info", &env).await;
    let mut client = ComplianceServiceClient::new(served.channel());
    let (miss, hit) = ("00f067aa0ba902b7", "00f067aa0ba902b8");
    let first =
        client.check_access(check("bob", "mac-bob", Some(DEMO_GATEWAY), Some(&traceparent(miss)))).await.unwrap();
    let revision = first.get_ref().revision;
    client.check_access(check("bob", "mac-bob", Some(DEMO_GATEWAY), Some(&traceparent(hit)))).await.unwrap();
    let refused = client.check_access(check("ada", "mac-ada", None, Some(&traceparent("00f067aa0ba902b9")))).await;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    // Not one before shutdown (the batch waits), every one after.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(collector.0.lock().unwrap().is_empty());
    let lines = stop(served).await;

    let spans = collector.0.lock().unwrap().clone();
    let by_parent = |parent: &str| {
        let found = spans.iter().find(|(_, s)| hex(&s.parent_span_id) == parent);
        found.unwrap_or_else(|| panic!("no span with parent {parent} in {spans:#?}")).clone()
    };
    for (parent, cache) in [(miss, "miss"), (hit, "hit")] {
        let (service, span) = by_parent(parent);
        assert_eq!(service, "posture");
        assert_eq!(hex(&span.trace_id), TRACE_ID, "the caller's trace is continued");
        assert_eq!(span.name, "posture.v1.ComplianceService/CheckAccess");
        assert_eq!(span.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32);
        let attr = |key| attribute(&span, key);
        assert_eq!(attr("rpc.system").as_deref(), Some("grpc"));
        assert_eq!(attr("rpc.service").as_deref(), Some("posture.v1.ComplianceService"));
        assert_eq!(attr("rpc.method").as_deref(), Some("CheckAccess"));
        assert_eq!(attr("rpc.grpc.status_code").as_deref(), Some("0"));
        assert_eq!(attr("posture.decision").as_deref(), Some("deny"));
        assert_eq!(attr("posture.reason_codes").as_deref(), Some("NONCOMPLIANT"));
        assert_eq!(attr("posture.cache").as_deref(), Some(cache));
        assert_eq!(attr("posture.revision"), Some(revision.to_string()));
        assert_eq!(attr("posture.credential").as_deref(), Some("demo-gateway"));
    }
    let (_, refused) = by_parent("00f067aa0ba902b9");
    assert_eq!(attribute(&refused, "rpc.grpc.status_code").as_deref(), Some("16"));
    assert_eq!(attribute(&refused, "posture.credential"), None);
    assert_eq!(attribute(&refused, "posture.decision"), None);
    // The health checks that waited for the server to serve are calls too; the rest are ours.
    let calls = spans.iter().filter(|(_, s)| !s.name.starts_with("grpc.health.v1.Health/")).count();
    assert_eq!(calls, 3, "only the calls are exported: {spans:#?}");

    // Text logs (the default) on a pipe: no colours, and audit events still end in their JSON.
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "ANSI escapes on a pipe: {lines:#?}");
    let audit: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| l.contains("posture::audit"))
        .map(|l| serde_json::from_str(&l[l.find('{').unwrap()..]).unwrap())
        .collect();
    assert!(audit.iter().any(|e| e["event"] == "refused" && e["code"] == "UNAUTHENTICATED"), "{audit:#?}");
    let denied = lines.iter().find(|l| l.contains("access denied")).expect("the denial is logged at info");
    assert!(
        denied.contains(&format!("trace_id=\"{TRACE_ID}\"")) || denied.contains(&format!("trace_id={TRACE_ID}")),
        "{denied}"
    );
    receiving.abort();
}

fn envoy_client(served: &Served) -> AuthorizationClient<InterceptedService<tonic::transport::Channel, common::Bearer>> {
    AuthorizationClient::with_interceptor(served.channel(), common::Bearer::new(Some(DEMO_GATEWAY)))
}

/// A checked HTTP request with these headers, as Envoy sends it.
fn envoy_request(headers: &[(&str, &str)]) -> CheckRequest {
    let http = HttpRequest {
        method: "GET".into(),
        path: "/app".into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    let request = Some(Request { http: Some(http), ..Default::default() });
    CheckRequest { attributes: Some(AttributeContext { request, ..Default::default() }) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_the_calls_made() {
    let (served, _data) = demo(&["--metrics-listen", "127.0.0.1:0", "--max-concurrent-calls", "1"], "info", &[]).await;
    let metrics_at = served.metrics_addr().expect("the metrics listener's address is logged");
    let before = scrape(metrics_at);
    let mut client = ComplianceServiceClient::new(served.channel());
    for _ in 0..3 {
        let allowed = client.check_access(check("ada", "mac-ada", Some(DEMO_GATEWAY), None)).await.unwrap();
        assert_eq!(allowed.get_ref().decision, pb::Decision::Allow as i32);
    }
    let denied = client.check_access(check("bob", "mac-bob", Some(DEMO_GATEWAY), None)).await.unwrap();
    assert_eq!(denied.get_ref().decision, pb::Decision::Deny as i32);
    let refused = client.check_access(check("ada", "mac-ada", None, None)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    // Envoy's Check decides too: bob's Mac (from the cache), and a request naming no device.
    let mut envoy = envoy_client(&served);
    for headers in
        [&[("x-posture-user-id", "bob"), ("x-posture-device-id", "mac-bob")][..], &[("x-posture-user-id", "bob")]]
    {
        let answer = envoy.check(envoy_request(headers)).await.unwrap().into_inner();
        assert_eq!(answer.status.unwrap().code, Code::PermissionDenied as i32);
    }
    // One call waits for a revision that never comes, holding the only slot; the next is shed.
    let mut waiting = tonic::Request::new(pb::CheckAccessRequest {
        user_id: "ada".into(),
        device_id: "mac-ada".into(),
        min_revision: 1_000_000,
    });
    waiting.metadata_mut().insert("authorization", format!("Bearer {DEMO_GATEWAY}").parse().unwrap());
    waiting.set_timeout(Duration::from_secs(2));
    let mut holder = client.clone();
    let held = tokio::spawn(async move { holder.check_access(waiting).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shed = client.check_access(check("ada", "mac-ada", Some(DEMO_GATEWAY), None)).await.unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted);
    // The client gives up on the waiting call: the server counts it as CANCELLED.
    held.abort();
    let cancelled = "posture_calls_total{method=\"posture.v1.ComplianceService/CheckAccess\",code=\"CANCELLED\"}";
    let mut after = scrape(metrics_at);
    for _ in 0..100 {
        if sample(&after, cancelled) > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = scrape(metrics_at);
    }

    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    let calls = |code: &str| {
        moved(&format!("posture_calls_total{{method=\"posture.v1.ComplianceService/CheckAccess\",code=\"{code}\"}}"))
    };
    assert_eq!(calls("OK"), 4.0, "{after}");
    assert_eq!(calls("UNAUTHENTICATED"), 1.0);
    assert_eq!(calls("RESOURCE_EXHAUSTED"), 1.0);
    assert_eq!(calls("CANCELLED"), 1.0, "the call that waited, then was given up on");
    assert_eq!(moved("posture_shed_calls_total"), 1.0);
    let decisions = |outcome: &str| {
        moved(&format!(
            "posture_decisions_total{{method=\"posture.v1.ComplianceService/CheckAccess\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!((decisions("allow"), decisions("deny")), (3.0, 1.0));
    let envoy_denials =
        "posture_decisions_total{method=\"envoy.service.auth.v3.Authorization/Check\",outcome=\"deny\"}";
    assert_eq!(moved(envoy_denials), 2.0);
    assert_eq!(moved("posture_decision_reasons_total{outcome=\"allow\",reason=\"COMPLIANT\"}"), 3.0);
    assert_eq!(moved("posture_decision_reasons_total{outcome=\"deny\",reason=\"NONCOMPLIANT\"}"), 2.0);
    assert_eq!(moved("posture_decision_reasons_total{outcome=\"deny\",reason=\"IDENTITY_MISSING\"}"), 1.0);
    // mac-ada: evaluated once, then twice from the cache; mac-bob evaluated once, then once
    // from the cache for Envoy; the request naming no device used no cache.
    assert_eq!((moved("posture_decision_cache_hits_total"), moved("posture_decision_cache_misses_total")), (3.0, 2.0));
    let latency = "posture_call_duration_seconds_count{method=\"posture.v1.ComplianceService/CheckAccess\"}";
    assert_eq!(moved(latency), 7.0);
    assert!(sample(&after, "posture_store_commit_duration_seconds_count") > 0.0, "the demo's writes committed");
    assert!(sample(&after, "posture_revision") > 0.0);
    assert_eq!(sample(&after, "posture_watch_streams"), 0.0);
    assert!(sample(&after, "posture_runtime_tasks") > 0.0, "the server's own tasks are alive");
    assert!(after.contains("# TYPE posture_replica_lag_seconds gauge"), "{after}");
    for line in after.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        assert!(line.starts_with("posture_"), "{line}");
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_document_a_line_and_a_denial_is_logged_at_info_with_its_trace_id() {
    let (served, _data) = demo(&["--log-format", "json"], "info", &[]).await;
    let mut client = ComplianceServiceClient::new(served.channel());
    let tp = traceparent("00f067aa0ba902b7");
    client.check_access(check("ada", "mac-ada", Some(DEMO_GATEWAY), Some(&tp))).await.unwrap();
    client.check_access(check("bob", "mac-bob", Some(DEMO_GATEWAY), Some(&tp))).await.unwrap();
    let lines = stop(served).await;

    let logged: Vec<serde_json::Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let calls: Vec<_> = logged.iter().filter(|e| e["target"] == "posture::rpc").collect();
    assert_eq!(calls.len(), 1, "at info, only the denial: {calls:#?}");
    let denial = calls[0];
    assert_eq!(denial["level"], "INFO");
    assert_eq!(denial["message"], "access denied");
    assert_eq!(denial["trace_id"], TRACE_ID);
    assert_eq!(denial["rpc"], "posture.v1.ComplianceService/CheckAccess");
    assert_eq!(denial["code"], "OK");
    assert_eq!(denial["decision"], "deny");
    assert_eq!(denial["reason_codes"], "NONCOMPLIANT");
    assert_eq!(denial["credential"], "demo-gateway");
    // Audit events: the document is the message of a line on their target.
    let audit: Vec<serde_json::Value> = logged
        .iter()
        .filter(|e| e["target"] == "posture::audit")
        .map(|e| serde_json::from_str(e["message"].as_str().unwrap()).unwrap())
        .collect();
    assert!(audit.iter().any(|e| e["event"] == "admin_change"), "the demo's seeding is audited: {audit:#?}");
}

/// The `posture::rpc` lines with this message.
fn rpc_lines<'a>(logged: &'a [serde_json::Value], message: &str) -> Vec<&'a serde_json::Value> {
    logged.iter().filter(|e| e["target"] == "posture::rpc" && e["message"] == message).collect()
}

fn repeats(lines: &[&serde_json::Value]) -> u64 {
    lines.iter().map(|e| e["repeats"].as_u64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_or_error_repeated_is_logged_once_and_then_counted() {
    let (served, _data) = demo(&["--log-format", "json"], "info", &[]).await;
    let mut client = ComplianceServiceClient::new(served.channel());
    for _ in 0..5 {
        let answer = client.check_access(check("bob", "mac-bob", Some(DEMO_GATEWAY), None)).await.unwrap();
        assert_eq!(answer.get_ref().decision(), pb::Decision::Deny);
    }
    // Another user on bob's Mac is another denial: a line of its own.
    client.check_access(check("ada", "mac-bob", Some(DEMO_GATEWAY), None)).await.unwrap();
    for _ in 0..3 {
        let refused = client.check_access(check("bob", "mac-bob", Some("revoked"), None)).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    let lines = stop(served).await;
    let logged: Vec<serde_json::Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();

    let denied = rpc_lines(&logged, "access denied");
    fn who<'a>(e: &&'a serde_json::Value) -> (&'a str, &'a str) {
        (e["user"].as_str().unwrap(), e["device"].as_str().unwrap())
    }
    assert_eq!(denied.iter().map(who).collect::<Vec<_>>(), [("bob", "mac-bob"), ("ada", "mac-bob")], "{denied:#?}");
    assert_eq!(denied[0]["reason_codes"], "NONCOMPLIANT");
    assert_eq!(denied[1]["reason_codes"], "DEVICE_REGISTERED_TO_ANOTHER_USER,NONCOMPLIANT");
    // The repeats are written by shutdown at the latest, with what they repeat.
    let again = rpc_lines(&logged, "access denied again");
    assert_eq!(repeats(&again), 4, "{again:#?}");
    assert!(again.iter().all(|e| who(e) == ("bob", "mac-bob") && e["reason_codes"] == "NONCOMPLIANT"), "{again:#?}");

    let failed = rpc_lines(&logged, "call failed");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["code"], "UNAUTHENTICATED");
    let failed_again = rpc_lines(&logged, "call failed again");
    assert_eq!(repeats(&failed_again), 2, "{failed_again:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_debug_every_call_has_its_line() {
    let (served, _data) = demo(&["--log-format", "json"], "info,posture::rpc=debug", &[]).await;
    let mut client = ComplianceServiceClient::new(served.channel());
    client.check_access(check("ada", "mac-ada", Some(DEMO_GATEWAY), None)).await.unwrap();
    let lines = stop(served).await;
    let answered: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["target"] == "posture::rpc" && e["rpc"] != "grpc.health.v1.Health/Check")
        .collect();
    assert_eq!(answered.len(), 1, "{answered:#?}");
    assert_eq!((answered[0]["level"].as_str(), answered[0]["decision"].as_str()), (Some("DEBUG"), Some("allow")));
    assert_eq!(answered[0]["cache"], "miss");
}
