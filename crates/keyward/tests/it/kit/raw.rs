//! A raw HTTP/1.1 client: exact bytes out, responses parsed by hand, for
//! tests where bytes matter (framing, pipelining, connection reuse).

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::Server;

/// The longest any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn authority(s: &Server) -> &str {
    s.base.trim_start_matches("http://")
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A request as raw bytes: the given headers (after `Host`), then
/// `Content-Length` when there is a body.
pub fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nHost: keyward.test\r\n");
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

pub fn get(target: &str) -> Vec<u8> {
    request("GET", target, &[], b"")
}

pub fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

/// One client connection: exact bytes out, responses parsed by hand.
pub struct Raw {
    pub tcp: TcpStream,
    pub buf: Vec<u8>,
    /// Everything ever read on this connection.
    pub wire: Vec<u8>,
}

#[derive(Clone)]
pub struct Res {
    pub version: String,
    pub status: u16,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

pub fn lookup<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

impl std::fmt::Debug for Res {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Res")
            .field("version", &self.version)
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("trailers", &self.trailers)
            .finish()
    }
}

impl Res {
    pub fn header(&self, name: &str) -> Option<&str> {
        lookup(&self.headers, name).first().copied()
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        lookup(&self.headers, name)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// Headers without the ones that differ per response (`date`,
    /// `x-request-id`), sorted, for comparisons.
    pub fn stable_headers(&self) -> Vec<(String, String)> {
        let mut h: Vec<_> = self
            .headers
            .iter()
            .filter(|(n, _)| n != "date" && n != "x-request-id")
            .cloned()
            .collect();
        h.sort();
        h
    }

    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["status"], status, "{body}");
    }
}

impl Raw {
    pub async fn connect(s: &Server) -> Raw {
        Raw::connect_to(authority(s)).await
    }

    pub async fn connect_to(addr: &str) -> Raw {
        let tcp = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connecting timed out")
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        Raw {
            tcp,
            buf: Vec::new(),
            wire: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        timeout(WAIT, self.tcp.write_all(bytes.as_ref()))
            .await
            .expect("writing timed out")
            .unwrap();
    }

    /// Reads what is there; 0 when the connection ended (EOF or reset).
    pub async fn fill(&mut self) -> usize {
        let mut chunk = vec![0u8; 64 * 1024];
        match timeout(WAIT, self.tcp.read(&mut chunk)).await {
            Err(_) => panic!(
                "nothing arrived within {WAIT:?}; unread: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Ok(Err(_)) => 0,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.wire.extend_from_slice(&chunk[..n]);
                n
            }
        }
    }

    pub async fn need(&mut self, n: usize) {
        while self.buf.len() < n {
            assert!(
                self.fill().await > 0,
                "the connection ended with {} of {n} bytes: {:?}",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    pub async fn line(&mut self) -> String {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(
                self.fill().await > 0,
                "the connection ended mid-line: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    pub async fn header_lines(&mut self) -> Vec<(String, String)> {
        let mut headers = Vec::new();
        loop {
            let l = self.line().await;
            if l.is_empty() {
                return headers;
            }
            let (n, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("not a header line: {l:?}"));
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }

    /// The next response to a GET.
    pub async fn response(&mut self) -> Res {
        self.response_to("GET").await
    }

    /// The next response (an interim 1xx too), its body read by its
    /// framing as a client must: none for HEAD/1xx/204/304, chunked (with
    /// trailers), Content-Length, or until the connection ends.
    pub async fn response_to(&mut self, method: &str) -> Res {
        let status_line = self.line().await;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let headers = self.header_lines().await;
        let mut res = Res {
            version,
            status,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        if method == "HEAD" || status < 200 || status == 204 || status == 304 {
            return res;
        }
        let chunked = res
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                let size_line = self.line().await;
                let size = size_line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16)
                    .unwrap_or_else(|_| panic!("not a chunk size: {size_line:?}"));
                if size == 0 {
                    res.trailers = self.header_lines().await;
                    break;
                }
                self.need(size + 2).await;
                res.body.extend_from_slice(&self.buf[..size]);
                assert_eq!(
                    &self.buf[size..size + 2],
                    b"\r\n",
                    "chunk not ended by CRLF"
                );
                self.buf.drain(..size + 2);
            }
        } else if let Some(n) = res.header("content-length") {
            let n: usize = n.parse().unwrap();
            self.need(n).await;
            res.body = self.buf.drain(..n).collect();
        } else {
            while self.fill().await > 0 {}
            res.body = std::mem::take(&mut self.buf);
        }
        res
    }

    /// Waits (bounded) for the server to end the connection; returns the
    /// bytes that arrived before the end and were not read as a response.
    pub async fn end(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        std::mem::take(&mut self.buf)
    }
}

// ---------------------------------------------------------------------------
