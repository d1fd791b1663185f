//! `CompiledModel::run_into` (borrowed inputs, caller-owned outputs), pools shared between models,
//! and options that come from `kiln::Options`, never from the environment.

use kiln::{Backend, DataMut, DataRef, OptLevel, Options, Tensor, TensorData, TensorRef, ThreadPool};
use std::path::Path;
use std::sync::Arc;

fn options(threads: usize) -> Options {
    Options { backend: Backend::Jit, opt_level: OptLevel::O2, threads: Some(threads), ..Default::default() }
}

/// Zeroed buffers of the model's output types.
fn buffers(compiled: &kiln::CompiledModel) -> Vec<TensorData> {
    compiled
        .output_types()
        .iter()
        .map(|(_, ty)| match ty.dtype {
            kiln::DType::F32 => TensorData::F32(vec![f32::NAN; ty.num_elements()]),
            kiln::DType::I64 => TensorData::I64(vec![-7; ty.num_elements()]),
            kiln::DType::Bool => TensorData::Bool(vec![true; ty.num_elements()]),
        })
        .collect()
}

fn views(inputs: &[(String, Tensor)]) -> Vec<(&str, TensorRef<'_>)> {
    inputs.iter().map(|(n, t)| (n.as_str(), TensorRef::from(t))).collect()
}

/// Runs through `run_into` into fresh (poisoned) buffers and returns what it wrote.
fn run_into(compiled: &kiln::CompiledModel, inputs: &[(String, Tensor)]) -> Vec<TensorData> {
    let mut outs = buffers(compiled);
    let mut bufs: Vec<DataMut<'_>> = outs.iter_mut().map(DataMut::from).collect();
    compiled.run_into(&views(inputs), &mut bufs).expect("run_into runs");
    outs
}

/// The zoo's example inputs (`models/NAME/inputs/INPUT.npy`) where a model has them: some do not
/// run on random values (a RegionNorm mask must be 0 or 1).
fn bundled_inputs(model: &Path, inputs: &mut [(String, Tensor)]) {
    let dir = model.with_extension("").join("inputs");
    for (name, tensor) in inputs.iter_mut() {
        let file = dir.join(format!("{name}.npy"));
        if file.is_file() {
            *tensor = kiln::npy::read_npy(&file).expect("a bundled input reads");
        }
    }
}

fn zoo_models() -> Vec<std::path::PathBuf> {
    let mut models: Vec<_> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
        .expect("models/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    models.sort();
    models
}

#[test]
fn run_into_equals_run_on_every_zoo_model_at_one_and_two_threads() {
    let models = zoo_models();
    assert!(models.len() >= 15, "the zoo is there ({} models)", models.len());
    for path in models {
        for threads in [1, 2] {
            let compiled = kiln::compile(kiln::load(&path).expect("loads"), &options(threads)).expect("compiles");
            let mut inputs = kiln::default_inputs(compiled.graph()).expect("inputs");
            bundled_inputs(&path, &mut inputs);
            let want = compiled.run(&inputs).expect("runs");
            // Twice: the second run reuses the arena and must not see the first run's values.
            for _ in 0..2 {
                let got = run_into(&compiled, &inputs);
                for ((name, w), g) in want.iter().zip(&got) {
                    assert!(w.data() == g, "{}: output '{name}' at {threads} threads differs", path.display());
                }
            }
        }
    }
}

#[test]
fn run_into_on_the_interpreter_equals_run() {
    let model = kiln::load("models/mlp_bn.json").expect("loads");
    let compiled = kiln::compile(model, &Options { backend: Backend::Interp, ..options(1) }).expect("compiles");
    let inputs = kiln::default_inputs(compiled.graph()).expect("inputs");
    let want = compiled.run(&inputs).expect("runs");
    let got = run_into(&compiled, &inputs);
    assert!(want.iter().zip(&got).all(|((_, w), g)| w.data() == g));
}

#[test]
fn bad_buffers_and_inputs_are_errors_naming_the_tensor() {
    let compiled = kiln::compile(kiln::load("models/mlp_bn.json").expect("loads"), &options(2)).expect("compiles");
    assert_eq!(compiled.output_types().len(), 1);
    let (out_name, out_ty) = compiled.output_types().remove(0);
    assert_eq!((out_name.as_str(), out_ty.shape.as_slice()), ("y", &[8usize, 10][..]));
    let inputs = kiln::default_inputs(compiled.graph()).expect("inputs");
    let x = inputs[0].1.as_f32().expect("f32 input");
    let err = |inputs: &[(&str, TensorRef<'_>)], outputs: &mut [DataMut<'_>]| {
        compiled.run_into(inputs, outputs).expect_err("refused").to_string()
    };
    let good = [("x", TensorRef::from(&inputs[0].1))];

    let mut short = vec![0f32; 79];
    let e = err(&good, &mut [DataMut::F32(&mut short)]);
    assert!(e.contains("output 'y'") && e.contains("80"), "{e}");
    let mut wrong_type = vec![0i64; 80];
    let e = err(&good, &mut [DataMut::I64(&mut wrong_type)]);
    assert!(e.contains("output 'y'"), "{e}");
    let e = err(&good, &mut []);
    assert!(e.contains("outputs"), "{e}");

    let mut y = vec![0f32; 80];
    let e = err(&[("x", TensorRef { shape: &[8, 16], data: DataRef::F32(&x[..100]) })], &mut [DataMut::F32(&mut y)]);
    assert!(e.contains("input 'x'"), "{e}");
    let e = err(&[("x", TensorRef { shape: &[16, 8], data: DataRef::F32(x) })], &mut [DataMut::F32(&mut y)]);
    assert!(e.contains("input 'x'"), "{e}");
    let ints = vec![0i64; x.len()];
    let e = err(&[("x", TensorRef { shape: &[8, 16], data: DataRef::I64(&ints) })], &mut [DataMut::F32(&mut y)]);
    assert!(e.contains("input 'x'"), "{e}");
    let e = err(&[], &mut [DataMut::F32(&mut y)]);
    assert!(e.contains("input 'x'") && e.contains("missing"), "{e}");
    let e = err(&[good[0], good[0]], &mut [DataMut::F32(&mut y)]);
    assert!(e.contains("input 'x'") && e.contains("twice"), "{e}");
    let e = err(&[good[0], ("z", good[0].1)], &mut [DataMut::F32(&mut y)]);
    assert!(e.contains("input 'z'"), "{e}");
    // After all that the model still runs.
    compiled.run_into(&good, &mut [DataMut::F32(&mut y)]).expect("runs");
    assert!(y.iter().all(|v| v.is_finite()));
}

#[test]
fn one_pool_serves_two_models_from_many_threads() {
    let pool = Arc::new(ThreadPool::new(2));
    let shared = Options { pool: Some(Arc::clone(&pool)), threads: Some(7), ..options(1) };
    let a = kiln::compile(kiln::load("models/transformer_block.json").expect("loads"), &shared).expect("compiles");
    let b = kiln::compile(kiln::load("models/graph_transformer.json").expect("loads"), &shared).expect("compiles");
    // The pool decides the thread count; `threads` is ignored.
    assert_eq!(pool.threads(), 2);
    let (ia, ib) = (kiln::default_inputs(a.graph()).expect("inputs"), kiln::default_inputs(b.graph()).expect("inputs"));
    // Each model alone, on a private pool of the same size: the reference.
    let alone = |path: &str, inputs: &[(String, Tensor)]| {
        let m = kiln::compile(kiln::load(path).expect("loads"), &options(2)).expect("compiles");
        m.run(inputs).expect("runs")
    };
    let (wa, wb) = (alone("models/transformer_block.json", &ia), alone("models/graph_transformer.json", &ib));
    std::thread::scope(|s| {
        for t in 0..4 {
            let (a, b, ia, ib, wa, wb) = (&a, &b, &ia, &ib, &wa, &wb);
            s.spawn(move || {
                for i in 0..50 {
                    if (t + i) % 2 == 0 {
                        assert!(a.run(ia).expect("runs") == *wa, "model a, thread {t} run {i}");
                    } else {
                        assert!(b.run(ib).expect("runs") == *wb, "model b, thread {t} run {i}");
                    }
                }
            });
        }
    });
    drop((a, b));
    // The models are gone; the pool still works for whoever holds it.
    let c = kiln::compile(kiln::load("models/mlp_bn.json").expect("loads"), &shared).expect("compiles");
    c.run(&kiln::default_inputs(c.graph()).expect("inputs")).expect("runs");
}

/// The library reads no environment variable: with KILN_EGRAPH_NODE_LIMIT malformed (which the
/// `kiln` command refuses) and KILN_FUSED_OPS=0, a compile through the library succeeds and still
/// fuses attention. Setting the environment of this process is unsafe while other tests run, so
/// the check runs in a child: this test binary again, filtered to `env_child`.
#[test]
fn the_library_ignores_kiln_environment_variables() {
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "env_child", "--nocapture"])
        .env("KILN_ENV_CHILD", "1")
        .env("KILN_EGRAPH_NODE_LIMIT", "lots")
        .env("KILN_FUSED_OPS", "0")
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("env_child: ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The command maps the same variables: the malformed one is an error naming it.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["run", "models/mlp_bn.json"])
        .env("KILN_EGRAPH_NODE_LIMIT", "lots")
        .output()
        .expect("kiln runs");
    assert_eq!(cli.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&cli.stderr).contains("KILN_EGRAPH_NODE_LIMIT"));
}

#[test]
fn env_child() {
    if std::env::var_os("KILN_ENV_CHILD").is_none() {
        return; // Only meaningful in the child started above.
    }
    let model = kiln::load("models/graph_transformer.json").expect("loads");
    let compiled = kiln::compile(model, &options(1)).expect("the library ignores KILN_EGRAPH_NODE_LIMIT=lots");
    let fused = compiled.graph().op_counts().keys().any(|op| *op == "Attention" || *op == "MaskedSoftmax");
    assert!(fused, "KILN_FUSED_OPS=0 in the environment changed the library's optimizer");
    println!("env_child: ok");
}
