//! A trace sink: an OTLP/gRPC `TraceService` that counts the spans exported to it and keeps
//! nothing, standing in for a collector in the load tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

#[derive(Clone, Default)]
struct Sink {
    spans: Arc<AtomicU64>,
    exports: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize =
            req.get_ref().resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        self.exports.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Serves on `listen` until SIGINT/SIGTERM or `duration`; prints `spans=N exports=N` every
/// `every` and at the end.
pub async fn run(listen: std::net::SocketAddr, duration: Duration, every: Duration) -> anyhow::Result<()> {
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let report =
        |s: &Sink| println!("spans={} exports={}", s.spans.load(Ordering::Relaxed), s.exports.load(Ordering::Relaxed));
    let serving = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let reporting = async {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            report(&sink);
        }
    };
    let stop = async {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            () = term => {},
            () = tokio::time::sleep(duration) => {},
        }
    };
    tokio::select! {
        served = serving => served?,
        () = reporting => {},
        () = stop => {},
    }
    report(&sink);
    Ok(())
}
