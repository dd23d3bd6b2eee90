//! `keyward tenants create|get|update|list`.

use anyhow::Result;
use clap::Subcommand;
use keyward_wire::{CreateTenant, ListTenants, UpdateTenant};

use super::output::{print, print_page};
use super::{answer, connect, json_object, listing, Paging, Remote, ALL_PAGES};

#[derive(Subcommand, Debug)]
pub(crate) enum Tenants {
    /// Create a tenant (a business, account or organization that owns keys).
    Create {
        /// Its display name.
        #[arg(long)]
        name: String,
        /// An id of your own (1-64 of A-Z a-z 0-9 _ -), e.g. your account
        /// id; default: a new `ten_…` id.
        #[arg(long)]
        id: Option<String>,
        /// Rate-limit tier of its keys that name none: one of the
        /// deployment's `limits.tiers` (operators only).
        #[arg(long)]
        tier: Option<String>,
        /// The most its keys may be given by anyone but operators: a scope
        /// of the catalog or a wildcard (repeatable; default: no ceiling).
        #[arg(long = "grantable-scope", value_name = "SCOPE")]
        grantable_scopes: Vec<String>,
        /// A JSON object stored with the tenant, e.g. '{"plan":"pro"}'.
        #[arg(long, value_name = "JSON", value_parser = json_object)]
        metadata: Option<serde_json::Value>,
        /// A balance under this raises the `credits.low` alert and event.
        #[arg(long, value_name = "CREDITS")]
        credits_low_threshold: Option<i64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a tenant.
    Get {
        /// The tenant's id, e.g. ten_….
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Change a tenant; what is not given stays as it is.
    Update {
        /// The tenant's id, e.g. ten_….
        id: String,
        /// A new display name.
        #[arg(long)]
        name: Option<String>,
        /// A new tier: one of the deployment's `limits.tiers` (operators only).
        #[arg(long, conflicts_with = "clear_tier")]
        tier: Option<String>,
        /// Remove the tenant's tier.
        #[arg(long)]
        clear_tier: bool,
        /// Replace the grantable-scope ceiling (repeatable).
        #[arg(
            long = "grantable-scope",
            value_name = "SCOPE",
            conflicts_with = "clear_grantable_scopes"
        )]
        grantable_scopes: Vec<String>,
        /// Remove the grantable-scope ceiling (no ceiling).
        #[arg(long)]
        clear_grantable_scopes: bool,
        /// Replace the metadata with this JSON object.
        #[arg(long, value_name = "JSON", value_parser = json_object)]
        metadata: Option<serde_json::Value>,
        /// A balance under this raises the `credits.low` alert and event.
        #[arg(
            long,
            value_name = "CREDITS",
            conflicts_with = "clear_credits_low_threshold"
        )]
        credits_low_threshold: Option<i64>,
        /// Use the deployment's default threshold (`alerts.credits_low_threshold`).
        #[arg(long)]
        clear_credits_low_threshold: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// List tenants, newest first.
    List {
        #[command(flatten)]
        paging: Paging,
        #[command(flatten)]
        remote: Remote,
    },
}

pub(crate) async fn run(cmd: Tenants) -> Result<()> {
    match cmd {
        Tenants::Create {
            name,
            id,
            tier,
            grantable_scopes,
            metadata,
            credits_low_threshold,
            remote,
        } => {
            let body = CreateTenant {
                id,
                name,
                tier,
                grantable_scopes: (!grantable_scopes.is_empty()).then_some(grantable_scopes),
                metadata,
                credits_low_threshold,
            };
            let client = connect(&remote)?;
            let t = answer(client.create_tenant(&body)).await?;
            print(remote.output(), &t)
        }
        Tenants::Get { id, remote } => {
            let client = connect(&remote)?;
            let t = answer(client.get_tenant(&id)).await?;
            print(remote.output(), &t)
        }
        Tenants::Update {
            id,
            name,
            tier,
            clear_tier,
            grantable_scopes,
            clear_grantable_scopes,
            metadata,
            credits_low_threshold,
            clear_credits_low_threshold,
            remote,
        } => {
            let body = UpdateTenant {
                name,
                tier: if clear_tier {
                    Some(None)
                } else {
                    tier.map(Some)
                },
                grantable_scopes: if clear_grantable_scopes {
                    Some(None)
                } else {
                    (!grantable_scopes.is_empty()).then_some(Some(grantable_scopes))
                },
                metadata,
                credits_low_threshold: if clear_credits_low_threshold {
                    Some(None)
                } else {
                    credits_low_threshold.map(Some)
                },
            };
            let client = connect(&remote)?;
            let t = answer(client.update_tenant(&id, &body)).await?;
            print(remote.output(), &t)
        }
        Tenants::List { paging, remote } => {
            let client = connect(&remote)?;
            let q = ListTenants {
                limit: paging.limit,
                cursor: paging.cursor.clone(),
            };
            let page = listing(
                &paging,
                client.list_tenants(&q),
                client.list_tenants_all(&q, ALL_PAGES),
            )
            .await?;
            print_page(remote.output(), &page)
        }
    }
}
