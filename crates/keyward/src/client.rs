//! The client commands: `tenants`, `keys`, `root-keys list|revoke`,
//! `audit`, `credits`, `webhooks`, `events` and `alerts` call a running
//! keyward's management API with the key in `KEYWARD_ROOT_KEY`, posting and
//! reading the `keyward_wire` types.
//!
//! Every client command takes [`Remote`] (`--url`, `--output`); lists take
//! [`Paging`] (`--limit`, `--cursor`, `--all`). [`output`] prints an answer
//! as a table for people, JSON for programs, or just its ids.

pub(crate) mod alerts;
pub(crate) mod audit;
pub(crate) mod credits;
pub(crate) mod events;
pub(crate) mod keys;
pub(crate) mod output;
pub(crate) mod root_keys;
pub(crate) mod tenants;
pub(crate) mod webhooks;

use std::io::IsTerminal;

use anyhow::{bail, Context, Result};
use clap::Args;
use keyward_wire::{ErrorBody, Page};
use serde::de::DeserializeOwned;
use serde::Serialize;

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

/// The query of a `GET` that has none.
pub(crate) const NO_QUERY: &[(&str, &str)] = &[];

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

/// A client of a running keyward's management API, with the key in
/// `KEYWARD_ROOT_KEY`: it posts wire request types and reads wire responses.
pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    key: zeroize::Zeroizing<String>,
}

impl Client {
    pub(crate) fn new(remote: &Remote) -> Result<Client> {
        let key = std::env::var("KEYWARD_ROOT_KEY").map_err(|_| {
            anyhow::anyhow!(
                "set KEYWARD_ROOT_KEY to an operator root key (`keyward root-keys create`) or a management key"
            )
        })?;
        let key = zeroize::Zeroizing::new(key.trim().to_owned());
        if key.is_empty() {
            bail!("KEYWARD_ROOT_KEY is empty: set it to an operator root key (`keyward root-keys create`) or a management key");
        }
        Ok(Client {
            http: reqwest::Client::new(),
            url: remote.server.url.clone(),
            key,
        })
    }

    /// `GET path?query`.
    pub(crate) async fn get<R: DeserializeOwned>(
        &self,
        path: &str,
        query: &impl Serialize,
    ) -> Result<R> {
        let req = self.request(reqwest::Method::GET, path).query(query);
        let text = self.finish(req).await?;
        parse(&text)
    }

    /// `method path` with an optional JSON body.
    pub(crate) async fn send<R: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<R> {
        let text = self.send_text(method, path, body, &[]).await?;
        parse(&text)
    }

    /// `method path` with an optional JSON body and extra headers; the
    /// success body as text (empty for a 204).
    pub(crate) async fn send_text(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
        headers: &[(&str, &str)],
    ) -> Result<String> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.finish(req).await
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{}", self.url.trim_end_matches('/'), path);
        self.http
            .request(method, url)
            .bearer_auth(self.key.as_str())
    }

    /// The body of a success; an error's body (a problem or an envelope,
    /// pretty) goes to stderr and the status becomes the error.
    async fn finish(&self, req: reqwest::RequestBuilder) -> Result<String> {
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach keyward at {}", self.url))?;
        let status = res.status();
        let text = res.text().await?;
        if status.is_success() {
            return Ok(text);
        }
        let pretty = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => output::pretty(&e).ok(),
            // Not keyward's (a proxy's, say): as it came, pretty if JSON.
            Err(_) => serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok()),
        }
        .unwrap_or(text);
        eprintln!("{pretty}");
        bail!("keyward answered {status}")
    }

    /// One page of a list, or with `--all` every page joined into one.
    pub(crate) async fn list<T: DeserializeOwned, Q: Serialize>(
        &self,
        path: &str,
        paging: &Paging,
        query: impl Fn(Option<u32>, Option<String>) -> Q,
    ) -> Result<Page<T>> {
        let mut page: Page<T> = self
            .get(path, &query(paging.limit, paging.cursor.clone()))
            .await?;
        if !paging.all {
            return Ok(page);
        }
        let mut items = std::mem::take(&mut page.data);
        let mut cursor = page.next_cursor.take();
        while let Some(c) = cursor {
            let mut next: Page<T> = self
                .get(path, &query(paging.limit, Some(c.clone())))
                .await?;
            if next.next_cursor.as_deref() == Some(c.as_str()) {
                bail!("keyward gave the same cursor twice; stopping the listing");
            }
            items.append(&mut next.data);
            cursor = next.next_cursor;
        }
        Ok(Page {
            data: items,
            next_cursor: None,
            has_more: false,
        })
    }
}

fn parse<R: DeserializeOwned>(text: &str) -> Result<R> {
    serde_json::from_str(text).context("keyward answered with an unexpected body")
}

/// A path segment (an id) with the characters a URL path cannot hold as
/// they are percent-encoded.
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
