//! The `nimbus` binary: everything lives in `nimbus-cli`.
fn main() -> std::process::ExitCode {
    nimbus_cli::main()
}
