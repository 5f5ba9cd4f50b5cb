//! `posture apply` and `posture export` against the real binary serving the demo
//! organisation: apply is idempotent, export then apply changes nothing and apply then export
//! gives the files back, an invalid file anywhere applies nothing and names its line, a dry
//! run writes nothing, and --prune deletes what the files no longer name.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Output;

use common::binary::Served;
use common::pki::{self, Ca};
use posture::manifest::files;
use posture::proto::{self as pb, admin_service_client::AdminServiceClient};

const DEMO_ADMIN: &str = "demo-admin";

async fn demo() -> (Served, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let served = Served::start(&["--demo", "--data-dir", data.path().to_str().unwrap()], "warn").await;
    (served, data)
}

/// `posture ARGS… --server` this server, with the demo's admin secret.
fn posture(served: &Served, args: &[&str]) -> Output {
    posture_at(&format!("http://{}", served.addr), args)
}

fn posture_at(server: &str, args: &[&str]) -> Output {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_posture"))
        .args(args)
        .arg("--server")
        .arg(server)
        .env("POSTURE_TOKEN", DEMO_ADMIN)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    eprintln!("posture {args:?}: {}\n{}", text(&output.stdout), text(&output.stderr));
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The server's revision.
async fn revision(served: &Served) -> u64 {
    let mut admin = AdminServiceClient::with_interceptor(served.channel(), common::Bearer::new(Some(DEMO_ADMIN)));
    admin.list_policies(pb::ListPoliciesRequest { min_revision: 0 }).await.unwrap().into_inner().revision
}

fn write(dir: &Path, name: &str, yaml: &str) {
    std::fs::write(dir.join(name), yaml).unwrap();
}

/// The demo's baseline raised to macOS 15.0, and a new policy for the Mac users.
fn files(dir: &Path) {
    write(
        dir,
        "baseline.yaml",
        "kind: Policy\nid: baseline\nname: macOS baseline\nsettings:\n  os_minimum_version: '15.0'\n  \
         system_integrity_protection_required: true\n  storage_encryption_required: true\n  firewall_enabled: true\n  \
         gatekeeper: app_store_and_identified_developers\nassignment:\n  include_groups: [mac-users]\n",
    );
    write(
        dir,
        "strict.yml",
        "# the stealthy firewall, for everyone\nkind: Policy\nid: strict\nname: Strict firewall\n\
         grace_period_hours: 24\nsettings:\n  firewall_enabled: true\n  firewall_stealth_mode: true\n\
         assignment:\n  include_groups: [mac-users]\n  exclude_groups: [contractors]\n---\nkind: Settings\n\
         no_policy: noncompliant\nvalidity_days: 14\n",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_shows_then_applies_and_a_second_run_changes_nothing() {
    let (served, _data) = demo().await;
    let dir = tempfile::tempdir().unwrap();
    files(dir.path());
    let before = revision(&served).await;

    // A dry run shows the difference and whom it locks out, and writes nothing.
    let dry = posture(&served, &["apply", "-f", dir.path().to_str().unwrap(), "--dry-run"]);
    assert!(dry.status.success());
    let shown = text(&dry.stdout);
    for expected in [
        "policy baseline: update",
        "settings.os_minimum_version: '13.0' → '15.0'",
        "policy baseline: 2 locked out",
        "locked out: mac-ada (ada), mac-cara (cara)",
        "policy strict: create",
        "settings: update",
        "dry run: nothing applied",
    ] {
        assert!(shown.contains(expected), "{expected:?} in {shown}");
    }
    assert_eq!(revision(&served).await, before, "a dry run writes nothing");

    let applied = posture(&served, &["apply", "-f", dir.path().to_str().unwrap()]);
    assert!(applied.status.success());
    assert!(text(&applied.stdout).contains("applied 3 changes"), "{}", text(&applied.stdout));
    let after = revision(&served).await;
    assert!(after > before);

    // What the files say is what the server now does: ada's Mac on 14 is denied.
    let mut admin = AdminServiceClient::with_interceptor(served.channel(), common::Bearer::new(Some(DEMO_ADMIN)));
    let strict = admin.get_policy(pb::GetPolicyRequest { policy_id: "strict".into(), min_revision: 0 }).await;
    let strict = strict.unwrap().into_inner().policy.unwrap();
    assert_eq!(strict.assignment.unwrap().exclude_group_ids, ["contractors"]);
    let settings = admin.get_settings(pb::GetSettingsRequest { min_revision: 0 }).await.unwrap().into_inner();
    assert_eq!(settings.settings.unwrap().validity_days, 14);

    let again = posture(&served, &["apply", "-f", dir.path().to_str().unwrap()]);
    assert!(again.status.success());
    assert!(text(&again.stdout).contains("no changes"), "{}", text(&again.stdout));
    assert_eq!(revision(&served).await, after, "the second run writes nothing");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_apply_changes_nothing_and_apply_then_export_gives_the_files_back() {
    let (served, _data) = demo().await;
    let dir = tempfile::tempdir().unwrap();
    let exported = dir.path().join("exported.yaml");
    assert!(posture(&served, &["export", "-o", exported.to_str().unwrap()]).status.success());
    let before = revision(&served).await;
    let applied = posture(&served, &["apply", "-f", exported.to_str().unwrap()]);
    assert!(applied.status.success() && text(&applied.stdout).contains("no changes"));
    assert_eq!(revision(&served).await, before);

    // The files applied, then exported: the same documents, in another order.
    let source = tempfile::tempdir().unwrap();
    files(source.path());
    std::fs::copy(&exported, source.path().join("demo.yaml")).unwrap();
    // The exported baseline and settings are superseded by the files': drop them from the copy.
    let demo = std::fs::read_to_string(source.path().join("demo.yaml")).unwrap();
    let kept: Vec<&str> =
        demo.split("---\n").filter(|d| !d.contains("id: baseline") && !d.contains("kind: Settings")).collect();
    write(source.path(), "demo.yaml", &kept.join("---\n"));
    assert!(posture(&served, &["apply", "-f", source.path().to_str().unwrap()]).status.success());
    let round = tempfile::tempdir().unwrap();
    let again = round.path().join("again.yaml");
    assert!(posture(&served, &["export", "-o", again.to_str().unwrap()]).status.success());
    let (wanted, got) = (files::read(&[source.path().to_path_buf()]).unwrap(), files::read(&[again]).unwrap());
    let docs = |d: &files::Desired| {
        let mut all: Vec<_> = d.policies.values().map(|l| l.doc.clone()).collect();
        all.extend(d.settings.iter().chain(&d.connector).map(|l| l.doc.clone()));
        format!("{all:?}")
    };
    assert_eq!(docs(&wanted), docs(&got));
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_anywhere_applies_nothing_and_names_its_line() {
    let (served, _data) = demo().await;
    let dir = tempfile::tempdir().unwrap();
    files(dir.path());
    std::fs::create_dir(dir.path().join("teams")).unwrap();
    // A misspelt setting on line 6, in a file beside valid ones.
    write(
        &dir.path().join("teams"),
        "typo.yaml",
        "kind: Policy\nid: typo\nname: Typo\nsettings:\n  firewall_enabled: true\n  firewal_stealth_mode: true\n",
    );
    // Settings given twice (strict.yml has them), a version that is none in a second
    // document, starting on line 5, and one YAML reads as a number, on line 15.
    write(
        dir.path(),
        "z-version.yaml",
        "kind: Settings\nno_policy: compliant\nvalidity_days: 30\n---\nkind: Policy\nid: later\nname: Later\n\
         settings:\n  os_minimum_version: fifteen\n---\nkind: Policy\nid: number\nname: Number\n\
         settings:\n  os_minimum_version: 14.10\n",
    );
    let before = revision(&served).await;
    let refused = posture(&served, &["apply", "-f", dir.path().to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    let said = text(&refused.stderr);
    assert!(said.contains("typo.yaml:6:3: settings: unknown field `firewal_stealth_mode`"), "{said}");
    assert!(said.contains("z-version.yaml:1:1: settings: already given at "), "{said}");
    assert!(said.contains("strict.yml:13:1"), "{said}");
    assert!(said.contains("z-version.yaml:5:1: policy later: policy.settings.os_minimum_version"), "{said}");
    assert!(said.contains("z-version.yaml:15:23: settings.os_minimum_version: 14.1 is a number to YAML"), "{said}");
    assert!(said.contains("4 problems in the files; nothing was applied"), "{said}");
    assert!(text(&refused.stdout).is_empty(), "nothing was even compared: {}", text(&refused.stdout));
    assert_eq!(revision(&served).await, before, "nothing applied");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_the_policies_the_files_no_longer_name() {
    let (served, _data) = demo().await;
    let dir = tempfile::tempdir().unwrap();
    files(dir.path());
    assert!(posture(&served, &["apply", "-f", dir.path().to_str().unwrap()]).status.success());
    std::fs::remove_file(dir.path().join("strict.yml")).unwrap();
    // Without --prune, a policy the files do not name stays.
    let kept = posture(&served, &["apply", "-f", dir.path().to_str().unwrap()]);
    assert!(text(&kept.stdout).contains("no changes"), "{}", text(&kept.stdout));
    let pruned = posture(&served, &["apply", "-f", dir.path().to_str().unwrap(), "--prune"]);
    let said = text(&pruned.stdout);
    assert!(said.contains("policy strict: delete") && said.contains("policy engineering-passwords: delete"), "{said}");
    let mut admin = AdminServiceClient::with_interceptor(served.channel(), common::Bearer::new(Some(DEMO_ADMIN)));
    let listed = admin.list_policies(pb::ListPoliciesRequest { min_revision: 0 }).await.unwrap().into_inner();
    let ids: Vec<_> = listed.policies.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["baseline"]);
    served.stop().await;
}

/// The example directory is valid, and is what the demo organisation holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_files_are_the_demo_organisation() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    let desired = files::read(std::slice::from_ref(&examples)).unwrap();
    assert_eq!((desired.files, desired.policies.len()), (4, 2));
    let (served, _data) = demo().await;
    let applied = posture(&served, &["apply", "-f", examples.to_str().unwrap(), "--prune"]);
    assert!(applied.status.success() && text(&applied.stdout).contains("no changes"), "{}", text(&applied.stdout));
    served.stop().await;
}

/// Over mutual TLS: the server's CA and this client's certificate from files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_and_export_speak_mutual_tls() {
    let files_dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let (server, client) = (server_ca.server(), client_ca.issue(&["apply"], None));
    let at = |name: &str, text: &str| pki::write(files_dir.path(), name, text).to_str().unwrap().to_string();
    let (cert, key, clients) =
        (at("server.crt", &server.cert), at("server.key", &server.key), at("clients.crt", &client_ca.pem));
    let (ca, client_cert, client_key) =
        (at("ca.crt", &server_ca.pem), at("client.crt", &client.cert), at("client.key", &client.key));
    let args = [
        "--demo",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &clients,
    ];
    let served = Served::start_tls(&args, "warn", Some(pki::client_tls(&[&server_ca], Some(&client)))).await;
    let url = format!("https://localhost:{}", served.addr.port());
    let exported = files_dir.path().join("org.yaml");
    let tls = ["--ca-cert", ca.as_str(), "--client-cert", client_cert.as_str(), "--client-key", client_key.as_str()];
    let export = posture_at(&url, &[&["export", "-o", exported.to_str().unwrap()][..], &tls].concat());
    assert!(export.status.success());
    let apply = posture_at(&url, &[&["apply", "-f", exported.to_str().unwrap()][..], &tls].concat());
    assert!(apply.status.success() && text(&apply.stdout).contains("no changes"), "{}", text(&apply.stdout));
    // Without this client's certificate the server refuses the connection, and apply says so
    // (TLS 1.3 sends the refusal after the handshake: what the client reads first varies, the
    // server's alert or the closed connection, so only the command's failure is asserted).
    let refused = posture_at(&url, &["apply", "-f", exported.to_str().unwrap(), "--ca-cert", ca.as_str()]);
    assert_eq!(refused.status.code(), Some(1));
    let said = text(&refused.stderr);
    assert!(said.starts_with("posture apply: ") && text(&refused.stdout).is_empty(), "{said}");
    served.stop().await;
}
