//! The `posture` command.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "posture",
    version,
    about = "Device-compliance and access decisions for partner-managed Macs, over gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server.
    Serve(posture::config::Overrides),
    /// Write a synthetic organisation into an empty store (for load tests and benchmarks).
    Generate(GenerateArgs),
    /// Drive CheckAccess at a fixed rate and report latency percentiles (open loop).
    #[command(subcommand)]
    Loadgen(posture::loadgen::Load),
    /// Print the SHA-256 digest of a secret, for a credential's `secret_sha256`.
    HashSecret {
        /// The secret.
        secret: String,
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

async fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    use posture::clock::Clock;
    let config = posture::config::Config::load(args.target)?;
    let store = posture::store::open(&config.store).await?;
    anyhow::ensure!(store.load().await?.revision == 0, "{} is not empty; generate into an empty store", config.store);
    let spec = posture::synthetic::Spec {
        users: args.users,
        devices: args.devices,
        groups: args.groups,
        groups_per_user: args.groups_per_user,
        policies: args.policies,
        seed: args.seed,
        now: posture::clock::SystemClock.now(),
    };
    let started = std::time::Instant::now();
    let mut chunks = Vec::new();
    posture::synthetic::organisation(spec, |c| chunks.push(c), 10_000);
    let mut revision = 0;
    for changes in chunks {
        match store.commit(revision, &changes, spec.now.0).await? {
            posture::store::Commit::Done(r) => revision = r,
            posture::store::Commit::Conflict => anyhow::bail!("another writer is using {}", config.store),
        }
    }
    tracing::info!(store = %config.store, ?spec, elapsed = ?started.elapsed(), "generated");
    Ok(())
}

async fn loadgen(load: posture::loadgen::Load) -> anyhow::Result<()> {
    use posture::loadgen::{self, Load, percentile};
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
        Command::Serve(overrides) => {
            let config = posture::config::Config::load(overrides)?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
            posture::server::serve(config, listener, shutdown_signal()).await
        }
        Command::Generate(args) => generate(args).await,
        Command::Loadgen(load) => loadgen(load).await,
        Command::HashSecret { secret } => {
            println!("{}", posture::auth::sha256_hex(&secret));
            Ok(())
        }
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
