//! `keyward keys create|get|update|delete|list|rotate|revoke|verify`.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use keyward_wire::{
    CreateKey, KeyWithSecret, ListKeys, RateLimitSpec, RevokeKey, RotateKey, UpdateKey, VerifyKey,
};
use zeroize::Zeroizing;

use super::output::{self, print, print_page, Output};
use super::{answer, connect, json_object, listing, Paging, Remote, ServerUrl, ALL_PAGES};

/// `--output` of the commands that issue a secret.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IssueOutput {
    /// The secret first and labelled, then the key, for people.
    Table,
    /// The API's JSON body, pretty; the secret is its `secret` member.
    Json,
    /// Only the new key's id. The secret is not printed: use `secret` or
    /// `json` to keep it.
    Id,
    /// Only the secret, on one line (e.g. to store it straight away).
    Secret,
}

/// Where the server is and how to print a new key and its secret.
#[derive(Args, Clone, Debug)]
pub(crate) struct IssueRemote {
    #[command(flatten)]
    server: ServerUrl,
    /// How to print the new key: `table` (the default on a terminal; the
    /// secret first), `json` (the default when stdout is not a terminal;
    /// the secret is `.secret`), `id` (only the key id, no secret) or
    /// `secret` (only the secret). The secret is shown only this once.
    #[arg(long, short = 'o', value_enum, value_name = "FORMAT")]
    output: Option<IssueOutput>,
}

impl IssueRemote {
    fn remote(&self) -> Remote {
        Remote {
            server: self.server.clone(),
            output: None,
        }
    }

    fn print(&self, issued: &KeyWithSecret) -> Result<()> {
        let o = match self.output {
            Some(IssueOutput::Secret) => {
                println!("{}", issued.secret);
                return Ok(());
            }
            Some(IssueOutput::Table) => Some(Output::Table),
            Some(IssueOutput::Json) => Some(Output::Json),
            Some(IssueOutput::Id) => Some(Output::Id),
            None => None,
        };
        print(output::resolve(o), issued)
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum Keys {
    /// Create a key for a tenant. Its secret is shown only this once: first
    /// in a table, as `.secret` in JSON, or alone with `--output secret`.
    Create {
        /// The tenant the key is for (ten_…). Required with a root key; a
        /// tenant's own key creates keys in its tenant.
        #[arg(long, value_name = "TENANT_ID")]
        tenant: Option<String>,
        /// A name unique among the tenant's live keys.
        #[arg(long)]
        name: String,
        /// One of the deployment's `keys.environments` (e.g. live, test);
        /// it picks the secret's prefix.
        #[arg(long, value_name = "ENV")]
        environment: String,
        /// A scope the key holds, from the deployment's `keys.scopes`
        /// (repeatable: --scope a --scope b).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// A client address or CIDR the key may be used from (repeatable;
        /// none: any address).
        #[arg(long = "allow-ip", value_name = "IP_OR_CIDR")]
        ip_allowlist: Vec<String>,
        /// When the key stops working, RFC 3339, e.g. 2027-01-01T00:00:00Z.
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
        /// Who the key belongs to (free text, e.g. an email).
        #[arg(long)]
        owner: Option<String>,
        /// Rate-limit tier: one of the deployment's `limits.tiers`
        /// (operators only).
        #[arg(long)]
        tier: Option<String>,
        /// The most credits this key may spend in all.
        #[arg(long, value_name = "CREDITS")]
        credit_cap: Option<i64>,
        /// The key's own rate limit instead of its tier's, as
        /// LIMIT/WINDOW_SECONDS[/BURST], e.g. 100/60 (operators only).
        #[arg(long, value_name = "LIMIT/WINDOW[/BURST]", value_parser = rate_limit)]
        rate_limit: Option<RateLimitSpec>,
        /// A sub-tenant id the key may act for through the gateway's
        /// tenant header (repeatable).
        #[arg(long = "sub-tenant", value_name = "ID")]
        sub_tenants: Vec<String>,
        /// A JSON object stored with the key, e.g. '{"team":"web"}'.
        #[arg(long, value_name = "JSON", value_parser = json_object)]
        metadata: Option<serde_json::Value>,
        /// Create it disabled (enable it later with `keys update --enable`).
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        remote: IssueRemote,
    },
    /// Show a key (never its secret).
    Get {
        /// The key's id, e.g. key_….
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Change a key; what is not given stays as it is.
    Update {
        /// The key's id, e.g. key_….
        id: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// A new owner.
        #[arg(long, conflicts_with = "clear_owner")]
        owner: Option<String>,
        /// Remove the owner.
        #[arg(long)]
        clear_owner: bool,
        /// Replace the scopes with these (repeatable).
        #[arg(long = "scope", value_name = "SCOPE", conflicts_with = "clear_scopes")]
        scopes: Vec<String>,
        /// Remove every scope.
        #[arg(long)]
        clear_scopes: bool,
        /// A new tier (operators only).
        #[arg(long, conflicts_with = "clear_tier")]
        tier: Option<String>,
        /// Remove the tier (the tenant's applies).
        #[arg(long)]
        clear_tier: bool,
        /// A new credit cap.
        #[arg(long, value_name = "CREDITS", conflicts_with = "clear_credit_cap")]
        credit_cap: Option<i64>,
        /// Remove the credit cap.
        #[arg(long)]
        clear_credit_cap: bool,
        /// A new rate limit of its own, LIMIT/WINDOW_SECONDS[/BURST], e.g.
        /// 100/60 (operators only).
        #[arg(
            long,
            value_name = "LIMIT/WINDOW[/BURST]",
            value_parser = rate_limit,
            conflicts_with = "clear_rate_limit"
        )]
        rate_limit: Option<RateLimitSpec>,
        /// Remove the key's own rate limit (its tier's applies).
        #[arg(long)]
        clear_rate_limit: bool,
        /// Replace the IP allowlist with these (repeatable).
        #[arg(
            long = "allow-ip",
            value_name = "IP_OR_CIDR",
            conflicts_with = "clear_allow_ip"
        )]
        ip_allowlist: Vec<String>,
        /// Remove the IP allowlist (any address).
        #[arg(long)]
        clear_allow_ip: bool,
        /// Replace the sub-tenants with these (repeatable).
        #[arg(
            long = "sub-tenant",
            value_name = "ID",
            conflicts_with = "clear_sub_tenants"
        )]
        sub_tenants: Vec<String>,
        /// Remove every sub-tenant.
        #[arg(long)]
        clear_sub_tenants: bool,
        /// A new expiry, RFC 3339.
        #[arg(long, value_name = "TIME", conflicts_with = "clear_expires_at")]
        expires_at: Option<String>,
        /// Remove the expiry (never expires).
        #[arg(long)]
        clear_expires_at: bool,
        /// Replace the metadata with this JSON object.
        #[arg(long, value_name = "JSON", value_parser = json_object)]
        metadata: Option<serde_json::Value>,
        /// Enable the key.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Disable the key (it is refused until enabled again).
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a key for good (revoking keeps it on record; prefer that).
    Delete {
        /// The key's id, e.g. key_….
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List tenant keys, newest first (root keys: `keyward root-keys list`).
    List {
        /// Only this tenant's keys.
        #[arg(long, value_name = "TENANT_ID")]
        tenant: Option<String>,
        /// Only keys of this environment (one of `keys.environments`).
        #[arg(long, value_name = "ENV")]
        environment: Option<String>,
        /// Only keys in this state.
        #[arg(long, value_parser = ["active", "disabled", "expired", "revoked"])]
        status: Option<String>,
        #[command(flatten)]
        paging: Paging,
        #[command(flatten)]
        remote: Remote,
    },
    /// Replace a key with a new one of the same settings. Prints the NEW
    /// key (a new id and secret); the old id stays on record.
    Rotate {
        /// The id of the key to replace, e.g. key_….
        id: String,
        /// Seconds the old secret keeps working (0, the default: it stops
        /// now; at most 30 days).
        #[arg(long, default_value_t = 0, value_name = "SECONDS")]
        grace_seconds: u64,
        #[command(flatten)]
        remote: IssueRemote,
    },
    /// Revoke a key: it stops working at once and stays on record.
    Revoke {
        /// The key's id, e.g. key_….
        id: String,
        /// Why, kept in the key and the audit log.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Verify a key as your service would.
    ///
    /// The key is read from stdin (its first line), never from the command
    /// line, so it stays out of argv and shell history; on a terminal it is
    /// asked for without echo.
    ///
    /// Exit status: 0 the key is valid; 1 it is denied (the denial code,
    /// e.g. invalid_api_key, revoked_api_key, insufficient_scope, is
    /// printed); 2 the command could not ask (no key given, usage, network
    /// or server error).
    Verify {
        /// A scope the request needs (repeatable); the key must hold all.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// The client address, checked against the key's IP allowlist.
        #[arg(long)]
        ip: Option<String>,
        /// Rate-limit tokens this request costs (default 1; 0 only reads).
        #[arg(long, value_name = "TOKENS")]
        cost: Option<u64>,
        /// Credits this request spends from the key's tenant (default 0).
        #[arg(long, value_name = "CREDITS")]
        credits: Option<i64>,
        #[command(flatten)]
        remote: Remote,
    },
}

pub(crate) async fn run(cmd: Keys) -> Result<ExitCode> {
    match cmd {
        Keys::Create {
            tenant,
            name,
            environment,
            scopes,
            ip_allowlist,
            expires_at,
            owner,
            tier,
            credit_cap,
            rate_limit,
            sub_tenants,
            metadata,
            disabled,
            remote,
        } => {
            let body = CreateKey {
                tenant_id: tenant,
                name,
                environment: Some(environment),
                scopes,
                owner,
                tier,
                credit_cap,
                rate_limit,
                ip_allowlist,
                sub_tenants,
                expires_at,
                metadata,
                enabled: disabled.then_some(false),
            };
            let client = connect(&remote.remote())?;
            let issued = answer(client.create_key(&body)).await?;
            remote.print(&issued)?;
        }
        Keys::Get { id, remote } => {
            let client = connect(&remote)?;
            let k = answer(client.get_key(&id)).await?;
            print(remote.output(), &k)?;
        }
        Keys::Update {
            id,
            name,
            owner,
            clear_owner,
            scopes,
            clear_scopes,
            tier,
            clear_tier,
            credit_cap,
            clear_credit_cap,
            rate_limit,
            clear_rate_limit,
            ip_allowlist,
            clear_allow_ip,
            sub_tenants,
            clear_sub_tenants,
            expires_at,
            clear_expires_at,
            metadata,
            enable,
            disable,
            remote,
        } => {
            let body = UpdateKey {
                name,
                owner: nullable(owner, clear_owner),
                scopes: list(scopes, clear_scopes),
                tier: nullable(tier, clear_tier),
                credit_cap: nullable(credit_cap, clear_credit_cap),
                rate_limit: nullable(rate_limit, clear_rate_limit),
                ip_allowlist: list(ip_allowlist, clear_allow_ip),
                sub_tenants: list(sub_tenants, clear_sub_tenants),
                expires_at: nullable(expires_at, clear_expires_at),
                metadata,
                enabled: match (enable, disable) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
            };
            if body == UpdateKey::default() {
                bail!("nothing to change: give at least one of the options (see --help)");
            }
            let client = connect(&remote)?;
            let k = answer(client.update_key(&id, &body)).await?;
            print(remote.output(), &k)?;
        }
        Keys::Delete { id, remote } => {
            let client = connect(&remote)?;
            answer(client.delete_key(&id)).await?;
            match remote.output() {
                Output::Id => println!("{id}"),
                Output::Json => println!(
                    "{}",
                    output::pretty(&serde_json::json!({ "id": id, "deleted": true }))?
                ),
                Output::Table => println!("Deleted key {id}."),
            }
        }
        Keys::List {
            tenant,
            environment,
            status,
            paging,
            remote,
        } => {
            let client = connect(&remote)?;
            let q = ListKeys {
                tenant_id: tenant,
                environment,
                status,
                kind: None,
                limit: paging.limit,
                cursor: paging.cursor.clone(),
            };
            let page = listing(
                &paging,
                client.list_keys(&q),
                client.list_keys_all(&q, ALL_PAGES),
            )
            .await?;
            print_page(remote.output(), &page)?;
        }
        Keys::Rotate {
            id,
            grace_seconds,
            remote,
        } => {
            let client = connect(&remote.remote())?;
            let issued = answer(client.rotate_key(&id, &RotateKey { grace_seconds })).await?;
            remote.print(&issued)?;
            // On stderr, so that stdout stays what --output asked for.
            eprintln!(
                "Rotated {id}: the new key is {}; use that id from now on.",
                issued.key.id
            );
        }
        Keys::Revoke { id, reason, remote } => {
            let client = connect(&remote)?;
            let k = answer(client.revoke_key(&id, &RevokeKey { reason })).await?;
            print(remote.output(), &k)?;
        }
        Keys::Verify {
            scopes,
            ip,
            cost,
            credits,
            remote,
        } => {
            return Ok(match verify(scopes, ip, cost, credits, &remote).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    ExitCode::from(2)
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A PATCH member: a value, `null` to clear it, or absent.
fn nullable<T>(value: Option<T>, clear: bool) -> Option<Option<T>> {
    if clear {
        Some(None)
    } else {
        value.map(Some)
    }
}

/// A PATCH list: the new items, empty to clear it, or absent.
fn list(items: Vec<String>, clear: bool) -> Option<Vec<String>> {
    if clear {
        Some(Vec::new())
    } else {
        (!items.is_empty()).then_some(items)
    }
}

/// The key from the first line of stdin, or a prompt without echo on a
/// terminal.
fn read_key() -> Result<Zeroizing<String>> {
    let key = if super::stdin_is_terminal() {
        Zeroizing::new(rpassword::prompt_password("API key to verify: ")?)
    } else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line)?;
        line
    };
    let key = Zeroizing::new(key.trim().to_owned());
    if key.is_empty() {
        bail!(
            "no key to verify: write it to stdin, e.g. printf '%s\\n' \"$KEY\" | keyward keys verify"
        );
    }
    Ok(key)
}

async fn verify(
    scopes: Vec<String>,
    ip: Option<String>,
    cost: Option<u64>,
    credits: Option<i64>,
    remote: &Remote,
) -> Result<ExitCode> {
    let key = read_key()?;
    let client = connect(remote)?;
    let mut body = VerifyKey {
        key: key.to_string(),
        scopes,
        ip,
        cost,
        credits,
    };
    let res = answer(client.verify(&body)).await;
    zeroize::Zeroize::zeroize(&mut body.key);
    let verdict = res?;
    print(remote.output(), &verdict)?;
    if verdict.valid {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("Denied: {}", verdict.code);
        Ok(ExitCode::from(1))
    }
}

/// `LIMIT/WINDOW_SECONDS[/BURST]`, e.g. `100/60` or `100/60/20`.
fn rate_limit(s: &str) -> Result<RateLimitSpec, String> {
    let parts: Vec<&str> = s.split('/').collect();
    let number = |p: &str, what: &str| {
        p.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{what} must be a whole number above 0, not {p:?}"))
    };
    match parts.as_slice() {
        [limit, window] => Ok(RateLimitSpec {
            limit: number(limit, "LIMIT")?,
            window_seconds: number(window, "WINDOW")?,
            burst: None,
        }),
        [limit, window, burst] => Ok(RateLimitSpec {
            limit: number(limit, "LIMIT")?,
            window_seconds: number(window, "WINDOW")?,
            burst: Some(number(burst, "BURST")?),
        }),
        _ => Err("expected LIMIT/WINDOW_SECONDS or LIMIT/WINDOW_SECONDS/BURST, e.g. 100/60".into()),
    }
}
