//! What the service tells its operators: structured logs with `tracing` (human-readable text
//! locally, JSON on Lambda or with `LOG_FORMAT=json`) and metrics ([`metrics`], exported as EMF
//! on Lambda by [`emf`] and as Prometheus text by `objdet serve`).

pub mod emf;
pub mod metrics;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once, JSON lines if `json` (Lambda; `config::log_json`), else
/// text. `RUST_LOG` filters (default `info`); logs go to stderr.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    // Colours only on a terminal: in a file or a log collector they are raw ESC bytes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = if json {
        builder.json().with_current_span(false).flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
}

/// Milliseconds elapsed since `t`.
pub fn ms_since(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
