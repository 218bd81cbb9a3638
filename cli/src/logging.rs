//! Logs for long-running commands: `tracing` to stderr through a non-blocking writer, so a slow
//! or stuck stderr (a full pipe) drops lines instead of blocking the threads that log, guest
//! calls included. Filter with `GLINT_LOG` (`tracing_subscriber` target syntax, default `info`;
//! guest log lines have target `guest`).

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Installs the subscriber; keep the guard alive until exit (it flushes on drop).
pub fn init() -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let filter: Targets = std::env::var("GLINT_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
        // The library logs guest lines itself at `glint::guest`; the server logs them again at
        // `guest` with the function's name and its secrets redacted (serve::backend).
        .with_target("glint::guest", tracing::level_filters::LevelFilter::OFF);
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(16 << 10)
        .finish(std::io::stderr());
    let layer = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(false).with_target(true);
    tracing_subscriber::registry().with(layer.with_filter(filter)).try_init().ok()?;
    Some(guard)
}
