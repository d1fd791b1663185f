//! Einsum (lowered at import to Transpose/Reshape/MatMul/ReduceSum) against ONNX Runtime: each
//! `tests/einsum_ort/<case>/` holds a one-node float32 model, its inputs `x0.npy`, `x1.npy`, … and
//! ONNX Runtime 1.32's output `y.npy` (written by `tools/einsum_ort/generate.py`; the ONNX backend
//! node tests of Einsum use float64, which kiln does not read). Every case runs on the interpreter
//! and on the JIT at -O0 with 1 thread and -O2 with 2 threads.
//!
//! Tolerance: |Δ| ≤ 1e-5·max(1, |y|). The contractions are sums of at most 5 products of N(0,1)
//! values, summed in a different order than ONNX Runtime's (measured: ≤ 1e-7); a wrong axis or
//! transpose moves outputs by O(1).

use kiln::Tensor;
use std::path::Path;

const TOLERANCE: f64 = 1e-5;

fn run(dir: &Path, options: &kiln::Options) -> Result<Tensor, String> {
    let model = kiln::load(dir.join("model.onnx")).map_err(|e| format!("load: {e}"))?;
    let mut inputs = Vec::new();
    for k in 0.. {
        let path = dir.join(format!("x{k}.npy"));
        if !path.exists() {
            break;
        }
        inputs.push((format!("x{k}"), kiln::npy::read_npy(&path)?));
    }
    let compiled = kiln::compile(model, options).map_err(|e| format!("compile: {e}"))?;
    let mut out = compiled.run(&inputs).map_err(|e| format!("run: {e}"))?;
    Ok(out.remove(0).1)
}

fn check(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!("shape {:?}, ONNX Runtime {:?}", got.shape(), want.shape()));
    }
    let (g, w) = (got.as_f32().ok_or("not f32")?, want.as_f32().ok_or("not f32")?);
    // NaN counts as a difference.
    let close = |a: f32, b: f32| (a as f64 - b as f64).abs() <= TOLERANCE * (b as f64).abs().max(1.0);
    match g.iter().zip(w).position(|(&a, &b)| !close(a, b)) {
        Some(i) => Err(format!("element {i}: {} vs ONNX Runtime {}", g[i], w[i])),
        None => Ok(()),
    }
}

#[test]
fn einsum_matches_onnx_runtime_on_every_engine() {
    let engine = |backend, opt_level, threads| kiln::Options { backend, opt_level, threads, ..Default::default() };
    let engines = [
        ("interpreter", engine(kiln::Backend::Interp, kiln::OptLevel::O0, None)),
        ("jit -O0 1 thread", engine(kiln::Backend::Jit, kiln::OptLevel::O0, Some(1))),
        ("jit -O2 2 threads", engine(kiln::Backend::Jit, kiln::OptLevel::O2, Some(2))),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/einsum_ort");
    let mut cases: Vec<_> = std::fs::read_dir(&root).expect("tests/einsum_ort").flatten().map(|e| e.path()).collect();
    cases.sort();
    assert_eq!(cases.len(), 10, "tools/einsum_ort/generate.py writes 10 cases");
    let mut failures = Vec::new();
    for dir in &cases {
        let want = kiln::npy::read_npy(&dir.join("y.npy")).expect("y.npy");
        for (name, options) in &engines {
            if let Err(e) = run(dir, options).and_then(|got| check(&got, &want)) {
                failures.push(format!("{} [{name}]: {e}", dir.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
