//! `nimbus alerts`: the node's alerts (anomalies, forecasts, broken objectives) with their
//! root-cause suspects, and silences — on the `nimbus up` of this directory, or a server.
use std::time::Duration;

use clap::Subcommand;
use nimbus_control::{AlertList, SilenceList};
use nimbus_observe::insight::{Alert, NewSilence, Silence};

use crate::remote::{Client, DataArgs, OutputArgs, seg};

/// `nimbus alerts list|show|silence|silences|unsilence`.
#[derive(Debug, Subcommand)]
pub(crate) enum AlertsCommand {
    /// List alerts, newest first (firing ones unless `--all` or `--resolved`; every app's
    /// unless `--app`).
    List {
        /// Resolved alerts too.
        #[arg(long, conflicts_with = "resolved")]
        all: bool,
        /// Only resolved alerts.
        #[arg(long)]
        resolved: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show one alert: its signal against its baseline, the ranked suspects with their evidence
    /// (example traces, log lines), and the app's recent deploys.
    Show {
        /// The alert's id (from `nimbus alerts list`).
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Stop notifying the app's matching alerts for a while (they are still recorded).
    Silence {
        /// Only alerts of this component.
        #[arg(long)]
        component: Option<String>,
        /// Only alerts of this signal (latency_p95, error_rate, throughput, cold_start_rate,
        /// queue_depth, memory, slo_latency, slo_availability).
        #[arg(long)]
        signal: Option<String>,
        /// How long (e.g. 30m, 2h; at most 30 days).
        #[arg(long = "for", value_parser = humantime::parse_duration, default_value = "1h")]
        duration: Duration,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List the silences that have not ended.
    Silences {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// End one of the app's silences.
    Unsilence {
        /// The silence's id.
        id: String,
    },
}

pub(crate) fn run(data: &DataArgs, command: &AlertsCommand) -> anyhow::Result<()> {
    match command {
        AlertsCommand::List { all, resolved, output } => {
            let client = Client::for_node(&data.remote)?;
            let state = if *all {
                "all"
            } else if *resolved {
                "resolved"
            } else {
                "firing"
            };
            let mut path = format!("/v1/alerts?state={state}");
            if let Some(app) = &data.app {
                path.push_str(&format!("&app={}", seg(app)));
            }
            let list: AlertList = client.get(&path)?;
            output.print(&list, |l| print_list(&l.alerts))
        }
        AlertsCommand::Show { id, output } => {
            let client = Client::for_node(&data.remote)?;
            let alert: Alert = client.get(&format!("/v1/alerts/{}", seg(id)))?;
            output.print(&alert, print_alert)
        }
        AlertsCommand::Silence { component, signal, duration, comment, output } => {
            let (client, app) = data.connect()?;
            let new = NewSilence {
                component: component.clone(),
                signal: signal.clone(),
                duration_s: duration.as_secs().max(1),
                comment: comment.clone(),
            };
            let created: Silence = client.send(reqwest::Method::POST, &format!("{app}/silences"), &new)?;
            output.print(&created, |s| println!("silence {} until {}", s.id, when(s.ends_at)))
        }
        AlertsCommand::Silences { output } => {
            let client = Client::for_node(&data.remote)?;
            let list: SilenceList = client.get("/v1/silences")?;
            output.print(&list, |l| {
                if l.silences.is_empty() {
                    println!("no silences");
                }
                for s in &l.silences {
                    let any = |m: &Option<String>| m.clone().unwrap_or_else(|| "*".into());
                    println!(
                        "{}  app={} component={} signal={}  until {}  by {}  {}",
                        s.id,
                        s.app,
                        any(&s.component),
                        any(&s.signal),
                        when(s.ends_at),
                        s.created_by,
                        s.comment
                    );
                }
            })
        }
        AlertsCommand::Unsilence { id } => {
            let (client, app) = data.connect()?;
            client.delete(&format!("{app}/silences/{}", seg(id)))?;
            println!("silence {id} ended");
            Ok(())
        }
    }
}

fn when(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

fn print_list(alerts: &[Alert]) {
    if alerts.is_empty() {
        println!("no alerts");
        return;
    }
    println!(
        "{:<16}  {:<8}  {:<8}  {:<9}  {:<24}  {:<20}  SUSPECT",
        "ID", "STATE", "KIND", "SEVERITY", "APP/COMPONENT", "SIGNAL"
    );
    for a in alerts {
        let state = if a.silenced { "silenced".to_string() } else { format!("{:?}", a.state).to_lowercase() };
        println!(
            "{:<16}  {:<8}  {:<8}  {:<9}  {:<24}  {:<20}  {}",
            a.id,
            state,
            format!("{:?}", a.kind).to_lowercase(),
            format!("{:?}", a.severity).to_lowercase(),
            format!("{}/{}", a.app, a.component),
            a.signal,
            a.suspects.first().map_or("-", |s| s.component.as_str())
        );
    }
}

fn print_alert(a: &Alert) {
    println!("{} — {}", a.id, a.summary);
    println!("  state: {:?}{}", a.state, if a.silenced { " (silenced)" } else { "" });
    println!("  began: {}   detected: {}", when(a.started_at), when(a.detected_at));
    if let Some(r) = a.resolved_at {
        println!("  resolved: {}", when(r));
    }
    if let Some(lead) = a.lead_time_s {
        println!("  lead time: {lead:.0} s");
    }
    if !a.suspects.is_empty() {
        println!("  suspects:");
    }
    for (i, s) in a.suspects.iter().enumerate() {
        println!("  {}. {} (score {:.2})", i + 1, s.component, s.score);
        for e in &s.evidence {
            println!("       - {e}");
        }
        for t in &s.traces {
            println!("       trace {t}   (nimbus traces show {t})");
        }
        for l in &s.logs {
            println!("       log {l}");
        }
    }
    for c in &a.changes {
        println!(
            "  deploy at {}: {} → {} changed [{}]",
            when(c.at),
            c.from.as_deref().unwrap_or("-"),
            c.to,
            c.components.join(", ")
        );
    }
}
