//! The `posture` command.

use clap::{Parser, Subcommand};
use posture::telemetry::{logs, trace};

/// mimalloc, not glibc's malloc: under a steady load glibc's per-thread arenas kept growing
/// (about 4 MiB a minute in the soak, flat with its arenas capped); mimalloc returns what it frees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Serve(Box<posture::config::Overrides>),
    /// Print the SHA-256 digest of a secret read from standard input (never from the command
    /// line, where it would stay in the shell's history and show in the process list), for a
    /// credential's `secret_sha256`. E.g. `read -rs S && printf %s "$S" | posture hash-secret`.
    HashSecret,
    /// Ask a running server's health service; exit 0 when SERVING, 1 with the reason otherwise.
    Probe(posture::probe::ProbeArgs),
    /// Make a running server's policies, settings and connector match YAML files: shows the
    /// difference and what it would do to decisions, then applies it (the admin secret from
    /// POSTURE_TOKEN or --token-file).
    Apply(posture::manifest::apply::ApplyArgs),
    /// Write a running server's policies, settings and connector as the YAML files `apply` reads.
    Export(posture::manifest::apply::ExportArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    if !matches!(command, Command::Serve(_)) {
        logs::init_direct(logs::LogFormat::Text);
    }
    match command {
        Command::Serve(overrides) => {
            let config = posture::config::Config::load(*overrides)?;
            let traces = trace::provider()?;
            let _logs = logs::init(config.log_format);
            if let Some(traces) = &traces {
                trace::install(traces);
            }
            let served = serve(config).await;
            // The batch exporter sends what it holds before the process ends.
            if let Some(traces) = traces {
                let flushed = tokio::task::spawn_blocking(move || traces.shutdown()).await;
                if let Ok(Err(e)) = flushed {
                    tracing::warn!(error = %e, "not every span could be exported at shutdown");
                }
            }
            served
        }
        Command::HashSecret => {
            println!("{}", posture::auth::sha256_hex(&read_secret(std::io::stdin().lock())?));
            Ok(())
        }
        Command::Probe(args) => match posture::probe::probe(&args).await {
            Ok(()) => {
                println!("SERVING");
                Ok(())
            }
            // One line and exit 1: what Docker's HEALTHCHECK and Kubernetes exec probes read.
            Err(reason) => {
                let asked = if args.service.is_empty() { args.addr } else { format!("{} {}", args.addr, args.service) };
                eprintln!("posture probe {asked}: {reason}");
                std::process::exit(1)
            }
        },
        Command::Apply(args) => {
            let mut account = String::new();
            let applied = posture::manifest::apply::apply(&args, &mut account).await;
            print!("{account}");
            match applied {
                Ok(()) => Ok(()),
                Err(posture::manifest::apply::Failure::Files(problems)) => {
                    for problem in &problems {
                        eprintln!("{problem}");
                    }
                    eprintln!("posture apply: {} problems in the files; nothing was applied", problems.len());
                    std::process::exit(1)
                }
                Err(posture::manifest::apply::Failure::Other(e)) => fail("apply", &e),
            }
        }
        Command::Export(args) => {
            let written = match posture::manifest::apply::export(&args).await {
                Ok(text) => match &args.output {
                    Some(path) => {
                        std::fs::write(path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
                    }
                    None => {
                        print!("{text}");
                        Ok(())
                    }
                },
                Err(e) => Err(e),
            };
            written.or_else(|e| fail("export", &e))
        }
    }
}

/// A client command's failure: one line with its causes, and exit 1.
fn fail(command: &str, e: &anyhow::Error) -> ! {
    eprintln!("posture {command}: {e:#}");
    std::process::exit(1)
}

async fn serve(config: posture::config::Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    posture::server::serve(config, listener, shutdown_signal()).await
}

/// The secret on `input`: its first line, without the line break.
fn read_secret(mut input: impl std::io::BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    let secret = line.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&line);
    anyhow::ensure!(
        !secret.is_empty(),
        "no secret on standard input: pipe it in, e.g. printf %s \"$SECRET\" | posture hash-secret"
    );
    Ok(secret.to_string())
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
