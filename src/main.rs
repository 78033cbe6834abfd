//! `objdet`: the command-line front door (server, local detection, and the offloading experiment).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use objdet::detector::Input;
use objdet::service::Arrival;
use objdet::{Config, DetectService, server, telemetry};

#[derive(Debug, Parser)]
#[command(name = "objdet", version, about = "Object detection here, on EC2/Docker, or on AWS Lambda")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (POST /api/detect, POST /api/uploads, GET /healthz).
    Serve {
        /// Address to bind (env HOST, default 127.0.0.1).
        #[arg(long)]
        host: Option<String>,
        /// Port to bind (env PORT, default 5000; 0 picks a free port).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Detect objects in local files and print the same JSON the server returns.
    Detect {
        /// Image files (JPEG, PNG, WebP).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Pretty-print the JSON.
        #[arg(long)]
        pretty: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(false);
    let mut config = Config::from_env()?;
    match cli.command {
        Command::Serve { host, port } => {
            if let Some(h) = host {
                config.host = h;
            }
            if let Some(p) = port {
                config.port = p;
            }
            let config = Arc::new(config);
            let service = DetectService::from_config(config.clone()).await?;
            let router = server::app(service, config.max_body_bytes);
            let addr = format!("{}:{}", config.host, config.port);
            let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot bind {addr}"))?;
            let local = listener.local_addr()?;
            tracing::info!(address = %local, "listening");
            // A machine-readable line for scripts that start the server on port 0.
            println!("listening on http://{local}");
            server::serve(listener, router).await?;
        }
        Command::Detect { files, pretty } => {
            let config = Arc::new(config);
            let service = DetectService::from_config(config).await?;
            let start = std::time::Instant::now();
            let mut items = Vec::with_capacity(files.len());
            let mut bytes_total = 0usize;
            for f in &files {
                let data = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
                bytes_total += data.len();
                items.push((f.display().to_string(), Input::Image(data.into())));
            }
            let arrival =
                Arrival { start, receive_ms: objdet::api::ms_since(start), payload_bytes: bytes_total as u64 };
            let response = service.detect_inputs(items, arrival).await?;
            let out = if pretty { serde_json::to_string_pretty(&response)? } else { serde_json::to_string(&response)? };
            println!("{out}");
        }
    }
    Ok(())
}
