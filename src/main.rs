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
    for changes in chunks {
        store.commit(&changes, spec.now.0).await?;
    }
    tracing::info!(store = %config.store, ?spec, elapsed = ?started.elapsed(), "generated");
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
