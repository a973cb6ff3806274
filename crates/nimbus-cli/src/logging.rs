//! Log set-up: human-readable or JSON lines on stderr, filtered by `NIMBUS_LOG` (rustls's
//! per-handshake warnings about clients and notify's notes on vanished directories are left out
//! unless the filter names them).
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
    // rustls warns once per handshake about what clients send (an IP address as SNI, as wrk
    // and some libraries do): one line per connection a client controls. Its errors stay, and a
    // filter that names rustls decides for itself.
    let filter = if args.filter.contains("rustls") {
        filter
    } else {
        filter.add_directive("rustls=error".parse().expect("a valid directive"))
    };
    // notify (`nimbus dev`'s file watcher) says at info level that a deleted directory's watch
    // was already gone: expected whenever a build replaces a directory.
    let filter = if args.filter.contains("notify") {
        filter
    } else {
        filter.add_directive("notify=warn".parse().expect("a valid directive"))
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
