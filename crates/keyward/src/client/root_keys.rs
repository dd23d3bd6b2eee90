//! `keyward root-keys list|revoke`, through the API (`root-keys create`
//! writes straight into the store and lives in `main.rs`).

use anyhow::Result;
use clap::Args;
use keyward_wire::{ListKeys, RevokeKey};

use super::output::{print, print_page};
use super::{answer, connect, listing, Paging, Remote, ALL_PAGES};

/// `keyward root-keys list`.
#[derive(Args, Debug)]
pub(crate) struct List {
    /// Only root keys in this state.
    #[arg(long, value_parser = ["active", "disabled", "expired", "revoked"])]
    status: Option<String>,
    #[command(flatten)]
    paging: Paging,
    #[command(flatten)]
    remote: Remote,
}

/// `keyward root-keys revoke`.
#[derive(Args, Debug)]
pub(crate) struct Revoke {
    /// The root key's id, e.g. key_…. The last active root key cannot be
    /// revoked: create another first.
    id: String,
    /// Why, kept in the key and the audit log.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    remote: Remote,
}

pub(crate) async fn list(args: List) -> Result<()> {
    let client = connect(&args.remote)?;
    let q = ListKeys {
        kind: Some("root".to_owned()),
        status: args.status,
        limit: args.paging.limit,
        cursor: args.paging.cursor.clone(),
        ..ListKeys::default()
    };
    let page = listing(
        &args.paging,
        client.list_keys(&q),
        client.list_keys_all(&q, ALL_PAGES),
    )
    .await?;
    print_page(args.remote.output(), &page)
}

pub(crate) async fn revoke(args: Revoke) -> Result<()> {
    let client = connect(&args.remote)?;
    let revoke = RevokeKey {
        reason: args.reason,
    };
    let k = answer(client.revoke_key(&args.id, &revoke)).await?;
    print(args.remote.output(), &k)
}
