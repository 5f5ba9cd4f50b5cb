//! The real `posture` binary as a child process: `posture serve --demo` on an ephemeral
//! 127.0.0.1 port, with its standard output (the logs) collected line by line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tonic::transport::Channel;

/// The demo's gateway secret (see `posture::demo`).
pub const DEMO_GATEWAY: &str = "demo-gateway";

pub struct Served {
    child: Child,
    pub addr: SocketAddr,
    /// The metrics listener's address, when `--metrics-listen` was given.
    pub metrics: Option<SocketAddr>,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

/// The first `127.0.0.1:PORT` in `line`.
fn loopback_addr(line: &str) -> Option<SocketAddr> {
    let at = line.find("127.0.0.1:")?;
    let rest = &line[at + "127.0.0.1:".len()..];
    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
    format!("127.0.0.1:{port}").parse().ok()
}

impl Served {
    /// `posture serve --demo` with `args` after, `RUST_LOG=rust_log` and `env`, once it serves.
    pub fn start(args: &[&str], rust_log: &str, env: &[(&str, &str)]) -> Served {
        let dir = TempDir::new().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_posture"));
        command
            .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, _) in std::env::vars() {
            if name.starts_with("OTEL_") || name.starts_with("POSTURE_") || name == "NO_COLOR" {
                command.env_remove(name);
            }
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                collected.lock().unwrap().push(line);
            }
        });
        let mut served = Served { child, addr: "127.0.0.1:0".parse().unwrap(), metrics: None, lines, _dir: dir };
        let serving = served.wait_line(|l| l.contains("posture serving"), Duration::from_secs(30));
        served.addr = loopback_addr(&serving.unwrap_or_else(|| panic!("never served: {:#?}", served.lines())))
            .expect("the serving line names the address");
        if args.contains(&"--metrics-listen") {
            let line = served.wait_line(|l| l.contains("metrics served at"), Duration::from_secs(5));
            served.metrics = line.as_deref().and_then(loopback_addr);
        }
        served
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first line `matches`, waiting for it up to `within`.
    pub fn wait_line(&self, matches: impl Fn(&str) -> bool, within: Duration) -> Option<String> {
        let until = Instant::now() + within;
        loop {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| matches(l)) {
                return Some(line.clone());
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn channel(&self) -> Channel {
        super::channel_to(self.addr, None)
    }

    /// SIGTERM, as an orchestrator stops it; every line it wrote, once it has exited.
    pub fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "posture exited with {status}");
        // The reader thread ends at end of file, just after the exit.
        self.wait_line(|l| l.contains("posture stopped"), Duration::from_secs(5));
        self.lines()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
