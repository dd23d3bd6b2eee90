//! Leak reports after the answer: the policy worker and the refresh of
//! GitHub's public keys.
//!
//! The API records each report of a known key as pending and pushes its id
//! into the worker's bounded queue ([`LeakWorker::queue`]); the worker applies
//! the policy through `ManageService::apply_leak`, one report at a time. A
//! report that does not fit in the queue, that failed to apply (the store
//! away), or that a crash left pending stays pending in the store: the
//! worker sweeps pending reports at start, every
//! `leaks.sweep_interval_seconds`, and at once when the queue overflowed.
//!
//! With `leaks.github.public_keys_url` or `public_keys_file` set, a task
//! reads them again every `leaks.github.refresh_seconds` and swaps the new
//! set into the API's `LeakIntake`; a source that fails keeps its last good
//! keys.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keyward_api::leaks::{LeakIntake, LeakQueue, PartnerKeys};
use keyward_manage::ManageService;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::config::LeaksConfig;

/// Pending reports read per sweep page, and pages per sweep.
const SWEEP_PAGE: u32 = 100;
const SWEEP_PAGES: usize = 50;
/// Largest key document accepted from the URL.
const MAX_KEY_DOCUMENT: usize = 1 << 20;

/// The queue side the API pushes into.
struct Queue {
    tx: mpsc::Sender<String>,
    overflowed: AtomicBool,
    wake: Notify,
}

impl LeakQueue for Queue {
    fn push(&self, report_id: String) {
        if self.tx.try_send(report_id).is_err() {
            self.overflowed.store(true, Ordering::Relaxed);
            self.wake.notify_one();
            tracing::warn!(
                "The leak queue is full; the report waits in the store for the worker's sweep."
            );
        }
    }
}

/// The policy worker: its queue, and the receiver until it starts.
pub(crate) struct LeakWorker {
    queue: Arc<Queue>,
    rx: Mutex<Option<mpsc::Receiver<String>>>,
}

impl LeakWorker {
    pub(crate) fn new(capacity: usize) -> LeakWorker {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        LeakWorker {
            queue: Arc::new(Queue {
                tx,
                overflowed: AtomicBool::new(false),
                wake: Notify::new(),
            }),
            rx: Mutex::new(Some(rx)),
        }
    }

    /// What the API pushes accepted reports into.
    pub(crate) fn queue(&self) -> Arc<dyn LeakQueue> {
        Arc::clone(&self.queue) as Arc<dyn LeakQueue>
    }

    /// Starts the worker (once: `None` after the first call).
    pub(crate) fn start(
        &self,
        manage: Arc<ManageService>,
        sweep_every: Duration,
    ) -> Option<JoinHandle<()>> {
        let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        let queue = Arc::clone(&self.queue);
        Some(tokio::spawn(run(manage, rx, queue, sweep_every)))
    }
}

async fn run(
    manage: Arc<ManageService>,
    mut rx: mpsc::Receiver<String>,
    queue: Arc<Queue>,
    sweep_every: Duration,
) {
    let mut tick = tokio::time::interval(sweep_every);
    // The first tick is at once: the sweep at start (a crash's leftovers).
    loop {
        tokio::select! {
            id = rx.recv() => match id {
                Some(id) => {
                    apply(&manage, &id).await;
                }
                None => return,
            },
            _ = tick.tick() => sweep(&manage).await,
            _ = queue.wake.notified() => {}
        }
        if queue.overflowed.swap(false, Ordering::Relaxed) {
            sweep(&manage).await;
        }
    }
}

/// Applies one report; `false` if the store failed (it stays pending).
async fn apply(manage: &ManageService, id: &str) -> bool {
    match manage.apply_leak(id).await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e, report_id = id, "Could not apply the leak policy; the report stays pending for the next sweep.");
            false
        }
    }
}

/// Applies pending reports, oldest first, until none is left, one fails,
/// or [`SWEEP_PAGES`] pages are done.
async fn sweep(manage: &ManageService) {
    for _ in 0..SWEEP_PAGES {
        let ids = match manage.pending_leaks(SWEEP_PAGE).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "Could not read pending leak reports.");
                return;
            }
        };
        if !ids.is_empty() {
            tracing::info!(reports = ids.len(), "Applying pending leak reports.");
        }
        for id in &ids {
            if !apply(manage, id).await {
                return;
            }
        }
        if ids.len() < SWEEP_PAGE as usize {
            return;
        }
    }
}

/// Reads the key file and fetches the URL every `refresh_seconds` (the
/// first time at once), swapping the union into `intake`; `None` when
/// neither is configured.
pub(crate) fn spawn_key_refresh(
    intake: Arc<LeakIntake>,
    config: LeaksConfig,
) -> Option<JoinHandle<()>> {
    let g = config.github.clone();
    if g.public_keys_url.is_none() && g.public_keys_file.is_none() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut local = intake.github_keys().as_ref().clone();
        let mut fetched = PartnerKeys::default();
        let timeout = Duration::from_millis(g.fetch_timeout_ms);
        let mut tick = tokio::time::interval(Duration::from_secs(g.refresh_seconds));
        loop {
            tick.tick().await;
            match config.local_github_keys() {
                Ok(k) => local = k,
                Err(e) => {
                    tracing::warn!(error = %e, "Could not read GitHub's public keys again; the last good set stays.")
                }
            }
            if let Some(url) = &g.public_keys_url {
                match fetch_keys(url, timeout).await {
                    Ok(k) => fetched = k,
                    Err(e) => {
                        tracing::warn!(error = %e, "Could not fetch GitHub's public keys; the last good set stays.")
                    }
                }
            }
            let mut all = local.clone();
            all.extend(&fetched);
            tracing::debug!(keys = all.len(), "GitHub public keys refreshed.");
            intake.set_github_keys(all);
        }
    }))
}

/// GitHub's key document from `url` (plain HTTP), within `timeout`.
pub(crate) async fn fetch_keys(url: &str, timeout: Duration) -> Result<PartnerKeys, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = hyper::Request::get(uri)
        .header("accept", "application/json")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let text = tokio::time::timeout(timeout, async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("the URL answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_KEY_DOCUMENT)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "the document is not UTF-8".to_owned())
    })
    .await
    .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))??;
    let mut keys = PartnerKeys::default();
    keys.add_github_json(&text).map_err(|e| e.to_string())?;
    Ok(keys)
}
