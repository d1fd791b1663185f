//! The spatial ops (pooling, LRN, Conv 1-D, ConvTranspose, DepthToSpace/SpaceToDepth, Resize
//! linear/cubic in every coordinate transformation) against ONNX Runtime: each
//! `tests/spatial_ort/<case>/` holds a one-node ONNX model, its input `x.npy` and ONNX Runtime
//! 1.32's output `y.npy` (written by `tools/spatial_ort/generate.py`). Every case runs on the
//! interpreter, the JIT at -O0 with 1 thread and at -O2 with 2 threads.
//!
//! Tolerance: |Δ| ≤ 1e-4·max(1, |y|). ONNX Runtime sums windows and interpolates in f32 in its own
//! order, the interpreter in f64; the largest difference measured over these cases is 2.2e-6
//! (cubic Resize, 16 taps), so 1e-4 leaves headroom while a wrong window, pad, coordinate or weight
//! moves outputs by ≥ 1e-2.

use kiln::Tensor;
use std::path::{Path, PathBuf};

const TOLERANCE: f64 = 1e-4;

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spatial_ort");
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(&root).expect("tests/spatial_ort").flatten().map(|e| e.path()).collect();
    dirs.sort();
    dirs
}

fn run(dir: &Path, options: &kiln::Options) -> Result<Tensor, String> {
    let model = kiln::load(dir.join("model.onnx")).map_err(|e| format!("load: {e}"))?;
    let x = kiln::npy::read_npy(&dir.join("x.npy"))?;
    let compiled = kiln::compile(model, options).map_err(|e| format!("compile: {e}"))?;
    let mut out = compiled.run(&[("x".to_string(), x)]).map_err(|e| format!("run: {e}"))?;
    Ok(out.remove(0).1)
}

fn check(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!("shape {:?}, ONNX Runtime {:?}", got.shape(), want.shape()));
    }
    let (g, w) = (got.as_f32().ok_or("not f32")?, want.as_f32().ok_or("not f32")?);
    for (i, (&a, &b)) in g.iter().zip(w).enumerate() {
        let err = (a as f64 - b as f64).abs() / (b as f64).abs().max(1.0);
        if err.is_nan() || err > TOLERANCE {
            return Err(format!("element {i}: {a} vs ONNX Runtime {b}"));
        }
    }
    Ok(())
}

#[test]
fn spatial_ops_match_onnx_runtime_on_every_engine() {
    let engines = [
        (
            "interpreter",
            kiln::Options { backend: kiln::Backend::Interp, opt_level: kiln::OptLevel::O0, ..Default::default() },
        ),
        (
            "jit -O0 1 thread",
            kiln::Options {
                backend: kiln::Backend::Jit,
                opt_level: kiln::OptLevel::O0,
                threads: Some(1),
                ..Default::default()
            },
        ),
        (
            "jit -O2 2 threads",
            kiln::Options {
                backend: kiln::Backend::Jit,
                opt_level: kiln::OptLevel::O2,
                threads: Some(2),
                ..Default::default()
            },
        ),
    ];
    let mut failures = Vec::new();
    let cases = cases();
    for dir in &cases {
        let name = dir.file_name().unwrap_or_default().to_string_lossy().to_string();
        let want = kiln::npy::read_npy(&dir.join("y.npy")).expect("y.npy");
        for (engine, options) in &engines {
            if let Err(e) = run(dir, options).and_then(|got| check(&got, &want)) {
                failures.push(format!("{name} [{engine}]: {e}"));
            }
        }
    }
    assert!(cases.len() >= 100, "only {} cases in tests/spatial_ort", cases.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
