//! Logs: human text (the default) or one JSON document a line (`--log-format json`), on
//! standard output, filtered by `RUST_LOG` (default `info`). Colours only on a terminal, and
//! never with `NO_COLOR` set.
//!
//! Audit events (target `posture::audit`, see [`crate::audit`]) are JSON documents either way:
//! in text, the line's message is the document (after the target); in JSON, the line's
//! `message` field holds it as a string, next to `"target":"posture::audit"`.

use std::io::IsTerminal;

use serde::Deserialize;
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

/// Installs the process's subscriber: the logs in `format`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_ansi(colour()).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
    };
    tracing_subscriber::registry().with(logs.with_filter(filter)).init();
}
