//! `nimbus kv`: read and write an app's KV buckets (those its functions use through
//! `wasi:keyvalue`) — on the `nimbus up` running in this directory, or on a server with `--app`.
use anyhow::Context;
use clap::Subcommand;
use nimbus_control::{KeyPage, Written};

use crate::remote::{DataArgs, OutputArgs, seg};

#[derive(Debug, Subcommand)]
pub(crate) enum KvCommand {
    /// Print the value of KEY (as stored; binary values as they are).
    Get {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// Set KEY to VALUE (or to the contents of @FILE); answers once it is durable.
    Set {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The value, or @FILE.
        value: String,
        /// Expire the key after this long (e.g. 30s, 10m).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// List the keys of BUCKET (all of them, page by page).
    List {
        /// The bucket.
        bucket: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Delete KEY.
    Delete {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
}

pub(crate) fn run(data: &DataArgs, command: &KvCommand) -> anyhow::Result<()> {
    let (client, app) = data.connect()?;
    match command {
        KvCommand::Get { bucket, key } => {
            let value =
                client.raw(reqwest::Method::GET, &format!("{app}/kv/{}/keys/{}", seg(bucket), seg(key)), None, "")?;
            use std::io::Write;
            std::io::stdout().write_all(&value)?;
            if !value.ends_with(b"\n") && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                println!();
            }
            Ok(())
        }
        KvCommand::Set { bucket, key, value, ttl } => {
            let bytes = match value.strip_prefix('@') {
                Some(path) => std::fs::read(path).with_context(|| format!("cannot read {path}"))?,
                None => value.clone().into_bytes(),
            };
            let mut path = format!("{app}/kv/{}/keys/{}", seg(bucket), seg(key));
            if let Some(ttl) = ttl {
                path.push_str(&format!("?ttl_s={}", ttl.as_secs().max(1)));
            }
            let w: Written =
                client.call(reqwest::Method::PUT, &path, Some(bytes.into()), "application/octet-stream")?;
            println!("set {key} in {bucket} (revision {})", w.revision);
            Ok(())
        }
        KvCommand::List { bucket, prefix, output } => {
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut path = format!("{app}/kv/{}/keys?prefix={}", seg(bucket), seg(prefix));
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={}", seg(c)));
                }
                let page: KeyPage = client.get(&path)?;
                all.extend(page.keys);
                match page.cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            output.print(&all, |keys| keys.iter().for_each(|k| println!("{k}")))
        }
        KvCommand::Delete { bucket, key } => {
            client.call::<()>(
                reqwest::Method::DELETE,
                &format!("{app}/kv/{}/keys/{}", seg(bucket), seg(key)),
                None,
                "",
            )?;
            println!("deleted {key} from {bucket}");
            Ok(())
        }
    }
}
