//! [`TestRedis`]: a Redis for a test from the backend `KITBASH_TEST_BACKEND` selects: a local
//! process (default) or, with the `containers` feature, a `redis:7.2` container.

use std::env;
use std::fmt;

use crate::error::{Result, TestkitError};
use crate::server::RedisServer;

/// Environment variable selecting the backend: `process` (default) or `containers`.
pub const BACKEND_ENV: &str = "KITBASH_TEST_BACKEND";

/// Image and tag the containers backend runs.
pub const CONTAINER_IMAGE: (&str, &str) = ("redis", "7.2");

/// Where a [`TestRedis`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A `redis-server` child process ([`RedisServer`]); supports fault injection.
    Process,
    /// A `redis:7.2` container via testcontainers (feature `containers`, needs Docker).
    Containers,
}

impl Backend {
    /// The backend named by `KITBASH_TEST_BACKEND`; unset or empty means [`Backend::Process`].
    pub fn from_env() -> Result<Self> {
        match env::var(BACKEND_ENV) {
            Err(env::VarError::NotPresent) => Ok(Self::Process),
            Err(env::VarError::NotUnicode(value)) => Err(TestkitError::UnknownBackend(
                value.to_string_lossy().into_owned(),
            )),
            Ok(value) => Self::parse(&value),
        }
    }

    /// `process`, `containers` (or empty, meaning `process`).
    pub fn parse(value: &str) -> Result<Self> {
        match value.trim() {
            "" | "process" => Ok(Self::Process),
            "containers" => Ok(Self::Containers),
            other => Err(TestkitError::UnknownBackend(other.to_owned())),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Process => "process",
            Self::Containers => "containers",
        })
    }
}

/// A Redis for one test, from whichever backend `KITBASH_TEST_BACKEND` selects.
///
/// Only the process backend supports fault injection: reach it with [`TestRedis::server_mut`].
/// Dropping a `TestRedis` kills the process or removes the container.
#[derive(Debug)]
pub struct TestRedis {
    /// `redis://host:port` as a client should dial it.
    url: String,
    /// What owns the server; dropping it ends the server.
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Process(RedisServer),
    #[cfg(feature = "containers")]
    Container {
        /// Held only for its `Drop`, which removes the container. Boxed: it is large.
        _container: Box<testcontainers::ContainerAsync<testcontainers::GenericImage>>,
    },
}

impl TestRedis {
    /// Starts a Redis from a synchronous test. The containers backend is async-only: with
    /// `KITBASH_TEST_BACKEND=containers` this is an error pointing at [`TestRedis::start_async`].
    pub fn start() -> Result<Self> {
        match Backend::from_env()? {
            Backend::Process => Ok(Self::from_server(RedisServer::start()?)),
            Backend::Containers => Err(TestkitError::BackendUnavailable {
                backend: "containers",
                why: "it is async-only: call `TestRedis::start_async().await` from a #[tokio::test]",
            }),
        }
    }

    /// Starts a Redis from an async test (needs a tokio runtime for the containers backend).
    ///
    /// The process backend starts synchronously inside this call (it blocks the calling
    /// thread for the few milliseconds redis takes to answer `PING`).
    pub async fn start_async() -> Result<Self> {
        match Backend::from_env()? {
            Backend::Process => Ok(Self::from_server(RedisServer::start()?)),
            Backend::Containers => Self::start_container().await,
        }
    }

    /// Wraps a server started with custom options.
    pub fn from_server(server: RedisServer) -> Self {
        Self {
            url: server.url(),
            kind: Kind::Process(server),
        }
    }

    /// `redis://host:port` of the server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which backend runs it.
    pub fn backend(&self) -> Backend {
        match self.kind {
            Kind::Process(_) => Backend::Process,
            #[cfg(feature = "containers")]
            Kind::Container { .. } => Backend::Containers,
        }
    }

    /// The process, if the process backend runs it.
    pub fn server(&self) -> Option<&RedisServer> {
        match &self.kind {
            Kind::Process(server) => Some(server),
            #[cfg(feature = "containers")]
            Kind::Container { .. } => None,
        }
    }

    /// The process for fault injection, if the process backend runs it.
    pub fn server_mut(&mut self) -> Option<&mut RedisServer> {
        match &mut self.kind {
            Kind::Process(server) => Some(server),
            #[cfg(feature = "containers")]
            Kind::Container { .. } => None,
        }
    }

    #[cfg(feature = "containers")]
    async fn start_container() -> Result<Self> {
        use testcontainers::GenericImage;
        use testcontainers::core::{IntoContainerPort, WaitFor};
        use testcontainers::runners::AsyncRunner;

        let (image, tag) = CONTAINER_IMAGE;
        let container = GenericImage::new(image, tag)
            .with_exposed_port(6379.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
            .start()
            .await?;
        let host = container.get_host().await?;
        let port = container.get_host_port_ipv4(6379.tcp()).await?;
        Ok(Self {
            url: format!("redis://{host}:{port}"),
            kind: Kind::Container {
                _container: Box::new(container),
            },
        })
    }

    #[cfg(not(feature = "containers"))]
    async fn start_container() -> Result<Self> {
        Err(TestkitError::BackendUnavailable {
            backend: "containers",
            why: "kitbash-testkit was built without its `containers` feature",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_parse() {
        assert_eq!(Backend::parse("").ok(), Some(Backend::Process));
        assert_eq!(Backend::parse("process").ok(), Some(Backend::Process));
        assert_eq!(Backend::parse("containers").ok(), Some(Backend::Containers));
        let err = Backend::parse("docker").expect_err("unknown backend");
        assert!(err.to_string().contains("KITBASH_TEST_BACKEND=\"docker\""));
    }
}
