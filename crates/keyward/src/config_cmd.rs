//! `keyward config check` and `keyward config defaults`: the configuration
//! without a server.

use anyhow::Result;
use clap::Subcommand;
use keyward_server::config::reference;

use crate::ServerArgs;

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Check a configuration file and the KEYWARD_* environment exactly as
    /// `serve` would, without starting or touching the store. Exits 0 and
    /// prints a summary when it is valid; exits 1 naming the setting when not.
    Check {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print every setting with its default and meaning, as a commented
    /// TOML file (valid as it is: it configures exactly the defaults).
    Defaults {
        /// Print the reference as Markdown instead (docs/configuration.md).
        #[arg(long)]
        markdown: bool,
    },
}

pub(crate) fn run(cmd: ConfigCommand) -> Result<()> {
    match cmd {
        ConfigCommand::Check { server } => {
            let settings = crate::load_settings(&server)?;
            let c = &settings.config;
            let source = match &server.config {
                Some(p) => p.display().to_string(),
                None => "the defaults".to_owned(),
            };
            println!("{source}: valid.");
            println!("  listen: {}", c.listen);
            println!("  store: {}", crate::redact_url(&c.effective_store_url()));
            println!(
                "  environments: {}",
                c.keys
                    .environments
                    .iter()
                    .map(|(e, p)| format!("{e} ({p}…)"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!(
                "  upstream: {}, routes: {}",
                c.gateway.upstream.as_deref().unwrap_or("none"),
                c.routes.len()
            );
            Ok(())
        }
        ConfigCommand::Defaults { markdown } => {
            if markdown {
                print!("{}", reference::markdown());
            } else {
                print!("{}", reference::defaults_toml());
            }
            Ok(())
        }
    }
}
