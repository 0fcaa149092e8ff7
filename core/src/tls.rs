//! TLS to etcd with OpenSSL, the TLS library PostgreSQL itself uses.
//!
//! OpenSSL accepts every certificate set-up etcdctl (Go's crypto/tls)
//! accepts: X.509 v1 and v3 certificates, RSA and ECDSA keys in PKCS#1,
//! SEC1 or PKCS#8 PEM, a CA file with several CAs, and intermediate
//! certificates after the client certificate in `ssl_cert`.  (rustls, used
//! before, refuses v1 certificates with `UnsupportedCertVersion`.)
//!
//! The files are read and checked when connecting; a problem names the
//! option, the file and what is wrong with it.  The handshake runs in a
//! connector that tonic's `Endpoint::connect_with_connector` drives, so the
//! HTTP/2 settings of the endpoint stay ours.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::X509;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::client::EtcdError;
use crate::options::ServerOptions;

/// The TLS settings the `ssl_*` options describe.
#[derive(Clone)]
pub struct TlsSetup {
    connector: SslConnector,
    /// `ssl_servername`: the name checked against the server certificate
    /// (and sent as SNI) instead of the endpoint's host.
    servername: Option<String>,
    /// Where the trusted CAs come from, for messages.
    trusted: String,
    /// The client certificate (`ssl_cert`), for messages; `None` without.
    client_cert: Option<String>,
    /// How long to wait, after a TLS 1.3 handshake with a client
    /// certificate, for the server's first record (see `server_verdict`).
    verdict_wait: Duration,
}

fn file_error(option: &'static str, path: &str, detail: impl Into<String>) -> EtcdError {
    EtcdError::TlsFile {
        option,
        path: path.to_string(),
        detail: detail.into(),
    }
}

fn read(option: &'static str, path: &str) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|e| file_error(option, path, e.to_string()))
}

/// The PEM certificates of a file, in order; an error names the option
/// and file when there is none.
fn certificates(option: &'static str, path: &str) -> Result<Vec<X509>, EtcdError> {
    let pem = read(option, path)?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| {
        file_error(
            option,
            path,
            format!("not a PEM certificate file: {}", openssl_reason(&e)),
        )
    })?;
    if certs.is_empty() {
        return Err(file_error(option, path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// The first reason of an OpenSSL error stack, readable.
fn openssl_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .iter()
        .map(|e| e.reason().unwrap_or("unknown error").to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Build the TLS settings of `opts`, or `None` when TLS is not asked for
/// (no `ssl_*` option and no `https://` endpoint).
pub fn tls_setup(opts: &ServerOptions) -> Result<Option<TlsSetup>, EtcdError> {
    let any_https = opts.endpoints.iter().any(|e| e.tls == Some(true));
    if !opts.tls_configured() && !any_https {
        return Ok(None);
    }
    let internal = |e: openssl::error::ErrorStack| {
        EtcdError::Other(format!("TLS set-up: {}", openssl_reason(&e)))
    };
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(internal)?;
    b.set_verify(SslVerifyMode::PEER);
    // gRPC runs over HTTP/2.
    b.set_alpn_protos(b"\x02h2").map_err(internal)?;
    match &opts.ssl_ca {
        // Only the given CAs (as PostgreSQL's sslrootcert): a bundle may
        // hold several.
        Some(path) => {
            let store = b.cert_store_mut();
            for ca in certificates("ssl_ca", path)? {
                store.add_cert(ca).map_err(|e| {
                    file_error(
                        "ssl_ca",
                        path,
                        format!("cannot use a certificate: {}", openssl_reason(&e)),
                    )
                })?;
            }
        }
        None => b.set_default_verify_paths().map_err(internal)?,
    }
    if let (Some(cert_path), Some(key_path)) = (&opts.ssl_cert, &opts.ssl_key) {
        let mut chain = certificates("ssl_cert", cert_path)?.into_iter();
        let leaf = chain.next().expect("certificates() returns at least one");
        b.set_certificate(&leaf).map_err(|e| {
            file_error(
                "ssl_cert",
                cert_path,
                format!("cannot use the certificate: {}", openssl_reason(&e)),
            )
        })?;
        // Intermediate certificates after the client certificate.
        for intermediate in chain {
            b.add_extra_chain_cert(intermediate).map_err(|e| {
                file_error(
                    "ssl_cert",
                    cert_path,
                    format!("cannot use a chain certificate: {}", openssl_reason(&e)),
                )
            })?;
        }
        let pem = read("ssl_key", key_path)?;
        let key = PKey::private_key_from_pem(&pem).map_err(|e| {
            file_error(
                "ssl_key",
                key_path,
                format!(
                    "not an unencrypted PEM private key (PKCS#1, SEC1 or PKCS#8): {}",
                    openssl_reason(&e)
                ),
            )
        })?;
        b.set_private_key(&key).map_err(|e| {
            file_error(
                "ssl_key",
                key_path,
                format!("cannot use the key: {}", openssl_reason(&e)),
            )
        })?;
        b.check_private_key().map_err(|_| {
            file_error(
                "ssl_key",
                key_path,
                format!("the key does not match the certificate in ssl_cert \"{cert_path}\""),
            )
        })?;
    }
    Ok(Some(TlsSetup {
        connector: b.build(),
        servername: opts.ssl_servername.clone(),
        trusted: match &opts.ssl_ca {
            Some(path) => format!("ssl_ca \"{path}\""),
            None => "the system's CAs".to_string(),
        },
        client_cert: opts.ssl_cert.clone(),
        // Half of connect_timeout: tonic's own connect_timeout bounds the
        // whole connector, and a server that says nothing first must
        // still get its connection.
        verdict_wait: opts.connect_timeout / 2,
    }))
}

/// A tonic connector: TCP to the URI's host and port, then the TLS
/// handshake, checking the server certificate against the CAs and the
/// name (`ssl_servername`, else the endpoint's host name or IP address).
#[derive(Clone)]
pub struct TlsConnector {
    setup: TlsSetup,
}

impl TlsConnector {
    pub fn new(setup: TlsSetup) -> Self {
        TlsConnector { setup }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TokioIo<SslStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let setup = self.setup.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("endpoint without a host")?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(2379);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = setup.servername.as_deref().unwrap_or(&host);
            // SNI (for a name) and host name / IP address verification.
            let ssl = setup.connector.configure()?.into_ssl(name)?;
            let mut stream = SslStream::new(ssl, tcp)?;
            if let Err(e) = Pin::new(&mut stream).connect().await {
                let verify = stream.ssl().verify_result();
                let why = if verify.as_raw() != 0 {
                    format!(
                        "TLS handshake failed: server certificate verify failed: {} \
                         (checked against {} for the name \"{name}\")",
                        verify.error_string(),
                        setup.trusted
                    )
                } else {
                    format!("TLS handshake failed: {e}")
                };
                return Err(why.into());
            }
            server_verdict(&setup, &mut stream).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// In TLS 1.3 the client's handshake is over before the server has
/// checked the client certificate: a server that refuses it (unknown CA,
/// a leaf without its intermediate) says so in an alert *after* our
/// `connect()` succeeded, and the first request would only see a reset
/// ("transport error").  etcd (Go's HTTP/2 server) speaks first once it
/// accepts us (its SETTINGS frame), so wait for its first record: data
/// means accepted (peek leaves it for HTTP/2 to read); an alert is the
/// refusal, reported as the TLS failure it is.  A server that stays
/// silent for `verdict_wait` is given the connection.
async fn server_verdict(
    setup: &TlsSetup,
    stream: &mut SslStream<TcpStream>,
) -> Result<(), BoxError> {
    let Some(cert) = &setup.client_cert else {
        return Ok(());
    };
    if stream.ssl().version2() != Some(SslVersion::TLS1_3) {
        return Ok(()); // up to TLS 1.2 the handshake included the verdict
    }
    let mut first = [0u8; 1];
    match tokio::time::timeout(setup.verdict_wait, Pin::new(stream).peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Err(_) => Ok(()),
        Ok(Ok(_)) => Err(format!(
            "TLS handshake failed: the server closed the connection after the handshake \
             (did it refuse the client certificate in ssl_cert \"{cert}\"?)"
        )
        .into()),
        Ok(Err(e)) => Err(format!(
            "TLS handshake failed: the server refused the client certificate in ssl_cert \"{cert}\": {e}"
        )
        .into()),
    }
}
