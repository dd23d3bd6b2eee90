//! `keyward webhooks create|list|show|update|delete|rotate-secret|test|
//! deliveries|delivery|redeliver`: the endpoints keyward signs and sends
//! events to (Standard Webhooks v1), and each endpoint's delivery log.
//!
//! An endpoint's signing secret (`whsec_…`) leaves the server only in the
//! answers of `create` and `rotate-secret`, so those two print it, labelled,
//! this once; every other command prints the endpoint without it.

use std::future::Future;

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use keyward_client::ClientError;
use keyward_wire::{
    AttemptView, CreateEndpoint, DeliveryDetail, DeliveryView, EndpointView, EndpointWithSecret,
    EventView, ListDeliveries, ListEndpoints, RotateEndpointSecret, UpdateEndpoint,
};
use zeroize::Zeroize;

use super::output::{self, columns, compact, fields, list, opt, print, print_page, Output};
use super::output::{Render, Row};
use super::{answer, connect, listing, Paging, Remote, ServerUrl, ALL_PAGES};

/// `--output` of the commands that show a signing secret.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SecretOutput {
    /// The secret first and labelled, then the endpoint, for people.
    Table,
    /// The API's JSON body, pretty; the secret is its `secret` member.
    Json,
    /// Only the endpoint's id. The secret is not printed: use `secret` or
    /// `json` to keep it.
    Id,
    /// Only the secret, on one line (e.g. to store it straight away).
    Secret,
}

/// How to print an endpoint with its secret.
#[derive(Args, Clone, Debug)]
pub(crate) struct SecretFormat {
    /// How to print the endpoint: `table` (the default on a terminal; the
    /// secret first), `json` (the default when stdout is not a terminal;
    /// the secret is `.secret`), `id` (only the endpoint id, no secret) or
    /// `secret` (only the secret). The secret is shown only this once.
    #[arg(long, short = 'o', value_enum, value_name = "FORMAT")]
    output: Option<SecretOutput>,
}

/// Where the server is, for the commands whose `--url` is the endpoint's:
/// the server's URL must not be taken for the endpoint's, nor the other
/// way round (that would send the management key to the endpoint).
#[derive(Args, Clone, Debug)]
pub(crate) struct ServerBesideEndpoint {
    /// Base URL of the running keyward to call (`--url` is the endpoint's).
    #[arg(
        long = "server-url",
        env = "KEYWARD_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    server_url: String,
}

impl ServerBesideEndpoint {
    fn remote(&self, output: Option<Output>) -> Remote {
        Remote {
            server: ServerUrl {
                url: self.server_url.clone(),
            },
            output,
        }
    }
}

/// Help of `create` and `update`, whose `--url` is the endpoint's.
const ENV_HELP_BESIDE_ENDPOINT: &str = "\
Environment:
  KEYWARD_ROOT_KEY  The key to call the API with: an operator root key (from
                    `keyward root-keys create`) or a key holding the keyward:*
                    scopes the command needs. Read only from the environment,
                    never from the command line.
  KEYWARD_URL       The server's base URL (same as --server-url; here --url
                    is the endpoint's).";

/// [`super::with_env_help`], saying for `create` and `update` that the
/// server's URL is `--server-url` there.
pub(crate) fn with_env_help(cmd: clap::Command) -> clap::Command {
    super::with_env_help(cmd)
        .mut_subcommand("create", |c| c.after_help(ENV_HELP_BESIDE_ENDPOINT))
        .mut_subcommand("update", |c| c.after_help(ENV_HELP_BESIDE_ENDPOINT))
}

/// Awaits the call that issues a secret and prints its answer; the secret
/// is wiped afterwards (and the client wipes the answer's bytes where it
/// can).
async fn issue(
    format: &SecretFormat,
    call: impl Future<Output = Result<EndpointWithSecret, ClientError>>,
) -> Result<EndpointView> {
    let mut issued = answer(call).await?;
    let printed = match format.output {
        Some(SecretOutput::Secret) => {
            println!("{}", issued.secret);
            Ok(())
        }
        Some(SecretOutput::Table) => print(Output::Table, &issued),
        Some(SecretOutput::Json) => print(Output::Json, &issued),
        Some(SecretOutput::Id) => print(Output::Id, &issued),
        None => print(output::resolve(None), &issued),
    };
    issued.secret.zeroize();
    printed.map(|()| issued.endpoint)
}

#[derive(Subcommand, Debug)]
pub(crate) enum Webhooks {
    /// Create an endpoint that receives signed events. Its signing secret
    /// (`whsec_…`) is shown only this once: first in a table, as `.secret`
    /// in JSON, or alone with `--output secret`.
    Create {
        /// The endpoint's URL, where events are POSTed: `https://…` (or
        /// `http://`). Loopback, private and link-local addresses are
        /// refused unless the deployment sets
        /// `webhooks.allow_private_addresses`. (The server's URL is
        /// `--server-url` here.)
        #[arg(long)]
        url: String,
        /// The event types it receives, comma-separated or repeated: exact
        /// types (`key.revoked`), `prefix.*` patterns (`vox.call.*`) or `*`.
        #[arg(
            long,
            value_name = "TYPES",
            value_delimiter = ',',
            required = true,
            num_args = 1
        )]
        events: Vec<String>,
        /// The tenant whose events it receives (ten_…). A root key without
        /// it creates an operator-wide endpoint (every tenant's events); a
        /// tenant's own key creates endpoints of its tenant.
        #[arg(long, value_name = "TENANT_ID")]
        tenant: Option<String>,
        /// What the endpoint is for (free text).
        #[arg(long)]
        description: Option<String>,
        /// Create it disabled (enable it later with `webhooks update --enable`).
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        server: ServerBesideEndpoint,
        #[command(flatten)]
        format: SecretFormat,
    },
    /// List endpoints, newest first (never their secrets).
    List {
        /// Only this tenant's endpoints (root keys; a tenant key sees its own).
        #[arg(long, value_name = "TENANT_ID")]
        tenant: Option<String>,
        #[command(flatten)]
        paging: Paging,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show an endpoint (never its secret).
    Show {
        /// The endpoint's id, e.g. whe_….
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Change an endpoint; what is not given stays as it is.
    Update {
        /// The endpoint's id, e.g. whe_….
        id: String,
        /// The endpoint's new URL (checked as at `create`).
        #[arg(long)]
        url: Option<String>,
        /// Replace the event types with these, comma-separated or repeated.
        #[arg(long, value_name = "TYPES", value_delimiter = ',', num_args = 1)]
        events: Vec<String>,
        /// A new description (`""` clears it).
        #[arg(long)]
        description: Option<String>,
        /// Enable the endpoint: deliveries are sent again.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Disable the endpoint: nothing is sent to it until enabled again.
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        server: ServerBesideEndpoint,
        /// How to print the answer: `table` for people (the default on a
        /// terminal), `json` (the default when stdout is not a terminal), or
        /// `id` (only the id, for scripts).
        #[arg(long, short = 'o', value_enum, value_name = "FORMAT")]
        output: Option<Output>,
    },
    /// Delete an endpoint; its pending deliveries are cancelled.
    Delete {
        /// The endpoint's id, e.g. whe_….
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Give an endpoint a new signing secret, shown only this once. The old
    /// one keeps signing (both signatures are sent) for the overlap, so the
    /// receiver can switch without dropping a delivery.
    RotateSecret {
        /// The endpoint's id, e.g. whe_….
        id: String,
        /// Seconds the old secret keeps signing, at most 604800 (7 days);
        /// default: the deployment's `webhooks.rotation_overlap_seconds`.
        #[arg(long, value_name = "SECONDS")]
        overlap_seconds: Option<u64>,
        #[command(flatten)]
        server: ServerUrl,
        #[command(flatten)]
        format: SecretFormat,
    },
    /// Send a `webhook.test` event to this endpoint only; its delivery shows
    /// in `webhooks deliveries`.
    Test {
        /// The endpoint's id, e.g. whe_….
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// An endpoint's deliveries, newest first: each event, its status and
    /// attempts so far.
    Deliveries {
        /// The endpoint's id, e.g. whe_….
        id: String,
        #[command(flatten)]
        paging: Paging,
        #[command(flatten)]
        remote: Remote,
    },
    /// One delivery: its event and every attempt (status, latency, error,
    /// the answer's first bytes).
    Delivery {
        /// The endpoint's id, e.g. whe_….
        id: String,
        /// The event's id, e.g. msg_… (the `webhook-id` header).
        event_id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Send a delivery again now, with a fresh retry schedule.
    Redeliver {
        /// The endpoint's id, e.g. whe_….
        id: String,
        /// The event's id, e.g. msg_….
        event_id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

pub(crate) async fn run(cmd: Webhooks) -> Result<()> {
    match cmd {
        Webhooks::Create {
            url,
            events,
            tenant,
            description,
            disabled,
            server,
            format,
        } => {
            let body = CreateEndpoint {
                tenant_id: tenant,
                url,
                description,
                event_types: events,
                enabled: disabled.then_some(false),
            };
            let client = connect(&server.remote(None))?;
            issue(&format, client.create_webhook(&body)).await?;
            Ok(())
        }
        Webhooks::List {
            tenant,
            paging,
            remote,
        } => {
            let client = connect(&remote)?;
            let q = ListEndpoints {
                tenant_id: tenant,
                limit: paging.limit,
                cursor: paging.cursor.clone(),
            };
            let page = listing(
                &paging,
                client.list_webhooks(&q),
                client.list_webhooks_all(&q, ALL_PAGES),
            )
            .await?;
            print_page(remote.output(), &page)
        }
        Webhooks::Show { id, remote } => {
            let client = connect(&remote)?;
            let e = answer(client.get_webhook(&id)).await?;
            print(remote.output(), &e)
        }
        Webhooks::Update {
            id,
            url,
            events,
            description,
            enable,
            disable,
            server,
            output,
        } => {
            let remote = server.remote(output);
            let body = UpdateEndpoint {
                url,
                description,
                event_types: (!events.is_empty()).then_some(events),
                enabled: match (enable, disable) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
            };
            if body == UpdateEndpoint::default() {
                bail!("nothing to change: give at least one of the options (see --help)");
            }
            let client = connect(&remote)?;
            let e = answer(client.update_webhook(&id, &body)).await?;
            print(remote.output(), &e)
        }
        Webhooks::Delete { id, remote } => {
            let client = connect(&remote)?;
            answer(client.delete_webhook(&id)).await?;
            match remote.output() {
                Output::Id => println!("{id}"),
                Output::Json => println!(
                    "{}",
                    output::pretty(&serde_json::json!({ "id": id, "deleted": true }))?
                ),
                Output::Table => println!("Deleted webhook endpoint {id}."),
            }
            Ok(())
        }
        Webhooks::RotateSecret {
            id,
            overlap_seconds,
            server,
            format,
        } => {
            let remote = Remote {
                server,
                output: None,
            };
            let client = connect(&remote)?;
            let rotate = RotateEndpointSecret { overlap_seconds };
            let endpoint = issue(&format, client.rotate_webhook_secret(&id, &rotate)).await?;
            // On stderr, so that stdout stays what --output asked for.
            match &endpoint.previous_secret_expires_at {
                Some(until) => eprintln!(
                    "Rotated the signing secret of {id}: the old secret also signs until {until}."
                ),
                None => {
                    eprintln!("Rotated the signing secret of {id}: the old secret no longer signs.")
                }
            }
            Ok(())
        }
        Webhooks::Test { id, remote } => {
            let client = connect(&remote)?;
            let event = answer(client.test_webhook(&id)).await?;
            print(remote.output(), &event)?;
            eprintln!(
                "Queued {} for {id}; follow it with `keyward webhooks delivery {id} {}`.",
                event.event_type, event.id
            );
            Ok(())
        }
        Webhooks::Deliveries { id, paging, remote } => {
            let client = connect(&remote)?;
            let q = ListDeliveries {
                limit: paging.limit,
                cursor: paging.cursor.clone(),
            };
            let page = listing(
                &paging,
                client.list_deliveries(&id, &q),
                client.list_deliveries_all(&id, &q, ALL_PAGES),
            )
            .await?;
            print_page(remote.output(), &page)
        }
        Webhooks::Delivery {
            id,
            event_id,
            remote,
        } => {
            let client = connect(&remote)?;
            let detail = answer(client.get_delivery(&id, &event_id)).await?;
            print(remote.output(), &detail)
        }
        Webhooks::Redeliver {
            id,
            event_id,
            remote,
        } => {
            let client = connect(&remote)?;
            let d = answer(client.redeliver(&id, &event_id)).await?;
            print(remote.output(), &d)
        }
    }
}

/// Whose events an endpoint receives.
fn scope_of(e: &EndpointView) -> String {
    e.tenant_id
        .clone()
        .unwrap_or_else(|| "(operator-wide)".to_owned())
}

fn state_of(e: &EndpointView) -> String {
    match (&e.failing_since, e.enabled) {
        (_, false) => "disabled".to_owned(),
        (Some(since), true) => format!("failing since {since}"),
        (None, true) => "enabled".to_owned(),
    }
}

fn endpoint_fields(e: &EndpointView) -> Vec<(&'static str, String)> {
    vec![
        ("id", e.id.clone()),
        ("tenant", scope_of(e)),
        ("url", e.url.clone()),
        ("description", e.description.clone()),
        ("events", list(&e.event_types)),
        ("state", state_of(e)),
        ("old secret until", opt(&e.previous_secret_expires_at)),
        ("created", e.created_at.clone()),
        ("updated", e.updated_at.clone()),
    ]
}

impl Render for EndpointView {
    fn ids(&self) -> Vec<String> {
        vec![self.id.clone()]
    }

    fn table(&self) -> String {
        fields(&endpoint_fields(self))
    }
}

impl Row for EndpointView {
    const HEADERS: &'static [&'static str] = &["ID", "TENANT", "URL", "EVENTS", "STATE"];

    fn id(&self) -> String {
        self.id.clone()
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            scope_of(self),
            self.url.clone(),
            list(&self.event_types),
            state_of(self),
        ]
    }
}

/// The secret first and labelled, then the endpoint.
impl Render for EndpointWithSecret {
    fn ids(&self) -> Vec<String> {
        vec![self.endpoint.id.clone()]
    }

    fn table(&self) -> String {
        format!(
            "Secret: {}\n        (shown only this once: store it now; verify each delivery's webhook-signature with it)\n\n{}",
            self.secret,
            fields(&endpoint_fields(&self.endpoint))
        )
    }
}

/// A delivery's last answer: the status, else that it had none.
fn last_answer(d: &DeliveryView) -> String {
    match (d.last_status, &d.last_error) {
        (Some(s), _) => s.to_string(),
        (None, Some(_)) => "no answer".to_owned(),
        (None, None) => String::new(),
    }
}

fn delivery_fields(d: &DeliveryView) -> Vec<(&'static str, String)> {
    vec![
        ("event", d.event_id.clone()),
        ("type", d.event_type.clone()),
        ("status", d.status.clone()),
        ("attempts", d.attempts.to_string()),
        ("next attempt", opt(&d.next_attempt_at)),
        (
            "last status",
            d.last_status.map(|s| s.to_string()).unwrap_or_default(),
        ),
        ("last error", opt(&d.last_error)),
        ("created", d.created_at.clone()),
        ("updated", d.updated_at.clone()),
    ]
}

impl Render for DeliveryView {
    fn ids(&self) -> Vec<String> {
        vec![self.event_id.clone()]
    }

    fn table(&self) -> String {
        fields(&delivery_fields(self))
    }
}

impl Row for DeliveryView {
    const HEADERS: &'static [&'static str] = &[
        "CREATED", "EVENT", "TYPE", "STATUS", "ATTEMPTS", "LAST", "NEXT",
    ];

    fn id(&self) -> String {
        self.event_id.clone()
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.created_at.clone(),
            self.event_id.clone(),
            self.event_type.clone(),
            self.status.clone(),
            self.attempts.to_string(),
            last_answer(self),
            opt(&self.next_attempt_at),
        ]
    }
}

impl Render for EventView {
    fn ids(&self) -> Vec<String> {
        vec![self.id.clone()]
    }

    fn table(&self) -> String {
        fields(&[
            ("id", self.id.clone()),
            ("type", self.event_type.clone()),
            ("tenant", opt(&self.tenant_id)),
            ("timestamp", self.timestamp.clone()),
            ("data", compact(&self.data)),
        ])
    }
}

/// A cell that stays on one line and within `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn attempt_cells(a: &AttemptView) -> Vec<String> {
    vec![
        a.at.clone(),
        a.status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".to_owned()),
        if a.ok { "yes" } else { "no" }.to_owned(),
        format!("{} ms", a.latency_ms),
        a.node.clone(),
        one_line(a.error.as_deref().unwrap_or(&a.response), 60),
    ]
}

/// The delivery and its event, then its attempts, oldest first.
impl Render for DeliveryDetail {
    fn ids(&self) -> Vec<String> {
        vec![self.delivery.event_id.clone()]
    }

    fn table(&self) -> String {
        let mut rows = delivery_fields(&self.delivery);
        rows.push(("tenant", opt(&self.event.tenant_id)));
        rows.push(("data", compact(&self.event.data)));
        let attempts = if self.attempts.is_empty() {
            "Attempts: none yet.".to_owned()
        } else {
            format!(
                "Attempts:\n{}",
                columns(
                    &["AT", "STATUS", "OK", "LATENCY", "NODE", "ERROR OR ANSWER"],
                    self.attempts.iter().map(attempt_cells).collect(),
                )
            )
        };
        format!("{}\n\n{attempts}", fields(&rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_answer_is_one_short_line() {
        assert_eq!(one_line("a\n  b", 10), "a b");
        assert_eq!(one_line("ééééé", 3), "éé…");
    }

    #[test]
    fn the_secret_leads_the_table_and_only_there() {
        let endpoint = EndpointView {
            id: "whe_1".into(),
            tenant_id: None,
            url: "https://example.com/hook".into(),
            description: String::new(),
            event_types: vec!["key.*".into(), "vox.call.*".into()],
            enabled: true,
            failing_since: None,
            previous_secret_expires_at: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        };
        let issued = EndpointWithSecret {
            secret: "whsec_c2VjcmV0".into(),
            endpoint: endpoint.clone(),
        };
        let table = issued.table();
        assert!(table.starts_with("Secret: whsec_c2VjcmV0\n"), "{table}");
        assert!(
            table.contains("events            key.*, vox.call.*"),
            "{table}"
        );
        assert!(table.contains("(operator-wide)"), "{table}");
        assert_eq!(issued.ids(), vec!["whe_1".to_owned()]);
        assert!(!endpoint.table().contains("whsec_"));
    }
}
