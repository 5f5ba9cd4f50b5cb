//! The deploy kit's configuration examples are configurations posture accepts: the compose
//! credentials file, with the secrets its comment publishes, and the Kubernetes Secret's file.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use posture::auth::{Credentials, Role, sha256_hex};
use posture::config::{Config, FileConfig, Overrides};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

#[test]
fn the_compose_credentials_file_loads_with_the_secrets_it_names() {
    let config =
        Config::load(Overrides { config: Some(deploy("compose/posture.example.toml")), ..Default::default() }).unwrap();
    assert!(Credentials::new(&config.credentials).unwrap().enabled());
    let text = std::fs::read_to_string(deploy("compose/posture.example.toml")).unwrap();
    for (role, secret) in [
        (Role::Admin, "example-admin-secret"),
        (Role::Gateway, "example-gateway-secret"),
        (Role::Partner, "example-partner-secret"),
    ] {
        assert!(text.contains(secret), "the comment names {secret}");
        let credential = config.credentials.iter().find(|c| c.role == role).unwrap();
        assert_eq!(credential.secret_sha256, vec![sha256_hex(secret)], "{role:?}");
    }
}

#[test]
fn the_kubernetes_secret_holds_a_credentials_file_with_placeholders_only() {
    let yaml = std::fs::read_to_string(deploy("k8s/secret.example.yaml")).unwrap();
    let file: FileConfig = toml::from_str(&block_scalar(&yaml, "posture.toml")).unwrap();
    let roles: Vec<Role> = file.credentials.iter().map(|c| c.role).collect();
    assert_eq!(roles, [Role::Admin, Role::Gateway, Role::Partner]);
    // No digest that could be someone's real secret: each must be replaced before use.
    for c in &file.credentials {
        assert!(c.secret_sha256.iter().all(|d| d.starts_with("REPLACE_")), "{c:?}");
    }
}

/// The text of the YAML block scalar `key: |`: the more-indented lines after it, dedented.
fn block_scalar(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |")).skip(1);
    let first = lines.next().unwrap();
    let indent = first.len() - first.trim_start().len();
    let body =
        std::iter::once(first).chain(lines.take_while(|l| l.trim().is_empty() || l.starts_with(&" ".repeat(indent))));
    body.map(|l| l.get(indent..).unwrap_or("")).collect::<Vec<_>>().join("\n")
}
