//! One compiled model served from many threads at once: every concurrent run must give exactly
//! (bit for bit) what a run on its own gives for the same input.

use kiln::{Backend, OptLevel, Options, Tensor};

const THREADS: usize = 8;
const RUNS_PER_THREAD: usize = 1_000;
/// Distinct inputs; thread t's run i uses input (t + i) % INPUTS, so neighbouring threads are
/// always on different inputs and every input is in flight on several threads.
const INPUTS: usize = 16;

/// Large enough that its GEMM, LayerNorm, GELU and softmax steps are split across the pool when the
/// model has two threads (each step has ≥ 2^15 elements), so concurrent runs contend for the pool.
const WIDE_MODEL: &str = r#"{
 "format": "kiln", "version": 1, "name": "wide",
 "inputs": [{"name": "x", "dtype": "f32", "shape": [64, 512]}],
 "outputs": ["p", "h"],
 "weights": [
  {"name": "w", "dtype": "f32", "shape": [512, 512], "init": {"normal": {"std": 0.044, "seed": 1}}},
  {"name": "b", "dtype": "f32", "shape": [512], "init": {"normal": {"std": 0.1, "seed": 2}}},
  {"name": "g", "dtype": "f32", "shape": [512], "init": {"uniform": {"low": 0.5, "high": 1.5, "seed": 3}}},
  {"name": "beta", "dtype": "f32", "shape": [512], "init": {"normal": {"std": 0.1, "seed": 4}}}
 ],
 "nodes": [
  {"name": "mm", "op": "MatMul", "inputs": ["x", "w"], "outputs": ["mm"]},
  {"name": "bias", "op": "Add", "inputs": ["mm", "b"], "outputs": ["z"]},
  {"name": "ln", "op": "LayerNormalization", "inputs": ["z", "g", "beta"], "outputs": ["n"], "attributes": {"axis": -1, "epsilon": 1e-5}},
  {"name": "gelu", "op": "Gelu", "inputs": ["n"], "outputs": ["h"]},
  {"name": "sm", "op": "Softmax", "inputs": ["h"], "outputs": ["p"], "attributes": {"axis": -1}}
 ]
}"#;

/// Attention heads as exporters write them: products of two activations on kiln's micro-kernels
/// with B packed per call into each thread's scratch (QKᵀ [2, 40, 24]·[2, 24, 40] with an Exp
/// epilogue, P·V [2, 40, 40]·[2, 40, 24]), the heads' Reshape + Transpose read through strides.
const ATTENTION_MODEL: &str = r#"{
 "format": "kiln", "version": 1, "name": "heads",
 "inputs": [{"name": "x", "dtype": "f32", "shape": [40, 48]}],
 "outputs": ["y"],
 "weights": [
  {"name": "wq", "dtype": "f32", "shape": [48, 48], "init": {"normal": {"std": 0.1, "seed": 1}}},
  {"name": "wk", "dtype": "f32", "shape": [48, 48], "init": {"normal": {"std": 0.1, "seed": 2}}},
  {"name": "wv", "dtype": "f32", "shape": [48, 48], "init": {"normal": {"std": 0.1, "seed": 3}}}
 ],
 "nodes": [
  {"name": "q", "op": "MatMul", "inputs": ["x", "wq"], "outputs": ["q"]},
  {"name": "k", "op": "MatMul", "inputs": ["x", "wk"], "outputs": ["k"]},
  {"name": "v", "op": "MatMul", "inputs": ["x", "wv"], "outputs": ["v"]},
  {"name": "qh", "op": "Reshape", "inputs": ["q"], "outputs": ["qh"], "attributes": {"shape": [40, 2, 24]}},
  {"name": "kh", "op": "Reshape", "inputs": ["k"], "outputs": ["kh"], "attributes": {"shape": [40, 2, 24]}},
  {"name": "vh", "op": "Reshape", "inputs": ["v"], "outputs": ["vh"], "attributes": {"shape": [40, 2, 24]}},
  {"name": "qt", "op": "Transpose", "inputs": ["qh"], "outputs": ["qt"], "attributes": {"perm": [1, 0, 2]}},
  {"name": "kt", "op": "Transpose", "inputs": ["kh"], "outputs": ["kt"], "attributes": {"perm": [1, 2, 0]}},
  {"name": "vt", "op": "Transpose", "inputs": ["vh"], "outputs": ["vt"], "attributes": {"perm": [1, 0, 2]}},
  {"name": "qk", "op": "MatMul", "inputs": ["qt", "kt"], "outputs": ["s"]},
  {"name": "e", "op": "Exp", "inputs": ["s"], "outputs": ["e"]},
  {"name": "pv", "op": "MatMul", "inputs": ["e", "vt"], "outputs": ["y"]}
 ]
}"#;

fn check_concurrent_runs(model: kiln::Model, threads: usize) {
    let options = Options {
        backend: Backend::Jit,
        opt_level: OptLevel::O2,
        threads: Some(threads),
        // Every run on all threads, so that concurrent runs contend for the pool.
        adaptive_threads: false,
        ..Default::default()
    };
    let compiled = kiln::compile(model, &options).expect("compiles on the JIT");
    let template = kiln::default_inputs(compiled.graph()).expect("inputs");
    let inputs: Vec<Vec<(String, Tensor)>> = (0..INPUTS)
        .map(|k| {
            template
                .iter()
                .map(|(name, t)| {
                    let values: Vec<f32> =
                        t.as_f32().expect("f32 input").iter().map(|&v| v * (1.0 + k as f32 / 8.0)).collect();
                    (name.clone(), Tensor::from_f32(t.shape().to_vec(), values).expect("same shape"))
                })
                .collect()
        })
        .collect();
    let alone: Vec<_> = inputs.iter().map(|i| compiled.run(i).expect("runs")).collect();
    assert!(alone.windows(2).all(|w| w[0] != w[1]), "the inputs must give different outputs");
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (compiled, inputs, alone) = (&compiled, &inputs, &alone);
            s.spawn(move || {
                for i in 0..RUNS_PER_THREAD {
                    let k = (t + i) % INPUTS;
                    let got = compiled.run(&inputs[k]).expect("runs");
                    assert!(got == alone[k], "thread {t} run {i}: differs from the lone run on input {k}");
                }
            });
        }
    });
}

#[test]
fn eight_threads_times_a_thousand_runs_match_lone_runs_bundled_transformer() {
    check_concurrent_runs(kiln::load("models/transformer_block.json").expect("bundled model loads"), 1);
}

#[test]
fn eight_threads_times_a_thousand_runs_match_lone_runs_on_a_two_thread_pool() {
    let model = kiln::frontends::json::parse_json(WIDE_MODEL, None, "wide").expect("test model parses");
    check_concurrent_runs(model, 2);
}

#[test]
fn eight_threads_times_a_thousand_runs_match_lone_runs_activation_products() {
    for threads in [1, 2] {
        let model = kiln::frontends::json::parse_json(ATTENTION_MODEL, None, "heads").expect("test model parses");
        check_concurrent_runs(model, threads);
    }
}
