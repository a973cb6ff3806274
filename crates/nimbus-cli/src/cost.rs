//! `nimbus cost`: usage and cost per app, component, revision, tenant and day, by the node's
//! price book — as a table, JSON or CSV for a spreadsheet — and where each budget stands; on the
//! `nimbus up` of this directory, or a server.
use clap::{Args, ValueEnum};
use nimbus_control::BudgetList;
use nimbus_observe::metering::{CostReport, CostRow};

use crate::remote::{Client, DataArgs, seg};

/// How `nimbus cost` prints.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub(crate) enum CostOutput {
    /// A table for people.
    #[default]
    Text,
    /// The API's JSON.
    Json,
    /// CSV with a header line, for a spreadsheet.
    Csv,
}

/// `nimbus cost`.
#[derive(Debug, Args)]
pub(crate) struct CostArgs {
    /// Group by these, comma-separated: day, tenant, app, revision, component.
    #[arg(long, default_value = "app")]
    by: String,
    /// First UTC day, YYYY-MM-DD (default: the first of this month).
    #[arg(long)]
    from: Option<String>,
    /// Last UTC day, inclusive (default: today).
    #[arg(long)]
    to: Option<String>,
    /// Every app's usage, not only the app of the `nimbus up` here (or `--app`).
    #[arg(long, conflicts_with = "budgets")]
    all: bool,
    /// Show where each budget stands this month instead.
    #[arg(long)]
    budgets: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = CostOutput::Text)]
    output: CostOutput,
}

pub(crate) fn run(data: &DataArgs, args: &CostArgs) -> anyhow::Result<()> {
    let client = Client::for_node(&data.remote)?;
    if args.budgets {
        return budgets(&client, args.output);
    }
    let mut path = format!("/v1/cost?by={}", seg(&args.by));
    for (name, value) in [("from", &args.from), ("to", &args.to)] {
        if let Some(v) = value {
            path.push_str(&format!("&{name}={}", seg(v)));
        }
    }
    let here = || (!data.remote.names_server()).then(crate::local_api::LocalApi::here).flatten().map(|a| a.app);
    let app = if args.all { None } else { data.app.clone().or_else(here) };
    if let Some(app) = &app {
        path.push_str(&format!("&app={}", seg(app)));
    }
    match args.output {
        CostOutput::Csv => {
            let csv = client.raw(reqwest::Method::GET, &format!("{path}&format=csv"), None, "")?;
            print!("{}", String::from_utf8_lossy(&csv));
        }
        CostOutput::Json => println!("{}", serde_json::to_string_pretty(&client.get::<serde_json::Value>(&path)?)?),
        CostOutput::Text => print_report(&client.get::<CostReport>(&path)?),
    }
    Ok(())
}

fn budgets(client: &Client, output: CostOutput) -> anyhow::Result<()> {
    let list: BudgetList = client.get("/v1/budgets")?;
    match output {
        CostOutput::Json => println!("{}", serde_json::to_string_pretty(&list)?),
        CostOutput::Csv => {
            println!("budget,month,monthly,spent,percent,reached,throttled,currency");
            for b in &list.budgets {
                let reached: Vec<String> = b.reached.iter().map(u32::to_string).collect();
                println!(
                    "{},{},{:.2},{:.6},{:.2},{},{},{}",
                    b.budget,
                    b.month,
                    b.monthly,
                    b.spent,
                    b.percent,
                    reached.join(";"),
                    b.throttled,
                    b.currency
                );
            }
        }
        CostOutput::Text if list.budgets.is_empty() => {
            println!("no budgets: add [[budget]] tables to the file of --cost-config (see examples/cost.toml)");
        }
        CostOutput::Text => {
            println!("{:<28} {:>8} {:>12} {:>12} {:>7}  STATE", "BUDGET", "MONTH", "MONTHLY", "SPENT", "%");
            for b in &list.budgets {
                let state = if b.throttled {
                    "throttled".to_string()
                } else if let Some(p) = b.reached.last() {
                    format!("over {p} %")
                } else {
                    "ok".to_string()
                };
                println!(
                    "{:<28} {:>8} {:>8.2} {} {:>8.4} {} {:>7.1}  {state}",
                    b.budget, b.month, b.monthly, b.currency, b.spent, b.currency, b.percent
                );
            }
        }
    }
    Ok(())
}

fn label(r: &CostRow) -> String {
    [&r.day, &r.tenant, &r.app, &r.revision, &r.component]
        .into_iter()
        .flatten()
        .map(|s| if s.is_empty() { "-" } else { s.as_str() })
        .collect::<Vec<_>>()
        .join(" / ")
}

fn print_report(r: &CostReport) {
    println!("usage and cost from {} to {} (UTC), by {:?}, in {}", r.from, r.to, r.by, r.currency);
    println!(
        "{:<40} {:>12} {:>10} {:>12} {:>12} {:>10} {:>10} {:>12}",
        "GROUP", "INVOCATIONS", "CPU s", "GiB-s", "EGRESS B", "EVENTS", "KV OPS", "COST"
    );
    for row in r.rows.iter().chain(std::iter::once(&r.total)) {
        let name = if std::ptr::eq(row, &r.total) { "total".to_string() } else { label(row) };
        let u = &row.usage;
        println!(
            "{name:<40} {:>12} {:>10.3} {:>12.4} {:>12} {:>10} {:>10} {:>12.6}",
            u.invocations,
            u.cpu_seconds,
            u.memory_gib_seconds,
            u.egress_bytes,
            u.events_published,
            u.kv_operations,
            row.cost.total
        );
    }
}
