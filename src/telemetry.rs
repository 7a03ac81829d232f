//! Logging setup: structured logs to stderr, filtered by RUST_LOG (default: warnings for the
//! CLI, info for the long-running operator).

pub fn init(long_running: bool) {
    let default = if long_running { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
