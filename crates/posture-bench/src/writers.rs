//! `posture-bench loadgen writers`: the writes and Watch streams that go beside a read load in
//! the soak: paced ReportInventory batches, an admin write every so often (a policy's grace
//! period toggled, which regraces every Mac it fails), and Watch streams that must stay open
//! throughout. Every failure is counted, and the first is kept to be shown.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use posture::proto::{
    self as pb, admin_service_client::AdminServiceClient, compliance_service_client::ComplianceServiceClient,
    inventory_service_client::InventoryServiceClient,
};
use tonic::transport::{Channel, Endpoint};

use crate::synthetic;

#[derive(Debug, Clone, clap::Args)]
pub struct WritersArgs {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// ReportInventory batches a second
    #[arg(long, default_value_t = 20)]
    pub batches_per_s: u64,
    /// Reports a batch
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// An admin write this often
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub admin_every: Duration,
    /// WatchCompliance streams open throughout
    #[arg(long, default_value_t = 2)]
    pub watchers: usize,
    /// Seconds to run (at most 3600)
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Devices reported: mac-0000000 … of users user-0000000 … (as `generate` makes them)
    #[arg(long, default_value_t = 100_000)]
    pub devices: usize,
    #[arg(long, default_value_t = 100_000)]
    pub users: usize,
}

#[derive(Debug, Default)]
pub struct WritersReport {
    pub reports: u64,
    pub report_errors: u64,
    pub admin_writes: u64,
    pub admin_errors: u64,
    pub watch_events: u64,
    /// Streams ended for falling behind and resumed from their last cursor.
    pub watch_resumed: u64,
    pub watch_errors: u64,
    pub first_error: Option<String>,
}

impl WritersReport {
    fn failed(&mut self, what: &str, status: &tonic::Status) {
        self.first_error.get_or_insert_with(|| format!("{what}: {:?} {}", status.code(), status.message()));
    }
}

fn lock(report: &Mutex<WritersReport>) -> MutexGuard<'_, WritersReport> {
    report.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn paced(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

pub async fn run(args: WritersArgs) -> anyhow::Result<WritersReport> {
    anyhow::ensure!(args.duration > 0 && args.duration <= 3600, "--duration must be 1..=3600 seconds");
    anyhow::ensure!(
        args.batches_per_s > 0 && (1..=1000).contains(&args.batch),
        "--batches-per-s > 0, --batch 1..=1000"
    );
    let channel: Channel = Endpoint::from_shared(args.target.clone())?.connect().await?;
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let report = Arc::new(Mutex::new(WritersReport::default()));
    let mut tasks = Vec::new();

    let (mut inventory, r, a) = (InventoryServiceClient::new(channel.clone()), report.clone(), args.clone());
    tasks.push(tokio::spawn(async move {
        let mut interval = paced(Duration::from_secs_f64(1.0 / a.batches_per_s as f64));
        let mut n = 0usize;
        while Instant::now() < deadline {
            interval.tick().await;
            let now = crate::loadgen::now_secs();
            // A fleet checking in: the same Macs round after round, about one in ten of them
            // failing FileVault, drawn afresh each round. So decisions change (Watch streams get
            // events) while the organisation's state stays the same size, as a soak needs.
            let devices = (0..a.batch)
                .map(|k| {
                    let (round, i) = ((n * a.batch + k) / a.devices, (n * a.batch + k) % a.devices);
                    synthetic::mac(i, i % a.users.max(1), round as u64, now)
                })
                .collect();
            match inventory.report_inventory(pb::ReportInventoryRequest { devices }).await {
                Ok(answer) => lock(&r).reports += u64::from(answer.get_ref().accepted),
                Err(s) => {
                    let mut r = lock(&r);
                    r.report_errors += 1;
                    r.failed("ReportInventory", &s);
                }
            }
            n += 1;
        }
    }));

    let (mut admin, r, every) = (AdminServiceClient::new(channel.clone()), report.clone(), args.admin_every);
    tasks.push(tokio::spawn(async move {
        let mut interval = paced(every);
        let mut hours = 0;
        while Instant::now() < deadline {
            interval.tick().await;
            hours = 1 - hours;
            let policy = pb::Policy { grace_period_hours: hours, ..synthetic::full_policy(0) };
            match admin.update_policy(pb::UpdatePolicyRequest { policy: Some(policy) }).await {
                Ok(_) => lock(&r).admin_writes += 1,
                Err(s) => {
                    let mut r = lock(&r);
                    r.admin_errors += 1;
                    r.failed("UpdatePolicy", &s);
                }
            }
        }
    }));

    for _ in 0..args.watchers {
        let (mut compliance, r) = (ComplianceServiceClient::new(channel.clone()), report.clone());
        tasks.push(tokio::spawn(async move {
            // As a client should: a stream ended for falling behind resumes after its last
            // cursor, and the events on either side of the cut must follow on without a gap.
            let mut last = 0u64;
            'subscribe: while Instant::now() < deadline {
                let request = pb::WatchComplianceRequest { after_cursor: last, ..Default::default() };
                let mut events = match compliance.watch_compliance(request).await {
                    Ok(stream) => stream.into_inner(),
                    Err(s) => {
                        let mut r = lock(&r);
                        r.watch_errors += 1;
                        return r.failed("WatchCompliance", &s);
                    }
                };
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let failed = match tokio::time::timeout(left, events.message()).await {
                        Err(_) => return, // the run is over, the stream still open
                        Ok(Ok(Some(event))) if last == 0 || event.cursor == last + 1 => {
                            last = event.cursor;
                            lock(&r).watch_events += 1;
                            continue;
                        }
                        Ok(Ok(Some(event))) => tonic::Status::data_loss(format!(
                            "event {} came after {last}: the events between were skipped",
                            event.cursor
                        )),
                        Ok(Ok(None)) => tonic::Status::unknown("the stream ended"),
                        Ok(Err(s)) if s.code() == tonic::Code::ResourceExhausted && last > 0 => {
                            lock(&r).watch_resumed += 1;
                            continue 'subscribe;
                        }
                        Ok(Err(s)) => s,
                    };
                    let mut r = lock(&r);
                    r.watch_errors += 1;
                    return r.failed("WatchCompliance", &failed);
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(std::mem::take(&mut *lock(&report)))
}
