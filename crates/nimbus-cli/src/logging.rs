//! Log set-up: human-readable or JSON lines on stderr, filtered by `NIMBUS_LOG`.
use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Log filter, e.g. `info`, `debug`, `nimbus_gateway=debug`.
    #[arg(long = "log", env = "NIMBUS_LOG", default_value = "info", global = true)]
    filter: String,
    /// Log line format.
    #[arg(long, env = "NIMBUS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub(crate) fn init(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.filter).unwrap_or_else(|e| {
        eprintln!("warning: invalid log filter `{}` ({e}); using `info`", args.filter);
        EnvFilter::new("info")
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
