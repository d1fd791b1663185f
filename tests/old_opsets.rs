//! Old-opset (7–12) models against ONNX Runtime on the old model itself: each case in
//! `tests/old_opsets/data/` (written by `tools/old_opsets/generate.py` with pinned onnx and
//! onnxruntime) is loaded by kiln — which upgrades the old forms at import — and run on the
//! interpreter and on the JIT at -O0 and -O2 with 1 and 2 threads. `manifest.txt` says per case
//! `run [tol=T]` (must match ONNX Runtime), `refuse TEXT` (must be refused with an error containing
//! TEXT) or `either TEXT` (one or the other, for what another change is adding to kiln). The
//! element-type cases (`types_*`) are here too: float16/bfloat16 weights, int32/uint8/float16
//! inputs and outputs, widened at load.
//!
//! Tolerance: |kiln − ORT| ≤ 1e-4·max(1, |ORT|) unless the line says otherwise. These are single
//! ops or a tiny CNN on N(0, 1) inputs; the differences are f32 rounding of sums and of exp/log
//! (kiln's polynomial exp in the JIT is within a few ulp), far below 1e-4. A case computed in
//! float16 by ONNX Runtime allows 1e-3 (a half's rounding is 2^-11 ≈ 4.9e-4 relative; kiln
//! computes in f32). Bools and integers must be equal.

use kiln_frontends::onnx::{load_onnx, read_tensor_pb};
use kiln_ir::{Tensor, TensorData};
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/old_opsets/data")
}

enum Expect {
    /// Must match ONNX Runtime within this tolerance.
    Run(f64),
    Refuse(String),
    /// Refused naming this text, or matches ONNX Runtime (for what another change adds to kiln).
    Either(String),
}

fn manifest() -> Vec<(String, Expect)> {
    let text = std::fs::read_to_string(root().join("manifest.txt")).expect("manifest.txt");
    let mut cases = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let mut words = line.splitn(3, ' ');
        let (kind, name, rest) = (words.next(), words.next(), words.next());
        let name = name.expect("a case name").to_string();
        match (kind, rest) {
            (Some("run"), None) => cases.push((name, Expect::Run(TOL))),
            (Some("run"), Some(tol)) => {
                let tol = tol.strip_prefix("tol=").and_then(|t| t.parse().ok()).expect("run CASE tol=T");
                cases.push((name, Expect::Run(tol)))
            }
            (Some("refuse"), Some(text)) => cases.push((name, Expect::Refuse(text.to_string()))),
            (Some("either"), Some(text)) => cases.push((name, Expect::Either(text.to_string()))),
            _ => panic!("manifest line {line:?}"),
        }
    }
    assert!(cases.len() >= 25, "the manifest lists {} cases", cases.len());
    cases
}

fn read_all(dir: &Path, prefix: &str) -> Vec<(String, Tensor)> {
    (0..)
        .map(|j| dir.join(format!("{prefix}_{j}.pb")))
        .take_while(|p| p.exists())
        .map(|p| read_tensor_pb(&p).unwrap())
        .collect()
}

fn compare(what: &str, got: &Tensor, want: &Tensor, tol: f64) -> Result<(), String> {
    if got.shape() != want.shape() || got.dtype() != want.dtype() {
        return Err(format!("{what}: got {}, ONNX Runtime {}", got.ty(), want.ty()));
    }
    match (got.data(), want.data()) {
        (TensorData::F32(g), TensorData::F32(w)) => {
            for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
                let err = (g as f64 - w as f64).abs();
                if err.is_nan() || err > tol * (w as f64).abs().max(1.0) {
                    return Err(format!("{what}: element {i} is {g}, ONNX Runtime {w}"));
                }
            }
            Ok(())
        }
        (g, w) if g == w => Ok(()),
        _ => Err(format!("{what}: values differ from ONNX Runtime's")),
    }
}

#[test]
fn old_opset_models_match_onnx_runtime() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for (name, expect) in manifest() {
        let dir = root().join(&name);
        let loaded = load_onnx(&dir.join("model.onnx"), &[]);
        let (tol, model) = match (expect, loaded) {
            (Expect::Refuse(text) | Expect::Either(text), Err(e)) => {
                if !e.to_string().contains(&text) {
                    failures.push(format!("{name}: refused, but the error does not say {text:?}: {e}"));
                }
                continue;
            }
            (Expect::Refuse(text), Ok(_)) => {
                // Flip the manifest line (generate.py's `refuse=`) once kiln does this.
                failures.push(format!("{name}: loads now; expected a refusal mentioning {text:?}"));
                continue;
            }
            (Expect::Run(_), Err(e)) => {
                failures.push(format!("{name}: load: {e}"));
                continue;
            }
            (Expect::Run(tol), Ok(m)) => (tol, m),
            (Expect::Either(_), Ok(m)) => (TOL, m),
        };
        let inputs = read_all(&dir, "input");
        let expected = read_all(&dir, "output");
        let mut configs =
            vec![("interpreter".to_string(), kiln::Options { backend: kiln::Backend::Interp, ..Default::default() })];
        for opt_level in [kiln::OptLevel::O0, kiln::OptLevel::O2] {
            for threads in [1, 2] {
                configs.push((
                    format!("JIT {opt_level:?} {threads} thread(s)"),
                    kiln::Options {
                        backend: kiln::Backend::Jit,
                        opt_level,
                        threads: Some(threads),
                        ..Default::default()
                    },
                ));
            }
        }
        for (config, options) in configs {
            let outputs = kiln::compile(model.clone(), &options)
                .map_err(|e| e.to_string())
                .and_then(|c| c.run(&inputs).map_err(|e| e.to_string()));
            match outputs {
                Err(e) => failures.push(format!("{name} ({config}): {e}")),
                Ok(outputs) => {
                    assert_eq!(outputs.len(), expected.len(), "{name}: output count");
                    for ((out, got), (_, want)) in outputs.iter().zip(&expected) {
                        if let Err(e) = compare(&format!("{name} ({config}) output '{out}'"), got, want, tol) {
                            failures.push(e);
                        }
                    }
                }
            }
        }
        ran += 1;
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
    assert!(ran >= 25, "ran {ran} cases");
}
