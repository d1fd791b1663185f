//! The `kiln` command's contract: output lines, files written, errors and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{kiln, stderr, stdout};

/// A fresh directory under the target dir's temp space for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// An `.npy` file of float64 values (which kiln refuses), written byte by byte as numpy does.
fn write_npy_f64(path: &Path, shape: &[u64], data: &[f64]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
    header.push_str(&" ".repeat((64 - (header.len() + 11) % 64) % 64));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).expect("write npy");
}

/// Checks one summary line: `NAME dtype[dims] mean=… std=… min=… max=…` with finite numbers.
fn assert_summary_line(line: &str, name: &str, ty: &str) {
    let parts: Vec<&str> = line.split(' ').collect();
    assert_eq!(parts.len(), 6, "{line}");
    assert_eq!(parts[0], name, "{line}");
    assert_eq!(parts[1], ty, "{line}");
    for (part, key) in parts[2..].iter().zip(["mean", "std", "min", "max"]) {
        let value = part.strip_prefix(&format!("{key}=")).unwrap_or_else(|| panic!("{key} in {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{key} number in {line}"));
        assert!(value.is_finite(), "{line}");
    }
}

#[test]
fn run_prints_one_summary_line_per_output_and_writes_npy() {
    let dir = scratch("run");
    for (model, ty) in [("mlp_bn", "f32[8,10]"), ("transformer_block", "f32[1,16,32]")] {
        let out = kiln(&["run", &format!("models/{model}.json"), "--output-dir", dir.to_str().unwrap()]);
        assert!(out.status.success(), "{model}: {}", stderr(&out));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert_summary_line(lines[0], "y", ty);
        let y = kiln::npy::read_npy(&dir.join("y.npy")).expect("y.npy written");
        assert_eq!(y.ty().to_string(), ty);
    }
}

#[test]
fn run_is_repeatable_and_reads_given_inputs() {
    let first = stdout(&kiln(&["run", "models/mlp_bn.json"]));
    let second = stdout(&kiln(&["run", "models/mlp_bn.json"]));
    assert_eq!(first, second, "seeded default inputs give the same outputs");

    let dir = scratch("inputs");
    let x = kiln::Tensor::from_f32([8, 16], (0..128).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
    let x_path = dir.join("x.npy");
    kiln::npy::write_npy(&x_path, &x).unwrap();
    let out = kiln(&["run", "models/mlp_bn.json", "--input", &format!("x={}", x_path.display())]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(stdout(&out), first, "the given input was used");

    // The CLI and the library agree on the given input.
    let model = kiln::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mlp_bn.json")).unwrap();
    let compiled = kiln::compile(model, &kiln::Options::default()).unwrap();
    let y = &compiled.run(&[("x".into(), x)]).unwrap()[0].1;
    let mean = y.as_f32().unwrap().iter().map(|&v| v as f64).sum::<f64>() / y.len() as f64;
    assert!(stdout(&out).contains(&format!("mean={mean:.6}")), "{} vs {mean}", stdout(&out));
}

#[test]
fn wrong_input_shape_dtype_or_name_is_an_error_naming_the_input() {
    let dir = scratch("bad-inputs");
    let wrong_shape = dir.join("wrong_shape.npy");
    kiln::npy::write_npy(&wrong_shape, &kiln::Tensor::from_f32([4, 16], vec![0.0; 64]).unwrap()).unwrap();
    let out = kiln(&["run", "models/mlp_bn.json", "--input", &format!("x={}", wrong_shape.display())]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("--input x") && err.contains("f32[4,16]") && err.contains("f32[8,16]"), "{err}");

    let wrong_dtype = dir.join("wrong_dtype.npy");
    write_npy_f64(&wrong_dtype, &[8, 16], &[0.0; 128]);
    let out = kiln(&["run", "models/mlp_bn.json", "--input", &format!("x={}", wrong_dtype.display())]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("--input x") && err.contains("'<f8'"), "{err}");

    let out = kiln(&["run", "models/mlp_bn.json", "--input", &format!("z={}", wrong_shape.display())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("the model has no input 'z' (its inputs: x)"), "{}", stderr(&out));

    let out = kiln(&["run", "models/mlp_bn.json", "--input", "x=/nonexistent/x.npy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot open /nonexistent/x.npy"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_with_2() {
    for args in [
        &["run"][..],
        &["frobnicate"],
        &["run", "models/mlp_bn.json", "-O7"],
        &["compile", "models/mlp_bn.json"],
        &["run", "models/mlp_bn.json", "--input", "novalue"],
    ] {
        let out = kiln(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(kiln(&["--help"]).status.code(), Some(0));
}

#[test]
fn model_errors_exit_with_1() {
    let out = kiln(&["run", "models/does_not_exist.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    let out = kiln(&["check", "Cargo.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unknown model format"), "{}", stderr(&out));
}

#[test]
fn check_reports_every_problem() {
    let dir = scratch("check");
    let path = dir.join("broken.json");
    std::fs::write(
        &path,
        r#"{"format": "kiln", "version": 1, "inputs": [{"name": "x", "shape": [3, 4]}], "outputs": ["z"],
           "weights": [{"name": "w", "shape": [5, 6], "init": {"zeros": {}}}],
           "nodes": [{"name": "mm", "op": "MatMul", "inputs": ["x", "w"], "outputs": ["y"]},
                     {"name": "act", "op": "Sofmax", "inputs": ["y"], "outputs": ["a"]}]}"#,
    )
    .unwrap();
    let out = kiln(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("did you mean 'Softmax'"), "{err}");
    assert!(err.contains("graph output 'z' is never produced"), "{err}");
    assert!(err.contains("node 'mm' (MatMul)"), "{err}");
    assert!(err.lines().count() >= 3, "{err}");

    let out = kiln(&["check", "models/transformer_block.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("transformer_block: ok"), "{}", stdout(&out));
}

#[test]
fn compile_emits_ir_dot_and_stats() {
    let out = kiln(&["compile", "models/mlp_bn.json", "--emit", "ir", "-O0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ir = stdout(&out);
    let parsed = kiln::ir::text::parse(&ir).expect("the printed IR parses");
    let model = kiln::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mlp_bn.json")).unwrap();
    assert!(parsed.graph == model.graph);

    let out = kiln(&["compile", "models/mlp_bn.json", "--emit", "dot", "-O0"]);
    assert!(out.status.success());
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph") && dot.contains("BatchNormalization") && dot.trim_end().ends_with('}'), "{dot}");

    let out = kiln(&["compile", "models/mlp_bn.json", "--emit", "stats", "-O0"]);
    assert!(out.status.success());
    let stats: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("stats is one JSON object");
    assert_eq!(stats["ops_before"]["BatchNormalization"], 2);
    assert_eq!(stats["ops_before"]["Gemm"], 3);
    assert!(stats["ops_after"].is_object());
    assert!(stats["compile_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    assert!(stats.get("optimizer").is_none(), "-O0 runs no optimizer");

    // -O2 (the default): BatchNormalization folds into the Gemms, and the optimizer reports itself.
    let out = kiln(&["compile", "models/mlp_bn.json", "--emit", "stats"]);
    assert!(out.status.success());
    let stats: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("stats is one JSON object");
    assert_eq!(stats["ops_before"]["BatchNormalization"], 2);
    assert!(stats["ops_after"].get("BatchNormalization").is_none(), "{stats}");
    assert_eq!(stats["ops_after"]["Gemm"], 3);
    let optimizer = &stats["optimizer"];
    assert_eq!(optimizer["rules_fired"]["batchnorm-affine"], 2, "{stats}");
    assert!(optimizer["stop_reason"].as_str().is_some_and(|r| r.contains("saturated")), "{stats}");
    assert!(optimizer["egraph_nodes"].as_u64().is_some_and(|n| n > 0));
    let optimized_ir = stdout(&kiln(&["compile", "models/mlp_bn.json", "--emit", "ir"]));
    assert!(kiln::ir::text::parse(&optimized_ir).is_ok(), "{optimized_ir}");
    assert!(!optimized_ir.contains("BatchNormalization"), "{optimized_ir}");
}

/// Two `kiln run` summaries ("name type mean=… std=… min=… max=…" per output) agree: the same
/// words, and each statistic within 2e-6·max(1, |x|). The lines print six decimals, and a change
/// of summation order (BN folded into a Gemm, a packed GEMM's FMA tiles) moves the last f32 bits,
/// which can flip the sixth decimal of a value that sits on a rounding boundary; a wrong result
/// is off by far more.
fn assert_summaries_agree(a: &str, b: &str, what: &str) {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    assert_eq!(la.len(), lb.len(), "{what}:\n{a}\n{b}");
    for (x, y) in la.iter().zip(&lb) {
        let (wx, wy): (Vec<&str>, Vec<&str>) = (x.split_whitespace().collect(), y.split_whitespace().collect());
        assert_eq!(wx.len(), wy.len(), "{what}:\n{x}\n{y}");
        for (p, q) in wx.iter().zip(&wy) {
            let num = |w: &str| w.split_once('=').and_then(|(k, v)| Some((k.to_string(), v.parse::<f64>().ok()?)));
            match (num(p), num(q)) {
                (Some((kp, vp)), Some((kq, vq))) => {
                    assert_eq!(kp, kq, "{what}:\n{x}\n{y}");
                    assert!((vp - vq).abs() <= 2e-6 * vp.abs().max(1.0), "{what}: {p} vs {q}\n{x}\n{y}");
                }
                _ => assert_eq!(p, q, "{what}:\n{x}\n{y}"),
            }
        }
    }
}

#[test]
fn optimised_and_unoptimised_runs_agree() {
    for model in ["models/mlp_bn.json", "models/transformer_block.json"] {
        let o0 = stdout(&kiln(&["run", model, "-O0"]));
        let o2 = stdout(&kiln(&["run", model, "-O2"]));
        assert!(!o0.is_empty());
        assert_summaries_agree(&o0, &o2, model);
    }
}

#[test]
fn onnx_models_run_with_npy_and_pb_inputs() {
    // An ONNX backend node test: inputs as TensorProto .pb files, output compared with its .pb.
    let case = "tests/onnx_node/data/test_add";
    let dir = scratch("onnx");
    let out = kiln(&[
        "run",
        &format!("{case}/model.onnx"),
        "--input",
        &format!("x={case}/test_data_set_0/input_0.pb"),
        "--input",
        &format!("y={case}/test_data_set_0/input_1.pb"),
        "--output-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_summary_line(stdout(&out).trim(), "sum", "f32[3,4,5]");
    let got = kiln::npy::read_npy(&dir.join("sum.npy")).unwrap();
    let want = kiln::read_tensor_file(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("{case}/test_data_set_0/output_0.pb")).as_path(),
    )
    .unwrap();
    assert_eq!(got, want);

    // A zoo twin with .npy inputs prints what its JSON twin prints.
    let args = |model: &str| {
        let mut a = vec!["run".to_string(), model.to_string()];
        for input in ["adj", "atom", "lap"] {
            a.extend(["--input".into(), format!("{input}=models/graph_transformer/inputs/{input}.npy")]);
        }
        a
    };
    let onnx_args = args("models/onnx/graph_transformer.onnx");
    let json_args = args("models/graph_transformer.json");
    let onnx = kiln(&onnx_args.iter().map(String::as_str).collect::<Vec<_>>());
    let json = kiln(&json_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(onnx.status.success(), "{}", stderr(&onnx));
    let first_line = |o: &Output| stdout(o).lines().next().unwrap_or_default().to_string();
    assert_eq!(first_line(&onnx), first_line(&json));

    let out = kiln(&["check", "Cargo.toml.onnx"]);
    assert_eq!(out.status.code(), Some(1));
    let out = kiln(&["run", "models/mlp_bn.json", "--shape", "x=8,0"]);
    assert_eq!(out.status.code(), Some(2), "a zero dimension in --shape is a usage error");

    // A misspelt input name on an ONNX model is an error naming it, not silently ignored.
    let a = format!("{case}/test_data_set_0/input_0.pb");
    let out = kiln(&["run", &format!("{case}/model.onnx"), "--input", &format!("nosuch={a}")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("'nosuch'") && stderr(&out).contains("not a graph input"), "{}", stderr(&out));
}

#[test]
fn jit_backend_runs_and_emits_clif() {
    // The JIT and the interpreter print the same summaries (six decimals) on the bundled models.
    for model in ["models/mlp_bn.json", "models/transformer_block.json"] {
        let jit = kiln(&["run", model, "--backend", "jit", "--threads", "2"]);
        assert!(jit.status.success(), "{model}: {}", stderr(&jit));
        let interp = kiln(&["run", model, "--backend", "interp"]);
        assert_summaries_agree(&stdout(&jit), &stdout(&interp), model);
    }
    let out = kiln(&["compile", "models/mlp_bn.json", "--emit", "clif"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let clif = stdout(&out);
    assert!(clif.starts_with("; kernel ") && clif.contains("function ") && clif.contains("block0"), "{clif}");
    // RegionNorm, the last op the JIT lacked, runs too and prints what the interpreter prints on
    // the model's committed inputs, which `kiln run` also takes by itself when none are given
    // (seeded random values are no 0/1 mask).
    let inputs = [
        "--input",
        "x=models/regionnorm_block/inputs/x.npy",
        "--input",
        "mask=models/regionnorm_block/inputs/mask.npy",
    ];
    let run = |backend: &str| {
        let mut args = vec!["run", "models/regionnorm_block.json", "--backend", backend];
        args.extend(inputs);
        kiln(&args)
    };
    let (jit, interp) = (run("jit"), run("interp"));
    assert!(jit.status.success(), "{}", stderr(&jit));
    assert_eq!(stdout(&jit), stdout(&interp));
    for backend in ["jit", "interp"] {
        let out = kiln(&["run", "models/regionnorm_block.json", "--backend", backend]);
        assert!(out.status.success(), "{backend}: {}", stderr(&out));
        assert_eq!(stdout(&out), stdout(&interp), "{backend}: the bundled inputs were used");
    }
    // A random mask is still refused by both backends, with the reason.
    let dir = scratch("regionnorm");
    let mask = dir.join("mask.npy");
    let bundled = kiln::npy::read_npy(Path::new("models/regionnorm_block/inputs/mask.npy")).unwrap();
    let random = kiln::Tensor::from_f32(bundled.shape().to_vec(), vec![0.5; bundled.len()]).unwrap();
    kiln::npy::write_npy(&mask, &random).unwrap();
    for backend in ["jit", "interp"] {
        let m = format!("mask={}", mask.display());
        let out = kiln(&["run", "models/regionnorm_block.json", "--backend", backend, "--input", &m]);
        assert_eq!(out.status.code(), Some(1), "{backend}");
        assert!(stderr(&out).contains("mask must be 0 or 1"), "{backend}: {}", stderr(&out));
    }
}

#[test]
fn bench_reports_the_threads_its_timed_runs_used() {
    let json = |extra: &[&str]| {
        let mut args = vec!["bench", "models/transformer_block.json", "--iters", "3", "--json", "--threads", "2"];
        args.extend(extra);
        let out = kiln(&args);
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        let text = stdout(&out);
        let last = text.lines().last().expect("some output").to_string();
        serde_json::from_str::<serde_json::Value>(&last).unwrap_or_else(|e| panic!("{e}: {last}"))
    };
    // The warm-up runs make the choice before the timed runs start: one thread or both.
    let adaptive = json(&[]);
    assert_eq!(adaptive["threads"], 2, "{adaptive}");
    assert!(adaptive["threads_used"] == 1 || adaptive["threads_used"] == 2, "{adaptive}");
    let fixed = json(&["--fixed-threads"]);
    assert_eq!(fixed["threads_used"], 2, "{fixed}");
    let out = kiln(&["bench", "models/mlp_bn.json", "--backend", "interp", "--fixed-threads"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--fixed-threads has no effect"), "{}", stderr(&out));
}

#[test]
fn bench_prints_latency_and_ends_with_one_json_object() {
    for backend in ["jit", "interp"] {
        let mut args = vec!["bench", "models/mlp_bn.json", "--backend", backend, "--iters", "7", "--json", "-O0"];
        if backend == "jit" {
            args.extend(["--threads", "1"]); // refused on the interpreter, which has one thread
        }
        let out = kiln(&args);
        assert!(out.status.success(), "{backend}: {}", stderr(&out));
        let text = stdout(&out);
        let last = text.lines().last().expect("some output");
        let json: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
        assert_eq!(json["iters"], 7, "{last}");
        assert_eq!(json["backend"], backend, "{last}");
        assert_eq!(json["opt_level"], "O0", "{last}");
        assert_eq!(json["threads"], 1, "{last}");
        // What the timed runs used: the one thread asked for; nothing on the interpreter.
        match backend {
            "jit" => assert_eq!(json["threads_used"], 1, "{last}"),
            _ => assert!(json["threads_used"].is_null(), "{last}"),
        }
        // The JIT names the instruction set its kernels were chosen for; the interpreter has none.
        match backend {
            "jit" => assert!(["generic", "avx2+fma", "avx512"].contains(&json["isa"].as_str().unwrap_or("")), "{last}"),
            _ => assert!(json["isa"].is_null(), "{last}"),
        }
        let number = |key: &str| json[key].as_f64().unwrap_or_else(|| panic!("{key} in {last}"));
        // mlp_bn at -O0: 16×32 + 32×32 + 32×10 weights and 4·32 + 4·32 + 32 + 32 + 10 vectors, f32;
        // the JIT packs the head's 10 columns into one 16-column panel (6×32 floats of padding).
        let weights = (16 * 32 + 32 * 32 + 32 * 10 + 8 * 32 + 2 * 32 + 10) * 4;
        match backend {
            "jit" => {
                assert_eq!(json["weight_bytes"], weights + 6 * 32 * 4, "{last}");
                assert!(json["arena_bytes"].as_u64().is_some_and(|b| b > 0), "{last}");
            }
            _ => {
                assert_eq!(json["weight_bytes"], weights, "{last}");
                assert!(json["arena_bytes"].is_null(), "{last}");
            }
        }
        let (median, p90, min) = (number("median_ms"), number("p90_ms"), number("min_ms"));
        assert!(number("compile_ms") > 0.0 && min > 0.0, "{last}");
        assert!(min <= median && median <= p90, "{last}");
        // The human lines come first and carry the same numbers.
        assert!(text.lines().any(|l| l.starts_with("iters=7 median_ms=")), "{text}");
    }
    let out = kiln(&["bench", "models/transformer_block.json", "--iters", "3", "--profile", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let json: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or("")).expect("JSON last line");
    let steps = json["profile"].as_array().expect("a profile array");
    assert!(steps.len() > 3, "{text}");
    let medians: Vec<f64> = steps.iter().map(|s| s["median_ms"].as_f64().expect("median_ms")).collect();
    assert!(medians.windows(2).all(|w| w[0] >= w[1]), "costliest first: {medians:?}");
    assert!(steps.iter().any(|s| s["what"].as_str().is_some_and(|w| w.starts_with("gemm"))), "{text}");
    assert!(text.contains("profile: "), "{text}");
    let out = kiln(&["bench", "models/mlp_bn.json", "--iters", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = kiln(&["bench", "models/mlp_bn.json", "--input", "x=/nonexistent.npy"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--input x"), "{}", stderr(&out));
}

#[test]
fn repeated_shape_or_input_is_an_error_naming_it() {
    let out = kiln(&["run", "models/mlp_bn.json", "--shape", "x=8,16", "--shape", "x=4,16"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--shape x: given twice (x=8,16 and x=4,16)"), "{}", stderr(&out));

    let dir = scratch("twice");
    let (a, b) = (dir.join("a.npy"), dir.join("b.npy"));
    kiln::npy::write_npy(&a, &kiln::Tensor::from_f32([8, 16], vec![0.0; 128]).unwrap()).unwrap();
    kiln::npy::write_npy(&b, &kiln::Tensor::from_f32([8, 16], vec![1.0; 128]).unwrap()).unwrap();
    let (a, b) = (format!("x={}", a.display()), format!("x={}", b.display()));
    let out = kiln(&["run", "models/mlp_bn.json", "--input", &a, "--input", &b]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--input x: given twice"), "{}", stderr(&out));
}

#[test]
fn shape_on_a_static_model_is_checked_not_ignored() {
    let out = kiln(&["run", "models/mlp_bn.json", "--shape", "x=4,16"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("--shape x") && err.contains("fixed shape f32[8,16]"), "{err}");
    let out = kiln(&["check", "models/mlp_bn.json", "--shape", "batch=4"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no input 'batch' (its inputs: x)"), "{}", stderr(&out));
    // The shape it has is accepted.
    let out = kiln(&["run", "models/mlp_bn.json", "--shape", "x=8,16"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn threads_is_refused_where_nothing_runs_on_the_jit() {
    for args in [
        &["run", "models/mlp_bn.json", "--backend", "interp", "--threads", "2"][..],
        &["bench", "models/mlp_bn.json", "--backend", "interp", "--threads", "2"],
        &["compile", "models/mlp_bn.json", "--emit", "ir", "--threads", "2"],
    ] {
        let out = kiln(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--threads has no effect"), "{args:?}: {}", stderr(&out));
    }
    let out = kiln(&["compile", "models/mlp_bn.json", "--emit", "clif", "--threads", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn seed_changes_the_random_inputs_and_zero_is_the_default() {
    let default = stdout(&kiln(&["run", "models/mlp_bn.json"]));
    let zero = stdout(&kiln(&["run", "models/mlp_bn.json", "--seed", "0"]));
    let seven = kiln(&["run", "models/mlp_bn.json", "--seed", "7"]);
    assert!(seven.status.success(), "{}", stderr(&seven));
    assert_eq!(default, zero);
    assert_ne!(default, stdout(&seven));
    assert_eq!(stdout(&seven), stdout(&kiln(&["run", "models/mlp_bn.json", "--seed", "7"])));
}

#[test]
fn bench_profile_on_the_interpreter_says_there_is_none() {
    let out = kiln(&["bench", "models/mlp_bn.json", "--backend", "interp", "--iters", "2", "--profile"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("profile: none on the interpreter"), "{text}");
    assert!(!text.contains("-0.0"), "{text}");
}

/// A dynamic-batch ONNX model (input x: f32[N,3,4]; `tools/dynamic_batch/generate.py`).
const DYNAMIC: &str = "models/onnx/dynamic_batch.onnx";

#[test]
fn inspect_lists_inputs_and_outputs_with_dynamic_dimensions_by_name() {
    let out = kiln(&["inspect", DYNAMIC]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "input x f32[N,3,4]\noutput y f32[N,5]\ndynamic N (fix with --shape NAME=n)\n",
        "{}",
        stdout(&out)
    );
    let out = kiln(&["inspect", "models/mlp_bn.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "input x f32[8,16]\noutput y f32[8,10]\n");
    let out = kiln(&["inspect", "models/nope.onnx"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn shape_fixes_a_named_dynamic_dimension() {
    let out = kiln(&["run", DYNAMIC, "--shape", "N=4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_summary_line(stdout(&out).trim(), "y", "f32[4,5]");
    // The same as the input's full shape.
    assert_eq!(stdout(&out), stdout(&kiln(&["run", DYNAMIC, "--shape", "x=4,3,4"])));
    let out = kiln(&["run", DYNAMIC, "--shape", "M=4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("'M' is neither an input nor a named dimension") && stderr(&out).contains(": N)"),
        "{}",
        stderr(&out)
    );
    let out = kiln(&["run", DYNAMIC]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("dynamic dimensions must be fixed"), "{}", stderr(&out));
}

#[test]
fn compile_saves_an_artefact_that_runs_again_without_re_optimising() {
    let dir = scratch("artefact");
    let kiln_file = dir.join("mlp.kiln");
    let kir_file = dir.join("mlp.kir");
    for file in [&kiln_file, &kir_file] {
        let out = kiln(&["compile", "models/mlp_bn.json", "-o", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).is_empty(), "-o alone prints nothing");
    }
    assert!(dir.join("mlp.safetensors").is_file(), "the .kir file's weights are beside it");
    // The saved graph is the optimised one (BatchNormalization folded), and --emit ir prints it.
    let text = std::fs::read_to_string(&kir_file).unwrap();
    assert!(!text.contains("BatchNormalization"), "{text}");
    assert_eq!(text, stdout(&kiln(&["compile", "models/mlp_bn.json", "--emit", "ir"])));

    let original = stdout(&kiln(&["run", "models/mlp_bn.json"]));
    for file in [&kiln_file, &kir_file] {
        let out = kiln(&["run", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}", file.display(), stderr(&out));
        assert_eq!(stdout(&out), original, "{}", file.display());
    }
    // A .kiln file is not optimised again (it defaults to -O0): nothing is left to rewrite.
    let out = kiln(&["compile", kiln_file.to_str().unwrap(), "--emit", "stats"]);
    let stats: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("stats JSON");
    assert!(stats.get("optimizer").is_none(), "{stats}");
    // The library reads it back too.
    let model = kiln::load(&kiln_file).unwrap();
    assert!(model.weights.check_against(&model.graph).is_ok());

    // Without its weights file a .kir names the missing weights; a corrupt .kiln file is an error.
    std::fs::remove_file(dir.join("mlp.safetensors")).unwrap();
    let out = kiln(&["run", kir_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("has no data"), "{}", stderr(&out));
    std::fs::write(&kiln_file, b"not a kiln file").unwrap();
    let out = kiln(&["run", kiln_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a .kiln file"), "{}", stderr(&out));
    let out = kiln(&["compile", "models/mlp_bn.json", "-o", dir.join("m.bin").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("FILE.kiln"), "{}", stderr(&out));
}

/// The CRMSNorm switches: on prelm_transformer (d = 256) the cost model refuses the conversion
/// and says why; `KILN_CRMS=2` takes it (9 norms, `crms-norm` in the rules fired, CRMSNormalization
/// in the IR), and `--no-crms` or `KILN_CRMS=0` turn the pass off (no `crms` report at all).
#[test]
fn crms_switches_show_in_stats() {
    let stats = |extra: &[&str], crms: Option<&str>| -> serde_json::Value {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(["compile", "models/prelm_transformer.json", "--emit", "stats"])
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("KILN_CRMS");
        if let Some(v) = crms {
            cmd.env("KILN_CRMS", v);
        }
        let out = cmd.output().expect("the kiln binary runs");
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(stdout(&out).trim()).expect("stats is one JSON object")
    };
    let default = stats(&[], None);
    let refused = default["optimizer"]["crms"]["refused"].to_string();
    assert!(refused.contains("the cost model estimates"), "{default}");
    assert!(default["ops_after"].get("CRMSNormalization").is_none(), "{default}");
    assert!(default["optimizer"]["rules_fired"].get("crms-norm").is_none(), "{default}");

    let taken = stats(&[], Some("2"));
    assert_eq!(taken["ops_after"]["CRMSNormalization"], 9, "{taken}");
    assert!(taken["ops_after"].get("RMSNormalization").is_none(), "{taken}");
    assert_eq!(taken["optimizer"]["rules_fired"]["crms-norm"], 9, "{taken}");
    assert_eq!(taken["optimizer"]["crms"]["converted"].as_array().map(Vec::len), Some(9), "{taken}");

    for (extra, env) in [(&["--no-crms"][..], Some("2")), (&[][..], Some("0"))] {
        let off = stats(extra, env);
        assert!(off["optimizer"].get("crms").is_none(), "{extra:?} KILN_CRMS={env:?}: {off}");
        assert!(off["ops_after"].get("CRMSNormalization").is_none(), "{off}");
        assert_eq!(off["ops_after"]["RMSNormalization"], 9, "{off}");
    }
}
