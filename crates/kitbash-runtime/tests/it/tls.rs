//! `rediss://` against `redis-server --tls-port` with certificates made here by rcgen: the
//! configured CA verifies the server (with and without a client certificate); a CA that did
//! not sign the server's certificate, and a certificate for another host name, each fail at
//! once with one line naming the CA file and the cause.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fred::prelude::*;
use kitbash_runtime::RuntimeError;
use kitbash_runtime::config::RedisConfig;
use kitbash_runtime::redis::{ConnectCause, connect_client};
use kitbash_testkit::{RedisServer, TlsServerFiles};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("dir"),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write pem");
        p
    }

    /// A CA: its certificate file and the issuer that signs with it.
    fn ca(&self, name: &str) -> (PathBuf, CertifiedIssuer<'static, KeyPair>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("kitbash test CA {name}"));
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
        (self.write(&format!("{name}-ca.pem"), &ca.pem()), ca)
    }

    /// A certificate for `names` (IPs or DNS names) signed by `ca`: (cert file, key file).
    fn leaf(
        &self,
        file: &str,
        names: &[&str],
        ca: &CertifiedIssuer<'static, KeyPair>,
    ) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let params = CertificateParams::new(names).expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, ca).expect("sign");
        (
            self.write(&format!("{file}.pem"), &cert.pem()),
            self.write(&format!("{file}-key.pem"), &key.serialize_pem()),
        )
    }
}

fn tls_server(cert: &Path, key: &Path, ca: &Path) -> RedisServer {
    RedisServer::builder()
        .tls(TlsServerFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: ca.to_path_buf(),
            require_client_cert: false,
        })
        .start()
        .expect("redis-server with --tls-port (Debian's links OpenSSL)")
}

fn cfg(server: &RedisServer, ca: &Path) -> RedisConfig {
    RedisConfig {
        url: format!(
            "rediss://127.0.0.1:{}",
            server.tls_port().expect("tls port")
        ),
        tls_ca_file: ca.display().to_string(),
        command_timeout_ms: 2_000,
        ..RedisConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_ca_verifies_the_server_with_and_without_a_client_certificate() {
    let pki = Pki::new();
    let (ca_file, ca) = pki.ca("good");
    let (cert, key) = pki.leaf("server", &["127.0.0.1"], &ca);
    let server = tls_server(&cert, &key, &ca_file);

    let c = connect_client(&cfg(&server, &ca_file), Duration::from_secs(10))
        .await
        .expect("rediss:// with the CA file");
    let _: () = c
        .set("k", "over TLS", None, None, false)
        .await
        .expect("SET");
    // The plain port sees what went over TLS: it is the same server.
    assert_eq!(server.cmd(&["GET", "k"]).expect("GET"), "over TLS");
    let _ = c.quit().await;

    let (client_cert, client_key) = pki.leaf("client", &["kitbash-client"], &ca);
    let with_cert = RedisConfig {
        tls_cert_file: client_cert.display().to_string(),
        tls_key_file: client_key.display().to_string(),
        ..cfg(&server, &ca_file)
    };
    let c = connect_client(&with_cert, Duration::from_secs(10))
        .await
        .expect("rediss:// with a client certificate");
    let pong: String = c.ping(None).await.expect("PING");
    assert_eq!(pong, "PONG");
    let _ = c.quit().await;
}

/// The error of a connection that must fail at once (not after the wait: a certificate that
/// does not verify will not get better, so it is not retried).
async fn refused(cfg: &RedisConfig) -> kitbash_runtime::redis::ConnectError {
    let wait = Duration::from_secs(20);
    let start = Instant::now();
    let e = match connect_client(cfg, wait).await {
        Ok(_) => panic!("connected although the certificate must not verify"),
        Err(RuntimeError::Connect(ce)) => ce,
        Err(other) => panic!("not a connect error: {other}"),
    };
    assert!(start.elapsed() < wait, "gave up only at the deadline: {e}");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_is_one_line_naming_the_file_and_the_cause() {
    let pki = Pki::new();
    let (ca_file, ca) = pki.ca("good");
    let (other_ca_file, _) = pki.ca("other");
    let (cert, key) = pki.leaf("server", &["127.0.0.1"], &ca);
    let server = tls_server(&cert, &key, &ca_file);

    let e = refused(&cfg(&server, &other_ca_file)).await;
    assert_eq!(e.cause, ConnectCause::Tls, "{e}");
    let line = e.to_string();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains(&other_ca_file.display().to_string()),
        "{line}"
    );
    assert!(
        line.contains("not signed by a CA of [redis] tls_ca_file"),
        "{line}"
    );
    assert!(line.contains("rediss://127.0.0.1:"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_name_is_one_line_naming_the_host() {
    let pki = Pki::new();
    let (ca_file, ca) = pki.ca("good");
    let (cert, key) = pki.leaf("server", &["redis.elsewhere.example"], &ca);
    let server = tls_server(&cert, &key, &ca_file);

    let e = refused(&cfg(&server, &ca_file)).await;
    assert_eq!(e.cause, ConnectCause::Tls, "{e}");
    let line = e.to_string();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains("not valid for the host name \"127.0.0.1\""),
        "{line}"
    );
    assert!(line.contains(&ca_file.display().to_string()), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rediss_url_on_the_plain_port_says_to_check_the_tls_port() {
    // Redis waits for the rest of a "command" that is a TLS hello: the handshake never ends, so
    // this is a timeout, and the line says what to check.
    let pki = Pki::new();
    let (ca_file, ca) = pki.ca("good");
    let (cert, key) = pki.leaf("server", &["127.0.0.1"], &ca);
    let server = tls_server(&cert, &key, &ca_file);
    let plain = RedisConfig {
        url: format!("rediss://127.0.0.1:{}", server.port()),
        connect_timeout_ms: 500,
        ..cfg(&server, &ca_file)
    };
    let e = match connect_client(&plain, Duration::from_secs(2)).await {
        Ok(_) => panic!("a TLS client connected to the plain port"),
        Err(RuntimeError::Connect(ce)) => ce,
        Err(other) => panic!("not a connect error: {other}"),
    };
    assert_eq!(e.cause, ConnectCause::Timeout, "{e}");
    assert!(e.to_string().contains("tls-port"), "{e}");
}
