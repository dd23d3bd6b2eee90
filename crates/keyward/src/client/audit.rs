//! `keyward audit list`: the append-only log of management actions.

use anyhow::Result;
use clap::Subcommand;
use keyward_wire::ListAudit;

use super::output::print_page;
use super::{connect, listing, Paging, Remote, ALL_PAGES};

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
            let client = connect(&remote)?;
            let q = ListAudit {
                tenant_id: tenant,
                limit: paging.limit,
                cursor: paging.cursor.clone(),
            };
            let page = listing(
                &paging,
                client.list_audit(&q),
                client.list_audit_all(&q, ALL_PAGES),
            )
            .await?;
            print_page(remote.output(), &page)
        }
    }
}
