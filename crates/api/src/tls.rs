//! Which certificate authorities an `https` client trusts: the WebPKI roots built in,
//! or a PEM bundle of the operator's (a private CA in front of the server or the
//! artifact store). One [`Roots`] serves every client of a process, so the server and
//! the artifacts are trusted alike.

use std::path::Path;
use std::sync::Arc;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

#[derive(Clone, Debug, Default)]
pub enum Roots {
    /// Mozilla's roots, as shipped with the binary.
    #[default]
    WebPki,
    /// Only the certificates of a bundle (`--ca-bundle`).
    Bundle(Arc<Vec<Certificate<'static>>>),
}

/// `--ca-bundle FILE` as clap reads it: the bundle is read while the arguments are
/// parsed, so a bad one is a usage error that names the flag and the file.
pub fn parse_ca_bundle(path: &str) -> Result<Roots, String> {
    Roots::from_pem_file(Path::new(path))
}

impl Roots {
    /// Reads every certificate of a PEM file. A file that cannot be read, does not parse
    /// or holds no certificate is an error naming it: a bundle that trusts nothing would
    /// make every download fail later, far from its cause.
    pub fn from_pem_file(path: &Path) -> Result<Roots, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read the CA bundle {}: {e}", path.display()))?;
        let mut certificates = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(PemItem::Certificate(c)) => certificates.push(c),
                Ok(_) => {}
                Err(e) => return Err(format!("the CA bundle {} is not valid PEM: {e}", path.display())),
            }
        }
        if certificates.is_empty() {
            return Err(format!("the CA bundle {} holds no certificate (-----BEGIN CERTIFICATE-----)", path.display()));
        }
        Ok(Roots::Bundle(Arc::new(certificates)))
    }

    pub fn tls_config(&self) -> TlsConfig {
        let roots = match self {
            Roots::WebPki => RootCerts::WebPki,
            Roots::Bundle(certificates) => RootCerts::Specific(Arc::clone(certificates)),
        };
        TlsConfig::builder().root_certs(roots).build()
    }
}
