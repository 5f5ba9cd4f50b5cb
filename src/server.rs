//! Builds the whole server once: the four posture services behind their role checks, the
//! standard health service (a status per service) and reflection (v1 and v1alpha).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::auth::{self, Credentials, Role};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::config::Reflection;
use crate::engine::WatchLimits;
use crate::engine::{Engine, WatchConfig, Watcher};
use crate::grpc::Handlers;
use crate::layers::{Bounds, Limits};
use crate::proto::{
    self, admin_service_server::AdminServiceServer, compliance_service_server::ComplianceServiceServer,
    inventory_service_server::InventoryServiceServer, targeting_service_server::TargetingServiceServer,
};

pub const SERVICES: [&str; 4] = [
    "posture.v1.ComplianceService",
    "posture.v1.TargetingService",
    "posture.v1.InventoryService",
    "posture.v1.AdminService",
];

/// The health entry for liveness probes: SERVING for as long as this process serves, whatever
/// its store's availability. A replica past its maximum staleness is NOT_SERVING for `""` and
/// every service (not ready), but restarting it would not help: it recovers by itself when the
/// store returns, and a restart could not even load its state meanwhile.
pub const LIVENESS: &str = "liveness";

/// How long in-flight calls may take to finish once shutdown is signalled. Without a bound, a
/// WatchCompliance client that stops reading would hold the server forever: its stream waits
/// on HTTP/2 flow control and is never polled again, so it cannot be ended from inside.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Opens the store, loads the state and, with `--demo`, seeds an empty store.
pub async fn open_engine(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Engine>> {
    let mut credentials = config.credentials.clone();
    if config.demo && credentials.is_empty() {
        credentials = crate::demo::credentials();
    }
    let credentials = Arc::new(Credentials::new(&credentials)?);
    let store = crate::store::open(&config.store).await?;
    let engine = Engine::open(store, clock, config.cache_capacity, credentials).await?;
    let engine = Arc::new(engine.with_max_staleness(config.max_staleness));
    if config.demo {
        crate::demo::seed(&engine).await?;
    }
    Ok(engine)
}

/// Runs the server on `listener` until `shutdown` completes, then drains in-flight calls.
pub async fn serve(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let engine = open_engine(&config, Arc::new(SystemClock)).await?;
    check_exposure(listener.local_addr()?, engine.credentials(), config.insecure)?;
    serve_engine(engine, Serving::from(&config), listener, shutdown).await
}

/// How the server serves: its limits, and who may use reflection.
#[derive(Debug, Clone, Default)]
pub struct Serving {
    pub limits: Limits,
    pub watch: WatchLimits,
    pub reflection: Reflection,
}

impl From<&Config> for Serving {
    fn from(c: &Config) -> Self {
        Serving { limits: c.limits.clone(), watch: c.watch, reflection: c.reflection }
    }
}

/// No open default: with no credentials, posture serves only on a loopback address, unless
/// told to serve open (`--insecure`), which it then says loudly.
pub fn check_exposure(addr: SocketAddr, credentials: &Credentials, insecure: bool) -> anyhow::Result<()> {
    if credentials.enabled() {
        return Ok(());
    }
    if addr.ip().is_loopback() {
        tracing::warn!(%addr, "no credentials configured: authentication is OFF (this address is loopback only)");
        return Ok(());
    }
    anyhow::ensure!(
        insecure,
        "refusing to listen on {addr} with no credentials configured: anyone who reaches it could call every RPC, \
         AdminService included. Configure credentials (see the README's configuration section), listen on \
         127.0.0.1, or pass --insecure to serve open on purpose"
    );
    tracing::error!(%addr, "INSECURE: no credentials configured and listening beyond loopback: every caller may call every RPC, AdminService included");
    Ok(())
}

pub async fn serve_engine(
    engine: Arc<Engine>,
    serving: Serving,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in SERVICES.iter().chain(&["", LIVENESS]) {
        health.set_service_status(*name, ServingStatus::Serving).await;
    }
    // Both reflection versions know every service, so old and new grpcurl list the same.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    // Public by default (grpcurl needs no proto files); with `authenticated`, any credential.
    let creds = engine.credentials().clone();
    let reflect = |service| auth::require(creds.clone(), service, &[Role::Admin, Role::Gateway, Role::Partner]);
    let (public_v1, public_v1alpha, authed_v1, authed_v1alpha) = match serving.reflection {
        Reflection::Public => (Some(reflection_v1), Some(reflection_v1alpha), None, None),
        Reflection::Authenticated => (
            None,
            None,
            Some(InterceptedService::new(reflection_v1, reflect("ServerReflection"))),
            Some(InterceptedService::new(reflection_v1alpha, reflect("ServerReflection"))),
        ),
    };

    // Both follow the engine until shutdown; the watcher is hooked before anything is served.
    let (stop_following, following) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(engine.clone().follow(following.clone()));
    let watch = WatchConfig { limits: serving.watch, ..WatchConfig::default() };
    let (watcher, watching) = Watcher::spawn(engine.clone(), watch, following);

    let handlers = Handlers { engine: engine.clone(), watcher: watcher.clone() };
    const READERS: &[Role] = &[Role::Admin, Role::Gateway];
    let compliance = ComplianceServiceServer::with_interceptor(
        handlers.clone(),
        auth::require(creds.clone(), "ComplianceService", READERS),
    );
    let targeting = TargetingServiceServer::with_interceptor(
        handlers.clone(),
        auth::require(creds.clone(), "TargetingService", READERS),
    );
    let inventory = InventoryServiceServer::with_interceptor(
        handlers.clone(),
        auth::require(creds.clone(), "InventoryService", &[Role::Partner]),
    );
    let admin = AdminServiceServer::with_interceptor(handlers, auth::require(creds, "AdminService", &[Role::Admin]));

    // Health follows whether this replica can vouch for its data, until shutdown takes over.
    let (stopping, stop_signal) = tokio::sync::watch::channel(false);
    let availability = tokio::spawn(follow_availability(engine.clone(), health.clone(), stop_signal));

    let addr = listener.local_addr()?;
    // Without TCP_NODELAY, pipelined responses wait on delayed ACKs (40 ms each).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let authentication = if engine.credentials().enabled() { "on" } else { "OFF" };
    tracing::info!(%addr, revision = engine.revision(), authentication, "posture serving");
    let (drained, draining) = tokio::sync::oneshot::channel::<()>();
    let drain = async move {
        shutdown.await;
        let _ = stopping.send(true);
        let _ = availability.await;
        tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
        for name in SERVICES.iter().chain(&[""]) {
            health.set_service_status(*name, ServingStatus::NotServing).await;
        }
        // WatchCompliance streams never end by themselves: end them, so draining can finish.
        watcher.close();
        let _ = drained.send(());
    };
    let serving = Server::builder()
        .layer(Bounds::new(serving.limits))
        .add_service(health_service)
        .add_optional_service(public_v1)
        .add_optional_service(public_v1alpha)
        .add_optional_service(authed_v1)
        .add_optional_service(authed_v1alpha)
        .add_service(compliance)
        .add_service(targeting)
        .add_service(inventory)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, drain);
    let drain_limit = async {
        match draining.await {
            Ok(()) => tokio::time::sleep(DRAIN_LIMIT).await,
            Err(_) => std::future::pending().await, // the server ended without a shutdown signal
        }
    };
    tokio::select! {
        served = serving => served?,
        () = drain_limit => tracing::warn!(
            limit = ?DRAIN_LIMIT,
            "calls still in flight after the drain limit (a client not reading its stream?); leaving them"
        ),
    }
    let _ = stop_following.send(true);
    let _ = follower.await;
    let _ = watching.await;
    tracing::info!("posture stopped");
    Ok(())
}

/// Sets every service NOT_SERVING while the engine cannot vouch for its data, and SERVING
/// again when it can, until `stop`.
async fn follow_availability(
    engine: Arc<Engine>,
    health: tonic_health::server::HealthReporter,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut available = engine.available();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            changed = available.changed() => if changed.is_err() { return },
        }
        let status = if *available.borrow_and_update() { ServingStatus::Serving } else { ServingStatus::NotServing };
        tracing::warn!(?status, "health follows the store's availability");
        for name in SERVICES.iter().chain(&[""]) {
            health.set_service_status(*name, status).await;
        }
    }
}
