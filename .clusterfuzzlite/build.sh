#!/bin/bash -eu
# Builds every cargo-fuzz target in fuzz/ for ClusterFuzzLite / OSS-Fuzz and
# ships each with its committed seed corpus. The base image's cargo wrapper
# adds the sanitizer and coverage flags for $SANITIZER.
cd "$SRC/cache-sim"
cargo fuzz build -O --debug-assertions
release=fuzz/target/x86_64-unknown-linux-gnu/release
for target in $(cargo fuzz list); do
  cp "$release/$target" "$OUT/"
  if [ -d "fuzz/seeds/$target" ]; then
    (cd "fuzz/seeds/$target" && zip -q -r "$OUT/${target}_seed_corpus.zip" .)
  fi
done
