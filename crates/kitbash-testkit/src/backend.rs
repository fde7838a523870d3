//! [`TestRedis`]: a Redis for a test from the backend `KITBASH_TEST_BACKEND` selects: a local
//! process (default) or, with the `containers` feature, a Redis container (`redis:7.2`, or the
//! image `KITBASH_TEST_REDIS_IMAGE` names) from any Docker-compatible engine testcontainers
//! reaches through `DOCKER_HOST` — e.g. podman's API socket (deploy/README.md, "Containers").

use std::env;
use std::fmt;

use crate::error::{Result, TestkitError};
use crate::server::RedisServer;

/// Environment variable selecting the backend: `process` (default) or `containers`.
pub const BACKEND_ENV: &str = "KITBASH_TEST_BACKEND";

/// Image and tag the containers backend runs unless [`CONTAINER_IMAGE_ENV`] names another.
pub const CONTAINER_IMAGE: (&str, &str) = ("redis", "7.2");

/// Environment variable naming the containers backend's image as `name[:tag]` (tag `latest`
/// when absent), e.g. `localhost/kitbash-redis:7`, the local image deploy/container/build-base.sh
/// makes where no registry is reachable. Its entrypoint must run `redis-server` reachable on
/// port 6379 of the container and log `Ready to accept connections` to stdout.
pub const CONTAINER_IMAGE_ENV: &str = "KITBASH_TEST_REDIS_IMAGE";

/// The containers backend's image and tag: `$KITBASH_TEST_REDIS_IMAGE`, else [`CONTAINER_IMAGE`].
pub fn container_image() -> (String, String) {
    match env::var(CONTAINER_IMAGE_ENV) {
        Ok(value) if !value.trim().is_empty() => split_image(value.trim()),
        _ => (CONTAINER_IMAGE.0.to_owned(), CONTAINER_IMAGE.1.to_owned()),
    }
}

/// `name[:tag]` into name and tag; a `:` before the last `/` is a registry port, not a tag.
fn split_image(reference: &str) -> (String, String) {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (
            reference[..name_start + i].to_owned(),
            reference[name_start + i + 1..].to_owned(),
        ),
        None => (reference.to_owned(), "latest".to_owned()),
    }
}

/// Where a [`TestRedis`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A `redis-server` child process ([`RedisServer`]); supports fault injection.
    Process,
    /// A Redis container via testcontainers (feature `containers`, needs a Docker-compatible
    /// engine; the image is [`container_image`]).
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
        use testcontainers::core::{IntoContainerPort, WaitFor};
        use testcontainers::runners::AsyncRunner;
        use testcontainers::{GenericImage, ImageExt as _};

        // The host port is chosen here and mapped explicitly: podman's Docker-compatible API
        // (4.3) reports published ports with an empty `HostIp`, which testcontainers skips
        // (`get_host_port_ipv4` then says the container exposes no port).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| TestkitError::io("choosing a host port for the Redis container", e))?
            .port();
        let (image, tag) = container_image();
        let container = GenericImage::new(image, tag)
            .with_exposed_port(6379.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
            .with_mapped_port(port, 6379.tcp())
            .start()
            .await?;
        let host = container.get_host().await?;
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

    #[test]
    fn image_references_split_into_name_and_tag() {
        let split = |r: &str| {
            let (name, tag) = split_image(r);
            format!("{name} {tag}")
        };
        assert_eq!(split("redis:7.2"), "redis 7.2");
        assert_eq!(split("redis"), "redis latest");
        assert_eq!(
            split("localhost/kitbash-redis:7"),
            "localhost/kitbash-redis 7"
        );
        assert_eq!(split("registry:5000/redis"), "registry:5000/redis latest");
        assert_eq!(split("registry:5000/redis:7.2"), "registry:5000/redis 7.2");
    }

    /// A container from the selected image answers `PING`. Runs the container only with
    /// `KITBASH_TEST_BACKEND=containers` (`just containers` sets it); otherwise it says why it
    /// checks nothing.
    #[cfg(feature = "containers")]
    #[tokio::test]
    async fn a_container_answers_ping() -> std::result::Result<(), Box<dyn std::error::Error>> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        if Backend::from_env()? != Backend::Containers {
            eprintln!("skipped: set {BACKEND_ENV}=containers to start a container");
            return Ok(());
        }
        let redis = TestRedis::start_async().await?;
        assert_eq!(redis.backend(), Backend::Containers);
        assert!(redis.server().is_none());
        let addr = redis
            .url()
            .strip_prefix("redis://")
            .expect("the backend builds redis:// URLs")
            .replace("localhost", "127.0.0.1");
        let mut conn = tokio::net::TcpStream::connect(&addr).await?;
        conn.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        conn.read_exact(&mut reply).await?;
        assert_eq!(&reply, b"+PONG\r\n");
        Ok(())
    }
}
