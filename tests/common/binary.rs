//! The built `posture serve`, as a child process on a free loopback port, with everything it
//! writes to standard output and standard error kept for the test to read.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::ClientTlsConfig;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

pub struct Served {
    pub addr: SocketAddr,
    /// How clients reach it (`None`: plaintext).
    pub tls: Option<ClientTlsConfig>,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

/// A port nothing listens on just now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn keep(from: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
}

impl Served {
    /// `posture serve --listen 127.0.0.1:<free> ARGS…` with `RUST_LOG` as given, once its health
    /// service says SERVING.
    pub async fn start(args: &[&str], rust_log: &str) -> Served {
        Self::start_tls(args, rust_log, None).await
    }

    /// The same, reached over TLS as `tls` says.
    pub async fn start_tls(args: &[&str], rust_log: &str, tls: Option<ClientTlsConfig>) -> Served {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::start_at(addr, args, rust_log, tls).await
    }

    /// The same on `addr`: a restart where the last one served, so clients reconnect to it.
    pub async fn start_at(addr: SocketAddr, args: &[&str], rust_log: &str, tls: Option<ClientTlsConfig>) -> Served {
        let served = Self::spawn_at(addr, args, rust_log, tls);
        served.wait_serving().await;
        served
    }

    /// `start` with these environment variables set (OTEL_*, say).
    pub async fn start_with_env(args: &[&str], rust_log: &str, env: &[(&str, &str)]) -> Served {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let served = Self::spawn_with(addr, args, rust_log, None, env);
        served.wait_serving().await;
        served
    }

    /// Starts it on `addr` without waiting for anything.
    pub fn spawn_at(addr: SocketAddr, args: &[&str], rust_log: &str, tls: Option<ClientTlsConfig>) -> Served {
        Self::spawn_with(addr, args, rust_log, tls, &[])
    }

    fn spawn_with(
        addr: SocketAddr,
        args: &[&str],
        rust_log: &str,
        tls: Option<ClientTlsConfig>,
        env: &[(&str, &str)],
    ) -> Served {
        let mut command = Command::new(env!("CARGO_BIN_EXE_posture"));
        command.arg("serve").arg("--listen").arg(addr.to_string()).args(args).env("RUST_LOG", rust_log);
        // Only what the test gives: not the settings of whoever runs the tests.
        for (name, _) in std::env::vars() {
            if name.starts_with("OTEL_") || name.starts_with("POSTURE_") || name == "NO_COLOR" {
                command.env_remove(name);
            }
        }
        let mut child =
            command.envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        keep(child.stdout.take().unwrap(), log.clone());
        keep(child.stderr.take().unwrap(), log.clone());
        Served { addr, tls, child: Some(child), log }
    }

    async fn wait_serving(&self) {
        let channel = self.channel();
        for _ in 0..400 {
            let mut health = HealthClient::new(channel.clone());
            if let Ok(r) = health.check(HealthCheckRequest { service: String::new() }).await
                && r.get_ref().status == ServingStatus::Serving as i32
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("posture serve did not serve within 20 s; its log:\n{}", self.log());
    }

    pub fn channel(&self) -> tonic::transport::Channel {
        super::channel_to(self.addr, self.tls.clone())
    }

    /// A channel of its own, speaking TLS as `tls` says.
    pub fn channel_with_tls(&self, tls: ClientTlsConfig) -> tonic::transport::Channel {
        super::channel_to(self.addr, Some(tls))
    }

    /// Its process id, to read its /proc entries.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The metrics listener's address, as it logged it (with `--metrics-listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        let log = self.log();
        let line = log.lines().find(|l| l.contains("metrics served at"))?;
        let at = line.find("http://")? + "http://".len();
        line[at..].split('/').next()?.parse().ok()
    }

    /// Everything it wrote so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends it `signal` (e.g. "HUP").
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid).status().unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// SIGTERM, then waits for it to exit; returns everything it wrote.
    pub async fn stop(self) -> String {
        self.signal("TERM");
        let (status, log) = self.exit().await;
        assert!(status.success(), "posture serve exited with {status}; its log:\n{log}");
        log
    }

    /// SIGKILL: it gets no chance to finish anything. Returns everything it wrote.
    pub async fn kill(self) -> String {
        self.signal("KILL");
        self.exit().await.1
    }

    /// Waits for it to exit (after a signal); its exit status and everything it wrote.
    pub async fn exit(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
        // The threads reading its output finish once it has exited.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (status, self.log())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET /metrics` from the metrics listener at `addr`: the response's body.
pub fn scrape(addr: SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: posture\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    body.to_string()
}

/// The value of the sample `series` (a name and its labels, as exposed) in `metrics`; 0 when
/// it is not there (a counter not moved yet).
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}
