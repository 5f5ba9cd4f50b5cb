//! `posture-bench loadgen`: load generators for the benchmarks.
//! - `check`: open-loop CheckAccess. Requests are sent at a fixed rate whatever the server
//!   does, and each latency is measured from the instant the request was *due*, so a stalled
//!   server shows up in the tail (no coordinated omission).
//! - `ingest`: closed-loop ReportInventory batches, durable, for reports per second.
//! - `lag`: a write through one replica, then how long until another serves it.

use std::time::{Duration, Instant};

use posture::proto::{
    self as pb, CheckAccessRequest, compliance_service_client::ComplianceServiceClient,
    inventory_service_client::InventoryServiceClient,
};
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::synthetic;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Load {
    /// CheckAccess at a fixed rate (open loop): latency percentiles
    Check(LoadArgs),
    /// ReportInventory batches as fast as the server takes them: reports per second
    Ingest(IngestArgs),
    /// Write through one replica, read through another: visibility lag percentiles
    Lag(LagArgs),
    /// Resume a WatchCompliance stream from a revision: how long its snapshot takes
    Resume(ResumeArgs),
    /// Paced reports, admin writes and Watch streams beside a read load (the soak): failures
    Writers(crate::writers::WritersArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// Reports per batch (at most 1000)
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Batches in flight at once
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Seconds to run (at most 600)
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Devices to report: mac-0000000 … of users user-0000000 …
    #[arg(long, default_value_t = 100_000)]
    pub devices: usize,
    #[arg(long, default_value_t = 100_000)]
    pub users: usize,
    /// The partner's bearer secret, if the server has credentials
    #[arg(long)]
    pub token: Option<String>,
    /// Reports that change nothing but the check-in (after each Mac's first, which stores its
    /// facts): the partner's usual traffic. Otherwise every report changes the OS build too.
    #[arg(long)]
    pub check_ins: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ResumeArgs {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// The revision to resume from; 0: only print the latest revision
    #[arg(long, default_value_t = 0)]
    pub from_revision: u64,
    /// Ask for every device's decision instead
    #[arg(long)]
    pub every_device: bool,
    /// A gateway's or admin's bearer secret, if the server has credentials
    #[arg(long)]
    pub token: Option<String>,
    /// Seconds to wait for the snapshot's end (at most 600)
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// What a resumed stream's snapshot took.
#[derive(Debug)]
pub struct Resumed {
    /// The latest revision before subscribing.
    pub latest: u64,
    pub events: u64,
    pub first: Option<Duration>,
    pub last: Option<Duration>,
}

/// Subscribes from a revision (or to every device) and reads the snapshot up to its last
/// event; a stream with nothing to send times out as an empty snapshot.
pub async fn resume(args: ResumeArgs) -> anyhow::Result<Resumed> {
    anyhow::ensure!(args.timeout > 0 && args.timeout <= 600, "--timeout must be 1..=600 seconds");
    let mut client = ComplianceServiceClient::new(Endpoint::from_shared(args.target.clone())?.connect().await?);
    let ask = CheckAccessRequest { user_id: "resume".into(), device_id: "resume".into(), min_revision: 0 };
    let latest = client.check_access(bearer(tonic::Request::new(ask), &args.token)?).await?.into_inner().revision;
    let mut resumed = Resumed { latest, events: 0, first: None, last: None };
    if args.from_revision == 0 && !args.every_device {
        return Ok(resumed);
    }
    let started = Instant::now();
    let req = pb::WatchComplianceRequest {
        from_revision: args.from_revision,
        every_device: args.every_device,
        ..Default::default()
    };
    let mut stream = client.watch_compliance(bearer(tonic::Request::new(req), &args.token)?).await?.into_inner();
    let deadline = started + Duration::from_secs(args.timeout);
    while let Ok(event) = tokio::time::timeout_at(deadline.into(), stream.message()).await {
        let Some(event) = event? else { break };
        anyhow::ensure!(event.snapshot, "a live event before the snapshot's end: {event:?}");
        resumed.events += 1;
        resumed.first.get_or_insert(started.elapsed());
        resumed.last = Some(started.elapsed());
        if event.cursor != 0 {
            break;
        }
    }
    Ok(resumed)
}

#[derive(Debug, Clone, clap::Args)]
pub struct LagArgs {
    /// The replica written to
    #[arg(long)]
    pub writer: String,
    /// The replica read from
    #[arg(long)]
    pub reader: String,
    /// Writes to time
    #[arg(long, default_value_t = 200)]
    pub writes: usize,
    /// The partner's bearer secret (writes)
    #[arg(long)]
    pub partner_token: Option<String>,
    /// A gateway's bearer secret (reads)
    #[arg(long)]
    pub gateway_token: Option<String>,
}

fn bearer<T>(mut req: tonic::Request<T>, token: &Option<String>) -> anyhow::Result<tonic::Request<T>> {
    if let Some(t) = token {
        req.metadata_mut().insert("authorization", format!("Bearer {t}").parse()?);
    }
    Ok(req)
}

/// A healthy partner-registered Mac's report, checked in now, with a varying OS build.
fn report(i: usize, users: usize, now: i64, variant: u64) -> pb::DeviceReport {
    pb::DeviceReport {
        os_build: format!("23C{}", 71 + variant % 1000),
        ..synthetic::healthy_mac(i, i % users.max(1), now)
    }
}

/// A report of Mac `i` whose facts stay the same from run to run (its token renewed at the
/// day's start), only its check-in moving.
fn check_in(i: usize, users: usize, now: i64) -> pb::DeviceReport {
    let day = now - now % 86_400;
    pb::DeviceReport {
        last_token_renewal: Some(prost_types::Timestamp { seconds: day, nanos: 0 }),
        ..synthetic::healthy_mac(i, i % users.max(1), now)
    }
}

pub(crate) fn now_secs() -> i64 {
    use posture::clock::Clock;
    posture::clock::SystemClock.now().0
}

/// Sends batches until the duration is up; returns (reports stored that changed something,
/// batches, elapsed, sorted batch latencies in µs).
pub async fn ingest(args: IngestArgs) -> anyhow::Result<(u64, u64, Duration, Vec<u64>)> {
    anyhow::ensure!((1..=1000).contains(&args.batch), "--batch must be 1..=1000");
    anyhow::ensure!(args.duration > 0 && args.duration <= 600, "--duration must be 1..=600 seconds");
    anyhow::ensure!(args.concurrency > 0 && args.devices > 0, "counts must be positive");
    let channel: Channel = Endpoint::from_shared(args.target.clone())?.connect().await?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let mut client = InventoryServiceClient::new(channel.clone());
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            let (mut stored, mut batches, mut latencies) = (0u64, 0u64, Vec::new());
            let mut n = worker as u64;
            while Instant::now() < deadline {
                let now = now_secs();
                let devices = (0..args.batch)
                    .map(|k| {
                        let i = (n as usize * args.batch + k) % args.devices;
                        if args.check_ins { check_in(i, args.users, now) } else { report(i, args.users, now, n) }
                    })
                    .collect();
                let req = bearer(tonic::Request::new(pb::ReportInventoryRequest { devices }), &args.token)?;
                let sent = Instant::now();
                let r = client.report_inventory(req).await?.into_inner();
                latencies.push(sent.elapsed().as_micros() as u64);
                anyhow::ensure!(
                    r.rejected == 0,
                    "the server rejected reports: {:?}",
                    r.results.iter().find(|x| !x.accepted)
                );
                // Only reports that changed something count: a repeat within the same second
                // is acknowledged without a write.
                stored += r.results.iter().filter(|i| i.changed).count() as u64;
                batches += 1;
                n += args.concurrency as u64;
            }
            anyhow::Ok((stored, batches, latencies))
        }));
    }
    let (mut stored, mut batches, mut latencies) = (0, 0, Vec::new());
    for t in tasks {
        let (s, b, l) = t.await??;
        stored += s;
        batches += b;
        latencies.extend(l);
    }
    latencies.sort_unstable();
    Ok((stored, batches, start.elapsed(), latencies))
}

/// Writes one report at a time through `writer` and measures how long until `reader`
/// answers at that revision (polling without `min_revision`). Sorted lags in µs.
pub async fn lag(args: LagArgs) -> anyhow::Result<Vec<u64>> {
    anyhow::ensure!(args.writes > 0 && args.writes <= 100_000, "--writes must be 1..=100000");
    let mut writer = InventoryServiceClient::new(Endpoint::from_shared(args.writer.clone())?.connect().await?);
    let mut reader = ComplianceServiceClient::new(Endpoint::from_shared(args.reader.clone())?.connect().await?);
    let mut lags = Vec::with_capacity(args.writes);
    for i in 0..args.writes {
        let req = pb::ReportInventoryRequest { devices: vec![report(i % 100, 100, now_secs(), i as u64)] };
        let revision = writer.report_inventory(bearer(tonic::Request::new(req), &args.partner_token)?).await?;
        let written = Instant::now();
        let revision = revision.into_inner().revision;
        loop {
            let req = CheckAccessRequest {
                user_id: synthetic::user_id(i % 100),
                device_id: synthetic::device_id(i % 100),
                min_revision: 0,
            };
            let r = reader.check_access(bearer(tonic::Request::new(req), &args.gateway_token)?).await?;
            if r.into_inner().revision >= revision {
                break;
            }
            anyhow::ensure!(written.elapsed() < Duration::from_secs(30), "revision {revision} not visible after 30 s");
        }
        lags.push(written.elapsed().as_micros() as u64);
    }
    lags.sort_unstable();
    Ok(lags)
}

/// Closed loop: `concurrency` callers, each sending its next request when the last is answered.
async fn closed_loop(
    args: &LoadArgs,
    clients: &[ComplianceServiceClient<Channel>],
    request: &(dyn Fn(usize) -> tonic::Request<CheckAccessRequest> + Sync),
) -> anyhow::Result<LoadReport> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration);
    let callers = (0..args.concurrency.max(1)).map(|c| {
        let mut client = clients[c % clients.len()].clone();
        async move {
            let (mut ok, mut errors, mut latencies, mut n) = (0u64, 0u64, Vec::new(), c);
            while Instant::now() < deadline {
                let sent = Instant::now();
                match client.check_access(request(n)).await {
                    Ok(_) => {
                        ok += 1;
                        latencies.push(sent.elapsed().as_micros() as u64);
                    }
                    Err(_) => errors += 1,
                }
                n += args.concurrency;
            }
            (ok, errors, latencies)
        }
    });
    let results = futures_util::future::join_all(callers).await;
    let mut report = LoadReport { sent: 0, ok: 0, errors: 0, elapsed: start.elapsed(), latencies_us: Vec::new() };
    for (ok, errors, latencies) in results {
        report.ok += ok;
        report.errors += errors;
        report.latencies_us.extend(latencies);
    }
    report.sent = report.ok + report.errors;
    report.latencies_us.sort_unstable();
    Ok(report)
}

/// The p-th percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Server address
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// Requests per second; 0 runs closed loop instead (as fast as `--concurrency` callers
    /// get answers), to find this client's peak
    #[arg(long)]
    pub rate: u64,
    /// Callers in flight in closed loop
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to run (bounded: at most 600)
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// HTTP/2 connections to spread the requests over
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Devices to cycle through: mac-0000000 … (as made by `posture-bench generate`)
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
        percentile(&self.latencies_us, p)
    }
}

pub async fn run(args: LoadArgs) -> anyhow::Result<LoadReport> {
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
    let request = |n: usize| -> tonic::Request<CheckAccessRequest> {
        let i = (n * 7919) % args.devices;
        let mut req = tonic::Request::new(CheckAccessRequest {
            user_id: synthetic::user_id(i % args.users),
            device_id: synthetic::device_id(i),
            min_revision: 0,
        });
        if let Some(a) = &auth {
            req.metadata_mut().insert("authorization", a.clone());
        }
        req
    };
    if args.rate == 0 {
        return closed_loop(&args, &clients, &request).await;
    }
    let total = args.rate * args.duration;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<u64, ()>>();
    let start = Instant::now();
    for n in 0..total {
        let due = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let req = request(n as usize);
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
