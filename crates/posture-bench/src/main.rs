//! The `posture-bench` command: synthetic organisations and load generators for posture.

use anyhow::Context;
use clap::{Parser, Subcommand};
use posture_bench::loadgen::{self, Load, percentile};
use posture_bench::synthetic::{MAX_USERS, Spec};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "posture-bench", version, about = "Load generators and synthetic organisations for posture")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a synthetic organisation into an empty store (for load tests and benchmarks).
    Generate(Box<GenerateArgs>),
    /// Load a running server: CheckAccess (open loop), ingest, replica lag.
    #[command(subcommand)]
    Loadgen(Load),
    /// An OTLP/gRPC trace sink that counts the spans it receives (a stand-in collector).
    OtlpSink {
        #[arg(long, default_value = "127.0.0.1:4317")]
        listen: std::net::SocketAddr,
        /// Stop after this long (or at SIGINT/SIGTERM)
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Print the count this often
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        every: std::time::Duration,
    },
}

#[derive(clap::Args)]
struct GenerateArgs {
    #[command(flatten)]
    target: posture::config::Overrides,
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    #[arg(long, default_value_t = 1_000)]
    groups: usize,
    /// User groups each user is in (besides all-users)
    #[arg(long, default_value_t = 5)]
    groups_per_user: usize,
    /// Policies, each configuring every setting and assigned to all-users
    #[arg(long, default_value_t = 10)]
    policies: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Writes through posture's own validation and engine, so a store it fills is as valid as any.
async fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.users <= MAX_USERS, "--users: at most {MAX_USERS}, the most members a group can have");
    let config = posture::config::Config::load(args.target)?;
    let store = posture::store::open(&config.store).await?;
    let spec = Spec {
        users: args.users,
        devices: args.devices,
        groups: args.groups,
        groups_per_user: args.groups_per_user,
        policies: args.policies,
        seed: args.seed,
    };
    let started = std::time::Instant::now();
    let revision = posture_bench::load::generate(store, config.cache_capacity, spec)
        .await
        .with_context(|| format!("generating into {}", config.store))?;
    tracing::info!(store = %config.store, ?spec, revision, elapsed = ?started.elapsed(), "generated");
    Ok(())
}

/// One line per run; the load scripts parse these.
async fn loadgen(load: Load) -> anyhow::Result<()> {
    match load {
        Load::Check(args) => {
            let rate = args.rate;
            let r = loadgen::run(args).await?;
            println!(
                "rate={rate}/s sent={} ok={} errors={} achieved={:.0}/s p50={}us p99={}us p99.9={}us max={}us",
                r.sent,
                r.ok,
                r.errors,
                r.ok as f64 / r.elapsed.as_secs_f64(),
                r.percentile(50.0),
                r.percentile(99.0),
                r.percentile(99.9),
                r.latencies_us.last().copied().unwrap_or(0)
            );
        }
        Load::Resume(args) => {
            let r = loadgen::resume(args).await?;
            let ms = |d: Option<std::time::Duration>| d.map_or_else(|| "-".into(), |d| d.as_millis().to_string());
            println!(
                "latest_revision={} events={} first_ms={} last_ms={}",
                r.latest,
                r.events,
                ms(r.first),
                ms(r.last)
            );
        }
        Load::Ingest(args) => {
            let (batch, concurrency) = (args.batch, args.concurrency);
            let (stored, batches, elapsed, l) = loadgen::ingest(args).await?;
            println!(
                "batch={batch} concurrency={concurrency} reports={stored} batches={batches} reports_per_s={:.0} \
                 batch_p50={}us batch_p99={}us",
                stored as f64 / elapsed.as_secs_f64(),
                percentile(&l, 50.0),
                percentile(&l, 99.0)
            );
        }
        Load::Writers(args) => {
            let r = posture_bench::writers::run(args).await?;
            println!(
                "reports={} report_errors={} admin_writes={} admin_errors={} watch_events={} watch_resumed={} watch_errors={} first_error={:?}",
                r.reports,
                r.report_errors,
                r.admin_writes,
                r.admin_errors,
                r.watch_events,
                r.watch_resumed,
                r.watch_errors,
                r.first_error
            );
        }
        Load::Lag(args) => {
            let l = loadgen::lag(args).await?;
            println!(
                "writes={} lag_p50={}us lag_p99={}us lag_max={}us",
                l.len(),
                percentile(&l, 50.0),
                percentile(&l, 99.0),
                l.last().copied().unwrap_or(0)
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    match Cli::parse().command {
        Command::Generate(args) => generate(*args).await,
        Command::Loadgen(load) => loadgen(load).await,
        Command::OtlpSink { listen, duration, every } => posture_bench::sink::run(listen, duration, every).await,
    }
}
