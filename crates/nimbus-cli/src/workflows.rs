//! `nimbus workflows`: start runs of a workflow, list and show them (with each run's timeline),
//! signal and cancel them — through the data API of the `nimbus up` running in this directory
//! (its token from `.nimbus/api.json`), or of a server (`--server`, a token that may read or
//! write the app's data, `--app`).
use clap::Subcommand;
use serde_json::Value;

use crate::remote::{Client, DataArgs, OutputArgs, data_arg, seg};

#[derive(Debug, Subcommand)]
pub(crate) enum WorkflowsCommand {
    /// Start a run of workflow NAME and print its id (an existing run's for a repeated
    /// --idempotency-key).
    Start {
        /// The workflow.
        name: String,
        /// The input (or @FILE).
        #[arg(long, default_value = "")]
        data: String,
        /// Starting twice with one key starts one run.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List the runs of workflow NAME.
    List {
        /// The workflow.
        name: String,
        /// Only runs pinned to this revision.
        #[arg(long)]
        revision: Option<String>,
        /// Only runs in this status (running, waiting, compensating, completed, failed,
        /// cancelled; `unfinished` for the first three).
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List the unfinished runs of workflow NAME: what still runs, and on which revision's code.
    Runs {
        /// The workflow.
        name: String,
        /// Only runs pinned to this revision.
        #[arg(long)]
        revision: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show a run and its timeline: steps started, retried, completed; sleeps; signals;
    /// compensations — with durations.
    Show {
        /// The workflow.
        name: String,
        /// The run.
        run: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Send signal SIGNAL to a run.
    Signal {
        /// The workflow.
        name: String,
        /// The run.
        run: String,
        /// The signal.
        signal: String,
        /// Its payload (or @FILE).
        #[arg(long, default_value = "")]
        data: String,
    },
    /// Cancel a run: its compensations run, then it ends `cancelled`.
    Cancel {
        /// The workflow.
        name: String,
        /// The run.
        run: String,
    },
}

pub(crate) fn run(data: &DataArgs, command: &WorkflowsCommand) -> anyhow::Result<()> {
    let post = reqwest::Method::POST;
    let (client, app) = data.connect()?;
    let at = |name: &str| format!("{app}/workflows/{}", seg(name));
    match command {
        WorkflowsCommand::Start { name, data: input, idempotency_key, output } => {
            let headers: Vec<(&str, &str)> =
                idempotency_key.iter().map(|k| (nimbus_gateway::IDEMPOTENCY_KEY_HEADER, k.as_str())).collect();
            let body = Some(data_arg(input)?.into());
            let bytes = client.raw_with(post, &at(name), body, "application/octet-stream", &headers)?;
            let run: Value = serde_json::from_slice(&bytes)?;
            output.print(&run, |r| println!("{}", r["run"].as_str().unwrap_or_default()))
        }
        WorkflowsCommand::List { name, revision, status, output } => {
            list(&client, &at(name), revision.as_deref(), status.as_deref(), output)
        }
        WorkflowsCommand::Runs { name, revision, output } => {
            list(&client, &at(name), revision.as_deref(), Some("unfinished"), output)
        }
        WorkflowsCommand::Show { name, run, output } => {
            let shown: Value = client.get(&format!("{}/runs/{}", at(name), seg(run)))?;
            output.print(&shown, print_run)
        }
        WorkflowsCommand::Signal { name, run, signal, data: payload } => {
            let path = format!("{}/runs/{}/signals/{}", at(name), seg(run), seg(signal));
            let answer: Value =
                client.call(post, &path, Some(data_arg(payload)?.into()), "application/octet-stream")?;
            println!("signal `{signal}` sent to run {run} (#{})", answer["seq"]);
            Ok(())
        }
        WorkflowsCommand::Cancel { name, run } => {
            let _: Value = client.call(post, &format!("{}/runs/{}/cancel", at(name), seg(run)), None, "")?;
            println!("run {run} is cancelling: its compensations run, then it ends `cancelled`");
            Ok(())
        }
    }
}

fn list(
    client: &Client,
    path: &str,
    revision: Option<&str>,
    status: Option<&str>,
    output: &OutputArgs,
) -> anyhow::Result<()> {
    let mut query: Vec<String> = Vec::new();
    query.extend(revision.map(|r| format!("revision={}", seg(r))));
    query.extend(status.map(|s| format!("status={}", seg(s))));
    let answer: Value = client.get(&format!("{path}?{}", query.join("&")))?;
    output.print(&answer, |a| {
        println!("{:<22} {:<13} {:<16} {:<20} ERROR", "RUN", "STATUS", "REVISION", "STARTED");
        for r in a["runs"].as_array().into_iter().flatten() {
            println!(
                "{:<22} {:<13} {:<16} {:<20} {}",
                r["run"].as_str().unwrap_or_default(),
                r["status"].as_str().unwrap_or_default(),
                r["revision"].as_str().unwrap_or_default(),
                time_ms(&r["created_ms"]),
                clean(r["error"].as_str().unwrap_or_default())
            );
        }
    })
}

fn time_ms(ms: &Value) -> String {
    crate::remote::time(ms.as_u64().unwrap_or_default() / 1000)
}

/// `text` safe for a terminal: control characters (escape sequences) and bidirectional
/// overrides are shown escaped, not interpreted.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c) || ('\u{2066}'..='\u{2069}').contains(&c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A run and its timeline, for people (whatever the workflow wrote is escaped).
fn print_run(r: &Value) {
    let s = |v: &Value| clean(v.as_str().unwrap_or_default());
    println!("run       {}", s(&r["run"]));
    println!("workflow  {} (revision {})", s(&r["workflow"]), s(&r["revision"]));
    println!("status    {}", s(&r["status"]));
    println!("started   {}", time_ms(&r["created_ms"]));
    if let Some(e) = r["error"].as_str() {
        println!("error     {}", clean(e));
    }
    if !r["output"].is_null() {
        println!("output    {}", clean(&r["output"].to_string()));
    }
    println!("timeline:");
    let start = r["created_ms"].as_u64().unwrap_or_default();
    for e in r["timeline"].as_array().into_iter().flatten() {
        let at = e["started_ms"].as_u64().unwrap_or_default().saturating_sub(start);
        let what = match e["name"].as_str() {
            Some(n) => format!("{} {}", s(&e["kind"]), clean(n)),
            None => s(&e["kind"]),
        };
        let outcome = match (e["kind"].as_str(), e["outcome"].as_str()) {
            (Some("sleep"), _) => {
                format!("until +{} ms", e["due_ms"].as_u64().unwrap_or_default().saturating_sub(start))
            }
            (Some("await-signal"), Some("ok")) => "signalled".into(),
            (Some("await-signal"), Some("pending")) => "waiting".into(),
            (Some("compensation"), Some("ok")) => format!("compensated step #{}", e["undoes"]),
            (_, Some("ok")) => "completed".into(),
            (_, Some("err")) => format!("failed: {}", s(&e["payload"])),
            (_, other) => other.unwrap_or_default().replace('_', " "),
        };
        let retried = e["retries"].as_u64().map(|n| format!(", retried {n}x")).unwrap_or_default();
        let took = e["duration_ms"].as_u64().map(|d| format!(" in {d} ms")).unwrap_or_default();
        println!("  +{at:>7} ms  #{:<3} {what:<28} {outcome}{took}{retried}", e["pos"]);
    }
}
