//! The `nimbus` binary: everything lives in `nimbus-cli`.

/// mimalloc rather than glibc's allocator: a proxied request makes about a dozen short-lived
/// allocations across threads, which mimalloc's per-thread free lists serve with less work
/// (measured in `bench/RESULTS.md`, "Link-time optimisation and mimalloc").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    nimbus_cli::main()
}
