//! TLS to Redis (`rediss://`): the rustls client configuration built from `[redis]`'s PEM files
//! (`tls_ca_file`, `tls_cert_file`, `tls_key_file`), and the one-line explanation of a failed
//! handshake (which file, what is wrong).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

/// Why the TLS configuration could not be built. `Display` names the file and the cause.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("[redis] {key} {}: {why}", path.display())]
    File {
        /// The config key (`tls_ca_file`, …).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the combination (a key that does not match the certificate, …).
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// The rustls client configuration for `files`: the CA file's certificates as the only roots
/// (or the system's trust store when none is given), and the client certificate when set.
pub fn client_config(files: &TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca {
        Some(ca) => {
            for cert in read_certs("tls_ca_file", ca)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    key: "tls_ca_file",
                    path: ca.clone(),
                    why: format!("not a CA certificate rustls accepts: {e}"),
                })?;
            }
        }
        None => {
            // Certificates of the store that fail to parse are skipped, as fred does.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots);
    match &files.client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = read_certs("tls_cert_file", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
                key: "tls_key_file",
                path: key.clone(),
                why: format!("no private key read: {e}"),
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| TlsError::Rustls(format!("client certificate and key: {e}")))
        }
    }
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |why: String| TlsError::File {
        key,
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(format!("cannot read: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(file_error("holds no certificate".into()));
    }
    Ok(certs)
}

/// What a failed handshake means, in words, when the error text says so; `None` when it is not
/// a certificate problem. `ca` is where the roots came from (a file, or the system store).
pub fn explain_handshake(detail: &str, ca: Option<&Path>, host: &str) -> Option<String> {
    let roots = ca.map_or_else(
        || "the system's trust store (set [redis] tls_ca_file)".to_owned(),
        |p| format!("[redis] tls_ca_file {}", p.display()),
    );
    let because = if detail.contains("UnknownIssuer") || detail.contains("BadSignature") {
        format!("the server's certificate is not signed by a CA of {roots}")
    } else if detail.contains("NotValidForName") {
        format!(
            "the server's certificate is not valid for the host name {host:?} of the URL \
             (it is signed by a CA of {roots})"
        )
    } else if detail.contains("Expired") || detail.contains("NotValidYet") {
        "the server's certificate is expired or not valid yet".to_owned()
    } else if detail.contains("CertificateRequired") || detail.contains("certificate required") {
        "the server requires a client certificate: set [redis] tls_cert_file and tls_key_file"
            .to_owned()
    } else if detail.contains("InvalidContentType") || detail.contains("CorruptMessage") {
        "the server does not speak TLS on this port (is it the plain port? use tls-port)".to_owned()
    } else if detail.contains("InvalidCertificate") || detail.contains("invalid peer certificate") {
        format!("the server's certificate was refused, checked against {roots}")
    } else {
        return None;
    };
    // fred passes rustls's error as an io::Error's Debug text:
    // `Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }`.
    let short = detail
        .split_once("error: ")
        .map_or(detail, |(_, e)| e.trim_end_matches(" }"));
    Some(format!("TLS handshake failed: {because} ({short})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_failures_are_named_with_the_file() {
        let ca = Path::new("/etc/kitbash/ca.pem");
        let e = explain_handshake(
            "invalid peer certificate: UnknownIssuer",
            Some(ca),
            "127.0.0.1",
        )
        .expect("a certificate problem");
        assert!(
            e.contains("not signed by a CA of [redis] tls_ca_file /etc/kitbash/ca.pem"),
            "{e}"
        );
        let e = explain_handshake(
            "invalid peer certificate: NotValidForName",
            Some(ca),
            "localhost",
        )
        .expect("a certificate problem");
        assert!(
            e.contains("not valid for the host name \"localhost\""),
            "{e}"
        );
        assert!(explain_handshake("Connection refused", Some(ca), "h").is_none());
        let e = explain_handshake(
            "Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }",
            None,
            "h",
        )
        .expect("a certificate problem");
        assert!(e.ends_with("(InvalidCertificate(UnknownIssuer))"), "{e}");
        assert!(e.contains("system's trust store"), "{e}");
    }

    #[test]
    fn a_missing_or_empty_ca_file_names_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        for (path, why) in [
            (dir.path().join("missing.pem"), "cannot read"),
            (empty, "holds no certificate"),
        ] {
            let files = TlsFiles {
                ca: Some(path.clone()),
                client: None,
            };
            let e = client_config(&files).expect_err("refused").to_string();
            assert!(e.contains("tls_ca_file"), "{e}");
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains(why), "{e}");
        }
    }
}
