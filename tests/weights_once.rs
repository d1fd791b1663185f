//! Issue 15: a compiled model holds each weight once. The JIT shares the model's tensors instead of
//! copying them, packs a GEMM weight in place of its plain form, and the facade drops its own
//! references after compiling unless `Options::keep_weights` asks it to keep them (for `kiln::save`
//! and CLIF). Counted with `CompiledModel::weight_bytes`, which counts each buffer once however
//! many hold it; peak RSS is measured by tools/mem/peak_rss.py, not here.

use kiln::{Backend, OptLevel, Options, TensorData};
use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-weights-once-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Three GEMMs: a row-major MatMul weight, a Gemm weight read transposed (as PyTorch exports
/// Linear) and a matrix-vector one too narrow to pack (n = 1), plus biases: the two packed ones
/// are packed in place, the others shared as they are.
const MLP: &str = r#"{
 "format": "kiln", "version": 1, "name": "mlp3",
 "inputs": [{"name": "x", "dtype": "f32", "shape": [5, 48]}],
 "outputs": ["y"],
 "weights": [
  {"name": "w0", "dtype": "f32", "shape": [48, 64], "init": {"normal": {"std": 0.2, "seed": 1}}},
  {"name": "b0", "dtype": "f32", "shape": [64], "init": {"normal": {"std": 0.1, "seed": 2}}},
  {"name": "w1", "dtype": "f32", "shape": [32, 64], "init": {"normal": {"std": 0.2, "seed": 3}}},
  {"name": "b1", "dtype": "f32", "shape": [32], "init": {"normal": {"std": 0.1, "seed": 4}}},
  {"name": "w2", "dtype": "f32", "shape": [32, 1], "init": {"normal": {"std": 0.2, "seed": 5}}}
 ],
 "nodes": [
  {"name": "mm0", "op": "MatMul", "inputs": ["x", "w0"], "outputs": ["h0"]},
  {"name": "add0", "op": "Add", "inputs": ["h0", "b0"], "outputs": ["a0"]},
  {"name": "relu0", "op": "Relu", "inputs": ["a0"], "outputs": ["r0"]},
  {"name": "fc1", "op": "Gemm", "inputs": ["r0", "w1", "b1"], "outputs": ["h1"], "attributes": {"transB": 1}},
  {"name": "relu1", "op": "Relu", "inputs": ["h1"], "outputs": ["r1"]},
  {"name": "head", "op": "MatMul", "inputs": ["r1", "w2"], "outputs": ["y"]}
 ]
}"#;

/// Parsed from the string: the tests run in parallel, and a file written by each would be read
/// by another while it is rewritten.
fn model() -> kiln::Model {
    kiln::frontends::json::parse_json(MLP, None, "mlp3").unwrap()
}

/// Bytes of the weights the compiled (optimised) graph declares.
fn graph_weight_bytes(compiled: &kiln::CompiledModel) -> u64 {
    let graph = compiled.graph();
    graph
        .weights()
        .iter()
        .map(|&id| {
            let ty = &graph.node(id).outputs[0].ty;
            (ty.num_elements() * ty.dtype.size_bytes()) as u64
        })
        .sum()
}

fn output(compiled: &kiln::CompiledModel) -> Vec<f32> {
    let inputs = kiln::default_inputs(compiled.graph()).unwrap();
    let outputs = compiled.run(&inputs).unwrap();
    match outputs[0].1.data() {
        TensorData::F32(v) => v.clone(),
        other => panic!("f32 output expected, got {:?}", other.dtype()),
    }
}

#[test]
fn a_jit_compiled_model_holds_each_weight_once() {
    for opt_level in [OptLevel::O0, OptLevel::O2] {
        let options = Options { backend: Backend::Jit, opt_level, threads: Some(1), ..Options::default() };
        let once = kiln::compile(model(), &options).unwrap();
        let weights = graph_weight_bytes(&once);
        // w0 48×64, w1 32×64 (both a whole number of 16-column panels: no padding), b0, b1, w2.
        assert_eq!(weights, (48 * 64 + 64 + 32 * 64 + 32 + 32) * 4, "{opt_level:?}: the graph kept its weights");
        assert_eq!(once.weight_bytes(), weights, "{opt_level:?}: held once");

        // The accessor sees a second copy when there is one: with keep_weights the model keeps the
        // plain weights beside the JIT's packed w0 and w1.
        let kept = kiln::compile(model(), &Options { keep_weights: true, ..options.clone() }).unwrap();
        assert_eq!(kept.weight_bytes(), weights + (48 * 64 + 32 * 64) * 4, "{opt_level:?}: kept");

        // Packed in place or into a copy, the same layout: the same bits out.
        let (a, b) = (output(&once), output(&kept));
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{opt_level:?}: {a:?} vs {b:?}");
    }
    // The interpreter runs on the model's weights: once, too.
    let interp = kiln::compile(model(), &Options { backend: Backend::Interp, ..Options::default() }).unwrap();
    assert_eq!(interp.weight_bytes(), graph_weight_bytes(&interp));
}

#[test]
fn what_needs_the_dropped_weights_says_so_or_works_with_keep_weights() {
    let options = Options { backend: Backend::Jit, threads: Some(1), ..Options::default() };
    let compiled = kiln::compile(model(), &options).unwrap();
    let err = kiln::save(&compiled, scratch("dropped.kiln")).unwrap_err();
    assert!(err.to_string().contains("keep_weights"), "{err}");
    assert!(!scratch("dropped.kiln").exists(), "nothing written");
    let clif = compiled.clif_text();
    assert!(clif.len() == 1 && clif[0].1.contains("keep_weights"), "{clif:?}");
    // The graph is still there for ir/dot/stats (the CLI's --emit, Python's compiled.ir()).
    assert!(kiln::ir::text::print(compiled.graph()).contains("mm0"));

    let kept = kiln::compile(model(), &Options { keep_weights: true, ..options.clone() }).unwrap();
    let path = scratch("kept.kiln");
    kiln::save(&kept, &path).unwrap();
    let reloaded = kiln::compile(kiln::load(&path).unwrap(), &Options { opt_level: OptLevel::O0, ..options }).unwrap();
    assert_eq!(output(&reloaded), output(&kept), "the saved artefact runs to the same outputs");
    assert!(kept.clif_text().iter().any(|(_, text)| text.contains("function")), "CLIF printed");
}

#[test]
fn the_optimizer_shares_the_weights_it_keeps() {
    // Issue 15: -O2 copied every weight it kept into its new weight store, so a model was held
    // twice while it was compiled (peak RSS 2x the weights; -O0 was 1.07x).
    let model = model();
    let w0 = std::sync::Arc::clone(model.weights.get("w0").unwrap());
    let options = Options { backend: Backend::Interp, opt_level: OptLevel::O2, ..Options::default() };
    let compiled = kiln::compile(model, &options).unwrap();
    assert!(kiln::ir::text::print(compiled.graph()).contains("weight w0:"), "w0 kept by the optimizer");
    assert_eq!(std::sync::Arc::strong_count(&w0), 2, "held here and by the optimised model, not copied");
}
