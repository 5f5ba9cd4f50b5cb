//! Reading the files: every YAML document of every file named (a directory: its `.yaml` and
//! `.yml` files, sorted, subdirectories included), each checked as the server would check its
//! write. Everything is read and checked before anything is sent, and every problem is
//! reported with its file, line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConnectorDoc, Document, Kind, PolicyDoc, SettingsDoc};
use crate::grpc::incoming;

/// Where a document (or a problem in one) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// A document and where it starts.
#[derive(Debug, Clone)]
pub struct Located {
    pub doc: Document,
    pub place: Place,
}

/// A problem in the files, where it is.
#[derive(Debug, Clone)]
pub struct Problem {
    pub place: Place,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

/// What the files say, checked: at most one settings document, at most one connector, each
/// policy id once.
#[derive(Debug, Default)]
pub struct Desired {
    pub policies: BTreeMap<String, Located>,
    pub settings: Option<Located>,
    pub connector: Option<Located>,
    pub files: usize,
}

/// Reads and checks every document of `paths`; every problem found, or none.
pub fn read(paths: &[PathBuf]) -> Result<Desired, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        if let Err(e) = collect(path, &mut files) {
            problems.push(Problem { place: at(path, 0, 0), message: e });
        }
    }
    let mut desired = Desired { files: files.len(), ..Desired::default() };
    for file in &files {
        match std::fs::read_to_string(file) {
            Ok(text) => parse(file, &text, &mut desired, &mut problems),
            Err(e) => problems.push(Problem { place: at(file, 0, 0), message: format!("cannot be read: {e}") }),
        }
    }
    if problems.is_empty() { Ok(desired) } else { Err(problems) }
}

fn at(path: &Path, line: usize, column: usize) -> Place {
    Place { path: path.to_path_buf(), line, column }
}

/// `path` itself, or the YAML files under it, sorted.
fn collect(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot be listed: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        let yaml = matches!(entry.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        if entry.is_dir() {
            collect(&entry, files)?;
        } else if yaml {
            files.push(entry);
        }
    }
    Ok(())
}

/// The line each document of `text` starts on (1-based): the line after each `---`.
fn starts(text: &str) -> Vec<usize> {
    let separators: Vec<usize> =
        text.lines().enumerate().filter(|(_, l)| *l == "---" || l.starts_with("--- ")).map(|(i, _)| i + 2).collect();
    let first_content = text.lines().position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let leading = matches!((first_content, separators.first()), (Some(c), Some(&s)) if c + 2 == s);
    if leading { separators } else { std::iter::once(1).chain(separators).collect() }
}

fn parse(path: &Path, text: &str, desired: &mut Desired, problems: &mut Vec<Problem>) {
    #[derive(Deserialize)]
    struct KindOnly {
        kind: Option<Kind>,
    }
    let lines = starts(text);
    let place_of = |e: &serde_yaml_ng::Error, doc: usize| match e.location() {
        Some(l) => at(path, l.line(), l.column()),
        None => at(path, lines.get(doc).copied().unwrap_or(1), 1),
    };
    // Two passes over the documents: the first learns each one's kind, the second reads it
    // as that kind, so that a mistake is reported where it is, not where its document ends.
    let mut kinds = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        match Option::<KindOnly>::deserialize(doc) {
            Ok(k) => kinds.push(k.map(|k| k.kind)),
            Err(e) => {
                problems.push(Problem { place: place_of(&e, i), message: one_line(&e) });
                return;
            }
        }
    }
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let start = at(path, lines.get(i).copied().unwrap_or(1), 1);
        let kind = match kinds.get(i) {
            Some(Some(kind)) => *kind,
            _ => continue, // an empty document
        };
        let read = match kind {
            None => Err(None),
            Some(Kind::Policy) => PolicyDoc::deserialize(doc).map(Document::Policy).map_err(Some),
            Some(Kind::Settings) => SettingsDoc::deserialize(doc).map(Document::Settings).map_err(Some),
            Some(Kind::Connector) => ConnectorDoc::deserialize(doc).map(Document::Connector).map_err(Some),
        };
        let doc = match read {
            Ok(doc) => doc,
            Err(Some(e)) => {
                problems.push(Problem { place: place_of(&e, i), message: one_line(&e) });
                continue;
            }
            Err(None) => {
                let message = "has no kind: say `kind: Policy`, `kind: Settings` or `kind: Connector`".to_string();
                problems.push(Problem { place: start, message });
                continue;
            }
        };
        if let Err(message) = check(&doc) {
            problems.push(Problem { place: start.clone(), message });
            continue;
        }
        add(Located { doc, place: start }, desired, problems);
    }
}

/// The same checks the server makes of the write the document becomes.
fn check(doc: &Document) -> Result<(), String> {
    // The files call the group lists include_groups and exclude_groups.
    let named = |what: &str, e: crate::error::Error| {
        format!("{what}: {e}")
            .replace("include_group_ids", "include_groups")
            .replace("exclude_group_ids", "exclude_groups")
    };
    match doc {
        Document::Policy(p) => {
            let policy = p.to_pb();
            incoming::policy(Some(&policy)).map_err(|e| named(&format!("policy {}", p.id), e))?;
            let a = &p.assignment;
            incoming::targets(&a.include_groups, &a.exclude_groups)
                .map_err(|e| named(&format!("policy {}", p.id), e.within("assignment")))?;
        }
        Document::Settings(s) => {
            incoming::settings(Some(&s.to_pb())).map_err(|e| named("settings", e))?;
        }
        Document::Connector(c) => {
            incoming::connector(&c.to_pb()).map_err(|e| named("connector", e))?;
        }
    }
    Ok(())
}

fn add(located: Located, desired: &mut Desired, problems: &mut Vec<Problem>) {
    let twice = |what: String, first: &Located| Problem {
        place: located.place.clone(),
        message: format!("{what}: already given at {}", first.place),
    };
    match &located.doc {
        Document::Policy(p) => match desired.policies.get(&p.id) {
            Some(first) => problems.push(twice(format!("policy {}", p.id), first)),
            None => {
                desired.policies.insert(p.id.clone(), located);
            }
        },
        Document::Settings(_) => match &desired.settings {
            Some(first) => problems.push(twice("settings".into(), first)),
            None => desired.settings = Some(located),
        },
        Document::Connector(_) => match &desired.connector {
            Some(first) => problems.push(twice("connector".into(), first)),
            None => desired.connector = Some(located),
        },
    }
}

fn one_line(e: &serde_yaml_ng::Error) -> String {
    // The location is given apart, before the message.
    let text = e.to_string();
    let text = text.split(" at line ").next().unwrap_or(&text).to_string();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::starts;

    #[test]
    fn documents_start_after_their_separators() {
        assert_eq!(starts("kind: Policy\n---\nkind: Settings\n"), [1, 3]);
        assert_eq!(starts("# a comment\n---\nkind: Policy\n--- \nkind: Settings\n"), [3, 5]);
        assert_eq!(starts("---\nkind: Policy\n"), [2]);
    }
}
