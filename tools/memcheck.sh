#!/usr/bin/env bash
# Runs models on the JIT under valgrind memcheck; fails if memcheck reports any error.
# Usage: tools/memcheck.sh [MODEL ...]
#   default: four zoo models covering attention, conv and GEMM (at -O2), plus a generated corpus
#   (below) at -O0 and -O2; every model runs with --threads 1 and --threads 2.
# MEMCHECK_PROFILE=dev uses the debug build instead of a release build (the generated code is the
# same; only kiln's own Rust code runs slower under valgrind).
#
# The generated corpus (issue 11) covers what memory errors hid in: MatMul with 1-D operands and
# broadcast batch dims followed by a fused epilogue (bias + Relu), vector tails (row lengths 1..9,
# 4k+1..4k+3 through elementwise, softmax and reduction kernels) and work split across two threads
# (kernels above 2^15 elements, GEMMs above 2^20 flops). Models have inputs only: kiln run fills
# them with seeded values.
set -euo pipefail
cd "$(dirname "$0")/.."
models=("$@")
corpus=()
if [ ${#models[@]} -eq 0 ]; then
  models=(models/transformer_block.json models/graph_transformer.json models/meanvc_dit.json models/stablenormal_yoso.json)
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
  # matmul NAME A_SHAPE B_SHAPE OUT_SHAPE BIAS_SHAPE: y = Relu(a @ b + bias).
  matmul() {
    cat >"$dir/$1.kir" <<KIR
kir 1
graph $1
input a: f32[$2]
input b: f32[$3]
input bias: f32[$5]
node mm = MatMul(a, b) -> h: f32[$4]
node add = Add(h, bias) -> hb: f32[$4]
node act = Relu(hb) -> y: f32[$4]
output y
KIR
    corpus+=("$dir/$1.kir")
  }
  matmul mm_batched_by_vector 2,4,6 6 2,4 4
  matmul mm_matrix_by_vector 4,6 6 4 4
  matmul mm_vector_by_batched 6 2,6,4 2,4 4
  matmul mm_vector_by_matrix 6 6,4 4 4
  matmul mm_vector_by_vector_tail 7 7 "" ""
  matmul mm_broadcast_batch 2,1,4,6 3,6,5 2,3,4,5 5
  matmul mm_n1 2,5,6 6,1 2,5,1 1
  matmul mm_split_batched_by_vector 2,512,512 512 2,512 512
  matmul mm_split_vector_by_batched 512 4,512,256 4,256 256
  matmul mm_split_matrix 300,300 300,301 300,301 301
  # tails ROWS N: elementwise chain, softmax and reductions over rows of N.
  tails() {
    local s="$1,$2"
    cat >"$dir/tail_$1x$2.kir" <<KIR
kir 1
graph tail_$1x$2
input x: f32[$s]
node t = Tanh(x) -> t: f32[$s]
node m = Mul(t, x) -> m: f32[$s]
node sig = Sigmoid(m) -> sg: f32[$s]
node sm = Softmax(sg) {axis=-1} -> sm: f32[$s]
node ls = LogSoftmax(m) {axis=-1} -> ls: f32[$s]
node rs = ReduceSum(sm) {axes=[1], keepdims=0} -> rs: f32[$1]
node rx = ReduceMax(ls) {axes=[1], keepdims=0} -> rx: f32[$1]
node rl = ReduceL2(m) {axes=[1], keepdims=0} -> rl: f32[$1]
output sm
output rs
output rx
output rl
KIR
    corpus+=("$dir/tail_$1x$2.kir")
  }
  for n in 1 2 3 4 5 6 7 8 9 13 14 15 4097 4098 4099; do tails 3 "$n"; done
  tails 64 1031
  tails 9 8195
fi
if [ "${MEMCHECK_PROFILE:-release}" = dev ]; then
  cargo build --quiet
  kiln=./target/debug/kiln
else
  cargo build --release --quiet
  kiln=./target/release/kiln
fi
check() {
  local model=$1 opt=$2 threads=$3
  echo "== $model, $opt, --threads $threads"
  valgrind --tool=memcheck --error-exitcode=9 --leak-check=no --quiet \
    "$kiln" run "$model" --backend jit --threads "$threads" "$opt" >/dev/null
}
for model in "${models[@]}"; do
  for threads in 1 2; do check "$model" -O2 "$threads"; done
done
for model in "${corpus[@]}"; do
  for opt in -O0 -O2; do
    for threads in 1 2; do check "$model" "$opt" "$threads"; done
  done
done
echo "memcheck: no errors (${#models[@]} models and ${#corpus[@]} generated models)"
