//! The client commands: `tenants`, `keys`, `root-keys list|revoke`,
//! `audit`, `credits`, `webhooks`, `events` and `alerts` call a running
//! keyward's management API with the key in `KEYWARD_ROOT_KEY`, through
//! `keyward_client` (the typed client of the `keyward_wire` types).
//!
//! Every client command takes [`Remote`] (`--url`, `--output`) and
//! [`connect`]s; lists take [`Paging`] (`--limit`, `--cursor`, `--all`)
//! and go through [`listing`]. A failed call is reported by [`failed`]:
//! keyward's error body on stderr, its status as the error. [`output`]
//! prints an answer as a table for people, JSON for programs, or just its
//! ids.

pub(crate) mod alerts;
pub(crate) mod audit;
pub(crate) mod credits;
pub(crate) mod events;
pub(crate) mod keys;
pub(crate) mod output;
pub(crate) mod root_keys;
pub(crate) mod tenants;
pub(crate) mod webhooks;

use std::future::Future;
use std::io::IsTerminal;

use anyhow::{bail, Result};
use clap::Args;
pub(crate) use keyward_client::Client;
use keyward_client::ClientError;

pub(crate) use output::Output;

/// Appended to the help of every client command.
pub(crate) const ENV_HELP: &str = "\
Environment:
  KEYWARD_ROOT_KEY  The key to call the API with: an operator root key (from
                    `keyward root-keys create`) or a key holding the keyward:*
                    scopes the command needs. Read only from the environment,
                    never from the command line.
  KEYWARD_URL       The server's base URL (same as --url).";

/// Adds [`ENV_HELP`] to the help of `cmd` and of every command under it.
pub(crate) fn with_env_help(cmd: clap::Command) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    names.iter().fold(cmd.after_help(ENV_HELP), |cmd, name| {
        cmd.mut_subcommand(name, with_env_help)
    })
}

/// Where the server is.
#[derive(Args, Clone, Debug)]
pub(crate) struct ServerUrl {
    /// Base URL of the running keyward to call.
    #[arg(
        long,
        env = "KEYWARD_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub(crate) url: String,
}

/// Where the server is and how to print its answer.
#[derive(Args, Clone, Debug)]
pub(crate) struct Remote {
    #[command(flatten)]
    pub(crate) server: ServerUrl,
    /// How to print the answer: `table` for people (the default on a
    /// terminal), `json` (the default when stdout is not a terminal), or
    /// `id` (only the id, one a line, for scripts).
    #[arg(long, short = 'o', value_enum, value_name = "FORMAT")]
    pub(crate) output: Option<Output>,
}

impl Remote {
    pub(crate) fn output(&self) -> Output {
        output::resolve(self.output)
    }
}

/// `--limit`, `--cursor`, `--all` of a list command.
#[derive(Args, Clone, Debug)]
pub(crate) struct Paging {
    /// Items per page, 1 to 100 (the server's default is 20).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) limit: Option<u32>,
    /// Start at this page: the `next_cursor` an earlier page gave (a table
    /// prints it on stderr when there are more).
    #[arg(long, value_name = "CURSOR", conflicts_with = "all")]
    pub(crate) cursor: Option<String>,
    /// Fetch every page, following `next_cursor` to the end (`--limit` sets
    /// the size of each request).
    #[arg(long)]
    pub(crate) all: bool,
}

/// How many pages `--all` may fetch: all of them. The user asked for the
/// whole list; the walk ends at its last page, or with an error if keyward
/// answers a cursor with itself.
pub(crate) const ALL_PAGES: usize = usize::MAX;

/// A client of the running keyward at `--url`, with the key in
/// `KEYWARD_ROOT_KEY`.
pub(crate) fn connect(remote: &Remote) -> Result<Client> {
    let key = std::env::var("KEYWARD_ROOT_KEY").map_err(|_| {
        anyhow::anyhow!(
            "set KEYWARD_ROOT_KEY to an operator root key (`keyward root-keys create`) or a management key"
        )
    })?;
    let key = zeroize::Zeroizing::new(key.trim().to_owned());
    if key.is_empty() {
        bail!("KEYWARD_ROOT_KEY is empty: set it to an operator root key (`keyward root-keys create`) or a management key");
    }
    Ok(Client::builder(remote.server.url.as_str())
        .key(key)
        .build()?)
}

/// A failed call as the CLI reports it: keyward's error body (a problem or
/// an envelope, pretty) on stderr, and its status as the error; anything
/// else (no connection, a timeout, an unexpected body) as it is.
pub(crate) fn failed(e: ClientError) -> anyhow::Error {
    let (status, pretty) = match e {
        ClientError::Problem { status, problem } => {
            let pretty = output::pretty(&problem.body).unwrap_or(problem.detail);
            (status, pretty)
        }
        // Not keyward's (a proxy's, say): as it came, pretty if JSON.
        ClientError::Status { status, body } => {
            let pretty = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(body);
            (status, pretty)
        }
        other => return other.into(),
    };
    eprintln!("{pretty}");
    anyhow::anyhow!("keyward answered {status}")
}

/// The answer of a call, or its failure reported by [`failed`].
pub(crate) async fn answer<T>(call: impl Future<Output = Result<T, ClientError>>) -> Result<T> {
    call.await.map_err(failed)
}

/// A list: one page (`one`), or with `--all` every page joined into one
/// (`all`, asked for [`ALL_PAGES`]). Only the one chosen is sent.
pub(crate) async fn listing<P>(
    paging: &Paging,
    one: impl Future<Output = Result<P, ClientError>>,
    all: impl Future<Output = Result<P, ClientError>>,
) -> Result<P> {
    if paging.all {
        answer(all).await
    } else {
        answer(one).await
    }
}

/// A JSON object given on the command line (`--metadata '{"plan":"pro"}'`).
pub(crate) fn json_object(text: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(_) => Err("must be a JSON object, e.g. '{\"plan\":\"pro\"}'".to_owned()),
        Err(e) => Err(format!("is not JSON: {e}")),
    }
}

/// Whether stdin is a terminal (a prompt is possible).
pub(crate) fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}
