//! `keyward events send`: hands an event of your API (a call completed, an
//! invoice paid) to keyward, which signs it and delivers it to the tenant's
//! webhook endpoints subscribed to its type (`POST /v1/events`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::{ArgGroup, Args, Subcommand};
use keyward_wire::{PublishEvent, PublishedEvent};

use super::output::{fields, opt, print, Render};
use super::{answer, connect, json_object, Remote};

#[derive(Subcommand, Debug)]
pub(crate) enum Events {
    /// Send an event to the tenant's endpoints subscribed to its type
    /// (`keyward:events:write`).
    Send(Send),
}

/// `keyward events send`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("payload").required(true).args(["data", "data_file"])))]
pub(crate) struct Send {
    /// The tenant whose endpoints receive it (ten_…). Required with a root
    /// key; a tenant's own key sends for its tenant.
    #[arg(long, value_name = "TENANT_ID")]
    tenant: Option<String>,
    /// The event's type: lowercase dot-separated segments, e.g.
    /// vox.call.completed. keyward's own prefixes (key., tenant., credits.,
    /// alert., webhook.) are refused.
    #[arg(long = "type", value_name = "TYPE")]
    event_type: String,
    /// The event's data, a JSON object (at most 64 KiB), e.g.
    /// '{"call_id":"c_1"}'.
    #[arg(long, value_name = "JSON", value_parser = json_object)]
    data: Option<serde_json::Value>,
    /// Read the data (a JSON object) from this file, or from stdin with `-`.
    #[arg(long, value_name = "FILE")]
    data_file: Option<PathBuf>,
    /// Makes a retry safe: the same key (per tenant) records the event once
    /// and answers with that event (1-255 visible ASCII characters).
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    #[command(flatten)]
    remote: Remote,
}

pub(crate) async fn run(cmd: Events) -> Result<()> {
    match cmd {
        Events::Send(args) => send(args).await,
    }
}

async fn send(args: Send) -> Result<()> {
    let data = match (args.data, &args.data_file) {
        (Some(d), _) => d,
        (None, Some(path)) => read_data(path)?,
        // clap requires one of the two.
        (None, None) => return Err(anyhow!("give the event's data: --data or --data-file")),
    };
    let body = PublishEvent {
        tenant_id: args.tenant,
        event_type: args.event_type,
        data,
        idempotency_key: args.idempotency_key,
    };
    let client = connect(&args.remote)?;
    let published = answer(client.publish_event(&body)).await?;
    print(args.remote.output(), &published)?;
    if published.duplicate {
        // On stderr, so that stdout stays what --output asked for.
        eprintln!(
            "The idempotency key was used already: {} is the event it recorded; nothing new was sent.",
            published.id
        );
    }
    Ok(())
}

/// A JSON object from a file, or from stdin for `-`.
fn read_data(path: &Path) -> Result<serde_json::Value> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read the data from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the data from {}", path.display()))?
    };
    json_object(&text).map_err(|e| anyhow!("the data in {} {e}", path.display()))
}

impl Render for PublishedEvent {
    fn ids(&self) -> Vec<String> {
        vec![self.id.clone()]
    }

    fn table(&self) -> String {
        fields(&[
            ("id", self.id.clone()),
            ("type", self.event_type.clone()),
            ("tenant", opt(&self.tenant_id)),
            ("deliveries", format!("{} endpoint(s)", self.deliveries)),
            (
                "duplicate",
                if self.duplicate { "yes" } else { "no" }.to_owned(),
            ),
        ])
    }
}
