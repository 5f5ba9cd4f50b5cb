//! The `posture-bench` command: load generators for a running posture.

use clap::{Parser, Subcommand};
use posture_bench::loadgen::{self, Load, percentile};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "posture-bench", version, about = "Load generators and synthetic organisations for posture")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a running server: CheckAccess (open loop), ingest, replica lag.
    #[command(subcommand)]
    Loadgen(Load),
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
        Command::Loadgen(load) => loadgen(load).await,
    }
}
