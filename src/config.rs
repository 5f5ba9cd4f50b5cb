//! One typed configuration, layered: built-in defaults, then an optional TOML file, then
//! `POSTURE_*` environment variables, then command-line flags (clap reads both of the last).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::CredentialConfig;
use crate::telemetry::logs::LogFormat;
use crate::tls::TlsFiles;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_DATA_DIR: &str = "./posture-data";

/// The TOML file's shape; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub demo: Option<bool>,
    pub cache_capacity: Option<u64>,
    /// e.g. "30s"
    #[serde(default, with = "humantime_serde_opt")]
    pub max_staleness: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub default_deadline: Option<Duration>,
    pub max_concurrent_calls: Option<usize>,
    pub max_streams_per_connection: Option<u32>,
    pub max_watch_streams: Option<usize>,
    pub max_watch_streams_per_credential: Option<usize>,
    pub watch_retained_events: Option<usize>,
    pub reflection: Option<Reflection>,
    pub insecure: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    #[serde(default, with = "humantime_serde_opt")]
    pub reload_interval: Option<Duration>,
    pub log_retain_revisions: Option<u64>,
    #[serde(default, with = "humantime_serde_opt")]
    pub log_retain_age: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub shutdown_delay: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub drain_timeout: Option<Duration>,
    pub log_format: Option<LogFormat>,
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    pub credentials: Vec<CredentialConfig>,
    /// The `[ext_authz]` table.
    #[serde(default)]
    pub ext_authz: ExtAuthzSettings,
}

/// Who may use server reflection (how grpcurl learns the API without proto files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Reflection {
    /// Anyone who can reach the port.
    #[default]
    Public,
    /// Callers with a credential (any role).
    Authenticated,
}

/// `max_staleness = "30s"` in the file, read with humantime like the flag.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

/// Values given on the command line or in the environment (they win over the file).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Address to listen on [default: 127.0.0.1:50051]
    #[arg(long, env = "POSTURE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory of the embedded SQLite database [default: ./posture-data]
    #[arg(long, env = "POSTURE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A TOML configuration file
    #[arg(long, env = "POSTURE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Store URL; default sqlite://<data-dir>/posture.db
    #[arg(long, env = "POSTURE_STORE")]
    pub store: Option<String>,
    /// Load a small sample organisation into an empty store, with demo credentials
    #[arg(long, env = "POSTURE_DEMO")]
    pub demo: bool,
    /// How many device decisions to cache [default: 1000000]
    #[arg(long, env = "POSTURE_CACHE_CAPACITY")]
    pub cache_capacity: Option<u64>,
    /// How long this replica may go without reaching its store before it turns NOT_SERVING
    /// and denies every access, e.g. 30s, 2m [default: 30s]
    #[arg(long, env = "POSTURE_MAX_STALENESS", value_parser = humantime::parse_duration)]
    pub max_staleness: Option<Duration>,
    /// The deadline of a call that carries none; a caller's own is honoured up to it [default: 30s]
    #[arg(long, env = "POSTURE_DEFAULT_DEADLINE", value_parser = humantime::parse_duration)]
    pub default_deadline: Option<Duration>,
    /// Calls served at once (health checks aside); beyond it, RESOURCE_EXHAUSTED at once [default: 1024]
    #[arg(long, env = "POSTURE_MAX_CONCURRENT_CALLS")]
    pub max_concurrent_calls: Option<usize>,
    /// Calls one HTTP/2 connection may have open at once; its client queues the rest [default: 200]
    #[arg(long, env = "POSTURE_MAX_STREAMS_PER_CONNECTION")]
    pub max_streams_per_connection: Option<u32>,
    /// WatchCompliance streams open at once, in all [default: 1000]
    #[arg(long, env = "POSTURE_MAX_WATCH_STREAMS")]
    pub max_watch_streams: Option<usize>,
    /// WatchCompliance streams open at once per credential [default: 100]
    #[arg(long, env = "POSTURE_MAX_WATCH_STREAMS_PER_CREDENTIAL")]
    pub max_watch_streams_per_credential: Option<usize>,
    /// The latest WatchCompliance events kept for streams to resume from (after_cursor); an
    /// older cursor gets OUT_OF_RANGE and resyncs [default: 100000]
    #[arg(long, env = "POSTURE_WATCH_RETAINED_EVENTS")]
    pub watch_retained_events: Option<usize>,
    /// Who may use server reflection [default: public]
    #[arg(long, env = "POSTURE_REFLECTION", value_enum)]
    pub reflection: Option<Reflection>,
    /// Serve with no credentials on a non-loopback address: every caller may call every RPC
    #[arg(long, env = "POSTURE_INSECURE")]
    pub insecure: bool,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key
    #[arg(long, env = "POSTURE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, env = "POSTURE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates that chain to these CAs (PEM): mutual TLS
    #[arg(long, env = "POSTURE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// How often the configuration file's credentials and the TLS files are checked for
    /// changes (SIGHUP checks at once) [default: 2s]
    #[arg(long, env = "POSTURE_RELOAD_INTERVAL", value_parser = humantime::parse_duration)]
    pub reload_interval: Option<Duration>,
    /// The change log keeps at least this many latest revisions, whatever their age [default: 0]
    #[arg(long, env = "POSTURE_LOG_RETAIN_REVISIONS")]
    pub log_retain_revisions: Option<u64>,
    /// The change log keeps at least this long of revisions, e.g. 10m, 1h; older ones beyond
    /// --log-retain-revisions are deleted (a replica behind them reloads the state) [default: 10m]
    #[arg(long, env = "POSTURE_LOG_RETAIN_AGE", value_parser = humantime::parse_duration)]
    pub log_retain_age: Option<Duration>,
    /// After SIGTERM, how long to keep serving while NOT_SERVING, for load balancers to notice
    /// [default: 0s]
    #[arg(long, env = "POSTURE_SHUTDOWN_DELAY", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Option<Duration>,
    /// After the shutdown delay, how long calls in flight may take to finish [default: 10s]
    #[arg(long, env = "POSTURE_DRAIN_TIMEOUT", value_parser = humantime::parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// How logs are written: text for people, json for log pipelines [default: text]
    #[arg(long, env = "POSTURE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Serve Prometheus metrics at http://ADDR/metrics (unauthenticated: keep it off public
    /// networks) [default: no metrics listener]
    #[arg(long, env = "POSTURE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    // Boxed, so that enums holding Overrides (the CLI's commands) stay small.
    #[command(flatten)]
    pub ext_authz: Box<ExtAuthzSettings>,
}

/// Where Envoy's ext_authz checks find the user and the device, as given in the file's
/// `[ext_authz]` table or by flags and the environment; each is optional.
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthzSettings {
    /// ext_authz: the request header naming the user [default: x-posture-user-id]
    #[arg(long = "ext-authz-user-header", env = "POSTURE_EXT_AUTHZ_USER_HEADER")]
    pub user_header: Option<String>,
    /// ext_authz: the request header naming the device [default: x-posture-device-id]
    #[arg(long = "ext-authz-device-header", env = "POSTURE_EXT_AUTHZ_DEVICE_HEADER")]
    pub device_header: Option<String>,
    /// ext_authz: the key under which Envoy's jwt_authn filter puts the verified JWT's payload
    /// (its `payload_in_metadata`) [default: jwt_payload]
    #[arg(long = "ext-authz-jwt-payload-key", env = "POSTURE_EXT_AUTHZ_JWT_PAYLOAD_KEY")]
    pub jwt_payload_key: Option<String>,
    /// ext_authz: the JWT claim naming the user [default: sub]
    #[arg(long = "ext-authz-user-claim", env = "POSTURE_EXT_AUTHZ_USER_CLAIM")]
    pub user_claim: Option<String>,
    /// ext_authz: the JWT claim naming the device [default: device_id]
    #[arg(long = "ext-authz-device-claim", env = "POSTURE_EXT_AUTHZ_DEVICE_CLAIM")]
    pub device_claim: Option<String>,
}

/// Where Envoy's ext_authz checks find the user and the device: a claim of the JWT that
/// Envoy's jwt_authn filter verified, else a request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtAuthzConfig {
    /// Lowercase, as Envoy sends header names.
    pub user_header: String,
    pub device_header: String,
    pub jwt_payload_key: String,
    pub user_claim: String,
    pub device_claim: String,
}

impl ExtAuthzSettings {
    /// These settings over `file`'s, then the defaults.
    fn layer(self, file: ExtAuthzSettings) -> anyhow::Result<ExtAuthzConfig> {
        Ok(ExtAuthzConfig {
            user_header: header_name("user_header", self.user_header.or(file.user_header), "x-posture-user-id")?,
            device_header: header_name(
                "device_header",
                self.device_header.or(file.device_header),
                "x-posture-device-id",
            )?,
            jwt_payload_key: key("jwt_payload_key", self.jwt_payload_key.or(file.jwt_payload_key), "jwt_payload")?,
            user_claim: key("user_claim", self.user_claim.or(file.user_claim), "sub")?,
            device_claim: key("device_claim", self.device_claim.or(file.device_claim), "device_id")?,
        })
    }
}

fn key(name: &str, value: Option<String>, default: &str) -> anyhow::Result<String> {
    let value = value.unwrap_or_else(|| default.to_string());
    anyhow::ensure!(!value.is_empty(), "ext_authz {name} must not be empty");
    Ok(value)
}

/// Lowercased: Envoy sends header names in lowercase.
fn header_name(name: &str, value: Option<String>, default: &str) -> anyhow::Result<String> {
    let value = key(name, value, default)?.to_ascii_lowercase();
    // A field name is a token (RFC 9110, section 5.1).
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    anyhow::ensure!(value.chars().all(token), "ext_authz {name} {value:?} is not an HTTP header name");
    Ok(value)
}

impl Default for ExtAuthzConfig {
    fn default() -> Self {
        ExtAuthzSettings::default().layer(ExtAuthzSettings::default()).expect("the defaults are valid")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: String,
    pub demo: bool,
    pub cache_capacity: u64,
    pub max_staleness: Duration,
    pub limits: crate::layers::Limits,
    pub watch: crate::engine::WatchLimits,
    pub reflection: Reflection,
    pub insecure: bool,
    pub tls: Option<TlsFiles>,
    pub reload_interval: Duration,
    pub drain: crate::server::Drain,
    pub retention: crate::engine::Retention,
    pub log_format: LogFormat,
    pub metrics_listen: Option<SocketAddr>,
    pub credentials: Vec<CredentialConfig>,
    pub ext_authz: ExtAuthzConfig,
    /// The file the configuration was read from: its credentials are reloaded while serving.
    pub file: Option<PathBuf>,
}

impl Config {
    /// The defaults: everything runs with nothing configured.
    pub fn defaults() -> Self {
        Config::layer(FileConfig::default(), Overrides::default()).expect("the defaults are valid")
    }

    /// Reads the file the overrides name (if any) and applies the overrides over it.
    pub fn load(overrides: Overrides) -> anyhow::Result<Self> {
        let file = match &overrides.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let path = overrides.config.clone();
        Ok(Config { file: path, ..Config::layer(file, overrides)? })
    }

    fn layer(file: FileConfig, o: Overrides) -> anyhow::Result<Self> {
        let listen = match o.listen.or(file.listen) {
            Some(a) => a,
            None => DEFAULT_LISTEN.parse()?,
        };
        let data_dir = o.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let store =
            o.store.or(file.store).unwrap_or_else(|| format!("sqlite://{}", data_dir.join("posture.db").display()));
        let cache_capacity = o.cache_capacity.or(file.cache_capacity).unwrap_or(1_000_000);
        anyhow::ensure!(cache_capacity > 0, "cache_capacity must be at least 1");
        let max_staleness = o.max_staleness.or(file.max_staleness).unwrap_or(crate::engine::DEFAULT_MAX_STALENESS);
        anyhow::ensure!(
            max_staleness >= Duration::from_millis(100),
            "max_staleness must be at least 100ms (replicas confirm the store's head every few hundred milliseconds)"
        );
        let defaults = crate::layers::Limits::default();
        let limits = crate::layers::Limits {
            default_deadline: o.default_deadline.or(file.default_deadline).unwrap_or(defaults.default_deadline),
            max_concurrent_calls: o
                .max_concurrent_calls
                .or(file.max_concurrent_calls)
                .unwrap_or(defaults.max_concurrent_calls),
            max_streams_per_connection: o
                .max_streams_per_connection
                .or(file.max_streams_per_connection)
                .unwrap_or(defaults.max_streams_per_connection),
        };
        anyhow::ensure!(limits.max_streams_per_connection > 0, "max_streams_per_connection must be at least 1");
        anyhow::ensure!(limits.max_concurrent_calls > 0, "max_concurrent_calls must be at least 1");
        anyhow::ensure!(!limits.default_deadline.is_zero(), "default_deadline must be longer than 0");
        let watch_defaults = crate::engine::WatchLimits::default();
        let watch = crate::engine::WatchLimits {
            streams: o.max_watch_streams.or(file.max_watch_streams).unwrap_or(watch_defaults.streams),
            streams_per_credential: o
                .max_watch_streams_per_credential
                .or(file.max_watch_streams_per_credential)
                .unwrap_or(watch_defaults.streams_per_credential),
            retained_events: o
                .watch_retained_events
                .or(file.watch_retained_events)
                .unwrap_or(watch_defaults.retained_events),
        };
        anyhow::ensure!(watch.retained_events > 0, "watch_retained_events must be at least 1");
        let tls = match (
            o.tls_cert.or(file.tls_cert),
            o.tls_key.or(file.tls_key),
            o.tls_client_ca.or(file.tls_client_ca),
        ) {
            (Some(cert), Some(key), client_ca) => Some(TlsFiles { cert, key, client_ca }),
            (None, None, None) => None,
            (None, None, Some(_)) => anyhow::bail!(
                "tls_client_ca needs the server's own certificate too: give tls_cert and tls_key (--tls-cert, --tls-key)"
            ),
            (Some(_), None, _) => anyhow::bail!("tls_cert needs its private key: give tls_key (--tls-key)"),
            (None, Some(_), _) => anyhow::bail!("tls_key needs its certificate: give tls_cert (--tls-cert)"),
        };
        let reload_interval = o.reload_interval.or(file.reload_interval).unwrap_or(crate::reload::DEFAULT_INTERVAL);
        anyhow::ensure!(reload_interval >= Duration::from_millis(100), "reload_interval must be at least 100ms");
        let retention_defaults = crate::engine::Retention::default();
        let retention = crate::engine::Retention {
            revisions: o.log_retain_revisions.or(file.log_retain_revisions).unwrap_or(retention_defaults.revisions),
            age: o.log_retain_age.or(file.log_retain_age).unwrap_or(retention_defaults.age),
        };
        let drain_defaults = crate::server::Drain::default();
        let drain = crate::server::Drain {
            delay: o.shutdown_delay.or(file.shutdown_delay).unwrap_or(drain_defaults.delay),
            timeout: o.drain_timeout.or(file.drain_timeout).unwrap_or(drain_defaults.timeout),
        };
        Ok(Config {
            listen,
            data_dir,
            store,
            demo: o.demo || file.demo.unwrap_or(false),
            cache_capacity,
            max_staleness,
            limits,
            watch,
            reflection: o.reflection.or(file.reflection).unwrap_or_default(),
            insecure: o.insecure || file.insecure.unwrap_or(false),
            tls,
            reload_interval,
            drain,
            retention,
            log_format: o.log_format.or(file.log_format).unwrap_or_default(),
            metrics_listen: o.metrics_listen.or(file.metrics_listen),
            credentials: file.credentials,
            ext_authz: o.ext_authz.layer(file.ext_authz)?,
            file: None,
        })
    }
}

/// Reads a configuration file (as `--config` names it).
pub fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_run_embedded() {
        let c = Config::defaults();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.store, "sqlite://./posture-data/posture.db");
        assert!(c.credentials.is_empty());
    }

    #[test]
    fn flags_override_the_file() {
        let file: FileConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:6000"
            data_dir = "/var/lib/posture"
            max_staleness = "45s"
            [[credentials]]
            id = "jamf"
            role = "partner"
            secret_sha256 = ["00"]
            "#,
        )
        .expect("valid toml");
        let o = Overrides { listen: Some("127.0.0.1:7000".parse().expect("addr")), ..Default::default() };
        let c = Config::layer(file, o).expect("valid");
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.store, "sqlite:///var/lib/posture/posture.db");
        assert_eq!(c.credentials.len(), 1);
        assert_eq!(c.max_staleness, Duration::from_secs(45));
    }

    #[test]
    fn log_format_and_metrics_listen_layer_like_the_rest() {
        assert_eq!((Config::defaults().log_format, Config::defaults().metrics_listen), (LogFormat::Text, None));
        let file: FileConfig =
            toml::from_str("log_format = \"json\"\nmetrics_listen = \"127.0.0.1:9464\"").expect("valid toml");
        let o = Overrides { metrics_listen: Some("127.0.0.1:9100".parse().expect("addr")), ..Default::default() };
        let c = Config::layer(file, o).expect("valid");
        assert_eq!((c.log_format, c.metrics_listen.map(|a| a.port())), (LogFormat::Json, Some(9100)));
        assert!(toml::from_str::<FileConfig>("log_format = \"xml\"").is_err());
    }

    #[test]
    fn watch_limits_layer_and_an_empty_journal_is_refused() {
        assert_eq!(Config::defaults().watch, crate::engine::WatchLimits::default());
        let file: FileConfig = toml::from_str("watch_retained_events = 5000\nmax_watch_streams = 10").expect("toml");
        let o = Overrides { max_watch_streams: Some(20), ..Default::default() };
        let c = Config::layer(file, o).expect("valid");
        assert_eq!((c.watch.retained_events, c.watch.streams), (5000, 20));
        let o = Overrides { watch_retained_events: Some(0), ..Default::default() };
        let e = Config::layer(FileConfig::default(), o).expect_err("no journal").to_string();
        assert!(e.contains("watch_retained_events"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("listn = \"x\"").is_err());
        assert!(toml::from_str::<FileConfig>("[ext_authz]\nuser_headr = \"x\"").is_err());
    }

    #[test]
    fn ext_authz_settings_layer_and_header_names_are_lowercased() {
        let c = Config::defaults().ext_authz;
        assert_eq!(
            (c.user_header.as_str(), c.device_header.as_str(), c.jwt_payload_key.as_str()),
            ("x-posture-user-id", "x-posture-device-id", "jwt_payload")
        );
        assert_eq!((c.user_claim.as_str(), c.device_claim.as_str()), ("sub", "device_id"));
        let file: FileConfig =
            toml::from_str("[ext_authz]\nuser_header = \"X-User\"\nuser_claim = \"oid\"").expect("valid toml");
        let o = Overrides {
            ext_authz: Box::new(ExtAuthzSettings { user_claim: Some("upn".into()), ..Default::default() }),
            ..Default::default()
        };
        let c = Config::layer(file, o).expect("valid").ext_authz;
        assert_eq!((c.user_header.as_str(), c.user_claim.as_str()), ("x-user", "upn"));
        for bad in ["", "x user", "x-user:"] {
            let o = Overrides {
                ext_authz: Box::new(ExtAuthzSettings { device_header: Some(bad.into()), ..Default::default() }),
                ..Default::default()
            };
            assert!(Config::layer(FileConfig::default(), o).is_err(), "{bad:?}");
        }
    }
}
