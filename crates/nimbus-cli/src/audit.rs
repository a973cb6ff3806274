//! `nimbus audit`: read a server's audit trail (a table, JSON, or JSON lines for a SIEM) and
//! verify it — on the server, or a copy of a node's `DATA_DIR/audit` offline (`--dir`); in a
//! cluster, the cluster's copy of any node's trail (`--node`).
use std::path::PathBuf;

use anyhow::bail;
use clap::{Subcommand, ValueEnum};
use nimbus_control::{AuditEntry, AuditPage, AuditVerification};
use nimbus_security::audit::{Body, Outcome};

use crate::remote::{Client, RemoteArgs};

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Print the trail of the node answering, oldest first.
    List {
        /// Only records numbered after N.
        #[arg(long, value_name = "N")]
        after: Option<u64>,
        /// At most this many records (default: all).
        #[arg(long)]
        limit: Option<usize>,
        /// Output format: `jsonl` is one record per line, as a SIEM takes it.
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        output: Format,
        /// In a cluster: the cluster's copy of this node's trail (also of a node that is gone).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
    /// Check every hash, link and signature of the trail and that it was not cut short; fails
    /// naming each edited, deleted, reordered or truncated record.
    Verify {
        /// Verify a copy of a node's audit directory (`DATA_DIR/audit`) instead of asking the
        /// server.
        #[arg(long, value_name = "DIR", conflicts_with = "node")]
        dir: Option<PathBuf>,
        /// In a cluster: check the cluster's copy of this node's trail.
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
}

/// `&node=NAME` when a node is named.
fn node_query(node: Option<&str>) -> String {
    node.map_or_else(String::new, |n| format!("&node={}", crate::remote::seg(n)))
}

/// How `audit list` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// For people.
    Table,
    /// One JSON array.
    Json,
    /// One JSON object per line.
    Jsonl,
}

/// Records asked for per page.
const PAGE: usize = 1000;

pub(crate) fn run(remote: &RemoteArgs, command: &AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::List { after, limit, output, node } => {
            list(remote, after.unwrap_or(0), *limit, *output, &node_query(node.as_deref()))
        }
        AuditCommand::Verify { dir: Some(dir), .. } => {
            let report = nimbus_control::verify_dir(dir)?;
            let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
            verdict(&dir.display().to_string(), report.records, report.events, report.digests, report.signed, &problems)
        }
        AuditCommand::Verify { dir: None, node } => {
            let v: AuditVerification =
                Client::new(remote)?.get(&format!("/v1/audit/verify?{}", node_query(node.as_deref())))?;
            verdict(&format!("node `{}`", v.node), v.records, v.events, v.digests, v.signed, &v.problems)
        }
    }
}

fn list(remote: &RemoteArgs, mut after: u64, limit: Option<usize>, output: Format, node: &str) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    let mut entries = Vec::new();
    loop {
        let want = limit.map_or(PAGE, |l| (l - entries.len()).min(PAGE));
        if want == 0 {
            break;
        }
        let page: AuditPage = client.get(&format!("/v1/audit?after={after}&limit={want}{node}"))?;
        for entry in page.records {
            if matches!(output, Format::Jsonl) {
                println!("{}", serde_json::to_string(&entry)?);
            }
            entries.push(entry);
        }
        match page.next_after {
            Some(next) => after = next,
            None => break,
        }
    }
    match output {
        Format::Jsonl => {}
        Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        Format::Table => table(&entries),
    }
    Ok(())
}

fn table(entries: &[AuditEntry]) {
    println!(
        "{:<6} {:<24} {:<10} {:<14} {:<12} {:<20} {:<8} DETAIL",
        "SEQ", "TIME", "NODE", "WHO", "ACTION", "RESOURCE", "OUTCOME"
    );
    for entry in entries {
        let seq = entry.record.seq;
        match &entry.record.body {
            Body::Event(e) => {
                let outcome = match e.outcome {
                    Outcome::Allowed => "allowed",
                    Outcome::Denied => "denied",
                };
                let detail = e.reason.as_deref().or(e.request.as_deref()).unwrap_or("");
                println!(
                    "{seq:<6} {:<24} {:<10} {:<14} {:<12} {:<20} {outcome:<8} {detail}",
                    time(e.at_ms),
                    e.node,
                    e.user.as_deref().unwrap_or(&e.principal),
                    e.action,
                    e.resource
                );
            }
            Body::Digest(d) => println!(
                "{seq:<6} {:<24} {:<10} {:<14} {:<12} {:<20} {:<8} signs records up to {}",
                time(d.at_ms),
                d.node,
                "-",
                "digest",
                "-",
                "-",
                d.covers
            ),
        }
    }
}

fn time(at_ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms)).to_string()
}

/// Prints what verification found; an error if anything is wrong.
fn verdict(
    what: &str,
    records: u64,
    events: u64,
    digests: u64,
    signed: u64,
    problems: &[String],
) -> anyhow::Result<()> {
    if problems.is_empty() {
        println!(
            "The audit trail of {what} is intact: {records} records ({events} events, {digests} signed digests; signed up to record {signed})."
        );
        return Ok(());
    }
    for problem in problems {
        println!("{problem}");
    }
    bail!("the audit trail of {what} was tampered with: {} problem(s) above", problems.len())
}
