//! A scripted raw upstream: a TCP listener that reads each request and
//! answers with exactly the bytes a script gives, recording what arrived.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use super::raw::{find, lookup, WAIT};

/// A request as the scripted upstream read it.
#[derive(Debug, Clone)]
pub struct UpReq {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The head as sent, request line included.
    pub head: String,
    pub body: Vec<u8>,
    /// Which connection (1, 2, …) and which request on it (0, 1, …).
    pub conn: usize,
    pub nth: usize,
}

impl UpReq {
    pub fn header(&self, name: &str) -> Option<&str> {
        lookup(&self.headers, name).first().copied()
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        lookup(&self.headers, name)
    }
}

/// What the scripted upstream does with a request.
pub enum Act {
    /// Writes these bytes and reads the next request.
    Send(Vec<u8>),
    /// Writes these bytes (maybe none) and closes the connection.
    Close(Vec<u8>),
    /// Writes these bytes a few at a time, 2 ms apart.
    Trickle(Vec<u8>, usize),
    /// Waits, then writes.
    Later(Duration, Vec<u8>),
}

pub type Script = Arc<dyn Fn(&UpReq) -> Act + Send + Sync>;

pub struct Scripted {
    pub url: String,
    pub authority: String,
    pub seen: Arc<Mutex<Vec<UpReq>>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    pub fn seen(&self) -> Vec<UpReq> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> UpReq {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream got nothing")
    }

    pub fn connections(&self) -> usize {
        self.seen().iter().map(|r| r.conn).max().unwrap_or(0)
    }

    /// Waits (bounded) until a request for `target` arrived.
    pub async fn wait_for(&self, target: &str) {
        timeout(WAIT, async {
            while !self.seen().iter().any(|r| r.target == target) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{target} never reached the upstream"));
    }
}

pub async fn scripted(script: impl Fn(&UpReq) -> Act + Send + Sync + 'static) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    let seen: Arc<Mutex<Vec<UpReq>>> = Arc::default();
    let script: Script = Arc::new(script);
    let task = tokio::spawn({
        let seen = Arc::clone(&seen);
        async move {
            let mut conn = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                conn += 1;
                tokio::spawn(serve_script(
                    tcp,
                    conn,
                    Arc::clone(&script),
                    Arc::clone(&seen),
                ));
            }
        }
    });
    Scripted {
        url: format!("http://{authority}"),
        authority,
        seen,
        task,
    }
}

pub async fn serve_script(
    mut tcp: TcpStream,
    conn: usize,
    script: Script,
    seen: Arc<Mutex<Vec<UpReq>>>,
) {
    let mut buf = Vec::new();
    for nth in 0.. {
        let Some(req) = read_request(&mut tcp, &mut buf, conn, nth).await else {
            return;
        };
        seen.lock().unwrap().push(req.clone());
        let ok = match script(&req) {
            Act::Send(bytes) => tcp.write_all(&bytes).await.is_ok(),
            Act::Close(bytes) => {
                let _ = tcp.write_all(&bytes).await;
                let _ = tcp.shutdown().await;
                false
            }
            Act::Trickle(bytes, n) => {
                let mut ok = true;
                for piece in bytes.chunks(n) {
                    ok = ok && tcp.write_all(piece).await.is_ok();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                ok
            }
            Act::Later(wait, bytes) => {
                tokio::time::sleep(wait).await;
                tcp.write_all(&bytes).await.is_ok()
            }
        };
        if !ok {
            return;
        }
    }
}

/// Reads one request (Content-Length bodies only: the fast path sends no
/// other kind). `None`: the connection ended.
pub async fn read_request(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    conn: usize,
    nth: usize,
) -> Option<UpReq> {
    let mut chunk = vec![0u8; 64 * 1024];
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap_or_default().split(' ');
    let method = start.next().unwrap_or_default().to_owned();
    let target = start.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = lookup(&headers, "content-length")
        .first()
        .map_or(0, |v| v.parse().unwrap());
    let total = end + 4 + length;
    while buf.len() < total {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[end + 4..total].to_vec();
    buf.drain(..total);
    Some(UpReq {
        method,
        target,
        headers,
        head,
        body,
        conn,
        nth,
    })
}

pub fn ok_text(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
