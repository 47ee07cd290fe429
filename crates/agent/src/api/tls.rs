//! TLS for the local API and the GUI: a self-signed certificate made at every start, and the
//! CLI's verifier that trusts exactly that certificate.
//!
//! Why self-signed and pinned: there is no CA that could vouch for "the agent on this host".
//! The agent writes its certificate (never its key, which stays in memory) to
//! `<run_path>/ipc_cert.pem` in a folder only its user can read; the CLI trusts that exact
//! certificate and nothing else. A process squatting on the API port cannot present it, so the
//! CLI never sends it the bearer token.

use rustls::pki_types::pem::PemObject;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::ApiError;

/// A freshly generated certificate and the server configuration that presents it.
pub(crate) struct LocalCert {
    /// The certificate, PEM (public; what the CLI pins).
    pub(crate) pem: String,
    pub(crate) server: Arc<rustls::ServerConfig>,
}

/// Makes a new key pair and a self-signed certificate for `localhost`, `127.0.0.1` and `::1`.
pub(crate) fn generate() -> Result<LocalCert, ApiError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Warden Agent local API");
    let cert = params.self_signed(&key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(LocalCert {
        pem: cert.pem(),
        server: Arc::new(server),
    })
}

/// Client TLS configuration that accepts only the certificate in `pem`.
pub fn pinned_client_config(pem: &str) -> Result<rustls::ClientConfig, ApiError> {
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or(ApiError::BadPin("no certificate in the PEM"))?
        .map_err(|_| ApiError::BadPin("unreadable PEM"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { der, algs }))
        .with_no_client_auth();
    Ok(cfg)
}

/// Accepts a server whose leaf certificate is byte-for-byte the pinned one (and which proves
/// it holds the key: handshake signatures are still verified).
#[derive(Debug)]
struct Pinned {
    der: CertificateDer<'static>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
