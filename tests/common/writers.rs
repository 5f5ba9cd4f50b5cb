//! Callers that keep writing whatever happens to the server (a kill, a restart, a shutdown):
//! reports of new Macs, and new policies through AdminService. They remember every write the
//! server acknowledged, and how every other call failed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use posture::proto::{
    self as pb, admin_service_client::AdminServiceClient, inventory_service_client::InventoryServiceClient,
};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::{ADMIN_SECRET, Bearer, PARTNER_SECRET, baseline_policy, mac};

/// What the writers were told was done, and how the rest failed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The Macs whose report was acknowledged.
    pub devices: Vec<String>,
    /// The policies whose creation was acknowledged.
    pub policies: Vec<String>,
    /// Calls that failed, by status code; `refused` counts reports refused item by item.
    pub failed: BTreeMap<String, usize>,
    /// The first message of each code that failed.
    pub messages: BTreeMap<String, String>,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.devices.extend(other.devices);
        self.policies.extend(other.policies);
        for (code, n) in other.failed {
            *self.failed.entry(code).or_default() += n;
        }
        for (code, message) in other.messages {
            self.messages.entry(code).or_insert(message);
        }
    }

    pub fn acknowledged(&self) -> usize {
        self.devices.len() + self.policies.len()
    }
}

pub struct Writers {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<Outcome>>,
}

/// Long enough for any write on a loaded machine, short enough that a call to a killed
/// server does not hold a writer.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

fn failed(outcome: &mut Outcome, status: &tonic::Status) {
    let code = format!("{:?}", status.code());
    outcome.messages.entry(code.clone()).or_insert_with(|| status.message().to_string());
    *outcome.failed.entry(code).or_default() += 1;
}

impl Writers {
    /// `reporters` callers reporting new Macs of `user` (one per call), and one creating
    /// policies, through `channel` (which reconnects by itself). Ids carry `tag`, so that
    /// several runs on one store do not collide.
    pub fn start(channel: Channel, reporters: usize, user: &str, tag: &str) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for r in 0..reporters {
            let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
            let mut inventory =
                InventoryServiceClient::with_interceptor(channel.clone(), Bearer::new(Some(PARTNER_SECRET)));
            let (user, tag) = (user.to_string(), tag.to_string());
            tasks.push(tokio::spawn(async move {
                let mut outcome = Outcome::default();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("mac-{tag}-{r}-{n}");
                    let devices = vec![mac(&id, &user, &format!("SN{tag}{r}X{n}"))];
                    match inventory.report_inventory(timed(pb::ReportInventoryRequest { devices })).await {
                        Ok(answer) if answer.get_ref().accepted == 1 => {
                            outcome.devices.push(id);
                            acknowledged.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => *outcome.failed.entry("refused".into()).or_default() += 1,
                        Err(status) => {
                            failed(&mut outcome, &status);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                outcome
            }));
        }
        let (stop_admin, acknowledged_admin) = (stop.clone(), acknowledged.clone());
        let mut admin = AdminServiceClient::with_interceptor(channel, Bearer::new(Some(ADMIN_SECRET)));
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            for n in 0.. {
                if stop_admin.load(Ordering::Relaxed) {
                    break;
                }
                let policy = pb::Policy { id: format!("policy-{tag}-{n}"), ..baseline_policy(24) };
                let id = policy.id.clone();
                match admin.create_policy(timed(pb::CreatePolicyRequest { policy: Some(policy) })).await {
                    Ok(_) => {
                        outcome.policies.push(id);
                        acknowledged_admin.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => {
                        failed(&mut outcome, &status);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            outcome
        }));
        Writers { stop, acknowledged, tasks }
    }

    /// Writes acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Waits until `more` writes beyond those acknowledged so far are acknowledged.
    pub async fn wait_for_more(&self, more: usize) {
        let target = self.acknowledged() + more;
        for _ in 0..600 {
            if self.acknowledged() >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the writers made no progress for 30 s");
    }

    pub async fn stop(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        let mut outcome = Outcome::default();
        for task in self.tasks {
            outcome.merge(task.await.unwrap());
        }
        outcome
    }
}
