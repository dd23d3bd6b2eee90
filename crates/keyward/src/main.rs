//! The `keyward` binary: a thin CLI over the server and store libraries.
//!
//! `serve` runs the server; `root-keys create` bootstraps the first operator
//! key straight into the store; `users …` manages console users straight in
//! the store (the first operator comes from here); `tenants`, `keys`,
//! `root-keys list|revoke`, `audit`, `credits`, `webhooks`, `events` and
//! `alerts` call a running server's management API with the key in
//! `KEYWARD_ROOT_KEY` ([`client`]);
//! `completions` prints shell completions; `scan` finds keys in files
//! ([`scan`]) and `regex` prints their pattern for other scanners.

mod client;
mod config_cmd;
mod init;
mod scan;
mod test_clock;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use keyward_core::clock::SystemClock;
use keyward_core::secret::OsEntropy;
use keyward_server::config::{Config, LogFormat, Settings};
use keyward_server::Keyward;
use keyward_server::ReloadError;
use keyward_store::SqlStore;

/// mimalloc: a forwarded request makes a few dozen small allocations, and
/// glibc's malloc/free were about 16 % of the gateway's instructions
/// (callgrind, docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "keyward", version, about = "A self-hostable API-key platform.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (management API, verify API, console, /openapi.json).
    Serve(ServeArgs),
    /// Operator root keys: create (straight into the store), list, revoke.
    #[command(subcommand)]
    RootKeys(RootKeys),
    /// Console users (written straight into the store).
    #[command(subcommand)]
    Users(Users),
    /// Tenants, through a running server's API.
    #[command(subcommand)]
    Tenants(client::tenants::Tenants),
    /// Tenant API keys, through a running server's API.
    #[command(subcommand)]
    Keys(client::keys::Keys),
    /// The audit log of management actions, through a running server's API.
    #[command(subcommand)]
    Audit(client::audit::Audit),
    /// Tenants' credits: balance, grants, adjustments, ledger, refills,
    /// through a running server's API.
    #[command(subcommand)]
    Credits(client::credits::Credits),
    /// Webhook endpoints (events signed per Standard Webhooks), their
    /// secrets and delivery log, through a running server's API.
    #[command(subcommand)]
    Webhooks(client::webhooks::Webhooks),
    /// Events of your API, delivered to tenants' webhook endpoints, through
    /// a running server's API.
    #[command(subcommand)]
    Events(client::events::Events),
    /// Alerts keyward raised (new addresses, traffic spikes, failing
    /// endpoints, …), through a running server's API.
    #[command(subcommand)]
    Alerts(client::alerts::Alerts),
    /// Print the regular expression that matches this deployment's keys, for
    /// secret scanners: plain, as a gitleaks rule, or as a GitHub
    /// secret-scanning custom pattern.
    Regex(RegexArgs),
    /// Find this deployment's keys in files and directories (honouring
    /// .gitignore, skipping binary and large files), checksums checked;
    /// print them redacted. Exit status: 0 none found, 1 keys found, 2 error.
    Scan(scan::ScanArgs),
    /// Print a shell completion script, e.g.
    /// `keyward completions bash > /etc/bash_completion.d/keyward`,
    /// `keyward completions zsh > "${fpath[1]}/_keyward"`,
    /// `keyward completions fish > ~/.config/fish/completions/keyward.fish`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Start a deployment: write a commented keyward.toml, create the first
    /// operator root key (and optionally the first console operator), and
    /// print the next commands. Refuses to overwrite a keyward.toml.
    Init(init::InitArgs),
    /// Check a configuration without starting the server, or print every
    /// setting with its default and meaning.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
}

/// What `serve` reads: the configuration, the store and the listen address.
#[derive(Args, Clone)]
struct ServerArgs {
    /// TOML configuration file [default: none: built-in defaults, then
    /// KEYWARD_* variables; `keyward config defaults` prints them all].
    #[arg(long, env = "KEYWARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address; port 0 picks a free port [default: `listen` of the
    /// file, else 127.0.0.1:8080].
    #[arg(long, value_name = "ADDRESS")]
    listen: Option<String>,
    /// Data directory for the embedded SQLite store [default: `data_dir` of
    /// the file, else ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Store URL: sqlite://PATH or postgres://USER@HOST/DB [default:
    /// `store_url` of the file, else sqlite://<data-dir>/keyward.db].
    #[arg(long, value_name = "URL")]
    store_url: Option<String>,
}

/// What the commands that work straight on the store read: the
/// configuration and the store (no listen address: they do not serve).
#[derive(Args, Clone)]
struct StoreArgs {
    /// TOML configuration file.
    #[arg(long, env = "KEYWARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory for the embedded SQLite store.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Store URL: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, value_name = "URL")]
    store_url: Option<String>,
}

impl From<StoreArgs> for ServerArgs {
    fn from(a: StoreArgs) -> ServerArgs {
        ServerArgs {
            config: a.config,
            listen: None,
            data_dir: a.data_dir,
            store_url: a.store_url,
        }
    }
}

/// Only the configuration file.
#[derive(Args, Clone)]
struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, env = "KEYWARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `keyward regex`'s arguments.
#[derive(Args, Clone)]
struct RegexArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// What to print: `regex` (the plain pattern), `gitleaks` (a
    /// `[[rules]]` entry) or `github` (a custom-pattern definition).
    #[arg(long, value_enum, default_value_t = scan::PatternFormat::Regex)]
    format: scan::PatternFormat,
}

impl From<ConfigArgs> for ServerArgs {
    fn from(a: ConfigArgs) -> ServerArgs {
        ServerArgs {
            config: a.config,
            listen: None,
            data_dir: None,
            store_url: None,
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Tests only: make the clock movable through a control listener on
    /// this loopback address (`POST /advance?seconds=N`). Never in production.
    #[arg(long, hide = true)]
    test_clock_listen: Option<std::net::SocketAddr>,
    /// Once listening, write the address to this file (with `--listen
    /// 127.0.0.1:0`, the port the system chose), for scripts and tests.
    #[arg(long, value_name = "PATH")]
    address_file: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Users {
    /// Create a console user. The password is read from a prompt (twice, not
    /// echoed), or from the first line of stdin with --password-stdin; never
    /// from the command line.
    Create {
        /// The user's email address, with which they sign in.
        #[arg(long)]
        email: String,
        /// Their display name.
        #[arg(long, default_value = "")]
        name: String,
        /// keyward operator: sees and manages every tenant in the console.
        #[arg(long)]
        operator: bool,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set a user's password (ends their console sessions).
    SetPassword {
        /// The user's email address.
        #[arg(long)]
        email: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List console users.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum RootKeys {
    /// Create an operator root key straight in the store (the server need
    /// not run); prints only the secret on stdout, shown this once.
    Create {
        /// A name for the key, e.g. ops.
        #[arg(long)]
        name: String,
        /// A scope the key holds (repeatable; default keyward:*).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List operator root keys, through a running server's API.
    List(client::root_keys::List),
    /// Revoke an operator root key, through a running server's API.
    Revoke(client::root_keys::Revoke),
}

/// The command line, with the client commands' help naming
/// `KEYWARD_ROOT_KEY` and `KEYWARD_URL`.
fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand("tenants", client::with_env_help)
        .mut_subcommand("keys", client::with_env_help)
        .mut_subcommand("audit", client::with_env_help)
        .mut_subcommand("credits", client::with_env_help)
        .mut_subcommand("webhooks", client::webhooks::with_env_help)
        .mut_subcommand("events", client::with_env_help)
        .mut_subcommand("alerts", client::with_env_help)
        .mut_subcommand("root-keys", |c| {
            c.mut_subcommand("list", client::with_env_help)
                .mut_subcommand("revoke", client::with_env_help)
        })
}

fn main() -> Result<ExitCode> {
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let done = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Users(u) => users(u).await,
        Command::RootKeys(RootKeys::Create {
            name,
            scopes,
            store,
        }) => create_root_key(store.into(), name, scopes).await,
        Command::RootKeys(RootKeys::List(args)) => client::root_keys::list(args).await,
        Command::RootKeys(RootKeys::Revoke(args)) => client::root_keys::revoke(args).await,
        Command::Init(args) => init::run(args).await,
        Command::Config(c) => config_cmd::run(c),
        Command::Regex(args) => {
            let settings = load_settings(&args.config.into())?;
            let mut out = std::io::stdout().lock();
            scan::print_patterns(&mut out, &settings.format, args.format)
        }
        Command::Scan(args) => return Ok(scan::run(args).await),
        Command::Tenants(t) => client::tenants::run(t).await,
        Command::Keys(k) => return client::keys::run(k).await,
        Command::Audit(a) => client::audit::run(a).await,
        Command::Credits(c) => client::credits::run(c).await,
        Command::Webhooks(w) => client::webhooks::run(w).await,
        Command::Events(e) => client::events::run(e).await,
        Command::Alerts(a) => client::alerts::run(a).await,
        Command::Completions { shell } => {
            // Into a buffer first: `generate` panics on a failed write (a
            // closed pipe), a plain write returns the error.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "keyward", &mut script);
            match std::io::stdout().lock().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}

fn load_settings(args: &ServerArgs) -> Result<Settings> {
    let settings = Settings::from_config(load_config(args)?)?;
    // The routes, tiers and gateway settings are checked by compiling them:
    // a bad one stops every command, as before it is served.
    settings.policy()?;
    Ok(settings)
}

fn load_config(args: &ServerArgs) -> Result<Config> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(l) = &args.listen {
        config.listen = l.parse().with_context(|| {
            format!("invalid setting listen: {l:?} is not an address like 127.0.0.1:8080")
        })?;
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(u) = &args.store_url {
        config.store_url = Some(u.clone());
    }
    Ok(config)
}

async fn open_store(settings: &Settings) -> Result<SqlStore> {
    let url = settings.config.effective_store_url();
    if url.starts_with("sqlite:") && settings.config.store_url.is_none() {
        std::fs::create_dir_all(&settings.config.data_dir).with_context(|| {
            format!(
                "cannot create data directory {}",
                settings.config.data_dir.display()
            )
        })?;
    }
    SqlStore::open(&url)
        .await
        .with_context(|| format!("cannot open the store at {}", redact_url(&url)))
}

/// Hides a password in a store URL before it is printed.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].find(':') {
            Some(colon) => format!("{}:<redacted>{}", &url[..s + 3 + colon], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match settings.config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(serve_args: ServeArgs) -> Result<()> {
    let args = serve_args.server;
    let settings = load_settings(&args)?;
    init_logging(&settings);
    // The address first: "address in use" must not wait for the store and
    // its migrations. Connections queue in the backlog until serving starts.
    let listen = settings.config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    let store = open_store(&settings).await?;
    log_start(&settings, &args, address, &store).await;
    if let Some(path) = &serve_args.address_file {
        // Whole or not at all: a reader never sees half an address.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, format!("{address}\n"))
            .and_then(|()| std::fs::rename(&partial, path))
            .with_context(|| format!("cannot write the address to {}", path.display()))?;
    }
    let store_handle = store.clone();
    let clock: Arc<dyn keyward_core::clock::Clock> = match serve_args.test_clock_listen {
        Some(addr) => {
            let clock = Arc::new(test_clock::OffsetClock::default());
            test_clock::start(addr, Arc::clone(&clock)).await?;
            clock
        }
        None => Arc::new(SystemClock),
    };
    let server = Keyward::open(settings, Arc::new(store), clock).await?;
    let reloader = tokio::spawn(reload_on_sighup(args, server.state().clone()));
    server.serve(listener, shutdown_signal()).await?;
    reloader.abort();
    store_handle.close().await;
    Ok(())
}

/// What an operator needs to know at start: where keyward listens, on which
/// store, what it forwards where, where the console is, and, while the store
/// has no root key, the command that makes one.
async fn log_start(
    settings: &Settings,
    args: &ServerArgs,
    address: std::net::SocketAddr,
    store: &SqlStore,
) {
    use keyward_store::{KeyClass, KeyFilter, KeyStatus, KeyStore, PageRequest};
    let c = &settings.config;
    let console = if c.console.enabled {
        format!("http://{address}/console")
    } else {
        "off".to_owned()
    };
    let metrics = match (c.metrics.enabled, c.metrics.listen) {
        (false, _) => "off".to_owned(),
        (true, None) => format!("http://{address}{}", c.metrics.path),
        (true, Some(own)) => format!("http://{own}{}", c.metrics.path),
    };
    tracing::info!(
        address = %address,
        store = %redact_url(&c.effective_store_url()),
        upstream = %c.gateway.upstream.as_deref().unwrap_or("none"),
        routes = c.routes.len(),
        console = %console,
        metrics = %metrics,
        "Keyward is listening."
    );
    let filter = KeyFilter {
        class: Some(KeyClass::Root),
        status: Some(KeyStatus::Active),
        now: keyward_core::clock::Clock::now(&SystemClock).millis(),
        ..KeyFilter::default()
    };
    let page = store
        .list_keys(
            &filter,
            PageRequest {
                limit: 1,
                before: None,
            },
        )
        .await;
    if matches!(&page, Ok(p) if p.items.is_empty()) {
        let mut config = String::new();
        if let Some(p) = &args.config {
            config.push_str(&format!(" --config {}", p.display()));
        }
        if let Some(d) = &args.data_dir {
            config.push_str(&format!(" --data-dir {}", d.display()));
        }
        if args.store_url.is_some() {
            // Not repeated: it may hold a password.
            config.push_str(" --store-url <your store URL>");
        }
        tracing::warn!(
            command = %format!("keyward root-keys create{config} --name operator"),
            "No root key exists yet: nothing can manage this deployment until one is made; the command below makes one."
        );
    }
}

/// `SIGHUP` re-reads the configuration and swaps in its `[[routes]]`,
/// `[gateway]`, `[limits.tiers]` and `[idempotency]` together, without
/// dropping connections; an invalid file, or one that changes a setting
/// only a restart can change, is refused whole and the running policy stays.
async fn reload_on_sighup(args: ServerArgs, state: keyward_server::AppState) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match load_config(&args).and_then(|c| state.reload(c).map_err(anyhow::Error::from)) {
                Ok(n) => tracing::info!(
                    routes = n,
                    "Configuration reloaded; new routes, tiers and gateway settings in force."
                ),
                Err(e) => match e.downcast_ref::<ReloadError>() {
                    Some(ReloadError::NeedsRestart(names)) => tracing::error!(
                        settings = %names.join(", "),
                        "Configuration reload refused: these settings need a restart; the running configuration stays."
                    ),
                    _ => {
                        tracing::error!(error = %e, "Configuration reload refused; the running configuration stays.")
                    }
                },
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (args, state);
        std::future::pending::<()>().await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("Shutdown requested; draining in-flight requests.");
}

async fn create_root_key(args: ServerArgs, name: String, scopes: Vec<String>) -> Result<()> {
    let settings = load_settings(&args)?;
    let store = std::sync::Arc::new(open_store(&settings).await?);
    let created = keyward_server::bootstrap::create_root_key(
        &settings,
        store.clone(),
        std::sync::Arc::new(SystemClock),
        std::sync::Arc::new(OsEntropy),
        &name,
        &scopes,
    )
    .await;
    store.close().await;
    let (record, secret) = created?;
    eprintln!(
        "Created root key {} ({}). The secret below is shown only once:",
        record.id, record.start
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", secret.expose())?;
    Ok(())
}

/// A password from the first line of stdin, or from a prompt on the terminal.
fn read_password(from_stdin: bool, confirm: bool) -> Result<zeroize::Zeroizing<String>> {
    if from_stdin {
        let mut line = zeroize::Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line)?;
        let trimmed = line.trim_end_matches(['\n', '\r']);
        return Ok(zeroize::Zeroizing::new(trimmed.to_owned()));
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to prompt for the password on: pass --password-stdin and write the password to stdin");
    }
    let first = zeroize::Zeroizing::new(rpassword::prompt_password("Password: ")?);
    if confirm {
        let again = zeroize::Zeroizing::new(rpassword::prompt_password("Repeat the password: ")?);
        if *first != *again {
            bail!("the two passwords differ; nothing was changed");
        }
    }
    Ok(first)
}

async fn users(cmd: Users) -> Result<()> {
    use keyward_console::accounts;
    use std::sync::Arc;
    // The host acts through the management service, straight on the store.
    let host = |settings: &keyward_server::config::Settings, store: &Arc<SqlStore>| {
        keyward_server::bootstrap::host_service(
            settings,
            store.clone(),
            Arc::new(SystemClock),
            Arc::new(OsEntropy),
        )
    };
    match cmd {
        Users::Create {
            email,
            name,
            operator,
            password_stdin,
            store: args,
        } => {
            let password = read_password(password_stdin, true)?;
            let settings = load_settings(&args.into())?;
            let store = Arc::new(open_store(&settings).await?);
            let created = accounts::create_user(
                &host(&settings, &store),
                &OsEntropy,
                &email,
                &name,
                password,
                operator,
            )
            .await;
            store.close().await;
            let user = created?;
            let what = if user.operator { "operator" } else { "user" };
            eprintln!(
                "Created {what} {} ({}). Sign in at /console on the running server.",
                user.email, user.id
            );
            Ok(())
        }
        Users::SetPassword {
            email,
            password_stdin,
            store: args,
        } => {
            let password = read_password(password_stdin, true)?;
            let settings = load_settings(&args.into())?;
            let store = Arc::new(open_store(&settings).await?);
            let done =
                accounts::set_password(&host(&settings, &store), &OsEntropy, &email, password)
                    .await;
            store.close().await;
            let user = done?;
            eprintln!(
                "Password set for {}; their console sessions have ended.",
                user.email
            );
            Ok(())
        }
        Users::List { store: args } => {
            let settings = load_settings(&args.into())?;
            let store = Arc::new(open_store(&settings).await?);
            let listed = host(&settings, &store)
                .list_users(&keyward_manage::Actor::host("cli"))
                .await;
            store.close().await;
            let mut out = std::io::stdout().lock();
            for u in listed? {
                let kind = if u.operator { "operator" } else { "user" };
                writeln!(out, "{}\t{}\t{}\t{}", u.id, u.email, kind, u.name)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every command and every flag says what it is for in `--help`.
    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id != "help" && id != "version" && a.get_help().is_none() {
                    missing.push(format!("{path} <{id}>"));
                }
            }
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(name.clone());
                }
                walk(sub, &name, missing);
            }
        }
        let mut cmd = super::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "keyward", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
