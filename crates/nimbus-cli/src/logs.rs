//! `nimbus logs`: the per-invocation logs (guest stdout/stderr and platform events, with request
//! and trace ids) of the `nimbus up` of this directory, or of a server; `-f` follows them.
use std::time::Duration;

use clap::Args;
use nimbus_control::LogList;
use nimbus_observe::LogRecord;

use crate::remote::{Client, Output, OutputArgs, RemoteArgs, seg};

/// `nimbus logs [COMPONENT] [-f] [--since 10m] [--trace ID]`.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// Only this component's logs.
    component: Option<String>,
    /// Only this app's logs (on a server).
    #[arg(long)]
    app: Option<String>,
    /// Keep printing new records as they come.
    #[arg(long, short)]
    follow: bool,
    /// Only records of the last this long (e.g. 10m, 2h).
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Only records of this trace.
    #[arg(long)]
    trace: Option<String>,
    /// How many of the newest stored records to print first.
    #[arg(long, short = 'n', default_value_t = 200)]
    limit: usize,
    #[command(flatten)]
    output: OutputArgs,
}

pub(crate) fn run(remote: &RemoteArgs, args: &LogsArgs) -> anyhow::Result<()> {
    let client = Client::for_node(remote)?;
    let mut path = format!("/v1/logs?limit={}", args.limit);
    for (key, value) in [("component", &args.component), ("app", &args.app), ("trace", &args.trace)] {
        if let Some(v) = value {
            path.push_str(&format!("&{key}={}", seg(v)));
        }
    }
    if let Some(since) = args.since {
        path.push_str(&format!("&since_s={}", since.as_secs().max(1)));
    }
    let json = matches!(args.output.output, Output::Json);
    if args.follow {
        path.push_str("&follow=true");
        return client.lines(&path, |line| {
            if json {
                println!("{line}");
            } else if let Ok(r) = serde_json::from_str::<LogRecord>(line) {
                println!("{}", text(&r));
            }
            Ok(())
        });
    }
    let list: LogList = client.get(&path)?;
    args.output.print(&list, |l| {
        for r in &l.records {
            println!("{}", text(r));
        }
    })
}

/// `2026-11-27T10:00:00.123Z hello stdout [req-1 4bf92f35] the message`.
fn text(r: &LogRecord) -> String {
    let time = humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_nanos(r.time_unix_nano));
    let trace = r.trace_id.as_deref().map_or(String::new(), |t| format!(" {}", &t[..t.len().min(8)]));
    let level = if r.level == "info" { String::new() } else { format!(" {}", r.level.to_uppercase()) };
    format!(
        "{time} {} {}{level} [{}{trace}] {}",
        r.component,
        r.stream,
        r.request_id.as_deref().unwrap_or("-"),
        r.message
    )
}
