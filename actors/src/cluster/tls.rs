//! TLS for cluster links: mutual authentication with one CA, and the stream wrapper that
//! hands an encrypted link to ractor_cluster as an "external" stream.
//!
//! ractor_cluster can encrypt itself, but it runs the TLS handshake inside its single listener
//! actor, with no time limit: one peer that stalls mid-handshake stops every other link from
//! being accepted. beamq accepts cluster sockets itself ([`super::tls_listener`]), runs each
//! handshake in its own task under `cluster.handshake_timeout`, and passes only finished
//! links to the node server; dialling does the same on the other side.

use std::sync::Arc;

use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::ClusterTlsConfig;

/// Both ends of cluster TLS for this node.
#[derive(Clone)]
pub struct ClusterTls {
    /// For links other nodes open.
    pub acceptor: TlsAcceptor,
    /// For links this node opens.
    pub connector: TlsConnector,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls")
    }
}

/// Loads the certificate, key and CA named by the configuration. The error names the key of
/// the file that is wrong.
pub fn load(cfg: &ClusterTlsConfig) -> Result<ClusterTls, String> {
    let read_certs =
        |key: &str, path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, String> {
            let certs: Vec<_> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{key}: bad PEM in {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{key}: no certificate in {}", path.display()));
            }
            Ok(certs)
        };
    let chain = read_certs("cluster.tls.cert_file", &cfg.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| {
        format!(
            "cluster.tls.key_file: cannot read a private key from {}: {e}",
            cfg.key_file.display()
        )
    })?;
    let mut roots = RootCertStore::empty();
    for ca in read_certs("cluster.tls.ca_file", &cfg.ca_file)? {
        roots
            .add(ca)
            .map_err(|e| format!("cluster.tls.ca_file: {e}"))?;
    }
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder(roots.clone())
        .build()
        .map_err(|e| format!("cluster.tls.ca_file: {e}"))?;
    let server = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| format!("cluster.tls.cert_file / key_file: {e}"))?;
    let client = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("cluster.tls.cert_file / key_file: {e}"))?;
    Ok(ClusterTls {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: TlsConnector::from(Arc::new(client)),
    })
}

/// An established TLS link, in the form ractor_cluster takes external streams.
pub struct TlsLink<S> {
    stream: S,
    peer: String,
}

impl<S> TlsLink<S> {
    /// Wraps `stream`; `peer` labels it in logs.
    pub fn new(stream: S, peer: String) -> Self {
        TlsLink { stream, peer }
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> ClusterBidiStream for TlsLink<S> {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (r, w) = tokio::io::split(self.stream);
        (Box::new(r), Box::new(w))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer.clone())
    }
}
