//! `nimbus events`: publish an event, tail a topic, list and replay dead letters — on the
//! `nimbus up` running in this directory (found through `.nimbus/api.json`), or on a server with `--app`.
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use nimbus_control::{EventPage, PublishedEvent, Replayed, StoredEvent};

use crate::remote::{Client, DataArgs, Output, OutputArgs, seg};

#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// Publish one event and wait until it is durable.
    Publish(PublishArgs),
    /// Print a topic's events as they arrive (Ctrl-C to stop).
    Tail(TailArgs),
    /// The dead letters of a topic.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The topic.
    topic: String,
    /// CloudEvents `type`.
    #[arg(long = "type", default_value = "dev.nimbus.cli")]
    ty: String,
    /// CloudEvents `source`.
    #[arg(long, default_value = "/cli")]
    source: String,
    /// CloudEvents `id` (default: a random one). Publishing the same source and id again within
    /// the dedup window is acknowledged without appending a second copy.
    #[arg(long)]
    id: Option<String>,
    /// Ordering key (`partitionkey`): events with the same key are delivered in order.
    #[arg(long)]
    key: Option<String>,
    /// The data: JSON (sent as `application/json`), other text (`text/plain`), or @FILE.
    #[arg(long)]
    data: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// The topic.
    topic: String,
    /// Start at the oldest retained event instead of only new ones.
    #[arg(long, conflicts_with = "from")]
    all: bool,
    /// Start at this position.
    #[arg(long)]
    from: Option<u64>,
    /// Print what is there and stop instead of waiting for more.
    #[arg(long)]
    no_follow: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// Dead letters of TOPIC (in TOPIC.dlq, or --dlq), with why they failed.
    List {
        /// The topic whose dead letters to list.
        topic: String,
        /// The dead-letter topic, if not TOPIC.dlq.
        #[arg(long)]
        dlq: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Publish every dead letter not replayed yet to the topic it failed on.
    Replay {
        /// The topic whose dead letters to replay.
        topic: String,
        /// The dead-letter topic, if not TOPIC.dlq.
        #[arg(long)]
        dlq: Option<String>,
    },
}

pub(crate) fn run(data: &DataArgs, command: &EventsCommand) -> anyhow::Result<()> {
    let (client, app) = data.connect()?;
    match command {
        EventsCommand::Publish(args) => publish(&client, &app, args),
        EventsCommand::Tail(args) => tail(&client, &app, args),
        EventsCommand::Dlq(DlqCommand::List { topic, dlq, output }) => {
            let dlq = dlq.clone().unwrap_or_else(|| format!("{topic}.dlq"));
            let page: EventPage = client.get(&format!("{app}/topics/{}/events", seg(&dlq)))?;
            output.print(&page, |page| {
                if page.events.is_empty() {
                    println!("no dead letters in {dlq}");
                }
                for e in &page.events {
                    let a = |name: &str| e.event.get(name).map(plain).unwrap_or_default();
                    println!(
                        "{:>6}  {}  {}  {}  attempts={}  {}  {}",
                        e.seq,
                        a("id"),
                        a("type"),
                        a("nimbuserrorcode"),
                        a("nimbusattempts"),
                        a("nimbuserrordest"),
                        a("nimbuserror")
                    );
                }
            })
        }
        EventsCommand::Dlq(DlqCommand::Replay { topic, dlq }) => {
            let dlq = dlq.clone().unwrap_or_else(|| format!("{topic}.dlq"));
            let r: Replayed = client.send(reqwest::Method::POST, &format!("{app}/topics/{}/replay", seg(&dlq)), &())?;
            println!("replayed {} dead letter(s) from {dlq}", r.replayed);
            Ok(())
        }
    }
}

fn publish(client: &Client, app: &str, args: &PublishArgs) -> anyhow::Result<()> {
    let mut event = serde_json::json!({
        "specversion": "1.0",
        "id": args.id.clone().unwrap_or_else(|| format!("{:032x}", fastrand::u128(..))),
        "source": args.source,
        "type": args.ty,
    });
    if let Some(key) = &args.key {
        event["partitionkey"] = key.clone().into();
    }
    if let Some(data) = &args.data {
        let text = match data.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?,
            None => data.clone(),
        };
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(json) => {
                event["datacontenttype"] = "application/json".into();
                event["data"] = json;
            }
            Err(_) => {
                event["datacontenttype"] = "text/plain".into();
                event["data"] = text.into();
            }
        }
    }
    let body = serde_json::to_vec(&event)?;
    let path = format!("{app}/topics/{}/events", seg(&args.topic));
    let p: PublishedEvent =
        client.call(reqwest::Method::POST, &path, Some(body.into()), "application/cloudevents+json")?;
    args.output.print(&p, |p| {
        if p.duplicate {
            println!("duplicate of event {} in {} (seq {}); not appended again", p.id, p.topic, p.seq);
        } else {
            println!("published {} to {} (seq {})", p.id, p.topic, p.seq);
        }
    })
}

fn tail(client: &Client, app: &str, args: &TailArgs) -> anyhow::Result<()> {
    let topic = seg(&args.topic);
    let mut next = match (args.all, args.from) {
        (true, _) => Some(1),
        (false, Some(from)) => Some(from),
        (false, None) => None,
    };
    loop {
        let wait = if args.no_follow { 0 } else { 25_000 };
        let path = match next {
            Some(from) => format!("{app}/topics/{topic}/events?from={from}&wait_ms={wait}"),
            None => format!("{app}/topics/{topic}/events?latest=true&wait_ms={wait}"),
        };
        let page: EventPage = client.get(&path)?;
        for e in &page.events {
            print_event(e, args.output.output)?;
        }
        if args.no_follow && page.events.is_empty() {
            return Ok(());
        }
        next = Some(page.next);
        if page.events.is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn print_event(e: &StoredEvent, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string(&serde_json::json!({"seq": e.seq, "event": e.event}))?),
        Output::Text => {
            let a = |name: &str| e.event.get(name).map(plain).unwrap_or_else(|| "-".into());
            let mut data = e
                .event
                .get("data")
                .map(plain)
                .or_else(|| e.event.get("data_base64").map(|_| "<binary>".into()))
                .unwrap_or_default();
            if data.len() > 120 {
                data = format!("{}…", data.chars().take(120).collect::<String>());
            }
            println!("{:>6}  {}  {}  {}  {}  {data}", e.seq, a("time"), a("type"), a("id"), a("source"));
        }
    }
    Ok(())
}

/// A JSON value as text: strings without quotes.
fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
