//! `kiln calibrate` and `--calibration` (issue 13: the cost model from measurement): the measured
//! figures are usable, a calibration file is read per thread count, a bad one is a located error,
//! and the optimizer's estimates follow the file.

use std::path::{Path, PathBuf};

mod common;
use common::kiln;

fn temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-calibrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("temp file");
    path
}

fn entry(threads: usize, peak_flops: f64) -> String {
    format!(
        r#"{{"threads": {threads}, "isa": "avx2+fma", "peak_flops": {peak_flops}, "bandwidth": 2e10,
            "kernel_overhead": 3e-7, "fused_overhead": 4e-8}}"#
    )
}

#[test]
fn calibration_measures_positive_finite_figures() {
    let c = kiln::calibrate::calibrate(Some(1)).unwrap_or_else(|e| panic!("{e}"));
    let m = c.cost_model;
    assert_eq!(c.threads, 1);
    // A CPU of this decade: between 0.1 and 10,000 GFLOP/s on one core, 0.1–1000 GB/s, and
    // overheads below a millisecond (a debug build and a loaded machine included).
    assert!(m.peak_flops > 1e8 && m.peak_flops < 1e13, "{m:?}");
    assert!(m.bandwidth > 1e8 && m.bandwidth < 1e12, "{m:?}");
    for overhead in [m.kernel_overhead, m.fused_overhead] {
        assert!(overhead.is_finite() && (0.0..1e-3).contains(&overhead), "{m:?}");
    }
    let json = c.to_json();
    for key in ["threads", "isa", "peak_flops", "bandwidth", "kernel_overhead", "fused_overhead"] {
        assert!(json.get(key).is_some(), "{json}");
    }
}

#[test]
fn the_entry_for_the_thread_count_is_used() {
    let path = temp("two.json", &format!("[{}, {}]", entry(1, 1e10), entry(4, 4e10)));
    let read = |t| kiln::calibrate::read_cost_model(&path, Some(t)).unwrap_or_else(|e| panic!("{e}")).peak_flops;
    assert_eq!(read(1), 1e10);
    assert_eq!(read(2), 1e10, "the most threads not above the request");
    assert_eq!(read(8), 4e10);
    let only_four = temp("four.json", &format!("[{}]", entry(4, 4e10)));
    let m = kiln::calibrate::read_cost_model(&only_four, Some(1)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.peak_flops, 4e10, "none at or below: the fewest threads");
}

#[test]
fn a_bad_calibration_file_is_a_located_error() {
    let cases = [
        ("not_json.json", "{", "not a calibration (JSON"),
        ("object.json", "{}", "expected a JSON list"),
        ("empty.json", "[]", "has no entries"),
        ("missing.json", r#"[{"threads": 1, "peak_flops": 1e10}]"#, "entry 0: 'bandwidth' is missing"),
        ("zero.json", &format!("[{}]", entry(1, 0.0)), "must be positive"),
        ("negative.json", &format!("[{}]", entry(1, -5.0)), "'peak_flops' is missing or not a non-negative number"),
    ];
    for (name, text, want) in cases {
        let path = temp(name, text);
        let e = kiln::calibrate::read_cost_model(&path, Some(1)).expect_err(name).to_string();
        assert!(e.contains(want) && e.contains(name), "{name}: {e}");
    }
    let missing = Path::new("/nonexistent/kiln-calibration.json");
    let e = kiln::calibrate::read_cost_model(missing, None).expect_err("missing file");
    assert_eq!(e.kind(), kiln::ErrorKind::Io, "{e}");
}

/// The estimate `compile --emit stats` reports follows the file: a machine 100× slower at
/// arithmetic makes the compute-bound bench transformer's estimate larger.
#[test]
fn compile_uses_the_calibration() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/prelm_transformer.json");
    let estimate = |extra: &[&str]| -> f64 {
        let mut args = vec!["compile", model, "--emit", "stats"];
        args.extend_from_slice(extra);
        let out = kiln(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
        stats["optimizer"]["estimated_ms_after"].as_f64().expect("estimated_ms_after")
    };
    let fast = temp("fast.json", &format!("[{}]", entry(1, 1e11)));
    let slow = temp("slow.json", &format!("[{}]", entry(1, 1e9)));
    let (fast, slow) = (fast.to_string_lossy().into_owned(), slow.to_string_lossy().into_owned());
    let (t_fast, t_slow) = (estimate(&["--calibration", &fast]), estimate(&["--calibration", &slow]));
    assert!(t_slow > 5.0 * t_fast, "{t_slow} vs {t_fast}");
    let out = kiln(&["compile", model, "--emit", "stats", "--calibration", "/nonexistent/c.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the calibration"));
}
