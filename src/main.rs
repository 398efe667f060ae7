//! The `byok-broker` binary: parse the command line, load configuration, run the chosen command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use byok_broker::broker::Broker;
use byok_broker::config::{Config, ProviderKind};
use byok_broker::http::server::Tls;
use byok_broker::supervisor::{Stage, Supervisor};

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
        /// The broker's base URL (http:// or https://).
        #[arg(long, env = "BYOK_BROKER_URL", default_value = "http://127.0.0.1:8787")]
        url: String,
        /// PEM CA certificates to trust for an https:// URL, besides the public web roots.
        #[arg(long, env = "BYOK_BROKER_CA_FILE")]
        ca_file: Option<PathBuf>,
        /// PEM client certificate chain, for a broker that requires client certificates.
        #[arg(long, env = "BYOK_BROKER_CLIENT_CERT", requires = "client_key")]
        client_cert: Option<PathBuf>,
        /// PEM private key of --client-cert.
        #[arg(long, env = "BYOK_BROKER_CLIENT_KEY", requires = "client_cert")]
        client_key: Option<PathBuf>,
        /// An admin API key.
        #[arg(long, env = "BYOK_BROKER_ADMIN_KEY", hide_env_values = true)]
        admin_key: String,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit hash chains in the configured database and report the first modified,
    /// deleted, inserted or reordered event of each (exit status 1 if any).
    Verify(cli::audit::VerifyArgs),
}

fn main() -> ExitCode {
    if let Err(e) = cli::logging::init() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
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
            ca_file,
            client_cert,
            client_key,
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
                let tls = cli::tls_config(ca_file.as_deref(), client_cert.zip(client_key))?;
                let client = HttpClient::with_tls(&url, Some(admin_key), tls)?;
                runtime.block_on(rewrap::run(&client, target))
            })
        }
        Command::Audit {
            command: AuditCommand::Verify(args),
        } => runtime.block_on(cli::audit::verify(args)),
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
    // Before anything starts: a missing or bad certificate, key or CA file is a startup error.
    let tls = match &config.tls {
        Some(files) => Some(Tls::load(files).map_err(|e| e.to_string())?),
        None => None,
    };
    if tls.is_none() && !listen.ip().is_loopback() {
        tracing::warn!(address = %listen, "serving plain HTTP on a non-loopback address (listen_insecure = true): secrets and data keys cross the network in clear text unless a TLS-terminating proxy is in front");
    }
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
    if let Some(tls) = &tls {
        // Registered before serving: from here on SIGHUP reloads instead of ending the process.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
        let watching = Arc::clone(tls);
        supervisor.spawn(Stage::Workers, "TLS certificate reload", move |stop| {
            watching.watch(hangup, stop)
        });
    }
    if let Some(address) = broker.config.metrics_listen {
        let metrics_listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot listen for metrics on {address}: {e}"))?;
        let router = byok_broker::http::metrics_router(Arc::clone(&broker));
        tracing::info!(address = %address, "serving GET /metrics without authentication");
        supervisor.spawn(Stage::Workers, "metrics listener", move |stop| async move {
            let served = axum::serve(metrics_listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    tracing::info!(
        address = %bound,
        kms = broker.provider().name(),
        tls = tls.is_some(),
        client_certificates = tls.as_ref().is_some_and(|t| t.requires_client_certificates()),
        "byok-broker listening"
    );
    byok_broker::http::server::serve(
        listener,
        tls,
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
