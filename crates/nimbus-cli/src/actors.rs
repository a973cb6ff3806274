//! `nimbus actors`: call an actor and read its committed state — on the `nimbus up` running in
//! this directory (its gateway, data API and token from `.nimbus/api.json`), or with `--gateway`
//! and a server (and the server's token, which an actor type that is not `public` needs).
use clap::Subcommand;

use crate::remote::{DataArgs, OutputArgs, seg};

#[derive(Debug, Subcommand)]
pub(crate) enum ActorsCommand {
    /// Invoke METHOD on the actor TYPE/KEY and print its answer.
    Call {
        /// The actor type.
        actor_type: String,
        /// The actor's key.
        key: String,
        /// The method.
        method: String,
        /// The input (or @FILE).
        #[arg(long, default_value = "")]
        data: String,
        /// The app's gateway, e.g. http://127.0.0.1:3000 (default: the `nimbus up` of this directory).
        #[arg(long, env = "NIMBUS_GATEWAY")]
        gateway: Option<String>,
    },
    /// Print the committed state of the actor TYPE/KEY.
    State {
        /// The actor type.
        actor_type: String,
        /// The actor's key.
        key: String,
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub(crate) fn run(data: &DataArgs, command: &ActorsCommand) -> anyhow::Result<()> {
    match command {
        ActorsCommand::Call { actor_type, key, method, data: input, gateway } => {
            // An actor type that is not `public` takes a token that may write the app's data.
            let client = data.gateway(gateway.as_deref())?;
            let input = crate::remote::data_arg(input)?;
            let path = format!("/actors/{}/{}/{}", seg(actor_type), seg(key), seg(method));
            let out = client.raw(reqwest::Method::POST, &path, Some(input.into()), "application/octet-stream")?;
            use std::io::Write;
            std::io::stdout().write_all(&out)?;
            if !out.ends_with(b"\n") && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                println!();
            }
            Ok(())
        }
        ActorsCommand::State { actor_type, key, output } => {
            let (client, app) = data.connect()?;
            let path =
                format!("{app}/kv/{}/keys/{}", nimbus_actors::ACTORS_BUCKET, seg(&format!("{actor_type}/{key}")));
            let bytes = client.raw(reqwest::Method::GET, &path, None, "")?;
            let state = nimbus_actors::decode_state(&bytes)?;
            let shown: std::collections::BTreeMap<&String, String> =
                state.iter().map(|(k, v)| (k, String::from_utf8_lossy(v).into_owned())).collect();
            output.print(&shown, |s| s.iter().for_each(|(k, v)| println!("{k} = {v}")))
        }
    }
}
