//! Regression inputs for the model readers: every file under `tests/fuzz_regressions/onnx/` and
//! `tests/fuzz_regressions/json/` (inputs that crashed a fuzz target, named `crash-*`, plus
//! hand-made adversarial models: absurd sizes, deep nesting, truncation, paths leading out of the
//! model's folder) must not panic, and must be refused with an error unless listed in [`VALID`].
//! See docs/robustness.md.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Inputs that are valid models: they check that extreme values are computed without overflow.
const VALID: &[&str] = &[
    // Strides of 2^62 with SAME padding: a 1×1 output and no padding, computed in i128.
    "conv_same_huge_strides.onnx",
];

fn files(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no regression inputs in {}", dir.display());
    files
}

/// Runs `parse` on every file of a kind; each must give an error and not panic.
fn check_all(kind: &str, parse: impl Fn(&Path, &[u8]) -> Result<(), String>) {
    let mut problems = Vec::new();
    for path in files(kind) {
        let bytes = std::fs::read(&path).expect("readable regression input");
        let name = path.file_name().unwrap_or_default().to_string_lossy().to_string();
        match catch_unwind(AssertUnwindSafe(|| parse(&path, &bytes))) {
            Err(_) => problems.push(format!("{name}: panicked")),
            Ok(Ok(())) if !VALID.contains(&name.as_str()) => problems.push(format!("{name}: was accepted")),
            Ok(Ok(())) => eprintln!("{name}: accepted"),
            Ok(Err(e)) => eprintln!("{name}: {}", e.lines().next().unwrap_or_default()),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn onnx_regressions_are_errors_not_panics() {
    check_all("onnx", |path, bytes| {
        // With the file's folder as base, so that external-data paths are really resolved.
        let base = path.parent();
        kiln_frontends::onnx::parse_onnx(bytes, base, &[]).map(|_| ()).map_err(|e| e.to_string())
    });
}

#[test]
fn json_regressions_are_errors_not_panics() {
    check_all("json", |_, bytes| {
        let text = String::from_utf8_lossy(bytes);
        kiln_frontends::json::parse_json(&text, None, "fuzz").map(|_| ()).map_err(|e| e.to_string())
    });
}
