//! The HTTP sender: one POST per attempt, safe against SSRF, bounded in time
//! and in what it reads.
//!
//! [`Sender::send`] posts a signed message and reports an [`Attempt`]; it
//! never panics and never fails otherwise: every problem is in
//! [`Attempt::error`]. The client behind it:
//! - follows no redirect (a 3xx is a failed attempt);
//! - uses no proxy from the environment;
//! - speaks HTTPS through rustls with the webpki roots;
//! - resolves names itself and drops [`forbidden`] addresses (unless
//!   [`SenderConfig::allow_private`]), so a DNS answer that changed since
//!   the endpoint was checked cannot reach a private address; IP-literal
//!   hosts, which skip the resolver, are checked before sending;
//! - bounds the connection (DNS, TCP, TLS) by `connect_timeout` and the
//!   whole attempt, response body included, by `timeout`;
//! - reads at most `max_response_bytes` of the response body, then closes
//!   the connection.
//!
//! Neither the body nor the signature is logged; this module logs nothing.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderValue, CONTENT_TYPE};

use crate::target::{forbidden, parse_endpoint_url};

/// How the sender behaves; each crate owns its config, the server wires it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// DNS, TCP connect and TLS handshake together.
    pub connect_timeout: Duration,
    /// The whole attempt, reading the (bounded) response body included.
    pub timeout: Duration,
    /// How much of the response body is kept for the delivery log; reading
    /// stops there.
    pub max_response_bytes: usize,
    /// Whether loopback, private and other [`forbidden`] addresses may be
    /// reached (tests, and deployments whose receivers are internal).
    pub allow_private: bool,
    pub user_agent: String,
}

impl Default for SenderConfig {
    /// 5 s to connect, 10 s in all, 4 KiB of response kept, public
    /// addresses only.
    fn default() -> Self {
        SenderConfig {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            max_response_bytes: 4096,
            allow_private: false,
            user_agent: concat!("keyward-webhooks/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// One message to post, already signed (see [`crate::sign`]).
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    pub url: &'a str,
    /// `webhook-id`: the message id, the same on every attempt.
    pub msg_id: &'a str,
    /// `webhook-timestamp`: unix seconds of this attempt.
    pub timestamp: i64,
    /// The JSON body, exactly as signed.
    pub body: &'a [u8],
    /// `webhook-signature`.
    pub signature: &'a str,
}

impl std::fmt::Debug for Outgoing<'_> {
    // The body may hold user data and the signature is a credential of
    // sorts: neither is printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("url", &self.url)
            .field("msg_id", &self.msg_id)
            .field("timestamp", &self.timestamp)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// What one attempt did.
///
/// `ok` is true exactly when a 2xx status arrived. `error` says what went
/// wrong short of a status (refused address, DNS, connect, TLS, timeout),
/// for a redirect (`redirect not followed (302)`), or while reading the
/// response body; a plain non-2xx status has no `error`, its `status` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The first `max_response_bytes` of the response body, lossy UTF-8.
    pub response: String,
    pub error: Option<String>,
    pub ok: bool,
}

/// Posts webhooks; cheap to clone (one connection pool).
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    config: SenderConfig,
}

impl Sender {
    /// Builds the HTTP client.
    pub fn new(config: SenderConfig) -> Result<Sender, SenderError> {
        let resolver = GuardedResolver {
            allow_private: config.allow_private,
            timeout: config.connect_timeout,
        };
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .referer(false)
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(config.user_agent.as_str())
            .dns_resolver(Arc::new(resolver))
            .build()
            .map_err(|e| SenderError::Build(innermost(&e)))?;
        Ok(Sender { client, config })
    }

    pub fn config(&self) -> &SenderConfig {
        &self.config
    }

    /// Makes one attempt. Never panics; every failure is in the result.
    pub async fn send(&self, req: &Outgoing<'_>) -> Attempt {
        let start = tokio::time::Instant::now();
        let (status, response, error) = self.attempt(req, start + self.config.timeout).await;
        let latency_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Attempt {
            status,
            latency_ms,
            response,
            ok: status.is_some_and(|s| (200..300).contains(&s)),
            error,
        }
    }

    async fn attempt(
        &self,
        req: &Outgoing<'_>,
        deadline: tokio::time::Instant,
    ) -> (Option<u16>, String, Option<String>) {
        let fail = |e: String| (None, String::new(), Some(e));
        let url = match parse_endpoint_url(req.url) {
            Ok(url) => url,
            Err(e) => return fail(e.to_string()),
        };
        // The resolver is not asked about IP literals.
        if let Some(ip) = url.ip_literal() {
            if let Some(why) = forbidden(ip).filter(|_| !self.config.allow_private) {
                return fail(Refused::Forbidden { ip, why }.to_string());
            }
        }
        let request = self
            .client
            .post(url.url().clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("webhook-id", req.msg_id)
            .header("webhook-timestamp", req.timestamp.to_string())
            .header("webhook-signature", req.signature)
            .body(req.body.to_vec());
        let timeout = self.config.timeout;
        let mut response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => return fail(format!("timed out after {}", human_duration(timeout))),
            Ok(Err(e)) => return fail(describe(&e, &self.config)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let mut error = status
            .is_redirection()
            .then(|| format!("redirect not followed ({})", status.as_u16()));

        let max = self.config.max_response_bytes;
        let mut body = Vec::with_capacity(max.min(64 * 1024));
        let body_timeout = || {
            format!(
                "timed out after {} reading the response",
                human_duration(timeout)
            )
        };
        while body.len() < max {
            match tokio::time::timeout_at(deadline, response.chunk()).await {
                Err(_) => {
                    error.get_or_insert_with(body_timeout);
                    break;
                }
                Ok(Err(e)) if e.is_timeout() => {
                    error.get_or_insert_with(body_timeout);
                    break;
                }
                Ok(Err(e)) => {
                    error.get_or_insert_with(|| {
                        format!("reading the response: {}", describe(&e, &self.config))
                    });
                    break;
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => {
                    let take = chunk.len().min(max - body.len());
                    body.extend_from_slice(&chunk[..take]);
                }
            }
        }
        // Dropping the response closes the connection if the body was not
        // read to its end: nothing more is read.
        drop(response);
        (
            Some(status.as_u16()),
            String::from_utf8_lossy(&body).into_owned(),
            error,
        )
    }
}

/// The client could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenderError {
    #[error("the webhook HTTP client could not be built: {0}")]
    Build(String),
}

/// Why the sender's resolver refused a name (see [`GuardedResolver`]).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("address {ip} is {why}")]
    Forbidden { ip: IpAddr, why: &'static str },
    #[error("host {host} does not resolve ({detail})")]
    Unresolvable { host: String, detail: String },
}

/// Resolves with the system resolver (through tokio), bounded in time, and
/// drops forbidden addresses unless private targets are allowed. If nothing
/// is left, the connection fails with the reason for the first dropped
/// address.
struct GuardedResolver {
    allow_private: bool,
    timeout: Duration,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let timeout = self.timeout;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = crate::target::resolve(&host, 0, timeout)
                .await
                .map_err(|e| match e {
                    crate::target::UrlError::Unresolvable { host, detail } => {
                        Refused::Unresolvable { host, detail }
                    }
                    other => Refused::Unresolvable {
                        host: host.clone(),
                        detail: other.to_string(),
                    },
                })?;
            let mut first_refusal = None;
            let kept: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|addr| match forbidden(addr.ip()) {
                    Some(why) if !allow_private => {
                        first_refusal.get_or_insert(Refused::Forbidden { ip: addr.ip(), why });
                        false
                    }
                    _ => true,
                })
                .collect();
            if kept.is_empty() {
                let refusal = first_refusal.unwrap_or_else(|| Refused::Unresolvable {
                    host,
                    detail: "no addresses".to_owned(),
                });
                return Err(Box::new(refusal) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// A short description of a client error, for the delivery log.
fn describe(e: &reqwest::Error, config: &SenderConfig) -> String {
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<Refused>() {
            return refused.to_string();
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            // `io::Error::source` skips the error it wraps; look inside.
            if let Some(refused) = io.get_ref().and_then(|i| i.downcast_ref::<Refused>()) {
                return refused.to_string();
            }
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".to_owned(),
                std::io::ErrorKind::ConnectionReset => {
                    return "connection reset by the server".to_owned()
                }
                _ => {}
            }
        }
        source = s.source();
    }
    if e.is_timeout() && e.is_connect() {
        return format!(
            "connect timed out after {}",
            human_duration(config.connect_timeout)
        );
    }
    if e.is_timeout() {
        return format!("timed out after {}", human_duration(config.timeout));
    }
    let detail = innermost(e);
    if e.is_connect() {
        format!("connection failed: {detail}")
    } else {
        format!("request failed: {detail}")
    }
}

/// The innermost cause's message, bounded: reqwest's outer messages
/// ("error sending request for url (…)") say little.
fn innermost(e: &(dyn StdError + 'static)) -> String {
    let mut last: &(dyn StdError + 'static) = e;
    while let Some(next) = last.source() {
        last = next;
    }
    let mut s = last.to_string();
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// `10 s`, `1.5 s` or `250 ms`.
pub(crate) fn human_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_secs(10)), "10 s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5 s");
    }

    #[test]
    fn outgoing_debug_shows_neither_body_nor_signature() {
        let o = Outgoing {
            url: "https://example.com/",
            msg_id: "msg_1",
            timestamp: 1,
            body: b"{\"secret\":\"data\"}",
            signature: "v1,c2lnbmF0dXJl",
        };
        let dbg = format!("{o:?}");
        assert!(dbg.contains("msg_1"));
        assert!(!dbg.contains("secret"));
        assert!(!dbg.contains("c2lnbmF0dXJl"));
    }

    #[tokio::test]
    async fn bad_urls_and_forbidden_literals_fail_without_a_request() {
        let sender = Sender::new(SenderConfig::default()).unwrap();
        let out = |url| Outgoing {
            url,
            msg_id: "msg_1",
            timestamp: 1,
            body: b"{}",
            signature: "v1,x",
        };
        let a = sender.send(&out("ftp://example.com/")).await;
        assert!(!a.ok);
        assert_eq!(a.status, None);
        assert_eq!(
            a.error.as_deref(),
            Some("The endpoint URL must use http or https, not 'ftp'.")
        );
        let a = sender.send(&out("http://10.0.0.1/hook")).await;
        assert_eq!(a.error.as_deref(), Some("address 10.0.0.1 is private"));
        let a = sender.send(&out("http://[::ffff:169.254.169.254]/")).await;
        assert_eq!(
            a.error.as_deref(),
            Some("address ::ffff:169.254.169.254 is link-local")
        );
    }
}
