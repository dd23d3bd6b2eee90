//! `keyward credits balance|grant|adjust|ledger|refill`: a tenant's
//! prepaid credits. Changes need an operator root key with
//! `keyward:credits:write`.

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use keyward_wire::{
    ChangeCredits, CreditsView, LedgerEntryView, ListLedger, RefillMode, RefillPeriod, RefillSpec,
};
use reqwest::Method;

use super::output::{print, print_page};
use super::{segment, Client, Paging, Remote, NO_QUERY};

#[derive(Subcommand, Debug)]
pub(crate) enum Credits {
    /// Show a tenant's balance and refill schedule.
    Balance {
        /// The tenant's id, e.g. ten_….
        tenant: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Add credits to a tenant's balance (a purchase, a bonus).
    Grant(Change),
    /// Correct a tenant's balance up or down (e.g. -50); it never goes
    /// below zero.
    Adjust(Change),
    /// A tenant's credit ledger, newest first: grants, adjustments, refills
    /// and spends, each with the balance after it.
    Ledger {
        /// The tenant's id, e.g. ten_….
        tenant: String,
        #[command(flatten)]
        paging: Paging,
        #[command(flatten)]
        remote: Remote,
    },
    /// A tenant's own refill schedule (it wins over its tier's).
    #[command(subcommand)]
    Refill(Refill),
}

/// `credits grant` and `credits adjust`.
#[derive(Args, Debug)]
pub(crate) struct Change {
    /// The tenant's id, e.g. ten_….
    tenant: String,
    /// How many credits: positive for a grant, either sign for an adjustment.
    #[arg(allow_negative_numbers = true)]
    amount: i64,
    /// Why, kept in the ledger.
    #[arg(long)]
    reason: Option<String>,
    /// Makes a retry safe: the same key replays the first result instead of
    /// changing the balance twice (1-255 printable characters).
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Refill {
    /// Set the schedule; it applies at once, then at each boundary (UTC).
    Set {
        /// The tenant's id, e.g. ten_….
        tenant: String,
        /// Credits each refill sets or adds.
        #[arg(long)]
        amount: i64,
        /// How often: daily (UTC midnight) or monthly (the 1st).
        #[arg(long, value_enum)]
        every: Every,
        /// `set`: the balance becomes the amount (unused credits lapse);
        /// `add`: the amount is added.
        #[arg(long, value_enum, default_value = "set")]
        mode: Mode,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove the tenant's own schedule (its tier's applies, if any).
    Clear {
        /// The tenant's id, e.g. ten_….
        tenant: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum Every {
    /// At every UTC midnight.
    Daily,
    /// On the 1st of every month, UTC.
    Monthly,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// The balance becomes the amount; unused credits lapse.
    Set,
    /// The amount is added to the balance.
    Add,
}

fn credits_path(tenant: &str, rest: &str) -> String {
    format!("/v1/tenants/{}/credits{rest}", segment(tenant))
}

pub(crate) async fn run(cmd: Credits) -> Result<()> {
    match cmd {
        Credits::Balance { tenant, remote } => {
            let client = Client::new(&remote)?;
            let view: CreditsView = client.get(&credits_path(&tenant, ""), &NO_QUERY).await?;
            print(remote.output(), &view)
        }
        Credits::Grant(c) => change("grant", c).await,
        Credits::Adjust(c) => change("adjust", c).await,
        Credits::Ledger {
            tenant,
            paging,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let page = client
                .list::<LedgerEntryView, _>(
                    &credits_path(&tenant, "/ledger"),
                    &paging,
                    |limit, cursor| ListLedger { limit, cursor },
                )
                .await?;
            print_page(remote.output(), &page)
        }
        Credits::Refill(Refill::Set {
            tenant,
            amount,
            every,
            mode,
            remote,
        }) => {
            let spec = RefillSpec {
                amount,
                every: match every {
                    Every::Daily => RefillPeriod::Daily,
                    Every::Monthly => RefillPeriod::Monthly,
                },
                mode: match mode {
                    Mode::Set => RefillMode::Set,
                    Mode::Add => RefillMode::Add,
                },
            };
            let client = Client::new(&remote)?;
            let view: CreditsView = client
                .send(Method::PUT, &credits_path(&tenant, "/refill"), Some(&spec))
                .await?;
            print(remote.output(), &view)
        }
        Credits::Refill(Refill::Clear { tenant, remote }) => {
            let client = Client::new(&remote)?;
            let view: CreditsView = client
                .send(
                    Method::DELETE,
                    &credits_path(&tenant, "/refill"),
                    None::<&()>,
                )
                .await?;
            print(remote.output(), &view)
        }
    }
}

async fn change(kind: &str, c: Change) -> Result<()> {
    let body = ChangeCredits {
        kind: kind.to_owned(),
        amount: c.amount,
        reason: c.reason,
    };
    let client = Client::new(&c.remote)?;
    let headers: Vec<(&str, &str)> = c
        .idempotency_key
        .as_deref()
        .map(|k| ("Idempotency-Key", k))
        .into_iter()
        .collect();
    let text = client
        .send_text(
            Method::POST,
            &credits_path(&c.tenant, ""),
            Some(&body),
            &headers,
        )
        .await?;
    let entry: LedgerEntryView = serde_json::from_str(&text)?;
    print(c.remote.output(), &entry)
}
