//! The runtime's error type.

/// What can go wrong in the runtime's Redis plumbing.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Redis answered with an error or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// The first connection failed: the URL and the cause (refused, unknown host, timeout, auth).
    #[error(transparent)]
    Connect(#[from] crate::redis::ConnectError),
    /// Redis answered with something of an unexpected shape.
    #[error("unexpected reply to {command}: {detail}")]
    Reply {
        /// The command.
        command: &'static str,
        /// What was odd.
        detail: String,
    },
    /// The admin endpoint could not start.
    #[error("admin endpoint: {0}")]
    Admin(#[from] std::io::Error),
    /// A start-up check refused to go on ([`crate::Components::check`]).
    #[error("{check}: {why}")]
    Refused {
        /// What was checked.
        check: &'static str,
        /// Why it cannot go on, and what to do.
        why: String,
    },
    /// A component's own code gave up (a raw handler's [`crate::consumer::TakeError::Fatal`]).
    #[error("{component}: {why}")]
    Component {
        /// Which component.
        component: String,
        /// What its code said.
        why: String,
    },
    /// `[redis]` could not be applied (an unreadable `password_file`).
    #[error("bad config: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The TLS files of `[redis]` could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A wire-format problem while writing.
    #[error("wire: {0}")]
    Wire(#[from] kitbash_schema::WireError),
}

impl RuntimeError {
    /// True when Redis says the consumer group (or its stream) does not exist.
    pub fn is_nogroup(&self) -> bool {
        matches!(self, RuntimeError::Redis(e) if e.details().contains("NOGROUP"))
    }

    /// True when the failure is transient ([`crate::redis::is_transient`]): retry the same
    /// work later, never dead-letter it.
    pub fn is_transient(&self) -> bool {
        matches!(self, RuntimeError::Redis(e) if crate::redis::is_transient(e))
    }
}
