//! Builds the whole server once: the four posture services and Envoy's external authorization
//! behind their role checks, the standard health service (a status per service) and
//! reflection (v1 and v1alpha).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use futures_util::future::Either;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::auth::{Access, Authorize, Role};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ExtAuthzConfig, Reflection};
use crate::engine::WatchLimits;
use crate::engine::{Engine, Retention, WatchConfig, Watcher};
use crate::grpc::Handlers;
use crate::grpc::ext_authz::{self, ExtAuthz};
use crate::layers::{Bounds, Limits};
use crate::proto::{
    self, admin_service_server::AdminServiceServer, compliance_service_server::ComplianceServiceServer,
    inventory_service_server::InventoryServiceServer, targeting_service_server::TargetingServiceServer,
};
use crate::reload::{self, Reload};
use crate::telemetry::{Telemetry, metrics};
use crate::tls::{TlsFiles, TlsServer};

pub const SERVICES: [&str; 5] = [
    "posture.v1.ComplianceService",
    "posture.v1.TargetingService",
    "posture.v1.InventoryService",
    "posture.v1.AdminService",
    ext_authz::SERVICE_NAME,
];

/// The health entry for liveness probes: SERVING for as long as this process serves, whatever
/// its store's availability. A replica past its maximum staleness is NOT_SERVING for `""` and
/// every service (not ready), but restarting it would not help: it recovers by itself when the
/// store returns, and a restart could not even load its state meanwhile.
pub const LIVENESS: &str = "liveness";

/// How the server stops on SIGTERM: NOT_SERVING at once, serving on for `delay` (load
/// balancers notice and send calls elsewhere), then no new connections, and calls in flight
/// get up to `timeout` to finish. Without that bound, a WatchCompliance client that stops
/// reading would hold the server forever: its stream waits on HTTP/2 flow control and is never
/// polled again, so it cannot be ended from inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    pub delay: Duration,
    pub timeout: Duration,
}

impl Default for Drain {
    fn default() -> Self {
        Drain { delay: Duration::ZERO, timeout: Duration::from_secs(10) }
    }
}

/// Opens the store, loads the state and, with `--demo`, seeds an empty store.
pub async fn open_engine(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Engine>> {
    let credentials = Arc::new(reload::credentials(&config.credentials, config.demo)?);
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
    // TLS files that do not make a set-up are refused before a load that can take seconds.
    let tls = config.tls.clone().map(TlsServer::load).transpose()?.map(Arc::new);
    let engine = crate::loading::answer_while(&listener, tls, open_engine(&config, Arc::new(SystemClock))).await?;
    reload::check_exposure(listener.local_addr()?, &engine.credentials(), config.insecure)?;
    serve_engine(engine, Serving::from(&config), listener, shutdown).await
}

/// How the server serves: its limits, who may use reflection, and where Envoy's ext_authz
/// checks find the user and the device.
#[derive(Debug, Clone, Default)]
pub struct Serving {
    pub limits: Limits,
    pub watch: WatchLimits,
    pub reflection: Reflection,
    pub ext_authz: ExtAuthzConfig,
    /// Serve TLS (and require client certificates) with these files.
    pub tls: Option<TlsFiles>,
    /// What to reload credentials from while serving.
    pub reload: Reload,
    pub drain: Drain,
    /// How much of the change log to keep.
    pub retention: Retention,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl From<&Config> for Serving {
    fn from(c: &Config) -> Self {
        Serving {
            limits: c.limits.clone(),
            watch: c.watch,
            reflection: c.reflection,
            ext_authz: c.ext_authz.clone(),
            tls: c.tls.clone(),
            reload: Reload {
                config_file: c.file.clone(),
                demo: c.demo,
                insecure: c.insecure,
                interval: c.reload_interval,
            },
            drain: c.drain,
            retention: c.retention,
            metrics_listen: c.metrics_listen,
        }
    }
}

pub async fn serve_engine(
    engine: Arc<Engine>,
    serving: Serving,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let tls = serving.tls.map(TlsServer::load).transpose()?.map(Arc::new);
    reload::check_certificate_only(&engine.credentials(), tls.as_deref())?;
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in SERVICES.iter().chain(&["", LIVENESS]) {
        health.set_service_status(*name, ServingStatus::Serving).await;
    }
    // Both reflection versions know every service, so old and new grpcurl list the same.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(ext_authz::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) = (reflection().build_v1()?, reflection().build_v1alpha()?);

    // Both follow the engine until shutdown; the watcher is hooked before anything is served.
    let (stop_following, following) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(engine.clone().follow(following.clone()));
    let watch = WatchConfig { limits: serving.watch, ..WatchConfig::default() };
    let (watcher, watching) = Watcher::spawn(engine.clone(), watch, following);

    let handlers = Handlers { engine: engine.clone(), watcher: watcher.clone() };
    let authorize = Authorize::new(engine.credentials_handle().clone(), access(serving.reflection));

    // Health follows whether this replica can vouch for its data, until shutdown takes over.
    let (stopping, stop_signal) = tokio::sync::watch::channel(false);
    let availability = tokio::spawn(follow_availability(engine.clone(), health.clone(), stop_signal.clone()));
    let addr = listener.local_addr()?;
    let credentials = engine.credentials_handle().clone();
    let reloading = tokio::spawn(reload::run(serving.reload, addr, credentials, tls.clone(), stop_signal.clone()));
    let compacting = tokio::spawn(compact(engine.clone(), serving.retention, stop_signal.clone()));
    let (metrics, scraping) = match serving.metrics_listen {
        Some(at) => {
            let listener = metrics::bind(at).await?;
            let metrics = Arc::new(metrics::Metrics::new(engine.metrics()));
            let local = listener.local_addr()?;
            let scrape =
                metrics::serve(listener, metrics.clone(), engine.clone(), watcher.clone(), stop_signal.clone());
            tracing::info!(addr = %local, "metrics served at http://{local}/metrics");
            (Some(metrics), Some(tokio::spawn(scrape)))
        }
        None => (None, None),
    };
    let telemetry = Telemetry::new(metrics);
    // Until the last call is answered, so that its repeats are written too.
    let (stop_repeats, repeats_stop) = tokio::sync::watch::channel(false);
    let repeats = tokio::spawn(telemetry.clone().write_repeats(repeats_stop));
    let streams_per_connection = serving.limits.max_streams_per_connection;
    let mut bounds = Bounds::new(serving.limits);
    if let Some(m) = telemetry.metrics() {
        bounds = bounds.counting_shed(m.shed_counter());
    }

    let authentication = if engine.credentials().enabled() { "on" } else { "OFF" };
    let transport = match &tls {
        Some(t) if t.requires_client_certificates() => "mutual TLS",
        Some(_) => "TLS",
        None => "plaintext",
    };
    tracing::info!(%addr, revision = engine.revision(), authentication, transport, "posture serving");
    let (drained, draining) = tokio::sync::oneshot::channel::<()>();
    let drain_settings = serving.drain;
    let stopping_engine = engine.clone();
    let drain = async move {
        shutdown.await;
        let _ = stopping.send(true);
        let _ = availability.await;
        let _ = reloading.await;
        let _ = compacting.await;
        if let Some(scraping) = scraping {
            let _ = scraping.await;
        }
        for name in SERVICES.iter().chain(&[""]) {
            health.set_service_status(*name, ServingStatus::NotServing).await;
        }
        // Reads parked on a revision this replica has not applied would hold the drain up to
        // their deadline: they are told at once to read elsewhere.
        stopping_engine.shut_down();
        tracing::info!(delay = ?drain_settings.delay, "shutting down: health NOT_SERVING; serving on until the delay ends");
        tokio::time::sleep(drain_settings.delay).await;
        tracing::info!(timeout = ?drain_settings.timeout, "no new connections; draining calls in flight");
        // WatchCompliance streams never end by themselves: end them, so draining can finish.
        watcher.close();
        let _ = drained.send(());
    };
    let router = Server::builder()
        .max_concurrent_streams(streams_per_connection)
        .layer(telemetry)
        .layer(bounds)
        .layer(authorize)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ComplianceServiceServer::new(handlers.clone()))
        .add_service(TargetingServiceServer::new(handlers.clone()))
        .add_service(InventoryServiceServer::new(handlers.clone()))
        .add_service(AdminServiceServer::new(handlers))
        .add_service(AuthorizationServer::new(ExtAuthz::new(engine.clone(), serving.ext_authz)));
    let serving = match tls {
        Some(tls) => Either::Left(router.serve_with_incoming_shutdown(tls.incoming(listener), drain)),
        // Without TCP_NODELAY, pipelined responses wait on delayed ACKs (40 ms each).
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            Either::Right(router.serve_with_incoming_shutdown(incoming, drain))
        }
    };
    let drain_limit = async {
        match draining.await {
            Ok(()) => tokio::time::sleep(drain_settings.timeout).await,
            Err(_) => std::future::pending().await, // the server ended without a shutdown signal
        }
    };
    tokio::select! {
        served = serving => served?,
        () = drain_limit => tracing::warn!(
            timeout = ?drain_settings.timeout,
            "calls still in flight after the drain timeout (a client not reading its stream?); leaving them"
        ),
    }
    let _ = stop_repeats.send(true);
    let _ = repeats.await;
    let _ = stop_following.send(true);
    let _ = follower.await;
    let _ = watching.await;
    tracing::info!("posture stopped");
    Ok(())
}

/// Compacts the change log every so often until `stop`. Every replica does: deleting what
/// another already deleted costs nothing.
async fn compact(engine: Arc<Engine>, retention: Retention, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = (retention.age / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(every) => {}
        }
        // Paced, so a long backlog takes a while: shutdown does not wait for it (every
        // statement is a transaction of its own; the next compaction goes on from there).
        let compacted = tokio::select! {
            _ = stop.changed() => return,
            compacted = engine.compact(retention) => compacted,
        };
        match compacted {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, revision = engine.revision(), "change log compacted"),
            Err(e) => tracing::warn!(error = %e, "compacting the change log failed; retrying later"),
        }
    }
}

/// Who may call what: each service's roles, by path. Health answers anyone (probes carry no
/// credential); reflection too unless it is `authenticated`, then any credential.
fn access(reflection: Reflection) -> Vec<Access> {
    const READERS: &[Role] = &[Role::Admin, Role::Gateway];
    let service = |prefix, service, roles, audited| Access { prefix, service, roles, audited };
    let mut access = vec![
        service("/posture.v1.ComplianceService/", "ComplianceService", READERS, false),
        service("/posture.v1.TargetingService/", "TargetingService", READERS, false),
        service("/posture.v1.InventoryService/", "InventoryService", &[Role::Partner], false),
        service("/posture.v1.AdminService/", "AdminService", &[Role::Admin], true),
        // Envoy sends a gateway's secret in its gRPC service's initial_metadata.
        service("/envoy.service.auth.v3.Authorization/", ext_authz::SERVICE_NAME, READERS, false),
    ];
    if reflection == Reflection::Authenticated {
        const ANY: &[Role] = &[Role::Admin, Role::Gateway, Role::Partner];
        access.push(service("/grpc.reflection.", "ServerReflection", ANY, false));
    }
    access
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
