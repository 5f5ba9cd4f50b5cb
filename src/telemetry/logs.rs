//! Logs: human text (the default) or one JSON document a line (`--log-format json`), on
//! standard output, filtered by `RUST_LOG` (default `info`). Colours only on a terminal, and
//! never with `NO_COLOR` set.
//!
//! Audit events (target `posture::audit`, see [`crate::audit`]) are JSON documents either way:
//! in text, the line's message is the document (after the target); in JSON, the line's
//! `message` field holds it as a string, next to `"target":"posture::audit"`.

use std::io::IsTerminal;

use serde::Deserialize;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: a line of text per event.
    #[default]
    Text,
    /// For log pipelines: a JSON document per line.
    Json,
}

/// Whether to colour the logs: on a terminal, unless `NO_COLOR` is set to anything.
fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the server's subscriber: the logs in `format`. Keep the guard until the process
/// ends: dropping it writes out every line still queued.
///
/// A call formats its line and queues it; a thread of its own writes the queue out, as many
/// lines to a write as have queued (a write per line cost a call at 60,000 denials a second
/// about a fifth of its time). The queue holds 128,000 lines; beyond that a call waits for
/// the writer rather than lose a line.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat) -> WorkerGuard {
    let (out, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("posture-logs")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()));
    install(format, out);
    guard
}

/// Installs a short-lived command's subscriber: each line written at once (the command may
/// exit at any point, and its own output goes to the same standard output).
pub fn init_direct(format: LogFormat) {
    install(format, std::io::stdout);
}

fn install<W>(format: LogFormat, out: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_ansi(colour()).with_writer(out).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(out)
            .boxed(),
    };
    // The filter for the whole subscriber, not a per-layer filter: with a per-layer EnvFilter
    // and a target directive (`RUST_LOG=info,posture::store::snapshot=debug`), events were
    // lost at start-up on a million-device PostgreSQL store, the "authentication is OFF"
    // warning among them.
    tracing_subscriber::registry().with(filter).with(logs).init();
}
