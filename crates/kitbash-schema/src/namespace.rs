//! The optional namespace prefix: `""` gives the seeds' exact key names, `"t42"` gives `t42:cms:…`.

use std::fmt;

/// A key prefix shared by every key, stream and channel of one kitbash deployment.
///
/// The empty namespace (the default) yields exactly the names the seed documents use, so existing
/// readers (`redis-cli GET physics:state:SPY`) keep working. A non-empty namespace lets a replay,
/// a benchmark or a test run on the same Redis as production without touching its keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Namespace(String);

/// Why a namespace was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamespaceError {
    /// Namespaces are glued in front of keys with `:`; these characters would make keys ambiguous
    /// or change their cluster slot.
    #[error("namespace {0:?} may only contain ASCII letters, digits, '-', '_' and '.'")]
    BadCharacter(String),
    /// Long prefixes cost memory in every key.
    #[error("namespace {0:?} is longer than 32 bytes")]
    TooLong(String),
}

impl Namespace {
    /// The empty namespace: the seeds' key names, unchanged.
    pub fn none() -> Self {
        Self(String::new())
    }

    /// A validated namespace; the empty string is the same as [`Namespace::none`].
    pub fn new(prefix: impl Into<String>) -> Result<Self, NamespaceError> {
        let prefix = prefix.into();
        if prefix.len() > 32 {
            return Err(NamespaceError::TooLong(prefix));
        }
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(NamespaceError::BadCharacter(prefix));
        }
        Ok(Self(prefix))
    }

    /// The prefix itself (`""` when none).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the empty namespace.
    pub fn is_none(&self) -> bool {
        self.0.is_empty()
    }

    /// `name` inside this namespace: `name` itself, or `"{prefix}:{name}"`.
    pub fn apply(&self, name: &str) -> String {
        if self.0.is_empty() {
            name.to_owned()
        } else {
            let mut s = String::with_capacity(self.0.len() + 1 + name.len());
            s.push_str(&self.0);
            s.push(':');
            s.push_str(name);
            s
        }
    }

    /// The inverse of [`Namespace::apply`]: `Some(name)` when `key` lies in this namespace.
    pub fn strip<'k>(&self, key: &'k str) -> Option<&'k str> {
        if self.0.is_empty() {
            return Some(key);
        }
        key.strip_prefix(self.0.as_str())?.strip_prefix(':')
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_namespace_keeps_seed_names() {
        assert_eq!(Namespace::none().apply("cms:abc"), "cms:abc");
        assert_eq!(Namespace::new("").unwrap_or_default().apply("x"), "x");
    }

    #[test]
    fn prefix_is_joined_with_a_colon_and_stripped_back() {
        let ns = Namespace::new("t-1").unwrap_or_default();
        assert_eq!(ns.apply("cms:abc"), "t-1:cms:abc");
        assert_eq!(ns.strip("t-1:cms:abc"), Some("cms:abc"));
        assert_eq!(ns.strip("cms:abc"), None);
    }

    #[test]
    fn bad_namespaces_are_refused() {
        assert!(matches!(
            Namespace::new("a:b"),
            Err(NamespaceError::BadCharacter(_))
        ));
        assert!(matches!(
            Namespace::new("{x}"),
            Err(NamespaceError::BadCharacter(_))
        ));
        assert!(matches!(
            Namespace::new("x".repeat(33)),
            Err(NamespaceError::TooLong(_))
        ));
    }
}
