//! `peers-runner`: runs one ONNX file in kiln (ONNX frontend, -O2, JIT) or in tract (`tract-onnx`,
//! optimised plan) and prints one JSON line with the compile time, every timed iteration and the
//! process's memory figures. `bench/peers/run.py` starts one process per measurement, so that peak
//! RSS is per system and per model, and interleaves the systems run by run.
//!
//! ```text
//! peers-runner run --system kiln|tract --threads N --iters K --warmup W --model F.onnx --inputs DIR --out DIR
//! peers-runner inputs --model F.onnx --out DIR     # kiln's default inputs, as DIR/<input>.npy
//! ```
//!
//! `--inputs DIR` holds `<input name>.npy` for every graph input; outputs are written as
//! `DIR/<index>.npy` in the model's output order, and their names are in the JSON line.

use kiln::{Backend, LoadOptions, OptLevel, Options, Tensor, TensorData};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use tract_onnx::prelude::{self as tp, DatumTypeExt, Framework, InferenceModelExt, IntoRunnable, IntoTValue};

/// Parsed command line of `run`.
struct RunArgs {
    system: String,
    threads: usize,
    iters: usize,
    warmup: usize,
    model: PathBuf,
    inputs: PathBuf,
    out: Option<PathBuf>,
}

/// What one system reports; `iter_ms` excludes the warm-up runs.
struct Measured {
    compile_ms: f64,
    iter_ms: Vec<f64>,
    output_names: Vec<String>,
    /// kiln: the instruction set its kernels were chosen for (run-time detection).
    isa: Option<String>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => parse_run(&args[1..]).and_then(|a| run(&a)),
        Some("inputs") => write_default_inputs(&args[1..]),
        _ => Err("usage: peers-runner run|inputs ... (see the module docs in src/main.rs)".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The driver reads this line: a failure is reported, never hidden.
            println!("{}", json!({ "error": e }));
            ExitCode::FAILURE
        }
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

fn required<'a>(args: &'a [String], name: &str) -> Result<&'a str, String> {
    flag(args, name).ok_or_else(|| format!("missing {name}"))
}

fn number(args: &[String], name: &str, default: usize) -> Result<usize, String> {
    match flag(args, name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| format!("{name}: not a number: {v}")),
    }
}

fn parse_run(args: &[String]) -> Result<RunArgs, String> {
    Ok(RunArgs {
        system: required(args, "--system")?.to_string(),
        threads: number(args, "--threads", 1)?.max(1),
        iters: number(args, "--iters", 10)?.max(1),
        warmup: number(args, "--warmup", 1)?,
        model: required(args, "--model")?.into(),
        inputs: required(args, "--inputs")?.into(),
        out: flag(args, "--out").map(PathBuf::from),
    })
}

/// `VmRSS` / `VmHWM` of this process in kB, from /proc (Linux); 0 when unavailable.
fn proc_status_kb(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Reads every `<name>.npy` in `dir`.
fn read_inputs(dir: &Path) -> Result<Vec<(String, Tensor)>, String> {
    let mut inputs = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("npy") {
            continue;
        }
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let tensor = kiln::npy::read_npy(&path)?;
        inputs.push((name, tensor));
    }
    inputs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(inputs)
}

fn run(args: &RunArgs) -> Result<(), String> {
    let rss_start_kb = proc_status_kb("VmRSS:");
    let inputs = read_inputs(&args.inputs)?;
    let (measured, outputs) = match args.system.as_str() {
        "kiln" => run_kiln(args, &inputs)?,
        "tract" => run_tract(args, &inputs)?,
        other => return Err(format!("unknown --system {other}: kiln or tract")),
    };
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        for (i, tensor) in outputs.iter().enumerate() {
            kiln::npy::write_npy(&out.join(format!("{i}.npy")), tensor)?;
        }
    }
    let line = json!({
        "system": args.system,
        "threads": args.threads,
        "compile_ms": measured.compile_ms,
        "iter_ms": measured.iter_ms,
        "outputs": measured.output_names,
        "rss_start_kb": rss_start_kb,
        "rss_peak_kb": proc_status_kb("VmHWM:"),
        "isa": measured.isa,
    });
    println!("{line}");
    Ok(())
}

fn run_kiln(args: &RunArgs, inputs: &[(String, Tensor)]) -> Result<(Measured, Vec<Tensor>), String> {
    let start = Instant::now();
    let load = LoadOptions {
        fixed_dims: inputs.iter().map(|(n, t)| (n.clone(), t.shape().to_vec())).collect(),
        ..Default::default()
    };
    let model = kiln::load_with(&args.model, &load).map_err(|e| e.to_string())?;
    let options = Options { backend: Backend::Jit, opt_level: OptLevel::O2, threads: Some(args.threads), ..Default::default() };
    let compiled = kiln::compile(model, &options).map_err(|e| e.to_string())?;
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    let inputs = inputs.to_vec();
    let mut last = Vec::new();
    for _ in 0..args.warmup {
        last = compiled.run(&inputs).map_err(|e| e.to_string())?;
    }
    let mut iter_ms = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let t = Instant::now();
        last = compiled.run(&inputs).map_err(|e| e.to_string())?;
        iter_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let output_names = last.iter().map(|(n, _)| n.clone()).collect();
    let isa = compiled.isa().map(|isa| isa.name().to_string());
    Ok((Measured { compile_ms, iter_ms, output_names, isa }, last.into_iter().map(|(_, t)| t).collect()))
}

fn to_tract(tensor: &Tensor) -> Result<tp::Tensor, String> {
    let shape = tensor.shape();
    let made = match tensor.data() {
        TensorData::F32(v) => tp::Tensor::from_shape(shape, v),
        TensorData::I64(v) => tp::Tensor::from_shape(shape, v),
        TensorData::Bool(v) => tp::Tensor::from_shape(shape, v),
    };
    made.map_err(|e| format!("{e:?}"))
}

/// The elements of a plain (in-memory) tract tensor.
fn plain<T: tp::Datum + Clone>(tensor: &tp::Tensor) -> Result<Vec<T>, String> {
    tensor.try_as_plain_ram().and_then(|v| v.as_slice::<T>().map(<[T]>::to_vec)).map_err(|e| e.to_string())
}

fn from_tract(tensor: &tp::Tensor) -> Result<Tensor, String> {
    let shape = tensor.shape().to_vec();
    let made = match tensor.datum_type() {
        tp::DatumType::I64 => Tensor::from_i64(shape, plain::<i64>(tensor)?),
        tp::DatumType::Bool => Tensor::from_bool(shape, plain::<bool>(tensor)?),
        _ => {
            let cast = tensor.cast_to::<f32>().map_err(|e| e.to_string())?;
            Tensor::from_f32(shape, plain::<f32>(&cast)?)
        }
    };
    made.map_err(|e| e.to_string())
}

fn run_tract(args: &RunArgs, inputs: &[(String, Tensor)]) -> Result<(Measured, Vec<Tensor>), String> {
    let err = |e: tp::TractError| format!("{e:?}");
    // tract's matrix products, element-wise and reduction kernels split work on this executor.
    // Without `multithread-mm` (see Cargo.toml) tract would always run on one thread.
    let executor = if args.threads > 1 {
        tract_linalg::multithread::Executor::multithread(args.threads)
    } else {
        tract_linalg::multithread::Executor::SingleThread
    };
    tract_linalg::multithread::set_default_executor(executor);
    let start = Instant::now();
    let mut model = tract_onnx::onnx().model_for_path(&args.model).map_err(err)?;
    // Name → position among the graph inputs; the facts are set from the given tensors.
    let mut ordered = Vec::new();
    for (i, outlet) in model.input_outlets().map_err(err)?.to_vec().into_iter().enumerate() {
        let name = model.node(outlet.node).name.clone();
        let tensor = inputs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| format!("no input file for graph input {name}"))?;
        let t = to_tract(tensor)?;
        model.set_input_fact(i, tp::InferenceFact::from(t.datum_type().fact(t.shape()))).map_err(err)?;
        ordered.push(t);
    }
    let runnable = model.into_optimized().map_err(err)?.into_runnable().map_err(err)?;
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    let output_names: Vec<String> = {
        let m = runnable.model();
        m.output_outlets()
            .map_err(err)?
            .iter()
            .map(|&o| m.outlet_label(o).map(str::to_string).unwrap_or_else(|| m.node(o.node).name.clone()))
            .collect()
    };
    let values: tp::TVec<tp::TValue> = ordered.into_iter().map(|t| t.into_tvalue()).collect();
    // One state reused across runs, as a serving loop would (ONNX Runtime reuses its session too).
    let mut state = tract_onnx::tract_core::internal::SimpleState::new(&runnable).map_err(err)?;
    let mut last = tp::TVec::new();
    for _ in 0..args.warmup {
        last = state.run(values.clone()).map_err(err)?;
    }
    let mut iter_ms = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let t = Instant::now();
        last = state.run(values.clone()).map_err(err)?;
        iter_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let outputs = last.iter().map(|v| from_tract(v)).collect::<Result<Vec<_>, _>>()?;
    Ok((Measured { compile_ms, iter_ms, output_names, isa: None }, outputs))
}

/// `inputs --model F --out DIR`: kiln's default inputs for the model (what `kiln run` feeds when
/// given none; the `*_bench` models' statistics were calibrated on them).
fn write_default_inputs(args: &[String]) -> Result<(), String> {
    let model = kiln::load(required(args, "--model")?).map_err(|e| e.to_string())?;
    let out = PathBuf::from(required(args, "--out")?);
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let inputs = kiln::default_inputs(&model.graph).map_err(|e| e.to_string())?;
    for (name, tensor) in &inputs {
        kiln::npy::write_npy(&out.join(format!("{name}.npy")), tensor)?;
    }
    println!("{}", json!({ "inputs": inputs.iter().map(|(n, _)| n).collect::<Vec<_>>() }));
    Ok(())
}
