//! `posture loadgen`: an open-loop load generator for CheckAccess. Requests are sent at a
//! fixed rate whatever the server does, and each latency is measured from the instant the
//! request was *due*, so a stalled server shows up in the tail (no coordinated omission).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::proto::{CheckAccessRequest, compliance_service_client::ComplianceServiceClient};

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Server address
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// Requests per second
    #[arg(long)]
    pub rate: u64,
    /// Seconds to run (bounded: at most 600)
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// HTTP/2 connections to spread the requests over
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Devices to cycle through: mac-0000000 … (as made by `posture generate`)
    #[arg(long, default_value_t = 10_000)]
    pub devices: usize,
    /// Users in the generated organisation (device i belongs to user i mod users)
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Bearer secret, if the server has credentials
    #[arg(long)]
    pub token: Option<String>,
}

#[derive(Debug)]
pub struct LoadReport {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies from due time, sorted, in microseconds.
    pub latencies_us: Vec<u64>,
}

impl LoadReport {
    pub fn percentile(&self, p: f64) -> u64 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let i = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        self.latencies_us[i]
    }
}

pub async fn run(args: LoadArgs) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(args.rate > 0, "--rate must be positive");
    anyhow::ensure!(args.duration > 0 && args.duration <= 600, "--duration must be 1..=600 seconds");
    anyhow::ensure!(args.users > 0 && args.devices > 0 && args.connections > 0, "counts must be positive");
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        let channel: Channel = Endpoint::from_shared(args.target.clone())?.connect().await?;
        clients.push(ComplianceServiceClient::new(channel));
    }
    let auth: Option<MetadataValue<_>> = match &args.token {
        Some(t) => Some(format!("Bearer {t}").parse()?),
        None => None,
    };
    let total = args.rate * args.duration;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<u64, ()>>();
    let start = Instant::now();
    for n in 0..total {
        let due = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let i = (n as usize * 7919) % args.devices;
        let mut req = tonic::Request::new(CheckAccessRequest {
            user_id: crate::synthetic::user_id(i % args.users),
            device_id: crate::synthetic::device_id(i),
            min_revision: 0,
        });
        if let Some(a) = &auth {
            req.metadata_mut().insert("authorization", a.clone());
        }
        let mut client = clients[n as usize % clients.len()].clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = client.check_access(req).await;
            let us = due.elapsed().as_micros() as u64;
            let _ = tx.send(r.map(|_| us).map_err(|_| ()));
        });
    }
    drop(tx);
    let mut report = LoadReport { sent: total, ok: 0, errors: 0, elapsed: Duration::ZERO, latencies_us: Vec::new() };
    while let Some(r) = rx.recv().await {
        match r {
            Ok(us) => {
                report.ok += 1;
                report.latencies_us.push(us);
            }
            Err(()) => report.errors += 1,
        }
    }
    report.elapsed = start.elapsed();
    report.latencies_us.sort_unstable();
    Ok(report)
}
