//! The `calgate` command: `serve` runs the gateway, `hash-password` prints an argon2
//! hash for `gateway.toml`.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use calgate::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "calgate",
    version,
    about = "CalDAV/iCal gateway for booking systems"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file.
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        /// Address to listen on (overrides server.listen), e.g. 127.0.0.1:8081.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory (overrides server.data_dir).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Read a secret (password, API key or feed token) and print its argon2 hash.
    HashPassword {
        /// The secret; read from standard input when omitted (preferred: it stays out
        /// of shell history).
        secret: Option<String>,
    },
}

fn main() -> ExitCode {
    calgate::limit_malloc_arenas();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            data,
        } => serve(
            config,
            Overrides {
                listen,
                data_dir: data,
            },
        ),
        Command::HashPassword { secret } => hash_password(secret),
    }
}

fn hash_password(secret: Option<String>) -> ExitCode {
    let secret = match secret {
        Some(s) => s,
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("secret (then Enter):");
            }
            let mut line = String::new();
            if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
                eprintln!("calgate: cannot read the secret: {e}");
                return ExitCode::FAILURE;
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if secret.is_empty() {
        eprintln!("calgate: the secret is empty");
        return ExitCode::FAILURE;
    }
    match calgate::auth::hash_secret(&secret) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("calgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config_path: PathBuf, overrides: Overrides) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CALGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::load(&config_path, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("calgate: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("calgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Handlers first: a signal that arrives once we are announced must take
        // the graceful path, not the default (immediate) one.
        let shutdown = match ShutdownSignals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("calgate: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let tenants = config.tenants.len();
        let data_dir = config.data_dir.clone();
        let running = match calgate::start(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("calgate: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(addr = %running.addr, data = %data_dir.display(), tenants, "calgate started");
        // One machine-readable line on stdout: scripts and tests wait for it.
        println!("calgate listening on http://{}", running.addr);
        shutdown.wait().await;
        tracing::info!("shutting down");
        match running.stop().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("calgate: final flush failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from before the server is announced.
struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(ShutdownSignals {})
        }
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
