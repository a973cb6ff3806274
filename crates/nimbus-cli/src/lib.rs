//! The `nimbus` command line.
//!
//! This crate owns the commands (`up`, `build`, `schema`, `new`, `templates`), the embedded app templates, their flags and environment variables,
//! log set-up and what the user reads on the terminal. It holds no platform logic: it wires
//! `nimbus-manifest`, `nimbus-wasm` and `nimbus-gateway` together. The `nimbus` binary is just
//! [`main`].
//!
//! ```no_run
//! std::process::exit(match nimbus_cli::main() {
//!     std::process::ExitCode::SUCCESS => 0,
//!     _ => 1,
//! });
//! ```

mod build;
mod logging;
mod schema;
mod templates;
mod up;

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
    Up(up::UpArgs),
    /// Run the build command of each component of the app in DIR.
    Build(build::BuildArgs),
    /// Print the JSON Schema of nimbus.toml.
    Schema,
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
    let cli = Cli::parse();
    logging::init(&cli.log);
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Build(args) => build::run(&args),
        Command::Schema => schema::run(),
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
