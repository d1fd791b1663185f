#!/usr/bin/env bash
# Runs zoo models on the JIT under valgrind memcheck; fails if memcheck reports any error.
# Usage: tools/memcheck.sh [MODEL.json ...]   (default: four zoo models covering attention, conv and GEMM)
set -euo pipefail
cd "$(dirname "$0")/.."
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  models=(models/transformer_block.json models/graph_transformer.json models/meanvc_dit.json models/stablenormal_yoso.json)
fi
cargo build --release --quiet
for model in "${models[@]}"; do
  for threads in 1 2; do
    echo "== $model, --threads $threads"
    valgrind --tool=memcheck --error-exitcode=9 --leak-check=no --quiet \
      ./target/release/kiln run "$model" --backend jit --threads "$threads" -O2 >/dev/null
  done
done
echo "memcheck: no errors"
