//! TLS to PostgreSQL: `sslmode` and `sslrootcert`, the way libpq reads them.
//!
//! Owns the one place a connection's TLS is decided: [`split`] takes `sslmode` and `sslrootcert`
//! out of the connection string (tokio-postgres itself knows only `disable`, `prefer` and
//! `require`, and no `sslrootcert`), and [`Tls::connector`] builds the rustls connector every
//! meetingd connection uses — pool, LISTEN connection and one-off connections alike — on the
//! `ring` provider the rest of the daemon's TLS uses.
//!
//! | `sslmode` | TLS | certificate checked |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it, else plain | no (chain, when a root certificate is given) |
//! | `require` | always | no (chain, when a root certificate is given) |
//! | `verify-ca` | always | chain against the roots |
//! | `verify-full` | always | chain, and the host name (or IP address) connected to |
//!
//! Roots: the file `sslrootcert` names (PEM, one or more certificates), else the system's store
//! (`rustls-native-certs`); `sslrootcert=system` names the system store explicitly. As with libpq,
//! naming a root certificate file makes `prefer` and `require` check the chain too.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

pub use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq's `allow` (plain first, TLS if the server insists) has no tokio-postgres
            // counterpart; saying so beats quietly treating it as something else.
            other => {
                return Err(format!(
                    "sslmode={other} is not supported: use disable, prefer, require, verify-ca or verify-full"
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether TLS is tried and whether it is required. The
    /// verification is the connector's business.
    pub fn negotiation(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self {
            SslMode::Disable => Pg::Disable,
            SslMode::Prefer => Pg::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// The system's store.
    System,
    /// A PEM file.
    File(PathBuf),
}

/// A connection's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    pub mode: SslMode,
    /// `sslrootcert`, when given (in the URL or as `database.sslrootcert`).
    pub root_cert: Option<RootCert>,
}

/// What a connection checks of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Nothing: the session is encrypted, but anyone in the path could answer.
    None,
    /// The chain, up to a trusted root; any host name.
    Chain,
    /// The chain and the host name.
    Full,
}

impl Tls {
    pub fn verification(&self) -> Verification {
        match self.mode {
            SslMode::VerifyFull => Verification::Full,
            SslMode::VerifyCa => Verification::Chain,
            SslMode::Prefer | SslMode::Require if matches!(self.root_cert, Some(RootCert::File(_))) => {
                Verification::Chain
            }
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Verification::None,
        }
    }

    /// How `meetingd check` names this, given whether the session it opened is encrypted.
    pub fn describe(&self, encrypted: bool) -> String {
        if !encrypted {
            return match self.mode {
                SslMode::Disable => "no TLS".into(),
                _ => format!("no TLS: sslmode={} and the server offers none", self.mode),
            };
        }
        match (self.mode, self.verification()) {
            (SslMode::VerifyCa | SslMode::VerifyFull, _) => format!("TLS {}", self.mode),
            (mode, Verification::None) => format!("TLS {mode}: encrypted, server certificate not verified"),
            (mode, _) => format!("TLS {mode}: certificate chain verified against sslrootcert"),
        }
    }

    /// The connector for this mode. Reads the root certificates now (a rotated CA file is picked
    /// up by the next connection).
    pub fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match self.verification() {
            Verification::None => Arc::new(Unverified { provider: provider.clone() }),
            v => {
                let roots = Arc::new(self.roots()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| format!("cannot use the root certificates: {e}"))?;
                if v == Verification::Full { webpki } else { Arc::new(ChainOnly(webpki)) }
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(RootCert::File(path)) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!("sslrootcert {} holds no usable certificate", path.display()));
                }
            }
            Some(RootCert::System) | None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
                    return Err(format!(
                        "sslmode={} needs trusted root certificates and the system has none{why}: set sslrootcert",
                        self.mode
                    ));
                }
            }
        }
        Ok(roots)
    }
}

/// `sslmode=require` (or `prefer`) without a root certificate: any certificate is accepted, as
/// libpq does, but the handshake signatures are still checked, so the session is really encrypted
/// to whoever holds the certificate's key.
#[derive(Debug)]
struct Unverified {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: webpki's verification without the name check. webpki checks the chain before the
/// name, so a name mismatch is only ever reported for a certificate whose chain is good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (URL or libpq `key=value` form)
/// and returns the rest, for tokio-postgres to parse, with the TLS settings. `default_root_cert`
/// (`database.sslrootcert`) applies when the string names none. A string this cannot read is
/// returned unchanged, for tokio-postgres to report.
pub fn split(url: &str, default_root_cert: Option<&str>) -> Result<(String, Tls), String> {
    let (rest, mode, root_cert) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_url(url)
    } else {
        split_key_value(url).unwrap_or_else(|| (url.to_string(), None, None))
    };
    let mode = match mode {
        Some(value) => SslMode::parse(&value)?,
        None => SslMode::default(),
    };
    let root_cert = root_cert.or_else(|| default_root_cert.map(str::to_string)).filter(|s| !s.is_empty());
    let root_cert = root_cert.map(|s| if s == "system" { RootCert::System } else { RootCert::File(s.into()) });
    Ok((rest, Tls { mode, root_cert }))
}

type Split = (String, Option<String>, Option<String>);

/// URL form: the query's `sslmode` and `sslrootcert` go, every other parameter stays byte for
/// byte (tokio-postgres percent-decodes, but does not read `+` as a space).
fn split_url(url: &str) -> Split {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => return (url.to_string(), None, None),
    };
    let (mut mode, mut root_cert) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        match decoded(key).as_str() {
            "sslmode" => mode = Some(decoded(value)),
            "sslrootcert" => root_cert = Some(decoded(value)),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    (rest, mode, root_cert)
}

/// libpq `key=value` form: pairs separated by spaces, values bare (backslash escapes) or in
/// single quotes. `None` when the string does not read as that form.
fn split_key_value(s: &str) -> Option<Split> {
    let bytes = s.as_bytes();
    let (mut mode, mut root_cert) = (None, None);
    let mut rest = String::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if key.is_empty() || i == bytes.len() || bytes[i] != b'=' {
            return None;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = Vec::new();
        if bytes.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match bytes.get(i)? {
                    b'\'' => break,
                    b'\\' => {
                        value.push(*bytes.get(i + 1)?);
                        i += 2;
                    }
                    &b => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            i += 1;
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                value.push(*bytes.get(i)?);
                i += 1;
            }
        }
        let value = String::from_utf8(value).ok()?;
        match key {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root_cert = Some(value),
            _ => {
                if !rest.is_empty() {
                    rest.push(' ');
                }
                rest.push_str(&s[start..i]);
            }
        }
    }
    Some((rest, mode, root_cert))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_are_taken_out_and_the_rest_kept_verbatim() {
        let (rest, tls) = split(
            "postgres://u:p@db.example:5432/m?options=-c%20a%3Db&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
            None,
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db.example:5432/m?options=-c%20a%3Db");
        assert_eq!(tls, Tls { mode: SslMode::VerifyFull, root_cert: Some(RootCert::File("/etc/ca.pem".into())) });

        let (rest, tls) = split("postgresql://h/db?sslmode=require", Some("/ca.pem")).unwrap();
        assert_eq!(rest, "postgresql://h/db");
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(tls.root_cert, Some(RootCert::File("/ca.pem".into())));
        assert_eq!(tls.verification(), Verification::Chain);

        let (rest, tls) = split("postgres://h/db", None).unwrap();
        assert_eq!((rest.as_str(), tls), ("postgres://h/db", Tls::default()));
        assert_eq!(split("postgres://h/db?sslrootcert=system", None).unwrap().1.root_cert, Some(RootCert::System));
    }

    #[test]
    fn key_value_parameters_are_taken_out() {
        let (rest, tls) =
            split("host=db  port = 5432 sslmode=verify-ca sslrootcert='/my certs/ca.pem' password='a\\'b c'", None)
                .unwrap();
        assert_eq!(rest, "host=db port = 5432 password='a\\'b c'");
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.root_cert, Some(RootCert::File("/my certs/ca.pem".into())));
        // Unreadable: left to tokio-postgres to report.
        assert_eq!(split("host=db sslmode", None).unwrap().0, "host=db sslmode");
    }

    #[test]
    fn unknown_modes_are_refused() {
        assert!(split("postgres://h/db?sslmode=allow", None).unwrap_err().contains("allow"));
        assert!(split("host=h sslmode=verify_full", None).is_err());
    }

    #[test]
    fn check_names_what_the_session_got() {
        let tls = |mode| Tls { mode, root_cert: None };
        assert_eq!(tls(SslMode::VerifyFull).describe(true), "TLS verify-full");
        assert_eq!(tls(SslMode::Disable).describe(false), "no TLS");
        assert!(tls(SslMode::Prefer).describe(false).starts_with("no TLS"));
        assert!(tls(SslMode::Require).describe(true).contains("not verified"));
    }
}
