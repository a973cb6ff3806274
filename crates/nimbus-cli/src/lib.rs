//! The `nimbus` command line.
//!
//! This crate owns the commands (`up`, `build`, `new`, `templates`, `schema`, `doctor`; `server`; and the
//! client commands `deploy`, `apps`, `revisions`, `traffic`, `rollback`, `tokens`, `events`, `kv`, `actors`, `workflows`, `traces`, `logs`, `login`), the
//! embedded app templates, their flags and environment variables,
//! log set-up and what the user reads on the terminal. It holds no platform logic: it wires
//! `nimbus-manifest`, `nimbus-wasm`, `nimbus-services`, `nimbus-bus`, `nimbus-state`, `nimbus-observe`, `nimbus-gateway`, `nimbus-triggers`, `nimbus-host` (which assembles the app `nimbus up` serves) and `nimbus-control` together. The `nimbus` binary is just
//! [`main`].
//!
//! ```no_run
//! std::process::exit(match nimbus_cli::main() {
//!     std::process::ExitCode::SUCCESS => 0,
//!     _ => 1,
//! });
//! ```

mod actors;
mod advisories;
mod alerts;
mod audit;
mod build;
mod cluster;
mod connections;
mod cost;
mod deploy;
mod dev;
mod doctor;
mod events;
mod identity;
mod k8s;
mod kv;
mod local_api;
mod local_secrets;
mod logging;
mod logs;
mod manage;
mod peers;
mod policy;
mod registry;
mod remote;
mod schema;
mod secrets;
mod server;
mod serving;
mod signing;
mod templates;
mod tls;
mod traces;
mod up;
mod watch;
mod workflows;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Nimbus: WebAssembly functions and services, one binary.
#[derive(Debug, Parser)]
#[command(name = "nimbus", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the app in DIR (default: the current directory) on 127.0.0.1:3000.
    Up(Box<up::UpArgs>),
    /// Serve the app in DIR like `up`, rebuilding and swapping it in as its files change.
    Dev(Box<dev::DevArgs>),
    /// Run the platform: the gateway for every deployed app plus the control API.
    Server(Box<server::ServerArgs>),
    /// Upload the app in DIR to a server as a new immutable revision.
    Deploy(deploy::DeployArgs),
    /// List, show or delete the apps of a server.
    Apps {
        #[command(flatten)]
        remote: remote::RemoteArgs,
        #[command(subcommand)]
        command: manage::AppsCommand,
    },
    /// List, show or delete an app's revisions.
    Revisions {
        #[command(flatten)]
        remote: remote::RemoteArgs,
        #[command(subcommand)]
        command: manage::RevisionsCommand,
    },
    /// Show or change how an app's traffic is split across revisions, and its tags.
    Traffic {
        #[command(flatten)]
        remote: remote::RemoteArgs,
        #[command(flatten)]
        args: manage::TrafficArgs,
    },
    /// Restore an app's previous traffic setting at once (or send all traffic to --to REVISION).
    Rollback {
        #[command(flatten)]
        remote: remote::RemoteArgs,
        #[command(flatten)]
        args: manage::RollbackArgs,
    },
    /// List the platform's nodes (status, labels, version, load, what each serves); create the
    /// cluster CA.
    Nodes {
        #[command(flatten)]
        remote: remote::RemoteArgs,
        #[command(subcommand)]
        command: cluster::NodesCommand,
    },
    /// Create, list and revoke API tokens (admin).
    Tokens {
        #[command(flatten)]
        remote: remote::RemoteArgs,
        #[command(subcommand)]
        command: manage::TokensCommand,
    },
    /// Set, list and remove an app's secrets; rotate the keys sealing them.
    Secrets {
        #[command(flatten)]
        remote: remote::RemoteArgs,
        #[command(subcommand)]
        command: secrets::SecretsCommand,
    },
    /// List and set the Cedar policies a server decides with; test them from a file.
    Policy {
        #[command(flatten)]
        remote: remote::RemoteArgs,
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Import the offline advisory database deploys are checked against (OSV files).
    Advisories {
        #[command(subcommand)]
        command: advisories::AdvisoriesCommand,
    },
    /// Push an app to an OCI registry, or pull one from it into an app directory.
    Registry {
        #[command(subcommand)]
        command: registry::RegistryCommand,
    },
    /// Create signing keys, sign artifacts and check signatures, as a server does at deploy.
    Signing {
        #[command(subcommand)]
        command: signing::SigningCommand,
    },
    /// Read the audit trail of changes and refusals (admin); verify it was not tampered with.
    Audit {
        #[command(flatten)]
        remote: remote::RemoteArgs,
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Publish events, tail a topic, list and replay dead letters (on the `nimbus up` of this
    /// directory, or on a server).
    Events {
        #[command(flatten)]
        data: remote::DataArgs,
        #[command(subcommand)]
        command: events::EventsCommand,
    },
    /// Call actors and read their state (on the `nimbus up` of this directory, or a server).
    Actors {
        #[command(flatten)]
        data: remote::DataArgs,
        #[command(subcommand)]
        command: actors::ActorsCommand,
    },
    /// Start, list, show, signal and cancel workflow runs (on the `nimbus up` of this directory,
    /// or on a server).
    Workflows {
        #[command(flatten)]
        data: remote::DataArgs,
        #[command(subcommand)]
        command: workflows::WorkflowsCommand,
    },
    /// Read and write KV buckets (on the `nimbus up` of this directory, or on a server).
    Kv {
        #[command(flatten)]
        data: remote::DataArgs,
        #[command(subcommand)]
        command: kv::KvCommand,
    },
    /// Alerts with their root-cause suspects, and silences (on the `nimbus up` of this
    /// directory, or on a server).
    Alerts {
        #[command(flatten)]
        data: remote::DataArgs,
        #[command(subcommand)]
        command: alerts::AlertsCommand,
    },
    /// Usage and cost by app, component, revision, tenant and day (table, JSON or CSV), and
    /// budgets (on the `nimbus up` of this directory, or on a server).
    Cost {
        #[command(flatten)]
        data: remote::DataArgs,
        #[command(flatten)]
        args: cost::CostArgs,
    },
    /// List traces (by route, duration, errors) or show one as a waterfall (on the `nimbus up`
    /// of this directory, or on a server).
    Traces {
        #[command(flatten)]
        remote: remote::RemoteArgs,
        #[command(flatten)]
        args: traces::TracesArgs,
    },
    /// Print (or follow) the per-invocation logs of components (on the `nimbus up` of this
    /// directory, or on a server).
    Logs {
        #[command(flatten)]
        remote: remote::RemoteArgs,
        #[command(flatten)]
        args: logs::LogsArgs,
    },
    /// Check a server URL and token and save them for later commands.
    Login(manage::LoginArgs),
    /// Run the build command of each component of the app in DIR.
    Build(build::BuildArgs),
    /// Say which isolation layers and toolchains this host offers.
    Doctor,
    /// Print the JSON Schema of nimbus.toml.
    Schema,
    /// Run Nimbus on Kubernetes.
    K8s {
        #[command(subcommand)]
        command: k8s::K8sCommand,
    },
    /// Create a new app from a template.
    New(templates::NewArgs),
    /// Work with app templates.
    Templates {
        #[command(subcommand)]
        command: templates::TemplatesCommand,
    },
}

/// Parses the command line, runs the command, and reports errors on stderr.
pub fn main() -> ExitCode {
    quiet_broken_pipe();
    let cli = Cli::parse();
    logging::init(&cli.log);
    let result = match cli.command {
        Command::Up(args) => up::run(*args),
        Command::Dev(args) => dev::run(*args),
        Command::Server(args) => server::run(*args),
        Command::Deploy(args) => deploy::run(&args),
        Command::Apps { remote, command } => manage::apps(&remote, &command),
        Command::Revisions { remote, command } => manage::revisions(&remote, &command),
        Command::Traffic { remote, args } => manage::traffic(&remote, &args),
        Command::Rollback { remote, args } => manage::rollback(&remote, &args),
        Command::Nodes { remote, command } => cluster::nodes(&remote, &command),
        Command::Tokens { remote, command } => manage::tokens(&remote, &command),
        Command::Secrets { remote, command } => secrets::run(&remote, &command),
        Command::Policy { remote, command } => policy::run(&remote, &command),
        Command::Audit { remote, command } => audit::run(&remote, &command),
        Command::Advisories { command } => advisories::run(&command),
        Command::Registry { command } => registry::run(&command),
        Command::Signing { command } => signing::run(&command),
        Command::Events { data, command } => events::run(&data, &command),
        Command::Kv { data, command } => kv::run(&data, &command),
        Command::Actors { data, command } => actors::run(&data, &command),
        Command::Workflows { data, command } => workflows::run(&data, &command),
        Command::Alerts { data, command } => alerts::run(&data, &command),
        Command::Cost { data, args } => cost::run(&data, &args),
        Command::Traces { remote, args } => traces::run(&remote, &args),
        Command::Logs { remote, args } => logs::run(&remote, &args),
        Command::Login(args) => manage::login(&args),
        Command::Build(args) => build::run(&args),
        Command::Schema => schema::run(),
        Command::K8s { command } => k8s::run(&command),
        Command::Doctor => doctor::run(),
        Command::New(args) => templates::new(&args),
        Command::Templates { command } => templates::list(&command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `nimbus apps list | head` closes our stdout early; `println!` then panics. Exit quietly with
/// the shell's SIGPIPE status instead of printing a panic.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
