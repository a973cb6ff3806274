//! `nimbus traces`: list the traces in the embedded trace store (filtered by route, duration or
//! errors) and show one as a text waterfall — on the `nimbus up` of this directory, or a server.
use std::collections::HashMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use nimbus_control::{TraceDetail, TraceList};
use nimbus_observe::{SpanView, TraceSummary};

use crate::remote::{Client, OutputArgs, RemoteArgs, seg};

/// `nimbus traces [--route R] [--slow [D]] [--errors]`, or `nimbus traces show ID`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct TracesArgs {
    #[command(subcommand)]
    command: Option<TracesCommand>,
    #[command(flatten)]
    list: ListArgs,
}

#[derive(Debug, Subcommand)]
enum TracesCommand {
    /// Show every span of trace ID as a waterfall.
    Show {
        /// The trace id (32 hex digits; from `nimbus traces` or a response's `traceresponse`).
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Only traces of this route, as written in nimbus.toml (e.g. /api/...).
    #[arg(long)]
    route: Option<String>,
    /// Only traces that took at least this long (default with the flag alone: 100ms).
    #[arg(long, num_args = 0..=1, default_missing_value = "100ms", value_parser = humantime::parse_duration)]
    slow: Option<Duration>,
    /// Only traces with a failed span.
    #[arg(long)]
    errors: bool,
    /// How many of the newest traces to list.
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: usize,
    #[command(flatten)]
    output: OutputArgs,
}

pub(crate) fn run(remote: &RemoteArgs, args: &TracesArgs) -> anyhow::Result<()> {
    let client = Client::for_node(remote)?;
    match &args.command {
        Some(TracesCommand::Show { id, output }) => {
            let detail: TraceDetail = client.get(&format!("/v1/traces/{}", seg(id)))?;
            output.print(&detail, |d| print!("{}", waterfall(&d.trace_id, &d.spans, 48)))
        }
        None => {
            let a = &args.list;
            let mut path = format!("/v1/traces?limit={}", a.limit);
            if let Some(route) = &a.route {
                path.push_str(&format!("&route={}", seg(route)));
            }
            if let Some(slow) = a.slow {
                path.push_str(&format!("&slow_ms={}", slow.as_millis()));
            }
            if a.errors {
                path.push_str("&errors=true");
            }
            let list: TraceList = client.get(&path)?;
            a.output.print(&list, |l| print_list(&l.traces))
        }
    }
}

fn print_list(traces: &[TraceSummary]) {
    if traces.is_empty() {
        println!("no traces match");
        return;
    }
    println!("{:<32}  {:<20}  {:<36}  {:>6}  {:>10}  {:>5}", "TRACE", "STARTED", "NAME", "STATUS", "DURATION", "SPANS");
    for t in traces {
        let status = match (t.status_code, t.error) {
            (Some(code), _) => code.to_string(),
            (None, true) => "error".into(),
            (None, false) => "ok".into(),
        };
        let started = crate::remote::time(t.start_unix_nano / 1_000_000_000);
        let name: String = t.name.chars().take(36).collect();
        println!(
            "{:<32}  {started:<20}  {name:<36}  {status:>6}  {:>10}  {:>5}",
            t.trace_id,
            ms(t.duration_ns),
            t.spans
        );
    }
}

fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

/// The spans of a trace as an indented tree with a time bar `width` characters wide.
fn waterfall(trace_id: &str, spans: &[SpanView], width: usize) -> String {
    let start = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(start).max(start + 1);
    let total = (end - start) as f64;
    let ids: HashMap<&str, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id.as_str(), i)).collect();
    let mut children: HashMap<Option<usize>, Vec<usize>> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        let parent = s.parent_span_id.as_deref().and_then(|p| ids.get(p).copied());
        children.entry(parent).or_default().push(i);
    }
    let mut order = Vec::new();
    let mut stack: Vec<(usize, usize)> = children.get(&None).into_iter().flatten().rev().map(|&i| (i, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        order.push((i, depth));
        if let Some(kids) = children.get(&Some(i)) {
            stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
        }
    }
    let mut out = format!("trace {trace_id}  {}  {} spans\n", ms(end - start), spans.len());
    for (i, depth) in order {
        let s = &spans[i];
        let from = ((s.start_unix_nano - start) as f64 / total * width as f64) as usize;
        let len = (((s.end_unix_nano.saturating_sub(s.start_unix_nano)) as f64 / total * width as f64).ceil() as usize)
            .clamp(1, width - from.min(width - 1));
        let bar = format!(
            "{}{}{}",
            " ".repeat(from.min(width - 1)),
            "█".repeat(len),
            " ".repeat(width.saturating_sub(from + len))
        );
        let name = format!("{}{}", "  ".repeat(depth), s.name);
        let mut note = String::new();
        if let Some(code) = s.attributes.get("http.response.status_code") {
            note.push_str(&format!(" {code}"));
        }
        if let Some(start) = s.attr("nimbus.instance.start") {
            note.push_str(&format!(" {start}"));
        }
        if s.status == "error" {
            note.push_str(&format!(" ERROR {}", s.status_message));
        }
        out.push_str(&format!(
            "{name:<40} |{bar}| {:>10} +{:<10}{note}\n",
            ms(s.end_unix_nano.saturating_sub(s.start_unix_nano)),
            ms(s.start_unix_nano - start)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, name: &str, start: u64, end: u64) -> SpanView {
        SpanView {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_string),
            name: name.into(),
            kind: "internal".into(),
            start_unix_nano: start,
            end_unix_nano: end,
            status: "unset".into(),
            status_message: String::new(),
            attributes: Default::default(),
        }
    }

    #[test]
    fn the_waterfall_nests_children_under_parents_in_start_order() {
        let spans = [
            span("a", Some("remote"), "GET /hello", 0, 1000),
            span("b", Some("a"), "instantiate", 100, 200),
            span("c", Some("a"), "execute", 200, 900),
            span("d", Some("c"), "get carts", 300, 400),
        ];
        let text = waterfall("t", &spans, 10);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[1].starts_with("GET /hello ") && lines[1].contains("|██████████|"), "{text}");
        assert!(lines[2].starts_with("  instantiate") && lines[2].contains("| █        |"), "{text}");
        assert!(lines[3].starts_with("  execute"), "{text}");
        assert!(lines[4].starts_with("    get carts") && lines[4].contains("|   █      |"), "{text}");
    }
}
