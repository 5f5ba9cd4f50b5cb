//! The integration-test harness: the real server on an ephemeral port, in-process, called
//! through real tonic clients with bearer tokens; helpers to seed an organisation through
//! AdminService and to build partner reports relative to the current time.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod binary;
pub mod domain;
pub mod faulty;
pub mod pki;
pub mod postgres;
pub mod proxy;
pub mod raw;
pub mod writers;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use posture::auth::{CredentialConfig, Role, sha256_hex};
use posture::clock::{Clock, ManualClock};
use posture::config::Config;
use posture::proto::{
    self as pb, admin_service_client::AdminServiceClient, compliance_service_client::ComplianceServiceClient,
    inventory_service_client::InventoryServiceClient, targeting_service_client::TargetingServiceClient,
};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

pub const ADMIN_SECRET: &str = "test-admin-secret";
pub const GATEWAY_SECRET: &str = "test-gateway-secret";
pub const PARTNER_SECRET: &str = "test-partner-secret";
/// The partner app the connector names; the partner credential's id.
pub const PARTNER_APP: &str = "jamf-test";
pub const PARTNER_VERSION: &str = "11.0.0";

/// One credential with one or more secrets.
pub fn credential(id: &str, role: Role, secrets: &[&str]) -> CredentialConfig {
    CredentialConfig { id: id.to_string(), role, secret_sha256: secrets.iter().map(|s| sha256_hex(s)).collect() }
}

/// An admin, a gateway and the partner `jamf-test`.
pub fn default_credentials() -> Vec<CredentialConfig> {
    vec![
        credential("test-admin", Role::Admin, &[ADMIN_SECRET]),
        credential("test-gateway", Role::Gateway, &[GATEWAY_SECRET]),
        credential(PARTNER_APP, Role::Partner, &[PARTNER_SECRET]),
    ]
}

/// Puts `authorization: Bearer <secret>` on every call (nothing when `None`).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(secret: Option<&str>) -> Self {
        Bearer(secret.map(|s| format!("Bearer {s}").parse().unwrap()))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;
pub type Admin = AdminServiceClient<Authed>;
pub type Compliance = ComplianceServiceClient<Authed>;
pub type Targeting = TargetingServiceClient<Authed>;
pub type Inventory = InventoryServiceClient<Authed>;

/// The real server, on 127.0.0.1 and an ephemeral port, over a SQLite file in a temp dir.
/// `stop()` (or dropping it) signals shutdown and waits for the server to finish by itself.
pub struct TestServer {
    pub addr: SocketAddr,
    pub config: Config,
    /// The clock the server reads, when the test drives time (see [`TestServer::start_at`]).
    pub clock: Option<Arc<ManualClock>>,
    /// How the test's clients speak TLS to it (`None`: plaintext).
    pub client_tls: Option<ClientTlsConfig>,
    dir: Option<TempDir>,
    channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Writes `dir/posture.toml` holding `credentials` (and nothing else), as a server reads it
/// with `--config` and reloads it.
pub fn write_credentials(dir: &Path, credentials: &[CredentialConfig]) -> std::path::PathBuf {
    #[derive(serde::Serialize)]
    struct File<'a> {
        credentials: &'a [CredentialConfig],
    }
    pki::write(dir, "posture.toml", &toml::to_string(&File { credentials }).unwrap())
}

/// A lazy channel to `addr`, over TLS when `tls` is given.
pub fn channel_to(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> Channel {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    endpoint.connect_lazy()
}

pub fn config_for(dir: &Path, credentials: Vec<CredentialConfig>, demo: bool) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        store: format!("sqlite://{}", dir.join("posture.db").display()),
        demo,
        cache_capacity: 10_000,
        credentials,
        ..Config::defaults()
    }
}

impl TestServer {
    /// With the admin, gateway and partner credentials.
    pub async fn start() -> Self {
        Self::start_with(default_credentials()).await
    }

    /// With no credentials: authentication off.
    pub async fn start_without_auth() -> Self {
        Self::start_with(vec![]).await
    }

    pub async fn start_with(credentials: Vec<CredentialConfig>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(dir.path(), credentials, false);
        Self::launch(config, dir).await
    }

    /// `--demo` with its own credentials.
    pub async fn start_demo() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(dir.path(), vec![], true);
        Self::launch(config, dir).await
    }

    /// With the admin, gateway and partner credentials, on a clock that moves only when the
    /// test says so.
    pub async fn start_at(clock: Arc<ManualClock>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(dir.path(), default_credentials(), false);
        Self::launch_with_clock(config, dir, Some(clock)).await
    }

    /// Starts a server with `config` on `dir` and waits until its health service says SERVING.
    pub async fn launch(config: Config, dir: TempDir) -> Self {
        Self::launch_with_clock(config, dir, None).await
    }

    /// The same, reading `clock` (the system's when `None`).
    pub async fn launch_with_clock(config: Config, dir: TempDir, clock: Option<Arc<ManualClock>>) -> Self {
        Self::launch_all(config, dir, clock, None).await
    }

    /// A server with TLS in `config`, which the test's clients reach with `client_tls`.
    pub async fn launch_tls(config: Config, dir: TempDir, client_tls: ClientTlsConfig) -> Self {
        Self::launch_all(config, dir, None, Some(client_tls)).await
    }

    async fn launch_all(
        mut config: Config,
        dir: TempDir,
        clock: Option<Arc<ManualClock>>,
        client_tls: Option<ClientTlsConfig>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.listen = addr;
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = rx.await;
        };
        let task = match clock.clone() {
            None => tokio::spawn(posture::server::serve(config.clone(), listener, shutdown)),
            Some(clock) => {
                let config = config.clone();
                tokio::spawn(async move {
                    let engine = posture::server::open_engine(&config, clock).await?;
                    posture::server::serve_engine(engine, (&config).into(), listener, shutdown).await
                })
            }
        };
        let channel = channel_to(addr, client_tls.clone());
        let mut server = TestServer {
            addr,
            config,
            clock,
            client_tls,
            dir: Some(dir),
            channel,
            shutdown: Some(tx),
            task: Some(task),
        };
        server.wait_serving().await;
        server
    }

    async fn wait_serving(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                let result = self.task.take().unwrap().await;
                panic!("the server stopped while starting: {result:?}");
            }
            let mut health = HealthClient::new(self.channel.clone());
            if let Ok(r) = health.check(HealthCheckRequest { service: String::new() }).await
                && r.get_ref().status == ServingStatus::Serving as i32
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the server did not start serving within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A channel of its own, speaking TLS as `tls` says.
    pub fn channel_with(&self, tls: ClientTlsConfig) -> Channel {
        channel_to(self.addr, Some(tls))
    }

    /// Signals shutdown and waits for the server to return; hands back the data dir.
    pub async fn stop(mut self) -> TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the server stops within 20 s of the shutdown signal")
                .expect("the server task did not panic");
            result.expect("the server returned without error");
        }
        self.dir.take().unwrap()
    }

    /// Stops this server and starts a new one on the same data dir, configuration and clock.
    pub async fn restart(self) -> TestServer {
        let (config, clock, tls) = (self.config.clone(), self.clock.clone(), self.client_tls.clone());
        let dir = self.stop().await;
        Self::launch_all(config, dir, clock, tls).await
    }

    /// The time the server reads (its manual clock's, or the system's).
    pub fn now_secs(&self) -> i64 {
        self.clock.as_ref().map_or_else(now_secs, |c| c.now().0)
    }

    pub fn admin_as(&self, secret: Option<&str>) -> Admin {
        AdminServiceClient::with_interceptor(self.channel(), Bearer::new(secret))
    }
    pub fn compliance_as(&self, secret: Option<&str>) -> Compliance {
        ComplianceServiceClient::with_interceptor(self.channel(), Bearer::new(secret))
    }
    pub fn targeting_as(&self, secret: Option<&str>) -> Targeting {
        TargetingServiceClient::with_interceptor(self.channel(), Bearer::new(secret))
    }
    pub fn inventory_as(&self, secret: Option<&str>) -> Inventory {
        InventoryServiceClient::with_interceptor(self.channel(), Bearer::new(secret))
    }

    /// The admin credential (or none when authentication is off).
    pub fn admin(&self) -> Admin {
        self.admin_as(self.secret(ADMIN_SECRET))
    }
    /// The gateway credential.
    pub fn compliance(&self) -> Compliance {
        self.compliance_as(self.secret(GATEWAY_SECRET))
    }
    /// The gateway credential.
    pub fn targeting(&self) -> Targeting {
        self.targeting_as(self.secret(GATEWAY_SECRET))
    }
    /// The partner credential.
    pub fn inventory(&self) -> Inventory {
        self.inventory_as(self.secret(PARTNER_SECRET))
    }

    fn secret<'a>(&self, secret: &'a str) -> Option<&'a str> {
        (!self.config.credentials.is_empty()).then_some(secret)
    }

    /// CheckAccess through the gateway credential.
    pub async fn check(&self, user_id: &str, device_id: &str) -> pb::CheckAccessResponse {
        let req = pb::CheckAccessRequest { user_id: user_id.into(), device_id: device_id.into(), ..Default::default() };
        self.compliance().check_access(req).await.unwrap().into_inner()
    }

    /// ReportInventory through the partner credential; every item must be accepted.
    pub async fn report(&self, devices: Vec<pb::DeviceReport>) -> pb::ReportInventoryResponse {
        let resp =
            self.inventory().report_inventory(pb::ReportInventoryRequest { devices }).await.unwrap().into_inner();
        assert_eq!(resp.rejected, 0, "every report is accepted: {:?}", resp.results);
        resp
    }

    /// The current revision, as an admin read reports it.
    pub async fn revision(&self) -> u64 {
        self.admin().get_settings(pb::GetSettingsRequest::default()).await.unwrap().into_inner().revision
    }
}

impl Drop for TestServer {
    /// Signals shutdown and, on a multi-threaded runtime, waits for the server to return, so
    /// a failed test leaves no server behind.
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let Some(task) = self.task.take() else { return };
        if let Ok(handle) = tokio::runtime::Handle::try_current()
            && handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        {
            tokio::task::block_in_place(|| {
                let _ = handle.block_on(tokio::time::timeout(Duration::from_secs(20), task));
            });
        }
    }
}

/// One question to server reflection (v1), and its one answer.
pub async fn reflect(channel: Channel, question: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(question) };
    let mut stream = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    assert!(stream.message().await.unwrap().is_none(), "one answer per question");
    answer.message_response.unwrap()
}

/// Every method the server lists through reflection, as paths (`/package.Service/Method`).
pub async fn every_rpc(channel: Channel) -> Vec<String> {
    use prost::Message;
    let MessageResponse::ListServicesResponse(list) =
        reflect(channel.clone(), MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a service list");
    };
    let mut paths = Vec::new();
    for service in list.service {
        let MessageResponse::FileDescriptorResponse(files) =
            reflect(channel.clone(), MessageRequest::FileContainingSymbol(service.name.clone())).await
        else {
            panic!("no file for {}", service.name);
        };
        let (package, name) = service.name.rsplit_once('.').unwrap();
        let described = files
            .file_descriptor_proto
            .iter()
            .map(|f| prost_types::FileDescriptorProto::decode(f.as_slice()).unwrap())
            .filter(|f| f.package() == package)
            .flat_map(|f| f.service)
            .find(|s| s.name() == name)
            .unwrap_or_else(|| panic!("reflection does not describe {}", service.name));
        paths.extend(described.method.iter().map(|m| format!("/{}/{}", service.name, m.name())));
    }
    paths.sort();
    paths
}

// ---- time ----

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A timestamp `secs` seconds before now.
pub fn ago(secs: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: now_secs() - secs, nanos: 0 }
}

pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 3600;
pub const DAY: i64 = 24 * HOUR;

// ---- reports ----

/// A healthy Mac registered through the partner: macOS 14.2.1, SIP on, FileVault on all
/// volumes, Gatekeeper App Store and identified developers, firewall on, a 16-character
/// password; checked in 10 minutes ago, token renewed an hour ago, refresh token a day old.
pub fn mac(device_id: &str, user_id: &str, serial: &str) -> pb::DeviceReport {
    mac_at(device_id, user_id, serial, now_secs())
}

/// [`mac`], as of `now` (seconds since the epoch) instead of the system's clock.
pub fn mac_at(device_id: &str, user_id: &str, serial: &str, now: i64) -> pb::DeviceReport {
    let ago = |secs: i64| prost_types::Timestamp { seconds: now - secs, nanos: 0 };
    pb::DeviceReport {
        device_id: device_id.into(),
        partner_device_id: format!("jamf-{device_id}"),
        serial_number: serial.into(),
        name: format!("{user_id}'s MacBook"),
        model: "MacBookPro18,3".into(),
        user_id: user_id.into(),
        os_version: "14.2.1".into(),
        os_build: "23C71".into(),
        registration: pb::Registration::Partner as i32,
        last_check_in: Some(ago(10 * MINUTE)),
        last_token_renewal: Some(ago(HOUR)),
        refresh_token_issued: Some(ago(DAY)),
        system_integrity_protection: pb::SipState::Enabled as i32,
        file_vault: pb::FileVaultState::AllEncrypted as i32,
        gatekeeper: pb::GatekeeperState::AppStoreAndIdentifiedDevelopers as i32,
        firewall_enabled: Some(true),
        firewall_block_all_incoming: Some(false),
        firewall_stealth_mode: Some(true),
        password: Some(pb::PasswordFacts { required: Some(true), min_length: Some(16), ..Default::default() }),
        threat_level: pb::ThreatLevel::Unspecified as i32,
        partner_verdict: None,
    }
}

// ---- the organisation ----

pub fn user(id: &str, licensed: bool) -> pb::User {
    pb::User {
        id: id.into(),
        user_principal_name: format!("{id}@example.com"),
        device_management_licence: true,
        premium_identity_licence: licensed,
    }
}

pub fn group(id: &str, kind: pb::GroupKind, members: &[&str]) -> pb::Group {
    pb::Group {
        id: id.into(),
        name: id.into(),
        kind: kind as i32,
        member_ids: members.iter().map(|m| m.to_string()).collect(),
    }
}

pub fn user_group(id: &str, members: &[&str]) -> pb::Group {
    group(id, pb::GroupKind::User, members)
}

pub fn device_group(id: &str, members: &[&str]) -> pb::Group {
    group(id, pb::GroupKind::Device, members)
}

pub fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// `baseline`: macOS 13.0 or later, SIP, FileVault, firewall, Gatekeeper (App Store and
/// identified developers).
pub fn baseline_policy(grace_period_hours: u32) -> pb::Policy {
    pb::Policy {
        id: "baseline".into(),
        name: "macOS baseline".into(),
        settings: Some(pb::PolicySettings {
            os_minimum_version: "13.0".into(),
            system_integrity_protection_required: Some(true),
            storage_encryption_required: Some(true),
            firewall_enabled: Some(true),
            gatekeeper: pb::GatekeeperRequirement::AppStoreAndIdentifiedDevelopers as i32,
            ..Default::default()
        }),
        grace_period_hours,
        ..Default::default()
    }
}

/// `engineering-passwords`: a password of at least 14 characters, 72 hours' grace.
pub fn passwords_policy() -> pb::Policy {
    pb::Policy {
        id: "engineering-passwords".into(),
        name: "Engineering passwords".into(),
        settings: Some(pb::PolicySettings {
            password: Some(pb::PasswordRules { required: Some(true), min_length: Some(14), ..Default::default() }),
            ..Default::default()
        }),
        grace_period_hours: 72,
        ..Default::default()
    }
}

pub async fn sync_directory(admin: &mut Admin, users: Vec<pb::User>, groups: Vec<pb::Group>) -> u64 {
    let req = pb::SyncDirectoryRequest { users, groups, ..Default::default() };
    admin.sync_directory(req).await.unwrap().into_inner().revision
}

pub async fn create_policy(admin: &mut Admin, policy: pb::Policy) -> pb::PolicyResponse {
    admin.create_policy(pb::CreatePolicyRequest { policy: Some(policy) }).await.unwrap().into_inner()
}

pub async fn assign(admin: &mut Admin, policy_id: &str, include: &[&str], exclude: &[&str]) -> u64 {
    let req = pb::AssignPolicyRequest {
        policy_id: policy_id.into(),
        assignment: Some(pb::Assignment { include_group_ids: strings(include), exclude_group_ids: strings(exclude) }),
    };
    admin.assign_policy(req).await.unwrap().into_inner().revision
}

pub fn enable_request(include: &[&str], exclude: &[&str]) -> pb::EnableConnectorRequest {
    pb::EnableConnectorRequest {
        partner_app_id: PARTNER_APP.into(),
        partner_version: PARTNER_VERSION.into(),
        include_group_ids: strings(include),
        exclude_group_ids: strings(exclude),
    }
}

pub async fn enable_connector(admin: &mut Admin, include: &[&str], exclude: &[&str]) -> pb::ConnectorResponse {
    admin.enable_connector(enable_request(include, exclude)).await.unwrap().into_inner()
}

/// The users and groups of the standard organisation:
/// - `mac-users` (user group): ada, bob, cara, dan, erin, finn, gus, hal;
/// - `contractors` (user group): gus — excluded from partner enrollment;
/// - `engineering` (user group): cara;
/// - `kiosk-users` (user group): ivy — enrolled through the partner, reached by no policy;
/// - `lab-macs` (device group): mac-lab-1;
/// - hal lacks the premium identity licence; zed is in no group.
pub async fn seed_directory(admin: &mut Admin) -> u64 {
    let mut users: Vec<pb::User> =
        ["ada", "bob", "cara", "dan", "erin", "finn", "gus", "ivy", "zed"].iter().map(|u| user(u, true)).collect();
    users.push(user("hal", false));
    let groups = vec![
        user_group("mac-users", &["ada", "bob", "cara", "dan", "erin", "finn", "gus", "hal"]),
        user_group("contractors", &["gus"]),
        user_group("engineering", &["cara"]),
        user_group("kiosk-users", &["ivy"]),
        device_group("lab-macs", &["mac-lab-1"]),
    ];
    sync_directory(admin, users, groups).await
}

/// The standard organisation: the directory of [`seed_directory`]; `baseline` (grace
/// `baseline_grace_hours`) assigned to `mac-users`; `engineering-passwords` (72 h grace)
/// assigned to `engineering`; the connector enabled for partner app `jamf-test` 11.0.0,
/// including `mac-users` and `kiosk-users`, excluding `contractors`. Returns the last revision.
pub async fn seed_org_with(server: &TestServer, baseline_grace_hours: u32) -> u64 {
    seed_org_through(&mut server.admin(), baseline_grace_hours).await
}

/// [`seed_org_with`], through `admin`.
pub async fn seed_org_through(admin: &mut Admin, baseline_grace_hours: u32) -> u64 {
    let admin = &mut *admin;
    seed_directory(admin).await;
    create_policy(admin, baseline_policy(baseline_grace_hours)).await;
    create_policy(admin, passwords_policy()).await;
    assign(admin, "baseline", &["mac-users"], &[]).await;
    assign(admin, "engineering-passwords", &["engineering"], &[]).await;
    enable_connector(admin, &["mac-users", "kiosk-users"], &["contractors"]).await.revision
}

/// The standard organisation with `baseline` at grace 0.
pub async fn seed_org(server: &TestServer) -> u64 {
    seed_org_with(server, 0).await
}

// ---- reading answers ----

/// The reason codes of a decision, in order.
pub fn codes(reasons: &[pb::Reason]) -> Vec<&str> {
    reasons.iter().map(|r| r.code.as_str()).collect()
}

pub fn decision(d: i32) -> pb::Decision {
    pb::Decision::try_from(d).unwrap()
}

pub fn state(s: i32) -> pb::ComplianceState {
    pb::ComplianceState::try_from(s).unwrap()
}

/// Asserts a decision, state and exact list of reason codes.
#[track_caller]
pub fn assert_decision(
    r: &pb::CheckAccessResponse,
    expected: pb::Decision,
    expected_state: pb::ComplianceState,
    expected_codes: &[&str],
) {
    assert_eq!(
        (decision(r.decision), state(r.state), codes(&r.reasons)),
        (expected, expected_state, expected_codes.to_vec()),
        "reasons: {:?}",
        r.reasons
    );
    // Every DENY carries a reason that denies; an ALLOW carries none.
    assert_eq!(r.reasons.iter().any(|x| x.denies), expected == pb::Decision::Deny, "reasons: {:?}", r.reasons);
    assert!(r.reasons.iter().all(|x| !x.message.is_empty()), "every reason has a message");
}

/// Asserts a status code and that its message contains every fragment.
#[track_caller]
pub fn assert_status(status: &tonic::Status, code: tonic::Code, fragments: &[&str]) {
    assert_eq!(status.code(), code, "status: {status:?}");
    for f in fragments {
        assert!(status.message().contains(f), "{:?} should mention {f:?}", status.message());
    }
}
