//! A reason's message: text, or the facts a policy's failure is told from, spelled out the
//! first time someone reads it. A Mac denied by ten policies is decided once and then
//! answered, sign-in after sign-in, with the first reason of each code: the other nine
//! messages are never needed, so they are never written.

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::OnceLock;

use crate::domain::model::Timestamp;

#[derive(Clone)]
pub struct Message {
    what: What,
    /// The policy's message once read.
    text: OnceLock<Box<str>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum What {
    Text(Cow<'static, str>),
    Policy { name: Box<str>, failed: Failed, settings: Box<[&'static str]> },
}

/// How a policy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failed {
    Noncompliant,
    /// Failing, with the grace period ending then.
    InGracePeriod(Timestamp),
    /// A setting could not be judged.
    CannotBeEvaluated,
}

impl Message {
    /// Policy `name` failed as `failed` says, on `settings` (their names).
    pub fn policy(name: &str, failed: Failed, settings: impl IntoIterator<Item = &'static str>) -> Self {
        let what = What::Policy { name: name.into(), failed, settings: settings.into_iter().collect() };
        Message { what, text: OnceLock::new() }
    }

    pub fn as_str(&self) -> &str {
        match &self.what {
            What::Text(text) => text,
            What::Policy { name, failed, settings } => self.text.get_or_init(|| {
                let settings = settings.join(", ");
                match failed {
                    Failed::Noncompliant => format!("fails policy {name}: {settings}"),
                    Failed::InGracePeriod(ends) => {
                        format!("fails policy {name} but its grace period ends at {ends}: {settings}")
                    }
                    Failed::CannotBeEvaluated => format!("policy {name} cannot be evaluated: {settings}"),
                }
                .into()
            }),
        }
    }
}

impl<T: Into<Cow<'static, str>>> From<T> for Message {
    fn from(text: T) -> Self {
        Message { what: What::Text(text.into()), text: OnceLock::new() }
    }
}

impl Deref for Message {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// By the facts, not the text: comparing or sharing decisions (the watcher does, for every
/// Mac) spells nothing out.
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.what == other.what
    }
}

impl Eq for Message {}

impl Hash for Message {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.what.hash(state);
    }
}

impl PartialEq<str> for Message {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Message {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_message_is_spelled_out_when_read_and_compared_by_its_facts() {
        let m = Message::policy("Baseline", Failed::Noncompliant, ["storage_encryption", "firewall_enabled"]);
        assert!(m.text.get().is_none(), "nothing spelled out before it is read");
        assert_eq!(m, "fails policy Baseline: storage_encryption, firewall_enabled");
        let grace = Message::policy("Baseline", Failed::InGracePeriod(Timestamp(0)), ["gatekeeper"]);
        assert_eq!(grace, "fails policy Baseline but its grace period ends at 1970-01-01T00:00:00Z: gatekeeper");
        let error = Message::policy("Baseline", Failed::CannotBeEvaluated, ["gatekeeper"]);
        assert_eq!(error, "policy Baseline cannot be evaluated: gatekeeper");
        let same = Message::policy("Baseline", Failed::Noncompliant, ["storage_encryption", "firewall_enabled"]);
        assert!(same.text.get().is_none());
        assert_eq!(m, same);
        assert_ne!(m, Message::from("fails policy Baseline: storage_encryption, firewall_enabled"));
    }
}
