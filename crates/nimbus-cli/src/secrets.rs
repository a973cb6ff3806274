//! `nimbus secrets`: set, list and remove an app's secrets on a server, and rotate the keys
//! sealing them. A value is read from stdin (hidden when it is a terminal) or a file, never from
//! the command line, where shell history and `ps` would keep it; the server never sends one back.
use std::io::{BufRead, IsTerminal, Read};
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use nimbus_control::{RotatedKeys, SecretInfo, SecretList};
use reqwest::Method;

use crate::remote::{Client, OutputArgs, RemoteArgs, seg, time};

#[derive(Debug, Subcommand)]
pub(crate) enum SecretsCommand {
    /// Set a secret from stdin (one trailing newline dropped; typed hidden on a terminal) or
    /// --from-file (taken as is).
    Set {
        /// The app.
        #[arg(long, env = "NIMBUS_APP")]
        app: String,
        /// The secret's name, as `grants.secrets` lists it.
        name: String,
        /// Read the value from this file instead of stdin.
        #[arg(long, value_name = "PATH")]
        from_file: Option<PathBuf>,
    },
    /// List an app's secrets (names and when each was set; never values).
    List {
        /// The app.
        #[arg(long, env = "NIMBUS_APP")]
        app: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Remove a secret.
    Rm {
        /// The app.
        #[arg(long, env = "NIMBUS_APP")]
        app: String,
        /// The secret's name.
        name: String,
    },
    /// Start a new data key and re-wrap every key under the server's master key, read again
    /// from its file (put a new key there first to change it); values stay readable (admin).
    RotateKey(OutputArgs),
}

pub(crate) fn run(remote: &RemoteArgs, command: &SecretsCommand) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    match command {
        SecretsCommand::Set { app, name, from_file } => {
            let value = match from_file {
                Some(path) => std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
                None => read_stdin(name)?,
            };
            let path = format!("/v1/apps/{}/secrets/{}", seg(app), seg(name));
            let info: SecretInfo = client.call(Method::PUT, &path, Some(value.into()), "application/octet-stream")?;
            println!("Set secret `{}` of app `{app}`.", info.name);
            Ok(())
        }
        SecretsCommand::List { app, output } => {
            let list: SecretList = client.get(&format!("/v1/apps/{}/secrets", seg(app)))?;
            output.print(&list, |list| {
                println!("{:<40} UPDATED", "NAME");
                for s in &list.secrets {
                    println!("{:<40} {}", s.name, time(s.updated_at));
                }
            })
        }
        SecretsCommand::Rm { app, name } => {
            client.delete(&format!("/v1/apps/{}/secrets/{}", seg(app), seg(name)))?;
            println!("Removed secret `{name}` of app `{app}`.");
            Ok(())
        }
        SecretsCommand::RotateKey(output) => {
            let rotated: RotatedKeys = client.call(Method::POST, "/v1/secrets/rotate", None, "")?;
            output.print(&rotated, |r| {
                println!(
                    "New values are sealed under data key {}; all {} data keys are wrapped under master key {}.",
                    r.data_key, r.data_keys, r.master_key
                );
            })
        }
    }
}

/// The value on stdin: typed without echo on a terminal, else read to the end; one trailing
/// newline is dropped.
fn read_stdin(name: &str) -> anyhow::Result<Vec<u8>> {
    let stdin = std::io::stdin();
    let mut value = Vec::new();
    if stdin.is_terminal() {
        eprint!("Value of `{name}` (not shown): ");
        let _echo = NoEcho::on(&stdin);
        stdin.lock().read_until(b'\n', &mut value).context("cannot read the value from the terminal")?;
        eprintln!();
    } else {
        stdin.lock().read_to_end(&mut value).context("cannot read the value from stdin")?;
    }
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    anyhow::ensure!(!value.is_empty(), "the value is empty; pipe it in, e.g. `nimbus secrets set NAME < file`");
    Ok(value)
}

/// Terminal echo turned off until dropped.
struct NoEcho<'a> {
    fd: std::os::fd::BorrowedFd<'a>,
    before: Option<rustix::termios::Termios>,
}

impl<'a> NoEcho<'a> {
    fn on(stdin: &'a std::io::Stdin) -> Self {
        use std::os::fd::AsFd;
        let fd = stdin.as_fd();
        let before = rustix::termios::tcgetattr(fd).ok();
        if let Some(mut quiet) = before.clone() {
            quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
            let _ = rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &quiet);
        }
        Self { fd, before }
    }
}

impl Drop for NoEcho<'_> {
    fn drop(&mut self) {
        if let Some(before) = &self.before {
            let _ = rustix::termios::tcsetattr(self.fd, rustix::termios::OptionalActions::Now, before);
        }
    }
}
