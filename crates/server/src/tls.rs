//! TLS material: a private CA and a server certificate made on first start, or the operator's.
//!
//! Why a private CA rather than one self-signed leaf: agents and clients are given one file
//! (`DIR/tls/ca.pem`) to trust, and the server certificate can be reissued (new names, expiry)
//! without touching every agent. Private keys are written 0600 and never logged.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Errors while preparing TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}: no certificate found in the PEM file")]
    NoCert(PathBuf),
    #[error("{0}: no private key found in the PEM file")]
    NoKey(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Paths of the generated PKI under `DIR/tls/`.
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn current_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

/// Creates `DIR/tls/{ca.pem, ca.key, server.pem, server.key}` unless they exist, and returns
/// their paths. The server certificate names `localhost`, `127.0.0.1`, `::1` and `extra_names`
/// (host names or IP addresses); it is valid for two years, the CA for ten.
pub fn ensure_pki(data_dir: &Path, extra_names: &[String]) -> Result<Pki, TlsError> {
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let pki = Pki {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    if pki.ca_cert.exists() && pki.cert.exists() && pki.key.exists() {
        return Ok(pki);
    }
    let year = current_year();
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Warden private CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let ca = ca_params.self_signed(&ca_key)?;

    let key = rcgen::KeyPair::generate()?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Warden server");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 2, 1, 1);
    let leaf = params.signed_by(&key, &ca, &ca_key)?;

    write_file(
        &dir.join("ca.key"),
        ca_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_file(&pki.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(
        &pki.cert,
        format!("{}{}", leaf.pem(), ca.pem()).as_bytes(),
        0o644,
    )?;
    write_file(&pki.ca_cert, ca.pem().as_bytes(), 0o644)?;
    tracing::info!(ca = %pki.ca_cert.display(), "created a private CA and a server certificate");
    Ok(pki)
}

/// Builds the rustls server configuration: TLS 1.2 and 1.3, or 1.3 only.
pub fn server_config(
    cert: &Path,
    key: &Path,
    tls13_only: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let pem = std::fs::read(cert).map_err(io(cert))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| io(cert)(std::io::Error::other(e.to_string())))?;
    if chain.is_empty() {
        return Err(TlsError::NoCert(cert.to_owned()));
    }
    let kpem = std::fs::read(key).map_err(io(key))?;
    let pk: PrivateKeyDer<'static> = match PrivateKeyDer::from_pem_slice(&kpem) {
        Ok(pk) => pk,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey(key.to_owned()));
        }
        Err(e) => return Err(io(key)(std::io::Error::other(e.to_string()))),
    };
    let versions: &[&'static rustls::SupportedProtocolVersion] = if tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)?
    .with_no_client_auth()
    .with_single_cert(chain, pk)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
