#!/usr/bin/env bash
# Services: proxy overhead vs nginx and direct, scale-from-zero with and without prewarm.
# Usage: bench/services.sh [RUNS]
source "$(dirname "$0")/lib.sh"
need_wrk
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
build_all
# The floor: a proxy on the same HTTP stack that does nothing else.
cargo build --release -q --manifest-path bench/hyper-proxy/Cargo.toml --target-dir target/hyper-proxy
export HYPER_PROXY="$PWD/target/hyper-proxy/release/hyper-proxy"
# The services under test are the templates, as `nimbus new` writes them.
APPS=$(mktemp -d)
for lang in go python java; do "$NIMBUS" new "service-$lang" "bench-$lang" --dir "$APPS" >/dev/null; done
(cd "$APPS/bench-go" && go build -o service .)
python3 bench/services.py "$NIMBUS" "$APPS" "${1:-5}"
