//! The `byok-broker` binary: parse the command line, load configuration, run the chosen command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use byok_broker::broker::Broker;
use byok_broker::config::{Config, ProviderKind};
use byok_broker::supervisor::Supervisor;

use cli::http_client::HttpClient;
use cli::rewrap;

mod cli;

#[derive(Parser)]
#[command(
    name = "byok-broker",
    version,
    about = "Multi-tenant key broker with bring-your-own AWS KMS keys"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve {
        /// TOML configuration file; BYOK_BROKER_* environment variables override it.
        #[arg(long, env = "BYOK_BROKER_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Start a rewrap job on a running broker (or follow one) and show its progress.
    Rewrap {
        /// Move every object under this BYOK key's non-current (or, retired, all) CMKs.
        #[arg(long, conflicts_with_all = ["source_kek_id", "follow"])]
        source_byok_key: Option<String>,
        /// Move every object under this KEK (e.g. a platform KEK, to onboard a tenant CMK).
        #[arg(long, conflicts_with = "follow")]
        source_kek_id: Option<String>,
        /// Follow an existing job instead of starting one.
        #[arg(long)]
        follow: Option<String>,
        /// The broker's base URL.
        #[arg(long, env = "BYOK_BROKER_URL", default_value = "http://127.0.0.1:8787")]
        url: String,
        /// An admin API key.
        #[arg(long, env = "BYOK_BROKER_ADMIN_KEY", hide_env_values = true)]
        admin_key: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve { config } => runtime.block_on(serve(config)),
        Command::Rewrap {
            source_byok_key,
            source_kek_id,
            follow,
            url,
            admin_key,
        } => {
            let target = match (source_byok_key, source_kek_id, follow) {
                (Some(id), None, None) => Ok(rewrap::Target::ByokKey(id)),
                (None, Some(id), None) => Ok(rewrap::Target::Kek(id)),
                (None, None, Some(id)) => Ok(rewrap::Target::Job(id)),
                _ => Err(
                    "name exactly one of --source-byok-key, --source-kek-id or --follow".to_owned(),
                ),
            };
            target.and_then(|target| {
                let client = HttpClient::new(&url, Some(admin_key))?;
                runtime.block_on(rewrap::run(&client, target))
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config_file: Option<PathBuf>) -> Result<(), String> {
    let config = Config::load(config_file.as_deref(), |name| std::env::var(name).ok())
        .map_err(|e| e.to_string())?;
    let listen = config.listen;
    if config.provider == ProviderKind::Local {
        tracing::info!(data_dir = %config.data_dir.display(), "using the embedded local key provider (development default)");
    }
    // Owns every background task; stops them in order once the server has drained.
    let supervisor = Supervisor::new();
    let broker = Broker::start(config, &supervisor)
        .await
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(address = %bound, kms = broker.provider().name(), "byok-broker listening");
    byok_broker::http::server::serve(
        listener,
        byok_broker::http::router(Arc::clone(&broker)),
        broker.config.server,
        shutdown_signal(),
    )
    .await;
    // Workers stop at a checkpoint, then the audit queue is committed, then the database closes.
    tracing::info!("stopping background tasks");
    supervisor.shutdown(broker.config.server.worker_stop).await;
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c; the server then stops accepting and drains for a bounded time.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
