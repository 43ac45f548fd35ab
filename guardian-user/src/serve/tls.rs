//! TLS for `https://` webhooks: the trust roots (the system's CA store, or a webhook's own
//! `ca_file`, read with the care of Guardian's other files) and the connector.
//!
//! Invariants: an `https://` receiver's certificate is always verified (name and chain); a
//! `ca_file` that cannot be read or holds no certificate is an error for that webhook (shown in
//! the status), never a silent fall back to the system's store or to no verification.

use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};
use tokio_rustls::TlsConnector;

/// Largest CA file read.
const MAX_CA_BYTES: u64 = 1 << 20;

/// The connector for a webhook: trusting the certificates of `ca_file` when given, else the
/// system's CA store.
pub fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = read_ca(path)?;
            let shown = crate::textpath::escape(path);
            use rustls::pki_types::pem::PemObject;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("{shown}: not PEM certificates: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{shown}: a certificate rustls refuses: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("{shown} holds no certificate"));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // One unusable certificate in the system store does not stop the others.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(format!(
                    "the system's CA store has no usable certificate ({} errors): set ca_file",
                    found.errors.len()
                ));
            }
        }
    }
    // rustls marks `ring` deprecated for lacking post-quantum key exchange; its alternative,
    // aws-lc-rs, needs cmake and a C++ toolchain on every build host. A webhook carries alerts
    // that are stale in minutes, not secrets that must outlive a future quantum computer.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name a receiver's certificate must carry.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("`{host}`: {e}"))
}

/// Reads a CA file: a regular file (no symlink followed, never blocking on a FIFO) of at most
/// [`MAX_CA_BYTES`], owned by Guardian's user or root, writable by nobody else.
fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    super::token::read_guarded(
        path,
        MAX_CA_BYTES,
        0o022,
        "trusted certificates must not be writable by others",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_ca_file_without_certificates_or_writable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let e = connector(Some(&empty)).err().unwrap();
        assert!(e.contains("holds no certificate"), "{e}");
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = connector(Some(&empty)).err().unwrap();
        assert!(e.contains("writable by others"), "{e}");
        let e = connector(Some(&dir.path().join("absent.pem")))
            .err()
            .unwrap();
        assert!(e.contains("cannot open"), "{e}");
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&empty, &link).unwrap();
        assert!(connector(Some(&link)).is_err(), "a symlink is not followed");
    }
}
