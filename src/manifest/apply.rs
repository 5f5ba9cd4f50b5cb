//! `posture apply`: what the files say against what the server holds: the difference, field
//! by field; what PreviewPolicy says each change would do to decisions; then the writes,
//! through AdminService like any admin's. And `posture export`, the server's configuration in
//! the same format, so that `export` then `apply` changes nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;

use super::client::{self, Admin, Current, ServerArgs, refused};
use super::files::{self, Desired};
use super::{ConnectorDoc, Document, PolicyDoc, SettingsDoc, to_yaml};
use crate::grpc::{incoming, outgoing};
use crate::proto::{self as pb, preview_policy_request::Draft};

#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// A YAML file, or a directory of them (its .yaml and .yml files); repeatable
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Show the difference and what it would do to decisions, and apply nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Delete the policies the files do not name
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Write to this file [default: standard output]
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// One write the files call for.
#[derive(Debug)]
enum Step {
    Settings(pb::Settings),
    Connector(pb::EnableConnectorRequest),
    /// A policy to create or update (`content`) and to assign (`assign`), or both.
    Policy {
        policy: pb::Policy,
        exists: bool,
        content: bool,
        assign: bool,
    },
    DeletePolicy(String),
}

/// Why `apply` stopped: the files are wrong (nothing was sent), or the server refused.
pub enum Failure {
    Files(Vec<files::Problem>),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

/// Runs `posture apply`, writing its account to `out`.
pub async fn apply(args: &ApplyArgs, out: &mut String) -> Result<(), Failure> {
    let desired = files::read(&args.files).map_err(Failure::Files)?;
    let documents =
        desired.policies.len() + usize::from(desired.settings.is_some()) + usize::from(desired.connector.is_some());
    let mut admin = client::connect(&args.server).await?;
    let current = client::current(&mut admin).await?;
    let plural = |n: usize, one: &str| if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") };
    let _ = writeln!(
        out,
        "{} in {} against {} at revision {}",
        plural(documents, "document"),
        plural(desired.files, "file"),
        args.server.server,
        current.revision
    );
    let steps = plan(&desired, &current, args.prune, out)?;
    if steps.is_empty() {
        let _ = writeln!(out, "no changes: the server already matches the files");
        return Ok(());
    }
    let _ = writeln!(
        out,
        "{} changes; what each would do to decisions alone, at revision {}:",
        steps.len(),
        current.revision
    );
    for step in &steps {
        preview(&mut admin, step, out).await?;
    }
    if args.dry_run {
        let _ = writeln!(out, "dry run: nothing applied");
        return Ok(());
    }
    let mut revision = current.revision;
    for step in &steps {
        revision = write(&mut admin, step).await.with_context(|| format!("applying {}", name(step)))?;
        let _ = writeln!(out, "applied {} (revision {revision})", name(step));
    }
    let _ = writeln!(out, "applied {} changes: the server is at revision {revision}", steps.len());
    Ok(())
}

fn name(step: &Step) -> String {
    match step {
        Step::Settings(_) => "settings".into(),
        Step::Connector(_) => "connector".into(),
        Step::Policy { policy, .. } => format!("policy {}", policy.id),
        Step::DeletePolicy(id) => format!("policy {id}'s deletion"),
    }
}

/// The writes that make the server match the files, each shown with its difference.
fn plan(desired: &Desired, current: &Current, prune: bool, out: &mut String) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    if let Some(located) = &desired.settings
        && let Document::Settings(doc) = &located.doc
    {
        let want = settings(&doc.to_pb())?;
        if want != settings(&current.settings)? {
            let was = SettingsDoc::from_pb(&current.settings).map(Document::Settings);
            show(out, "settings: update", was.as_ref(), &Document::Settings(doc.clone()));
            steps.push(Step::Settings(want));
        }
    }
    if let Some(located) = &desired.connector
        && let Document::Connector(doc) = &located.doc
    {
        let was = ConnectorDoc::from_pb(&current.connector);
        let same = match &was {
            Some(was) => connector(&was.to_pb())? == connector(&doc.to_pb())?,
            None => false,
        };
        if !same {
            let was = was.map(Document::Connector);
            let what = if was.is_some() { "connector: update" } else { "connector: enable" };
            show(out, what, was.as_ref(), &Document::Connector(doc.clone()));
            steps.push(Step::Connector(doc.to_pb()));
        }
    }
    let stored: BTreeMap<&str, &pb::Policy> = current.policies.iter().map(|p| (p.id.as_str(), p)).collect();
    for (id, located) in &desired.policies {
        let Document::Policy(doc) = &located.doc else { continue };
        let want = doc.to_pb();
        let (content, assign, exists) = match stored.get(id.as_str()) {
            None => (true, assignment(&want) != (vec![], vec![]), false),
            Some(was) => (content(&want)? != content(was)?, assignment(&want) != assignment(was), true),
        };
        if !content && !assign {
            continue;
        }
        let was = stored.get(id.as_str()).map(|p| Document::Policy(PolicyDoc::from_pb(p)));
        let what = if exists { format!("policy {id}: update") } else { format!("policy {id}: create") };
        show(out, &what, was.as_ref(), &Document::Policy(doc.clone()));
        steps.push(Step::Policy { policy: want, exists, content, assign });
    }
    if prune {
        for p in &current.policies {
            if !desired.policies.contains_key(&p.id) {
                let _ = writeln!(out, "policy {}: delete (the files do not name it)", p.id);
                steps.push(Step::DeletePolicy(p.id.clone()));
            }
        }
    }
    Ok(steps)
}

/// A policy's content as the server stores it (no assignment, no time of change).
fn content(p: &pb::Policy) -> anyhow::Result<pb::Policy> {
    let domain = incoming::policy(Some(p)).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(pb::Policy { updated_at: None, assignment: None, ..outgoing::policy(&domain, None) })
}

/// A policy's groups, in no particular order.
fn assignment(p: &pb::Policy) -> (Vec<String>, Vec<String>) {
    let a = p.assignment.clone().unwrap_or_default();
    let (mut include, mut exclude) = (a.include_group_ids, a.exclude_group_ids);
    include.sort();
    exclude.sort();
    (include, exclude)
}

fn settings(s: &pb::Settings) -> anyhow::Result<pb::Settings> {
    let domain = incoming::settings(Some(s)).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(pb::Settings::from(&domain))
}

fn connector(c: &pb::EnableConnectorRequest) -> anyhow::Result<(String, String, Vec<String>, Vec<String>)> {
    let (app, version, targets) = incoming::connector(c).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut include, mut exclude) = (targets.include, targets.exclude);
    include.sort();
    exclude.sort();
    Ok((app, version.to_string(), include, exclude))
}

/// `what`, then each setting that differs: `key: old → new`.
fn show(out: &mut String, what: &str, was: Option<&Document>, now: &Document) {
    let _ = writeln!(out, "{what}");
    let (was, now) = (was.map(flat).unwrap_or_default(), flat(now));
    let keys: std::collections::BTreeSet<&String> = was.keys().chain(now.keys()).collect();
    for key in keys {
        match (was.get(key), now.get(key)) {
            (a, b) if a == b => {}
            (Some(a), Some(b)) => {
                let _ = writeln!(out, "    {key}: {a} → {b}");
            }
            (None, Some(b)) => {
                let _ = writeln!(out, "    {key}: {b}");
            }
            (Some(a), None) => {
                let _ = writeln!(out, "    {key}: {a} → (unset)");
            }
            (None, None) => {}
        }
    }
}

/// A document's settings as `a.b.c` → value.
fn flat(doc: &Document) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &serde_yaml_ng::Value, out: &mut BTreeMap<String, String>) {
        match v {
            serde_yaml_ng::Value::Mapping(m) => {
                for (k, v) in m {
                    let k = k.as_str().unwrap_or_default();
                    let key = if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
            }
            serde_yaml_ng::Value::Sequence(items) => {
                let items: Vec<String> = items.iter().map(scalar).collect();
                out.insert(prefix.to_string(), format!("[{}]", items.join(", ")));
            }
            other => {
                out.insert(prefix.to_string(), scalar(other));
            }
        }
    }
    fn scalar(v: &serde_yaml_ng::Value) -> String {
        serde_yaml_ng::to_string(v).unwrap_or_default().trim().replace('\n', " ")
    }
    let mut out = BTreeMap::new();
    if let Ok(v) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&to_yaml(doc)) {
        walk("", &v, &mut out);
    }
    out.remove("kind");
    out
}

/// What PreviewPolicy says `step` alone would do to decisions.
async fn preview(admin: &mut Admin, step: &Step, out: &mut String) -> anyhow::Result<()> {
    let draft = match step {
        Step::Settings(s) => Draft::Settings(*s),
        Step::Policy { policy, .. } => Draft::Policy(policy.clone()),
        Step::DeletePolicy(id) => Draft::DeletePolicyId(id.clone()),
        Step::Connector(_) => {
            let _ = writeln!(out, "  connector: changes which Macs the partner enrolls, not decisions");
            return Ok(());
        }
    };
    let req = pb::PreviewPolicyRequest { draft: Some(draft), max_devices: 5, min_revision: 0 };
    let p = admin.preview_policy(req).await.map_err(refused)?.into_inner();
    let _ = writeln!(
        out,
        "  {}: {} locked out, {} let in, {} into their grace period, {} unchanged",
        name(step),
        p.allow_to_deny,
        p.deny_to_allow,
        p.into_grace,
        p.unchanged
    );
    for (label, devices, count) in
        [("locked out", &p.locked_out, p.allow_to_deny), ("let in", &p.let_in, p.deny_to_allow)]
    {
        if devices.is_empty() {
            continue;
        }
        let listed: Vec<String> = devices.iter().map(|d| format!("{} ({})", d.device_id, d.user_id)).collect();
        let more = count.saturating_sub(devices.len() as u64);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        let _ = writeln!(out, "    {label}: {}{more}", listed.join(", "));
    }
    Ok(())
}

/// Makes one step's writes; the last write's revision.
async fn write(admin: &mut Admin, step: &Step) -> anyhow::Result<u64> {
    Ok(match step {
        Step::Settings(s) => {
            let req = pb::UpdateSettingsRequest { settings: Some(*s) };
            admin.update_settings(req).await.map_err(refused)?.into_inner().revision
        }
        Step::Connector(c) => admin.enable_connector(c.clone()).await.map_err(refused)?.into_inner().revision,
        Step::Policy { policy, exists, content, assign } => {
            let mut revision = 0;
            if *content {
                let body = pb::Policy { assignment: None, ..policy.clone() };
                revision = if *exists {
                    let req = pb::UpdatePolicyRequest { policy: Some(body) };
                    admin.update_policy(req).await.map_err(refused)?.into_inner().revision
                } else {
                    let req = pb::CreatePolicyRequest { policy: Some(body) };
                    admin.create_policy(req).await.map_err(refused)?.into_inner().revision
                };
            }
            if *assign {
                let req =
                    pb::AssignPolicyRequest { policy_id: policy.id.clone(), assignment: policy.assignment.clone() };
                revision = admin.assign_policy(req).await.map_err(refused)?.into_inner().revision;
            }
            revision
        }
        Step::DeletePolicy(id) => {
            let req = pb::DeletePolicyRequest { policy_id: id.clone() };
            admin.delete_policy(req).await.map_err(refused)?.into_inner().revision
        }
    })
}

/// The server's configuration as documents: the settings, the connector when enabled, and
/// every policy by id.
pub async fn export(args: &ExportArgs) -> anyhow::Result<String> {
    let mut admin = client::connect(&args.server).await?;
    let current = client::current(&mut admin).await?;
    let mut docs = Vec::new();
    docs.extend(SettingsDoc::from_pb(&current.settings).map(Document::Settings));
    docs.extend(ConnectorDoc::from_pb(&current.connector).map(Document::Connector));
    let mut policies = current.policies.clone();
    policies.sort_by(|a, b| a.id.cmp(&b.id));
    docs.extend(policies.iter().map(|p| Document::Policy(PolicyDoc::from_pb(p))));
    let mut text = format!("# posture export of {} at revision {}\n", args.server.server, current.revision);
    for doc in &docs {
        text.push_str("---\n");
        text.push_str(&to_yaml(doc));
    }
    Ok(text)
}
