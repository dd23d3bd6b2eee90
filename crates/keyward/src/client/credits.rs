//! `keyward credits balance|grant|adjust|ledger|refill`: a tenant's
//! prepaid credits. Changes need an operator root key with
//! `keyward:credits:write`.

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use keyward_wire::{ChangeCredits, ListLedger, RefillMode, RefillPeriod, RefillSpec};

use super::output::{print, print_page};
use super::{answer, connect, listing, Paging, Remote, ALL_PAGES};

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

pub(crate) async fn run(cmd: Credits) -> Result<()> {
    match cmd {
        Credits::Balance { tenant, remote } => {
            let client = connect(&remote)?;
            let view = answer(client.get_credits(&tenant)).await?;
            print(remote.output(), &view)
        }
        Credits::Grant(c) => change("grant", c).await,
        Credits::Adjust(c) => change("adjust", c).await,
        Credits::Ledger {
            tenant,
            paging,
            remote,
        } => {
            let client = connect(&remote)?;
            let q = ListLedger {
                limit: paging.limit,
                cursor: paging.cursor.clone(),
            };
            let page = listing(
                &paging,
                client.list_ledger(&tenant, &q),
                client.list_ledger_all(&tenant, &q, ALL_PAGES),
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
            let client = connect(&remote)?;
            let view = answer(client.set_refill(&tenant, &spec)).await?;
            print(remote.output(), &view)
        }
        Credits::Refill(Refill::Clear { tenant, remote }) => {
            let client = connect(&remote)?;
            let view = answer(client.clear_refill(&tenant)).await?;
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
    let client = connect(&c.remote)?;
    // Without --idempotency-key the client makes a key for this run, so its
    // own retries cannot change the balance twice.
    let entry =
        answer(client.change_credits(&c.tenant, &body, c.idempotency_key.as_deref())).await?;
    print(c.remote.output(), &entry)
}
