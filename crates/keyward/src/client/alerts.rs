//! `keyward alerts list`: the conditions keyward noticed (a key used from a
//! new address, a traffic spike, a failing endpoint, …), each stored once
//! while it lasts.

use anyhow::Result;
use clap::Subcommand;
use keyward_wire::{AlertView, ListAlerts};

use super::output::{opt, print_page, Row};
use super::{connect, listing, Paging, Remote, ALL_PAGES};

#[derive(Subcommand, Debug)]
pub(crate) enum Alerts {
    /// List alerts, newest first (`keyward:alerts:read`).
    List {
        /// Only this tenant's alerts (root keys; a tenant key sees its own).
        #[arg(long, value_name = "TENANT_ID")]
        tenant: Option<String>,
        /// Only alerts about this key (key_…).
        #[arg(long, value_name = "KEY_ID")]
        key: Option<String>,
        /// Only alerts of this kind: new_ip, traffic_spike, error_rate,
        /// key_dormant, key_expiring, credits_low or endpoint_failing.
        #[arg(long)]
        kind: Option<String>,
        /// Only open alerts (not yet resolved).
        #[arg(long)]
        open: bool,
        #[command(flatten)]
        paging: Paging,
        #[command(flatten)]
        remote: Remote,
    },
}

pub(crate) async fn run(cmd: Alerts) -> Result<()> {
    match cmd {
        Alerts::List {
            tenant,
            key,
            kind,
            open,
            paging,
            remote,
        } => {
            let client = connect(&remote)?;
            let q = ListAlerts {
                tenant_id: tenant,
                key_id: key,
                kind,
                open: open.then_some(true),
                limit: paging.limit,
                cursor: paging.cursor.clone(),
            };
            let page = listing(
                &paging,
                client.list_alerts(&q),
                client.list_alerts_all(&q, ALL_PAGES),
            )
            .await?;
            print_page(remote.output(), &page)
        }
    }
}

impl Row for AlertView {
    const HEADERS: &'static [&'static str] = &["RAISED", "KIND", "TENANT", "KEY", "STATE", "ID"];

    fn id(&self) -> String {
        self.id.clone()
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.raised_at.clone(),
            self.kind.clone(),
            opt(&self.tenant_id),
            opt(&self.key_id),
            match &self.resolved_at {
                Some(at) => format!("resolved {at}"),
                None => "open".to_owned(),
            },
            self.id.clone(),
        ]
    }
}
