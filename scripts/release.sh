#!/usr/bin/env bash
# The release build of `nimbus`, with its dependency list inside: `cargo auditable` embeds the
# resolved dependency tree (a zlib-compressed JSON `.dep-v0` section), so scanners (`cargo audit
# bin`, osv-scanner, Trivy, Grype) can match the shipped binary against advisories without its
# sources or lockfile. Nimbus reads the same section from Rust functions at deploy.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo auditable --version >/dev/null 2>&1 || cargo install --locked cargo-auditable@0.7.7
cargo auditable build --release --locked --bin nimbus
bin="${CARGO_TARGET_DIR:-target}/release/nimbus"
# (Not `grep -q`: it stops reading early, readelf dies of SIGPIPE, and pipefail fails the check.)
readelf -S --wide "$bin" | grep '\.dep-v0' >/dev/null || { echo "error: $bin has no .dep-v0 section" >&2; exit 1; }
echo "$bin: $(du -h "$bin" | cut -f1), its dependency list embedded (.dep-v0)"
