//! TLS to PostgreSQL and Redis, over rustls with ring.
//!
//! PostgreSQL reads libpq's own names from `DATABASE_URL`'s query, so that
//! a managed provider's URI works unchanged:
//!
//! | `sslmode` | encrypted | certificate checked |
//! | --- | --- | --- |
//! | `disable` | never | – |
//! | `prefer` (the default, as libpq's) | when the server offers TLS | no; against `sslrootcert` when one is named, as libpq |
//! | `require` | always | no; against `sslrootcert` when one is named, as libpq |
//! | `verify-ca` | always | chain, against `sslrootcert` or the system's roots; not the host name |
//! | `verify-full` | always | chain and host name (`host`, even when `hostaddr` says where to connect) |
//!
//! `sslrootcert=/path/ca.pem` names the roots (PEM, one or more
//! certificates), instead of the system's; `sslrootcert=system` (libpq 16)
//! names the system's and asks for `verify-full`. tokio-postgres knows
//! neither the two `verify-*` modes nor `sslrootcert`: [`database_config`]
//! takes them out of the URL, hands tokio-postgres `require` in their place
//! (so that it never falls back to plain text) and does the checking in the
//! rustls configuration. Only the URL form (`postgres://…?sslmode=…`) is read
//! this way; libpq's `key=value` form keeps tokio-postgres' own three modes.
//!
//! The system's roots are rustls-native-certs' (the OS store, i.e.
//! `/etc/ssl/certs` from the runtime image's ca-certificates), not a bundle
//! compiled in (webpki-roots): an operator adds a private CA or drops a
//! distrusted one the way they do for every other program on the host, and
//! Redis' client (redis-rs) reads the same store, so both stores trust the
//! same roots.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The one crypto provider, named rather than left to rustls' process
/// default: redis-rs asks for the default, and a second provider's feature
/// turned on by some other crate would otherwise make that a panic.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process default, for redis-rs, which builds its rustls
/// configuration from the default. A second call changes nothing.
pub(crate) fn install_default_provider() {
    // Err only when a provider is installed already, which is all we ask.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const ALL: [SslMode; 5] = [
        SslMode::Disable,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Option<SslMode> {
        SslMode::ALL.into_iter().find(|mode| mode.name() == value)
    }

    /// What tokio-postgres is told: it only decides whether to ask for
    /// TLS and whether plain text will do; rustls does the checking.
    fn for_tokio_postgres(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        }
    }
}

/// Where the roots come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCert {
    /// Not named: the system's, for the `verify-*` modes only.
    Unset,
    /// `sslrootcert=system`.
    System,
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("DATABASE_URL's sslmode={0:?} is not one of disable, prefer, require, verify-ca, verify-full")]
    SslMode(String),
    #[error("DATABASE_URL's sslrootcert=system needs sslmode=verify-full (as libpq), not {0}")]
    SystemNeedsVerifyFull(&'static str),
    #[error("cannot read {setting} {}", path.display())]
    ReadRoots {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{setting} {} holds no usable PEM certificate", path.display())]
    NoRoots {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: Option<rustls::pki_types::pem::Error>,
    },
    #[error("no system root certificates were found for DATABASE_URL's sslmode; name the CA with sslrootcert=/path/to/ca.pem")]
    NoSystemRoots,
    #[error("cannot set up TLS")]
    Rustls(#[source] rustls::Error),
}

/// DATABASE_URL read as libpq reads its TLS parameters: tokio-postgres'
/// configuration and the TLS connector that checks what `sslmode` asks.
pub(crate) fn database_config(
    url: &str,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), DatabaseUrlError> {
    let (rewritten, mode, root) = split_tls_parameters(url)?;
    let config: tokio_postgres::Config = rewritten.parse().map_err(DatabaseUrlError::Url)?;
    // tokio-postgres' own default, `prefer`, is libpq's: kept when the URL
    // names no mode (or names it in the key=value form).
    let mode = mode.unwrap_or(match config.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => SslMode::Disable,
        tokio_postgres::config::SslMode::Require => SslMode::Require,
        _ => SslMode::Prefer,
    });
    let tls = connector(mode, &root)?;
    Ok((config, MakeRustlsConnect::new(tls)))
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error("DATABASE_URL is not a PostgreSQL URL")]
    Url(#[source] tokio_postgres::Error),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

/// The URL without what tokio-postgres does not know, with the mode it
/// does, and what was taken out. A URL that is not a URL is left alone.
fn split_tls_parameters(
    url: &str,
) -> Result<(Cow<'_, str>, Option<SslMode>, RootCert), TlsSetupError> {
    let Some(after_scheme) = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
    else {
        return Ok((Cow::Borrowed(url), None, RootCert::Unset));
    };
    // Where the query starts as tokio-postgres finds it: past the first `@`
    // (a password may hold a `?`), then at the first `?`.
    let credentials_end = after_scheme.find('@').map_or(0, |at| at + 1);
    let Some(question) = after_scheme[credentials_end..].find('?') else {
        return Ok((Cow::Borrowed(url), None, RootCert::Unset));
    };
    let query_start = url.len() - after_scheme.len() + credentials_end + question + 1;
    let mut mode = None;
    let mut root = RootCert::Unset;
    let mut kept = Vec::new();
    for parameter in url[query_start..].split('&') {
        let Some((key, value)) = parameter.split_once('=') else {
            kept.push(Cow::Borrowed(parameter));
            continue;
        };
        let key = percent_decode_str(key).decode_utf8_lossy();
        let value = percent_decode_str(value).decode_utf8_lossy();
        match &*key {
            // The last one counts, as in tokio-postgres and libpq.
            "sslmode" => {
                let parsed = SslMode::parse(&value)
                    .ok_or_else(|| TlsSetupError::SslMode(value.clone().into_owned()))?;
                mode = Some(parsed);
                kept.push(Cow::Owned(format!(
                    "sslmode={}",
                    parsed.for_tokio_postgres()
                )));
            }
            "sslrootcert" if value == "system" => root = RootCert::System,
            "sslrootcert" => root = RootCert::File(PathBuf::from(value.into_owned())),
            _ => kept.push(Cow::Borrowed(parameter)),
        }
    }
    if root == RootCert::System {
        match mode {
            None => mode = Some(SslMode::VerifyFull),
            Some(SslMode::VerifyFull) => {}
            Some(weaker) => return Err(TlsSetupError::SystemNeedsVerifyFull(weaker.name())),
        }
        // tokio-postgres must not fall back to plain text either.
        kept.retain(|parameter| !parameter.starts_with("sslmode="));
        kept.push(Cow::Borrowed("sslmode=require"));
    }
    let mut rewritten = url[..query_start - 1].to_owned();
    if !kept.is_empty() {
        rewritten.push('?');
        rewritten.push_str(&kept.join("&"));
    }
    Ok((Cow::Owned(rewritten), mode, root))
}

/// The rustls configuration `mode` asks for.
fn connector(mode: SslMode, root: &RootCert) -> Result<ClientConfig, TlsSetupError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Rustls)?;
    let roots = match (mode, root) {
        (SslMode::Disable, _) => None,
        (SslMode::Prefer | SslMode::Require, RootCert::Unset) => None,
        (_, RootCert::File(path)) => Some(read_roots("DATABASE_URL's sslrootcert", path)?.1),
        (_, RootCert::Unset | RootCert::System) => Some(system_roots()?),
    };
    let algorithms = provider.signature_verification_algorithms;
    let config = match (mode, roots) {
        (SslMode::VerifyFull, Some(roots)) => {
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (_, roots) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NameUnchecked { roots, algorithms }))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// The PEM file at `path` and its certificates as roots, at least one;
/// `setting` names where the path came from, for the error.
pub(crate) fn read_roots(
    setting: &'static str,
    path: &Path,
) -> Result<(Vec<u8>, RootCertStore), TlsSetupError> {
    let pem = std::fs::read(path).map_err(|source| TlsSetupError::ReadRoots {
        setting,
        path: path.to_owned(),
        source,
    })?;
    let no_roots = |source| TlsSetupError::NoRoots {
        setting,
        path: path.to_owned(),
        source,
    };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| no_roots(Some(err)))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(no_roots(None));
    }
    Ok((pem, roots))
}

/// The operating system's roots (see the module's comment for why these).
fn system_roots() -> Result<RootCertStore, TlsSetupError> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "some system root certificates could not be read");
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(TlsSetupError::NoSystemRoots);
    }
    Ok(roots)
}

/// Every mode but `verify-full`, which is rustls' own verifier: rustls'
/// always checks the name, so this is the part of it that comes before,
/// from rustls' public pieces. With `roots` (`verify-ca`, or `prefer` /
/// `require` with `sslrootcert`) the chain must lead to one of them and be
/// valid now. Without (`prefer` and `require` without `sslrootcert`) the
/// certificate is taken as it comes: libpq's behaviour, which managed
/// providers' `sslmode=require` URIs count on. Either way the handshake's
/// own signatures are checked, so the peer holds the key of the
/// certificate it shows.
#[derive(Debug)]
struct NameUnchecked {
    roots: Option<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NameUnchecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let certificate = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &certificate,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, Option<SslMode>, RootCert) {
        let (rewritten, mode, root) = split_tls_parameters(url).unwrap();
        (rewritten.into_owned(), mode, root)
    }

    #[test]
    fn libpq_tls_parameters_are_taken_out_and_the_rest_kept() {
        assert_eq!(
            split("postgres://u:p%3Fw@db:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x"),
            (
                "postgres://u:p%3Fw@db:5432/app?sslmode=require&application_name=x".into(),
                Some(SslMode::VerifyFull),
                RootCert::File("/etc/ca.pem".into())
            )
        );
        // A `?` in a password is not the query's start.
        assert_eq!(
            split("postgresql://u:a?b@db/app?sslmode=verify-ca"),
            (
                "postgresql://u:a?b@db/app?sslmode=require".into(),
                Some(SslMode::VerifyCa),
                RootCert::Unset
            )
        );
        assert_eq!(
            split("postgres://db/app?sslrootcert=/ca.pem"),
            (
                "postgres://db/app".into(),
                None,
                RootCert::File("/ca.pem".into())
            )
        );
        assert_eq!(
            split("postgres://db/app?sslrootcert=system"),
            (
                "postgres://db/app?sslmode=require".into(),
                Some(SslMode::VerifyFull),
                RootCert::System
            )
        );
        assert_eq!(
            split("host=db sslmode=require"),
            ("host=db sslmode=require".into(), None, RootCert::Unset)
        );
        assert_eq!(
            split("postgres://db/app"),
            ("postgres://db/app".into(), None, RootCert::Unset)
        );
    }

    #[test]
    fn unknown_or_contradictory_modes_are_refused_by_name() {
        let err = split_tls_parameters("postgres://db/app?sslmode=verify_full").unwrap_err();
        assert!(err.to_string().contains("sslmode=\"verify_full\""), "{err}");
        let err = split_tls_parameters("postgres://db/app?sslmode=require&sslrootcert=system")
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("sslrootcert=system needs sslmode=verify-full (as libpq), not require"),
            "{err}"
        );
    }

    #[test]
    fn a_root_file_that_is_missing_or_not_pem_is_a_configuration_error() {
        let missing = database_config(
            "postgres://db/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        );
        let err = missing.err().expect("refused");
        assert!(
            err.to_string().contains("sslrootcert /nonexistent/ca.pem"),
            "{err}"
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "not a certificate\n").unwrap();
        let url = format!(
            "postgres://db/app?sslmode=verify-ca&sslrootcert={}",
            file.path().display()
        );
        let err = database_config(&url).err().expect("refused");
        assert!(
            err.to_string().contains("holds no usable PEM certificate"),
            "{err}"
        );
    }
}
