//! The port's answers while the state loads into memory (seconds for a large organisation): the
//! health service says NOT_SERVING for the server and every service, and SERVING for
//! `liveness`, so probes tell loading from dead; every other call is UNAVAILABLE, saying why.
//! It serves on a duplicate of the listening socket, and stops once the state is loaded, so
//! the real server then takes the same port without a gap in which connections are refused.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tower::{Layer, Service};

use crate::layers::BoxFuture;
use crate::server::{LIVENESS, SERVICES};
use crate::tls::TlsServer;

/// Runs `load` while a stand-in server answers on `listener`'s port (over TLS when `tls` is
/// given); stops the stand-in before returning what `load` gave.
pub async fn answer_while<T>(listener: &TcpListener, tls: Option<Arc<TlsServer>>, load: impl Future<Output = T>) -> T {
    let Some(standin) = duplicate(listener) else { return load.await };
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in SERVICES.iter().chain(&[""]) {
        health.set_service_status(*name, ServingStatus::NotServing).await;
    }
    health.set_service_status(LIVENESS, ServingStatus::Serving).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = Server::builder().layer(OnlyHealth).add_service(health_service);
    let stopped = async {
        let _ = stopped.await;
    };
    let serving = tokio::spawn(async move {
        match tls {
            Some(tls) => router.serve_with_incoming_shutdown(tls.incoming(standin), stopped).await,
            None => {
                let incoming = TcpIncoming::from(standin).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, stopped).await
            }
        }
    });
    tracing::info!("loading the state; health answers NOT_SERVING meanwhile");
    let loaded = load.await;
    let _ = stop.send(());
    // Connections still open get GOAWAY and reconnect to the real server; a client that does
    // not close its own is not waited for long.
    if tokio::time::timeout(std::time::Duration::from_secs(2), serving).await.is_err() {
        tracing::debug!("the loading stand-in's connections did not all close; left behind");
    }
    loaded
}

#[cfg(unix)]
fn duplicate(listener: &TcpListener) -> Option<TcpListener> {
    use std::os::fd::AsFd;
    let fd = listener.as_fd().try_clone_to_owned().ok()?;
    let std = std::net::TcpListener::from(fd);
    std.set_nonblocking(true).ok()?;
    TcpListener::from_std(std).ok()
}

#[cfg(not(unix))]
fn duplicate(_: &TcpListener) -> Option<TcpListener> {
    None
}

/// Health passes; everything else is UNAVAILABLE.
#[derive(Clone)]
struct OnlyHealth;

impl<S> Layer<S> for OnlyHealth {
    type Service = HealthOnly<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HealthOnly(inner)
    }
}

#[derive(Clone)]
struct HealthOnly<S>(S);

impl<S> Service<Request<Body>> for HealthOnly<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if request.uri().path().starts_with("/grpc.health.v1.Health/") {
            return Box::pin(self.0.call(request));
        }
        let status = tonic::Status::unavailable(
            "posture is loading its state into memory and answers nothing else yet: retry shortly, or call another \
             replica",
        );
        Box::pin(std::future::ready(Ok(status.into_http())))
    }
}
