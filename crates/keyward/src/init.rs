//! `keyward init`: a new deployment's first minute. Writes a commented
//! `keyward.toml`, creates the first operator root key (and, if asked, the
//! first console operator) in the store that file names, and prints the
//! next commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use keyward_core::clock::SystemClock;
use keyward_core::secret::OsEntropy;
use keyward_server::config::{Config, Settings};

use crate::ServerArgs;

#[derive(Args)]
pub(crate) struct InitArgs {
    /// Directory to write keyward.toml in (created if missing); the SQLite
    /// store goes in its `data/` folder.
    #[arg(long, default_value = ".", value_name = "DIR")]
    dir: PathBuf,
    /// A key environment and the secret prefix of its keys, e.g.
    /// `live=acme_live_` (repeatable). Default: live=kw_live_ and
    /// test=kw_test_.
    #[arg(long = "environment", value_name = "NAME=PREFIX")]
    environments: Vec<String>,
    /// A scope of the deployment's catalog, e.g. `calls:read` (repeatable).
    /// Keys may hold only catalog scopes. Default: none yet.
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// Also create the first console operator with this email; the password
    /// is prompted for (twice, not echoed) or read with --password-stdin.
    #[arg(long, value_name = "EMAIL")]
    operator_email: Option<String>,
    /// Read the operator's password from the first line of stdin.
    #[arg(long, requires = "operator_email")]
    password_stdin: bool,
}

pub(crate) async fn run(args: InitArgs) -> Result<()> {
    let path = args.dir.join("keyward.toml");
    if path.exists() {
        bail!(
            "{} already exists; nothing was changed (check it with `keyward config check --config {}`)",
            path.display(),
            path.display()
        );
    }
    let data_dir = args.dir.join("data");
    let environments = parse_environments(&args.environments)?;
    let text = config_text(&data_dir, &environments, &args.scopes)?;
    // The file is checked as `serve` will read it before anything is
    // written: a bad prefix or scope leaves nothing behind.
    let config: Config =
        toml::from_str(&text).context("the generated keyward.toml is not valid")?;
    Settings::from_config(config)?;
    let password = match &args.operator_email {
        Some(_) => Some(crate::read_password(args.password_stdin, true)?),
        None => None,
    };
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("Wrote {}.", path.display());

    // The KEYWARD_* environment applies, as it will to `serve`.
    let server = ServerArgs {
        config: Some(path.clone()),
        listen: None,
        data_dir: None,
        store_url: None,
    };
    let settings = crate::load_settings(&server)?;
    let store = Arc::new(crate::open_store(&settings).await?);
    let created = bootstrap(&settings, &store, args.operator_email.as_deref(), password).await;
    store.close().await;
    let (record, secret) = created.with_context(|| {
        format!(
            "{} was written, but the root key was not created; create one with `keyward root-keys create --config {} --name operator`",
            path.display(),
            path.display()
        )
    })?;
    eprintln!(
        "Created root key {} ({}), which manages every tenant. Its secret, on stdout below, is shown only this once; keep it in a secret store:",
        record.id, record.start
    );
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", secret.expose())?;
        out.flush()?;
    }
    let config = shell_word(&path.display().to_string());
    let listen = settings.config.listen;
    eprintln!(
        "\nNext:\n  keyward serve --config {config}\n  export KEYWARD_ROOT_KEY=<the secret above>\n  keyward tenants create --name \"First tenant\" --url http://{listen}"
    );
    Ok(())
}

/// The root key, then the operator (whose failure does not undo the key:
/// `keyward users create --operator` can be run again).
async fn bootstrap(
    settings: &Settings,
    store: &Arc<keyward_store::SqlStore>,
    operator_email: Option<&str>,
    password: Option<zeroize::Zeroizing<String>>,
) -> Result<(keyward_store::KeyRecord, keyward_core::secret::KeySecret)> {
    let (record, secret) = keyward_server::bootstrap::create_root_key(
        settings,
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
        "operator",
        &[],
    )
    .await?;
    if let (Some(email), Some(password)) = (operator_email, password) {
        let host = keyward_server::bootstrap::host_service(
            settings,
            store.clone(),
            Arc::new(SystemClock),
            Arc::new(OsEntropy),
        );
        let user =
            keyward_console::accounts::create_user(&host, &OsEntropy, email, "", password, true)
                .await
                .with_context(|| format!("the console operator {email} was not created"))?;
        eprintln!(
            "Created console operator {} ({}); sign in at http://{}/console.",
            user.email, user.id, settings.config.listen
        );
    }
    Ok((record, secret))
}

fn parse_environments(given: &[String]) -> Result<Vec<(String, String)>> {
    if given.is_empty() {
        return Ok(vec![
            ("live".into(), "kw_live_".into()),
            ("test".into(), "kw_test_".into()),
        ]);
    }
    given
        .iter()
        .map(|e| match e.split_once('=') {
            Some((name, prefix)) if !name.is_empty() && !prefix.is_empty() => {
                Ok((name.to_owned(), prefix.to_owned()))
            }
            _ => bail!("--environment {e:?}: expected NAME=PREFIX, e.g. live=acme_live_"),
        })
        .collect()
}

/// A TOML string (quoted and escaped).
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// `keyward.toml` as `init` writes it: the chosen settings, each with what
/// it means, and the next ones an operator reaches for, commented out.
fn config_text(
    data_dir: &Path,
    environments: &[(String, String)],
    scopes: &[String],
) -> Result<String> {
    let data_dir = data_dir
        .to_str()
        .context("the directory's path is not valid UTF-8")?;
    let envs = environments
        .iter()
        .map(|(n, p)| format!("{} = {}", toml_key(n), quoted(p)))
        .collect::<Vec<_>>()
        .join(", ");
    let scopes = scopes
        .iter()
        .map(|s| quoted(s))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(format!(
        r#"# keyward configuration, written by `keyward init`.
# Every setting, its default and its meaning: `keyward config defaults`
# (or docs/configuration.md). Check this file without starting the server:
# `keyward config check --config keyward.toml`.

# Address the server listens on.
listen = "127.0.0.1:8080"
# Directory of the embedded SQLite store, relative to where keyward runs.
# For several nodes set store_url = "postgres://USER:PASSWORD@HOST/DB" instead
# (and redis_url = "redis://HOST:6379" to share rate limits).
data_dir = {data_dir}

[keys]
# Environment name = secret prefix of its keys. Each key belongs to one
# environment; the prefix tells a leaked key's deployment and environment.
environments = {{ {envs} }}
# The scopes keys may hold (keyward's own keyward:* scopes are always added).
scopes = [{scopes}]
# How clients may present a key: Authorization: Bearer <secret>, the header
# below, or Authorization: Basic base64(key_id:secret).
schemes = ["bearer", "header", "basic"]
header = "X-API-Key"

[console]
# The developer console at /console. Its session cookie is Secure: over
# plain HTTP, browsers accept it on 127.0.0.1 and localhost only.
enabled = true

# The API behind keyward, and the routes forwarded to it once a key passes:
# [gateway]
# upstream = "http://127.0.0.1:9000"
#
# [[routes]]
# methods = ["GET"]
# path = "/v1/{{*rest}}"
# scopes = []
"#,
        data_dir = quoted(data_dir),
    ))
}

/// A TOML key: bare when it can be, quoted otherwise.
fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_owned()
    } else {
        quoted(k)
    }
}

/// A word a shell reads back as `s`.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@=".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
