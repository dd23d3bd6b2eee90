//! `keyward scan --check`: asks a running keyward which found keys are
//! live, sending only their SHA-256 hashes.
//!
//! The contract (served by `POST /v1/leaks/check`, scope
//! `keyward:leaks:check`): the body is `{"hashes": ["<hex sha256>", …]}`
//! with at most [`BATCH`] hashes; the answer is `{"live": [...]}`, the
//! hashes among them of keys that are active (not revoked, expired or
//! deleted). Hashes the server does not list are not live.

use std::collections::HashSet;

use anyhow::{bail, Result};
use keyward_wire::CheckLeaks;

use super::Finding;
use crate::client::{answer, connect, Client, Remote, ServerUrl};

/// The most hashes one request may carry.
pub(crate) const BATCH: usize = 100;

/// A client of `POST /v1/leaks/check` with the key in `KEYWARD_ROOT_KEY`.
pub(crate) struct Checker {
    client: Client,
}

impl Checker {
    /// A checker of the keyward at `server`; fails without `KEYWARD_ROOT_KEY`.
    pub(crate) fn new(server: &ServerUrl) -> Result<Checker> {
        let client = connect(&Remote {
            server: server.clone(),
            output: None,
        })?;
        Ok(Checker { client })
    }

    /// Sets `live` on every finding: each distinct hash is asked once.
    pub(crate) async fn mark_live(&self, findings: &mut [Finding]) -> Result<()> {
        let mut hashes: Vec<String> = findings.iter().map(|f| f.hash.to_hex()).collect();
        hashes.sort_unstable();
        hashes.dedup();
        let mut live = HashSet::new();
        for batch in hashes.chunks(BATCH) {
            let check = CheckLeaks {
                hashes: batch.to_vec(),
            };
            let reply = answer(self.client.check_leaks(&check)).await?;
            for h in reply.live {
                if !batch.contains(&h) {
                    bail!("keyward answered the leak check with a hash it was not asked about");
                }
                live.insert(h);
            }
        }
        for f in findings {
            f.live = Some(live.contains(&f.hash.to_hex()));
        }
        Ok(())
    }
}
