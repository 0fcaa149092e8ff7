//! The certificates a TLS server set-up uses, for monitoring their expiry:
//! the PEM files of the `ssl_ca` and `ssl_cert` options, and the chain an
//! etcd endpoint presents in its TLS handshake (fetched without verifying
//! it, so that an expired or otherwise bad chain is still shown).

use std::pin::Pin;
use std::time::Duration;

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::{X509NameRef, X509Ref, X509};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::options::{EtcdEndpoint, ServerOptions};

/// One certificate, as `etcd_certificates()` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// RFC 4514 form (`openssl x509 -nameopt RFC2253`), e.g.
    /// `CN=localhost,O=Example`.
    pub subject: String,
    pub issuer: String,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertInfo {
    pub fn of(cert: &X509Ref) -> Result<CertInfo, String> {
        Ok(CertInfo {
            subject: name_rfc4514(cert.subject_name()),
            issuer: name_rfc4514(cert.issuer_name()),
            not_before: unix_time(cert.not_before())?,
            not_after: unix_time(cert.not_after())?,
        })
    }

    /// Whole days from `now_micros` (microseconds since the Unix epoch)
    /// until the certificate expires, rounded down: 0 on its last day,
    /// negative once it has expired.  Microseconds, so that the answer is
    /// exactly `floor(extract(epoch FROM not_after - now) / 86400)` for the
    /// same `now` (a whole-second `now` is off by one within the second
    /// after each day boundary).
    pub fn days_left(&self, now_micros: i64) -> i32 {
        const DAY_MICROS: i128 = 86_400 * 1_000_000;
        let left = i128::from(self.not_after) * 1_000_000 - i128::from(now_micros);
        left.div_euclid(DAY_MICROS)
            .clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32
    }
}

/// Seconds since the Unix epoch of an ASN.1 time.
pub fn unix_time(t: &Asn1TimeRef) -> Result<i64, String> {
    let epoch = Asn1Time::from_unix(0).map_err(|e| reason(&e))?;
    let d = epoch.diff(t).map_err(|e| reason(&e))?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// A distinguished name in RFC 4514 form: the most specific component
/// first, `,`-separated, special characters escaped with `\`.
pub fn name_rfc4514(name: &X509NameRef) -> String {
    let parts: Vec<String> = name
        .entries()
        .map(|e| {
            let nid = e.object().nid();
            let attr = if nid == Nid::UNDEF {
                e.object().to_string()
            } else {
                nid.short_name()
                    .map(str::to_string)
                    .unwrap_or_else(|_| e.object().to_string())
            };
            let value = match e.data().to_string() {
                Ok(s) => escape_rfc4514(&s),
                Err(_) => format!("#{}", hex(e.data().as_slice())),
            };
            format!("{attr}={value}")
        })
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 4514 escaping of an attribute value.
pub fn escape_rfc4514(value: &str) -> String {
    let n = value.chars().count();
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == n && c == ' ');
        if c == '\0' {
            out.push_str("\\00");
            continue;
        }
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn reason(e: &openssl::error::ErrorStack) -> String {
    let r: Vec<String> = e
        .errors()
        .iter()
        .map(|e| e.reason().unwrap_or("unknown error").to_string())
        .collect();
    if r.is_empty() {
        "unknown OpenSSL error".to_string()
    } else {
        r.join(", ")
    }
}

/// Every certificate of a PEM file's contents, in order.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<CertInfo>, String> {
    let certs = X509::stack_from_pem(pem)
        .map_err(|e| format!("not a PEM certificate file: {}", reason(&e)))?;
    if certs.is_empty() {
        return Err("no PEM certificate found".to_string());
    }
    certs.iter().map(|c| CertInfo::of(c)).collect()
}

/// Every certificate of the PEM file `path`; the error names the option and
/// the file.
pub fn file_certificates(option: &str, path: &str) -> Result<Vec<CertInfo>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("could not read {option} file \"{path}\": {e}"))?;
    pem_certificates(&pem).map_err(|e| format!("could not load {option} file \"{path}\": {e}"))
}

/// The endpoints of `opts` that are dialled with TLS, as URLs.
pub fn tls_endpoints(opts: &ServerOptions) -> Vec<&EtcdEndpoint> {
    opts.endpoints
        .iter()
        .filter(|e| e.url(opts.tls_configured()).starts_with("https://"))
        .collect()
}

/// The certificate chain `endpoint` presents (its own certificate first),
/// from a TLS handshake that verifies nothing, bounded by `timeout`.  The
/// client certificate of `ssl_cert` is presented when there is one (a
/// server with `--client-cert-auth` may end the handshake without it).
/// SNI: `ssl_servername`, else the endpoint's host name.
pub async fn peer_chain(
    opts: &ServerOptions,
    endpoint: &EtcdEndpoint,
    timeout: Duration,
) -> Result<Vec<CertInfo>, String> {
    match tokio::time::timeout(timeout, handshake(opts, endpoint)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no TLS handshake within {timeout:?} (request_timeout)"
        )),
    }
}

fn connector(opts: &ServerOptions) -> Result<SslConnector, String> {
    let setup = |e: openssl::error::ErrorStack| format!("TLS set-up: {}", reason(&e));
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(setup)?;
    b.set_verify(SslVerifyMode::NONE);
    b.set_alpn_protos(b"\x02h2").map_err(setup)?;
    if let (Some(cert_path), Some(key_path)) = (&opts.ssl_cert, &opts.ssl_key) {
        let pem = std::fs::read(cert_path)
            .map_err(|e| format!("could not read ssl_cert file \"{cert_path}\": {e}"))?;
        let mut chain = X509::stack_from_pem(&pem)
            .map_err(|e| {
                format!(
                    "could not load ssl_cert file \"{cert_path}\": {}",
                    reason(&e)
                )
            })?
            .into_iter();
        let key_pem = std::fs::read(key_path)
            .map_err(|e| format!("could not read ssl_key file \"{key_path}\": {e}"))?;
        let key = PKey::private_key_from_pem(&key_pem)
            .map_err(|e| format!("could not load ssl_key file \"{key_path}\": {}", reason(&e)))?;
        if let Some(leaf) = chain.next() {
            b.set_certificate(&leaf).map_err(setup)?;
            for c in chain {
                b.add_extra_chain_cert(c).map_err(setup)?;
            }
            b.set_private_key(&key).map_err(setup)?;
        }
    }
    Ok(b.build())
}

async fn handshake(opts: &ServerOptions, endpoint: &EtcdEndpoint) -> Result<Vec<CertInfo>, String> {
    let connector = connector(opts)?;
    let url = endpoint.url(true);
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid endpoint \"{url}\": {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("endpoint \"{url}\" has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(2379);
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("could not connect: {e}"))?;
    let name = opts.ssl_servername.as_deref().unwrap_or(&host);
    let ssl = connector
        .configure()
        .map_err(|e| reason(&e))?
        .verify_hostname(false)
        .into_ssl(name)
        .map_err(|e| reason(&e))?;
    let mut stream = SslStream::new(ssl, tcp).map_err(|e| reason(&e))?;
    let result = Pin::new(&mut stream).connect().await;
    // After a failed handshake (the server refused our client certificate,
    // or asked for one we do not have) its chain may have arrived anyway.
    let chain: Vec<CertInfo> = match stream.ssl().peer_cert_chain() {
        Some(chain) => chain.iter().map(CertInfo::of).collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    match result {
        _ if !chain.is_empty() => Ok(chain),
        Ok(()) => Err("the server presented no certificate".to_string()),
        Err(e) => Err(format!("TLS handshake failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::hash::MessageDigest;
    use openssl::x509::{X509Builder, X509NameBuilder};

    fn cert(cn: &str, org: Option<&str>, not_before: i64, not_after: i64) -> X509 {
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        if let Some(o) = org {
            name.append_entry_by_nid(Nid::ORGANIZATIONNAME, o).unwrap();
        }
        name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let mut serial = BigNum::new().unwrap();
        serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(not_before).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(not_after).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        b.build()
    }

    #[test]
    fn fields_of_a_certificate() {
        let c = cert(
            "etcd, \"one\"",
            Some("Example"),
            1_700_000_000,
            1_800_000_000,
        );
        let info = CertInfo::of(&c).unwrap();
        assert_eq!(info.subject, "CN=etcd\\, \\\"one\\\",O=Example");
        assert_eq!(info.issuer, info.subject);
        assert_eq!(info.not_before, 1_700_000_000);
        assert_eq!(info.not_after, 1_800_000_000);
    }

    #[test]
    fn days_left_rounds_down() {
        let info = CertInfo {
            subject: String::new(),
            issuer: String::new(),
            not_before: 0,
            not_after: 10 * 86_400,
        };
        const S: i64 = 1_000_000;
        assert_eq!(info.days_left(0), 10);
        assert_eq!(info.days_left(1), 9);
        assert_eq!(info.days_left(S), 9);
        assert_eq!(info.days_left(86_400 * S - 1), 9);
        assert_eq!(info.days_left(86_400 * S), 9);
        assert_eq!(info.days_left(86_400 * S + 1), 8);
        assert_eq!(info.days_left(10 * 86_400 * S - 1), 0);
        assert_eq!(info.days_left(10 * 86_400 * S), 0);
        assert_eq!(info.days_left(10 * 86_400 * S + 1), -1);
        assert_eq!(info.days_left(i64::MIN), 106_752_001);
        assert_eq!(info.days_left(i64::MAX), -106_751_982);
    }

    #[test]
    fn pem_files_with_several_certificates() {
        let a = cert("a", None, 0, 86_400);
        let b = cert("b", None, 0, 2 * 86_400);
        let mut pem = a.to_pem().unwrap();
        pem.extend(b.to_pem().unwrap());
        let infos = pem_certificates(&pem).unwrap();
        assert_eq!(
            infos.iter().map(|i| i.subject.as_str()).collect::<Vec<_>>(),
            vec!["CN=a", "CN=b"]
        );
        assert!(pem_certificates(b"nothing here").is_err());
        let e = file_certificates("ssl_ca", "/nonexistent/ca.pem").unwrap_err();
        assert!(
            e.contains("ssl_ca") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
    }

    #[test]
    fn rfc4514_escaping() {
        assert_eq!(escape_rfc4514("plain"), "plain");
        assert_eq!(escape_rfc4514(" #lead"), "\\ #lead");
        assert_eq!(escape_rfc4514("#x"), "\\#x");
        assert_eq!(escape_rfc4514("trail "), "trail\\ ");
        assert_eq!(escape_rfc4514("a+b;c<d>e\\f"), "a\\+b\\;c\\<d\\>e\\\\f");
    }

    #[test]
    fn only_tls_endpoints_are_handshaken() {
        let parse = |server: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = server
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            crate::options::parse_server(&pairs, &[]).unwrap()
        };
        let plain = parse(&[("connstr", "a:1,https://b:2")]);
        let urls: Vec<String> = tls_endpoints(&plain).iter().map(|e| e.url(false)).collect();
        assert_eq!(urls, vec!["https://b:2"]);
        let tls = parse(&[("connstr", "a:1,https://b:2"), ("ssl_ca", "/ca.pem")]);
        assert_eq!(tls_endpoints(&tls).len(), 2);
    }
}
