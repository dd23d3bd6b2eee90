//! `keyward root-keys list|revoke`, through the API (`root-keys create`
//! writes straight into the store and lives in `main.rs`).

use anyhow::Result;
use clap::Args;
use keyward_wire::{KeyView, ListKeys, RevokeKey};
use reqwest::Method;

use super::output::{print, print_page};
use super::{segment, Client, Paging, Remote};

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
    let client = Client::new(&args.remote)?;
    let status = args.status;
    let page = client
        .list::<KeyView, _>("/v1/keys", &args.paging, |limit, cursor| ListKeys {
            kind: Some("root".to_owned()),
            status: status.clone(),
            limit,
            cursor,
            ..ListKeys::default()
        })
        .await?;
    print_page(args.remote.output(), &page)
}

pub(crate) async fn revoke(args: Revoke) -> Result<()> {
    let client = Client::new(&args.remote)?;
    let path = format!("/v1/keys/{}/revoke", segment(&args.id));
    let k: KeyView = client
        .send(
            Method::POST,
            &path,
            Some(&RevokeKey {
                reason: args.reason,
            }),
        )
        .await?;
    print(args.remote.output(), &k)
}
