//! `keyward audit list`: the append-only log of management actions.

use anyhow::Result;
use clap::Subcommand;
use keyward_wire::{AuditEventView, ListAudit};

use super::output::print_page;
use super::{Client, Paging, Remote};

#[derive(Subcommand, Debug)]
pub(crate) enum Audit {
    /// List audit events, newest first (`keyward:audit:read`).
    List {
        /// Only this tenant's events (root keys; a tenant key sees its own).
        #[arg(long, value_name = "TENANT_ID")]
        tenant: Option<String>,
        #[command(flatten)]
        paging: Paging,
        #[command(flatten)]
        remote: Remote,
    },
}

pub(crate) async fn run(cmd: Audit) -> Result<()> {
    match cmd {
        Audit::List {
            tenant,
            paging,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let page = client
                .list::<AuditEventView, _>("/v1/audit", &paging, |limit, cursor| ListAudit {
                    tenant_id: tenant.clone(),
                    limit,
                    cursor,
                })
                .await?;
            print_page(remote.output(), &page)
        }
    }
}
