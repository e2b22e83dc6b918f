#!/usr/bin/env bash
# Runs every refsys benchmark and writes the results to target/refsys-bench/:
#   criterion.txt  the criterion benches of the core (in-memory stores)
#   results.md     the HTTP load table (requests/s, p50/p99, peak server RSS, ratios, targets)
#
#   bash benches/run.sh            # everything, ~8 minutes on 2 cores once built
#   bash benches/run.sh --smoke    # a few seconds: every bench once, tiny load runs (CI)
#
# Extra arguments go to the load runner (`load --help`), e.g. --stores memory,sqlite.
# Load goes to 127.0.0.1 only. PostgreSQL: 127.0.0.1:5432, user postgres, trust auth; the
# runner creates its own databases and drops them. Without psql/pgbench it skips PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/refsys-bench
mkdir -p "$out"

smoke=0
for arg in "$@"; do
    [ "$arg" = --smoke ] && smoke=1
done

if [ "$smoke" = 1 ]; then
    # Criterion's --test mode runs each bench once: it proves they work, measures nothing.
    cargo bench -p refsys-benches --features postgres --bench core -- --test
    cargo build --release -p refsys-benches --features postgres --bin load
    ./target/release/load "$@"
    exit 0
fi

cargo build --release -p refsys-benches --features postgres --bin load
# The example server is measured too when it builds; the bench server does not need it.
example=()
if ! cargo build --release -p refsys-server --features postgres,redis; then
    echo "run.sh: refsys-server does not build; measuring the bench server only" >&2
    example=(--no-example-server)
fi
cargo bench -p refsys-benches --features postgres --bench core 2>&1 | tee "$out/criterion.txt"
./target/release/load "${example[@]}" "$@"
