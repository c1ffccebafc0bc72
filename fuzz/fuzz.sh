#!/usr/bin/env bash
# Builds and runs the libFuzzer targets on stable Rust, without cargo-fuzz or nightly.
#
#   bash fuzz/fuzz.sh build              # every target (CI runs this)
#   bash fuzz/fuzz.sh run TARGET [SECS]  # fuzz TARGET for SECS seconds (default 300)
#   bash fuzz/fuzz.sh list
#
# cargo-fuzz only adds RUSTFLAGS to `cargo build`; the ones below are its defaults with
# `--sanitizer none` (sancov instrumentation via LLVM pass and llvm-args, both stable
# rustc options). `--target` keeps the flags off build scripts. TARGET starts from the
# hand-written inputs in fuzz/seeds/TARGET (in git); what the fuzzer finds grows
# fuzz/corpus/TARGET (not in git); a crash is written to fuzz/artifacts/TARGET/ and, once
# fixed, its input becomes a regression unit test beside the code.
set -euo pipefail
cd "$(dirname "$0")"

triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing -Cdebug-assertions -Coverflow-checks \
 -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth"
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^sendmail-rs-fuzz$')

case "${1:-build}" in
list) echo "$targets" ;;
build) cargo build --release --target "$triple" --bins ;;
run)
    t=${2:?target}
    secs=${3:-300}
    cargo build --release --target "$triple" --bin "$t"
    mkdir -p "corpus/$t" "artifacts/$t"
    "target/$triple/release/$t" -max_total_time="$secs" -max_len=4096 -timeout=10 \
        -rss_limit_mb=1024 -print_final_stats=1 -artifact_prefix="artifacts/$t/" "corpus/$t" "seeds/$t"
    ;;
*) echo "usage: $0 build | run TARGET [SECS] | list" >&2; exit 64 ;;
esac
