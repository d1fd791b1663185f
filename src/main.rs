//! The `kiln` command: run, compile and check models.
//!
//! Exit codes: 0 success, 1 a problem with the model or the inputs, 2 a usage error.

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use kiln::{Backend, CompiledModel, Error, OptLevel, Options, Tensor, TensorData};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "A neural-network model compiler: model graph in, native function out.",
    after_help = "Environment (read by the command only, mapped to kiln::Options):\n  \
        KILN_EGRAPH_NODE_LIMIT, KILN_EGRAPH_ITER_LIMIT, KILN_EGRAPH_TIME_LIMIT_MS  optimizer limits\n  \
        KILN_LN_TO_RMS=0   no Pre-LN → Pre-RMSNorm rewrite\n  \
        KILN_CRMS=0        no Pre-RMSNorm → Pre-CRMSNorm conversion (as --no-crms); 2: wherever sound\n  \
        KILN_FUSED_OPS=0   no fused MaskedSoftmax/Attention ops\n  \
        KILN_DISASM        print each generated kernel's machine code to stderr"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile and run a model, printing a summary line per output.
    Run(RunArgs),
    /// Compile a model and print what it became, or save it (-o) to run again without re-optimising.
    Compile(CompileArgs),
    /// Compile a model, run it repeatedly and print compile time and latency.
    Bench(BenchArgs),
    /// Validate a model and print every problem found.
    Check {
        /// The model file (.json, .onnx, .kir or .kiln).
        model: PathBuf,
        #[command(flatten)]
        load: LoadFlags,
    },
    /// List a model's inputs and outputs with their element types and shapes, dynamic dimensions
    /// by name (as in ONNX's dim_param), without compiling it.
    Inspect {
        /// The model file (.json, .onnx, .kir or .kiln).
        model: PathBuf,
    },
    /// Measure the optimizer's cost model (flop/s, bandwidth, kernel and fused-op overheads) on
    /// this machine at 1 thread and at all cores, and print it as JSON for --calibration.
    Calibrate {
        /// Measure at 1..=N threads instead of at 1 and at all cores.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
        threads: Option<u32>,
        /// Write the JSON here instead of printing it.
        #[arg(short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Args)]
struct LoadFlags {
    /// The shape of an input with dynamic dimensions (ONNX), as INPUT=d0,d1,..., or the size of a
    /// named dynamic dimension in every input that has it, as DIM=n (e.g. N=4); repeatable, each
    /// name once. Static inputs (kiln JSON, .kir, .kiln) keep their shapes: a different one is an
    /// error.
    #[arg(long = "shape", value_name = "NAME=DIMS", value_parser = parse_shape_arg)]
    shapes: Vec<(String, Vec<usize>)>,
}

#[derive(Args)]
struct CompileFlags {
    /// Optimisation level: -O0, -O1 or -O2 (default -O2; -O0 for a .kiln file, which is saved
    /// optimised).
    #[arg(short = 'O', value_name = "LEVEL", value_parser = parse_opt_level)]
    opt_level: Option<OptLevel>,
    /// Worker threads of the JIT (default: all cores); refused where nothing runs on the JIT.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Use all --threads for every step of every run (by default the first runs time each step
    /// at all threads and at one, and a model keeps the fastest plan: all, one, or splitting only
    /// the steps that gained).
    #[arg(long)]
    fixed_threads: bool,
    /// Most memory the model may use (weights + one run's intermediates), in bytes or with a
    /// unit such as 16GiB; a larger model is refused before it is allocated (default 4GiB).
    #[arg(long, value_name = "SIZE", value_parser = kiln::parse_memory_size)]
    memory_cap: Option<u64>,
    /// Highest instruction set for the hand-written kernels: generic, avx2+fma or avx512
    /// (default: what this CPU has; never above it).
    #[arg(long, value_name = "NAME", value_parser = parse_isa)]
    isa: Option<kiln::Isa>,
    /// The optimizer's cost model as measured by `kiln calibrate -o FILE` (the entry for the
    /// thread count in use); default: built-in estimates for one core.
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// Keep zero-mean residual streams d wide: no Pre-RMSNorm → Pre-CRMSNorm conversion (on at
    /// -O2 where the cost model finds it pays).
    #[arg(long)]
    no_crms: bool,
}

#[derive(Args)]
struct RunArgs {
    /// The model file (.json, .onnx, .kir or .kiln).
    model: PathBuf,
    #[command(flatten)]
    inputs: InputFlags,
    /// Write each output to DIR/NAME.npy.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Which engine runs the model: native code (default) or the reference interpreter.
    #[arg(long, value_enum, default_value_t = BackendArg::Jit)]
    backend: BackendArg,
    #[command(flatten)]
    flags: CompileFlags,
    #[command(flatten)]
    load: LoadFlags,
}

#[derive(Args)]
struct InputFlags {
    /// An input as NAME=FILE.npy or NAME=FILE.pb; repeat for each input, each name once. An input
    /// not given takes the model's bundled example (DIR/STEM/inputs/NAME.npy beside DIR/STEM.json)
    /// when there is one of its type, or else seeded random values.
    #[arg(long = "input", value_name = "NAME=FILE", value_parser = parse_input_arg)]
    inputs: Vec<(String, PathBuf)>,
    /// The seed of the random inputs (input i of seed S is the stream S·2^32 + i; default 0).
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u32,
}

#[derive(Args)]
struct BenchArgs {
    /// The model file (.json, .onnx, .kir or .kiln).
    model: PathBuf,
    #[command(flatten)]
    inputs: InputFlags,
    /// Which engine runs the model.
    #[arg(long, value_enum, default_value_t = BackendArg::Jit)]
    backend: BackendArg,
    /// Timed runs, after one untimed warm-up run.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    iters: u32,
    /// End with one JSON object on the last line (median_ms, p90_ms, min_ms, mean_ms, compile_ms,
    /// load_ms, iters, threads, backend, opt_level).
    #[arg(long)]
    json: bool,
    /// Also time each step of the JIT's schedule over --iters more runs and print the costliest
    /// steps (median per step); with --json the object gets a "profile" array.
    #[arg(long)]
    profile: bool,
    #[command(flatten)]
    flags: CompileFlags,
    #[command(flatten)]
    load: LoadFlags,
}

#[derive(Args)]
struct CompileArgs {
    /// The model file (.json, .onnx, .kir or .kiln).
    model: PathBuf,
    /// What to print: the IR text form, a Graphviz graph, or statistics as one JSON object.
    #[arg(long, value_enum, required_unless_present_any = ["output", "explain"])]
    emit: Option<Emit>,
    /// For each node of the input graph that the optimizer changed, print what it became and why:
    /// the rules applied, from the input node to the nodes of the optimised graph
    /// (docs/explain.md). At -O0 it says that nothing changed. With --emit, the emitted output
    /// stays alone on stdout and the explanation goes to stderr.
    #[arg(long)]
    explain: bool,
    /// With --explain: print it as one JSON object (schema kiln-explain/1).
    #[arg(long, requires = "explain")]
    json: bool,
    /// Save the compiled model: FILE.kiln is one file (graph and weights), FILE.kir the IR text
    /// form with its weights in FILE.safetensors beside it. Both run again with kiln run.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    flags: CompileFlags,
    #[command(flatten)]
    load: LoadFlags,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    /// The reference interpreter.
    Interp,
    /// Native code generated with Cranelift.
    Jit,
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    Ir,
    Dot,
    Stats,
    /// The Cranelift IR of each generated kernel.
    Clif,
}

fn parse_opt_level(s: &str) -> Result<OptLevel, String> {
    match s {
        "0" => Ok(OptLevel::O0),
        "1" => Ok(OptLevel::O1),
        "2" => Ok(OptLevel::O2),
        _ => Err(format!("expected 0, 1 or 2 (as in -O2), got {s:?}")),
    }
}

fn parse_input_arg(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => Ok((name.to_string(), PathBuf::from(file))),
        _ => Err(format!("expected NAME=FILE.npy, got {s:?}")),
    }
}

fn parse_shape_arg(s: &str) -> Result<(String, Vec<usize>), String> {
    let bad = || format!("expected NAME=d0,d1,... with dimensions ≥ 1, got {s:?}");
    let (name, dims) = s.split_once('=').ok_or_else(bad)?;
    let dims: Vec<usize> = dims
        .split(',')
        .map(|d| d.trim().parse::<usize>().ok().filter(|&d| d >= 1))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    Ok((name.to_string(), dims))
}

/// Ends the process as a usage error (exit code 2), as clap does for its own.
fn usage_error(message: &str) -> ! {
    Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message).exit()
}

/// `--threads` means something only where the JIT runs the model.
fn refuse_threads_without_jit(flags: &CompileFlags, why: &str) {
    if flags.threads.is_some() {
        usage_error(&format!("--threads has no effect {why}; leave it out"));
    }
    if flags.fixed_threads {
        usage_error(&format!("--fixed-threads has no effect {why}; leave it out"));
    }
}

/// `-O` as given; by default -O2, except for a `.kiln` file, which was saved optimised.
fn opt_level(flags: &CompileFlags, model: &Path) -> OptLevel {
    let saved = model.extension().is_some_and(|e| e == "kiln");
    flags.opt_level.unwrap_or(if saved { OptLevel::O0 } else { OptLevel::O2 })
}

fn parse_isa(s: &str) -> Result<kiln::Isa, String> {
    kiln::Isa::from_name(s).ok_or_else(|| format!("expected generic, avx2+fma or avx512, got {s:?}"))
}

/// The options of the command line, with the `KILN_*` environment variables the command (not
/// the library) reads mapped onto them.
fn options(flags: &CompileFlags, backend: Backend, model: &Path) -> Result<Options, Error> {
    let mut optimizer = kiln::OptimizeConfig::from_lookup(|name| std::env::var(name).ok())?;
    if let Some(path) = &flags.calibration {
        optimizer.cost_model = kiln::calibrate::read_cost_model(path, flags.threads.map(|n| n as usize))?;
    }
    if flags.no_crms {
        optimizer.crms = false;
    }
    Ok(Options {
        backend,
        opt_level: opt_level(flags, model),
        threads: flags.threads.map(|n| n as usize),
        adaptive_threads: !flags.fixed_threads,
        memory_cap: flags.memory_cap.unwrap_or(kiln::ir::DEFAULT_MEMORY_CAP),
        isa: flags.isa,
        optimizer,
        disasm: std::env::var_os("KILN_DISASM").is_some(),
        ..Options::default()
    })
}

/// The reader's options; `memory_cap` (from `--memory-cap`) bounds the weights it reads or makes.
/// A `--shape` naming a dynamic dimension of an ONNX file (`N=4`) becomes the full shape of every
/// input that has it; a name given twice is an error.
fn load_options(model: &Path, load: &LoadFlags, memory_cap: Option<u64>) -> Result<kiln::LoadOptions, Error> {
    for (i, (name, dims)) in load.shapes.iter().enumerate() {
        if let Some((_, first)) = load.shapes[..i].iter().find(|(n, _)| n == name) {
            return Err(Error::new(
                format!("--shape {name}"),
                format!(
                    "given twice ({name}={} and {name}={}); give each name once",
                    dims_text(first),
                    dims_text(dims)
                ),
            ));
        }
    }
    let mut fixed_dims = Vec::new();
    if model.extension().is_some_and(|e| e == "onnx") && !load.shapes.is_empty() {
        let mut limits = kiln::frontends::ReadLimits::default();
        if let Some(cap) = memory_cap {
            limits.memory_cap = cap;
        }
        let signature = kiln::frontends::onnx::read_signature(model, &limits)?;
        let mut named = Vec::new();
        for (name, dims) in &load.shapes {
            if signature.inputs.iter().any(|p| p.name == *name) {
                fixed_dims.push((name.clone(), dims.clone()));
            } else if let [n] = dims[..] {
                named.push((name.clone(), n));
            } else {
                fixed_dims.push((name.clone(), dims.clone())); // the reader names the unknown input
            }
        }
        let resolved = signature.shapes_for(&named).map_err(|e| Error::new("--shape", e))?;
        for (input, shape) in resolved {
            if !fixed_dims.iter().any(|(n, _)| *n == input) {
                fixed_dims.push((input, shape));
            }
        }
    }
    Ok(kiln::LoadOptions { fixed_dims, memory_cap, ..Default::default() })
}

fn dims_text(dims: &[usize]) -> String {
    dims.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

/// Loads a model for a command. A `--shape` on a model with static inputs (kiln JSON, `.kir`,
/// `.kiln`) must name an input and agree with its shape: it cannot change it, and ignoring it
/// would hide a mistake.
fn load_model(path: &Path, load: &LoadFlags, options: kiln::LoadOptions) -> Result<kiln::Model, Error> {
    let model = kiln::load_with(path, &options)?;
    if path.extension().is_some_and(|e| e == "onnx") {
        return Ok(model);
    }
    let graph = &model.graph;
    for (name, dims) in &load.shapes {
        let input = graph.inputs().iter().map(|&id| &graph.node(id).outputs[0]).find(|info| info.name == *name);
        match input {
            Some(info) if info.ty.shape == *dims => {}
            Some(info) => {
                return Err(Error::new(
                    format!("--shape {name}"),
                    format!(
                        "input '{name}' has the fixed shape {}; --shape fixes dynamic dimensions of ONNX inputs and cannot change it",
                        info.ty
                    ),
                ));
            }
            None => {
                let names: Vec<&str> = graph.inputs().iter().map(|&id| graph.node(id).name.as_str()).collect();
                return Err(Error::new(
                    format!("--shape {name}"),
                    format!(
                        "the model has no input '{name}' (its inputs: {}) and no dynamic dimensions",
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(model)
}

/// Writes to stdout. A closed pipe (`kiln compile … | head`) ends the process quietly instead of
/// panicking as `println!` would.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// Output file names keep `[A-Za-z0-9._-]` and replace everything else with `_`.
fn file_name_for(tensor_name: &str) -> String {
    tensor_name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

/// The `--output-dir` file of each output, in output order. Two different outputs whose names map
/// to one file (`a/b` and `a_b` both become `a_b.npy`) are an error before anything runs, rather
/// than the second silently overwriting the first: a renamed file would be a name no one chose.
fn output_files(output_names: &[String]) -> Result<Vec<String>, Error> {
    let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    let mut files = Vec::with_capacity(output_names.len());
    for name in output_names {
        let file = format!("{}.npy", file_name_for(name));
        match seen.get(&file) {
            Some(&first) if first != name => {
                return Err(Error::new(
                    "--output-dir",
                    format!(
                        "outputs '{first}' and '{name}' would both be written to {file}; rename one of them in the \
                         model (file names keep A-Z, a-z, 0-9, '.', '_' and '-' and replace the rest with '_')"
                    ),
                ));
            }
            _ => {
                seen.insert(file.clone(), name);
            }
        }
        files.push(file);
    }
    Ok(files)
}

impl BackendArg {
    fn backend(self) -> Backend {
        match self {
            BackendArg::Interp => Backend::Interp,
            BackendArg::Jit => Backend::Jit,
        }
    }

    fn name(self) -> &'static str {
        match self {
            BackendArg::Interp => "interp",
            BackendArg::Jit => "jit",
        }
    }
}

/// A compiled model and the inputs to run it with: the `--input` files, seeded values for the rest.
struct Prepared {
    compiled: CompiledModel,
    inputs: Vec<(String, Tensor)>,
    load_ms: f64,
}

fn prepare(model: &Path, input_flags: &InputFlags, load: &LoadFlags, options: &Options) -> Result<Prepared, Error> {
    let start = std::time::Instant::now();
    // Inputs are read first: an ONNX model may need their shapes (dynamic dimensions) or values
    // (static parameters fed by graph inputs) to load at all.
    let mut given = Vec::new();
    for (i, (name, path)) in input_flags.inputs.iter().enumerate() {
        if let Some((_, first)) = input_flags.inputs[..i].iter().find(|(n, _)| n == name) {
            return Err(Error::new(
                format!("--input {name}"),
                format!("given twice ({} and {}); give each input once", first.display(), path.display()),
            ));
        }
        let tensor = kiln::read_tensor_file(path).map_err(|e| e.within(&format!("--input {name}")))?;
        given.push((name.clone(), tensor));
    }
    let load_flags = load;
    let mut load = load_options(model, load_flags, Some(options.memory_cap))?;
    for (name, tensor) in &given {
        if !load.fixed_dims.iter().any(|(n, _)| n == name) {
            load.fixed_dims.push((name.clone(), tensor.shape().to_vec()));
        }
    }
    load.values = given.clone();
    let loaded = load_model(model, load_flags, load)?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let compiled = kiln::compile(loaded, options)?;
    let mut inputs = kiln::default_inputs_seeded(compiled.graph(), input_flags.seed)?;
    bundled_inputs(model, &mut inputs)?;
    let declared = compiled.input_types();
    for ((name, tensor), (_, path)) in given.into_iter().zip(&input_flags.inputs) {
        let Some((_, expected)) = declared.iter().find(|(n, _)| *n == name) else {
            if model.extension().is_some_and(|e| e == "onnx") {
                // An ONNX input that fed a static parameter became a constant at load time. (A name
                // that is no input of the file at all was refused by the reader: every given input
                // is passed to it as a fixed shape.)
                continue;
            }
            let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
            return Err(Error::new(
                format!("--input {name}"),
                format!("the model has no input '{name}' (its inputs: {})", names.join(", ")),
            ));
        };
        if tensor.ty() != *expected {
            return Err(Error::new(
                format!("--input {name}"),
                format!("{} holds {} but input '{name}' is {expected}", path.display(), tensor.ty()),
            ));
        }
        if let Some(slot) = inputs.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = tensor;
        }
    }
    Ok(Prepared { compiled, inputs, load_ms })
}

/// Replaces default inputs by the model's bundled examples, `DIR/STEM/inputs/NAME.npy` beside
/// `DIR/STEM.json` (the zoo's layout), where such a file exists with the input's type: some models
/// (a RegionNorm mask must be 0 or 1) do not run on random values.
fn bundled_inputs(model: &Path, inputs: &mut [(String, Tensor)]) -> Result<(), Error> {
    let Some(dir) = model.file_stem().map(|stem| model.with_file_name(stem).join("inputs")) else { return Ok(()) };
    for (name, tensor) in inputs.iter_mut() {
        let path = dir.join(format!("{}.npy", file_name_for(name)));
        if !path.is_file() {
            continue;
        }
        let example = kiln::npy::read_npy(&path).map_err(|e| Error::new(format!("input '{name}'"), e))?;
        if example.ty() == tensor.ty() {
            *tensor = example;
        }
    }
    Ok(())
}

fn run(args: &RunArgs) -> Result<(), Error> {
    if args.backend == BackendArg::Interp {
        refuse_threads_without_jit(&args.flags, "with --backend interp (the interpreter runs on one thread)");
    }
    let options = options(&args.flags, args.backend.backend(), &args.model)?;
    let Prepared { compiled, inputs, .. } = prepare(&args.model, &args.inputs, &args.load, &options)?;
    let graph = compiled.graph();
    let output_names: Vec<String> = graph.outputs().iter().map(|&v| graph.value_name(v).to_string()).collect();
    let files = if args.output_dir.is_some() { output_files(&output_names)? } else { Vec::new() };
    let outputs = compiled.run(&inputs)?;
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::new(format!("--output-dir {}", dir.display()), format!("cannot create: {e}")))?;
    }
    for (i, (name, tensor)) in outputs.iter().enumerate() {
        emit(&format!("{}\n", kiln::summary_line(name, tensor)));
        if let (Some(dir), Some(file)) = (&args.output_dir, files.get(i)) {
            let path = dir.join(file);
            kiln::npy::write_npy(&path, tensor).map_err(|e| e.within(&format!("output '{name}'")))?;
        }
    }
    Ok(())
}

/// The `q`-quantile of sorted samples, by the nearest-rank method (p90 of 20 runs is the 18th).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// How many of the costliest steps `kiln bench --profile` prints (the JSON has them all).
const PROFILE_LINES: usize = 15;

struct StepProfile {
    what: String,
    node: String,
    median_ms: f64,
}

/// Runs the model `iters` times with per-step timing; the median time of each step, costliest first.
fn profile_steps(compiled: &CompiledModel, inputs: &[(String, Tensor)], iters: u32) -> Result<Vec<StepProfile>, Error> {
    let mut samples: Vec<Vec<f64>> = Vec::new();
    let mut steps = Vec::new();
    for _ in 0..iters {
        let (_, times) = compiled.run_profiled(inputs)?;
        if samples.is_empty() {
            samples = vec![Vec::with_capacity(iters as usize); times.len()];
        }
        for (sample, step) in samples.iter_mut().zip(&times) {
            sample.push(step.time.as_secs_f64() * 1e3);
        }
        steps = times;
    }
    let mut profile: Vec<StepProfile> = steps
        .into_iter()
        .zip(samples.iter_mut())
        .map(|(step, sample)| {
            sample.sort_by(f64::total_cmp);
            StepProfile { what: step.what, node: step.node, median_ms: median(sample) }
        })
        .collect();
    profile.sort_by(|a, b| b.median_ms.total_cmp(&a.median_ms));
    Ok(profile)
}

fn bench(args: &BenchArgs) -> Result<(), Error> {
    if args.backend == BackendArg::Interp {
        refuse_threads_without_jit(&args.flags, "with --backend interp (the interpreter runs on one thread)");
    }
    let options = options(&args.flags, args.backend.backend(), &args.model)?;
    let Prepared { compiled, inputs, load_ms } = prepare(&args.model, &args.inputs, &args.load, &options)?;
    // Timed through run_into with borrowed inputs and outputs allocated once, as a server would
    // run it: the time is the model's, not the allocator's.
    let mut outputs: Vec<TensorData> = compiled
        .output_types()
        .iter()
        .map(|(_, ty)| match ty.dtype {
            kiln::DType::F32 => TensorData::F32(vec![0.0; ty.num_elements()]),
            kiln::DType::I64 => TensorData::I64(vec![0; ty.num_elements()]),
            kiln::DType::Bool => TensorData::Bool(vec![false; ty.num_elements()]),
        })
        .collect();
    let views: Vec<(&str, kiln::TensorRef<'_>)> =
        inputs.iter().map(|(n, t)| (n.as_str(), kiln::TensorRef::from(t))).collect();
    let mut bufs: Vec<kiln::DataMut<'_>> = outputs.iter_mut().map(kiln::DataMut::from).collect();
    // Untimed runs first: page faults in the arena and the pool's first wake-up are not latency,
    // and the JIT's first runs measure one thread against all (kiln::threads): the
    // timed runs are the steady state a server sees.
    compiled.run_into(&views, &mut bufs)?;
    for _ in 0..kiln::threads::MAX_UNDECIDED_RUNS {
        if compiled.threads_in_use().is_some() || args.backend == BackendArg::Interp {
            break;
        }
        compiled.run_into(&views, &mut bufs)?;
    }
    let mut times = Vec::with_capacity(args.iters as usize);
    for _ in 0..args.iters {
        let start = std::time::Instant::now();
        compiled.run_into(&views, &mut bufs)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(&mut bufs);
    }
    drop(bufs);
    times.sort_by(f64::total_cmp);
    let (median_ms, p90_ms) = (median(&times), quantile(&times, 0.9));
    let mean_ms = times.iter().sum::<f64>() / times.len() as f64;
    let threads = match args.backend {
        BackendArg::Interp => 1,
        BackendArg::Jit => {
            options.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        }
    };
    let backend = args.backend.name();
    let opt_level = format!("{:?}", options.opt_level);
    let compile_ms = compiled.stats().compile_ms;
    emit(&format!(
        "{}: backend={backend} {opt_level} threads={threads} load_ms={load_ms:.3} compile_ms={compile_ms:.3}\n",
        args.model.display()
    ));
    emit(&format!(
        "iters={} median_ms={median_ms:.4} p90_ms={p90_ms:.4} min_ms={:.4} mean_ms={mean_ms:.4}\n",
        args.iters, times[0]
    ));
    let profile = if args.profile { profile_steps(&compiled, &inputs, args.iters)? } else { Vec::new() };
    if args.profile && args.backend == BackendArg::Interp {
        emit("profile: none on the interpreter (it has no schedule of steps to time; use --backend jit)\n");
    } else if args.profile {
        // Summed from +0.0: an empty f64 sum is -0.0, which would print as "-0.0000".
        let total: f64 = profile.iter().fold(0.0, |sum, s| sum + s.median_ms);
        emit(&format!("profile: {} steps, sum of step medians {total:.4} ms; costliest first:\n", profile.len()));
        for step in profile.iter().take(PROFILE_LINES) {
            let share = if total > 0.0 { 100.0 * step.median_ms / total } else { 0.0 };
            emit(&format!("  {:>9.4} ms {share:5.1}%  {}  [{}]\n", step.median_ms, step.what, step.node));
        }
    }
    if args.json {
        let mut json = serde_json::json!({
            "model": args.model.display().to_string(),
            "backend": backend,
            "opt_level": opt_level,
            "threads": threads,
            // The most threads a step of the timed runs used: `threads`, or 1 where the first
            // runs measured no step faster split (null on the interpreter).
            "threads_used": compiled.threads_in_use(),
            "iters": args.iters,
            "load_ms": load_ms,
            "compile_ms": compile_ms,
            "median_ms": median_ms,
            "p90_ms": p90_ms,
            "min_ms": times[0],
            "mean_ms": mean_ms,
            "isa": compiled.isa().map(|isa| isa.name()),
            // Memory the compiled model holds: its weights (each buffer once, plain or packed)
            // and the JIT's arena for intermediates (null on the interpreter).
            "weight_bytes": compiled.weight_bytes(),
            "arena_bytes": compiled.memory().map(|m| m.arena_bytes),
        });
        if args.profile {
            json["profile"] = profile
                .iter()
                .map(|s| serde_json::json!({"what": s.what, "node": s.node, "median_ms": s.median_ms}))
                .collect();
        }
        emit(&format!("{json}\n"));
    }
    Ok(())
}

fn compile_cmd(args: &CompileArgs) -> Result<(), Error> {
    let backend = if matches!(args.emit, Some(Emit::Clif)) { Backend::Jit } else { Backend::Interp };
    if backend == Backend::Interp {
        refuse_threads_without_jit(&args.flags, "on kiln compile unless it emits clif (nothing runs)");
    }
    let load = load_options(&args.model, &args.load, args.flags.memory_cap)?;
    // The weights are kept for `-o` and for `--emit clif`, which compiles again to print.
    let mut options = Options { keep_weights: true, ..options(&args.flags, backend, &args.model)? };
    options.optimizer.explain = args.explain;
    let compiled = kiln::compile(load_model(&args.model, &args.load, load)?, &options)?;
    if let Some(path) = &args.output {
        kiln::save(&compiled, path)?;
    }
    match args.emit {
        Some(Emit::Ir) => emit(&kiln::ir::text::print(compiled.graph())),
        Some(Emit::Dot) => emit(&kiln::dot::to_dot(compiled.graph())),
        Some(Emit::Stats) => emit(&format!("{}\n", compiled.stats().to_json())),
        Some(Emit::Clif) => {
            for (kernel, clif) in compiled.clif_text() {
                emit(&format!("; kernel {kernel}\n{clif}\n"));
            }
        }
        None => {}
    }
    if let Some(explanation) = compiled.explanation() {
        let text =
            if args.json { format!("{}\n", kiln::explanation_json(explanation)) } else { explanation.to_string() };
        // --emit's output is a contract of its own (one JSON object for stats, IR text that parses
        // back): the explanation never mixes into it.
        if args.emit.is_some() {
            use std::io::Write;
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        } else {
            emit(&text)
        }
    }
    Ok(())
}

fn check(path: &Path, load: &LoadFlags) -> Result<(), Error> {
    let model = load_model(path, load, load_options(path, load, None)?)?;
    model.weights.check_against(&model.graph)?;
    emit(&format!(
        "{}: ok ({} ops, {} inputs, {} outputs)\n",
        model.graph.name(),
        model.graph.num_op_nodes(),
        model.graph.inputs().len(),
        model.graph.outputs().len()
    ));
    Ok(())
}

/// `kiln inspect`: `input NAME TYPE[DIMS]` and `output NAME TYPE[DIMS]` lines, dynamic dimensions
/// by name. An ONNX file is read as declared (nothing is imported, so no shape is needed); other
/// formats have static shapes and are loaded.
fn inspect(path: &Path) -> Result<(), Error> {
    if path.extension().is_some_and(|e| e == "onnx") {
        let signature = kiln::frontends::onnx::read_signature(path, &kiln::frontends::ReadLimits::default())?;
        let mut text = String::new();
        for port in &signature.inputs {
            text.push_str(&format!("input {port}\n"));
        }
        for port in &signature.outputs {
            text.push_str(&format!("output {port}\n"));
        }
        let dims = signature.dim_names();
        if !dims.is_empty() {
            text.push_str(&format!("dynamic {} (fix with --shape NAME=n)\n", dims.join(", ")));
        }
        emit(&text);
        return Ok(());
    }
    let model = kiln::load(path)?;
    let graph = &model.graph;
    let mut text = String::new();
    for &id in graph.inputs() {
        let info = &graph.node(id).outputs[0];
        text.push_str(&format!("input {} {}\n", info.name, info.ty));
    }
    for &v in graph.outputs() {
        text.push_str(&format!("output {} {}\n", graph.value_name(v), graph.value_type(v)));
    }
    emit(&text);
    Ok(())
}

/// `kiln calibrate`: one entry per thread count, printed or written as a JSON list.
fn calibrate(threads: Option<u32>, output: Option<&Path>) -> Result<(), Error> {
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let counts: Vec<usize> = match threads {
        Some(n) => (1..=n as usize).collect(),
        None if all > 1 => vec![1, all],
        None => vec![1],
    };
    let mut entries = Vec::new();
    for t in counts {
        let calibration = kiln::calibrate::calibrate(Some(t))?;
        eprintln!("calibrated at {t} thread(s)");
        entries.push(calibration.to_json());
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Array(entries)).unwrap_or_default();
    match output {
        Some(path) => std::fs::write(path, text + "\n").map_err(|e| {
            Error::new(path.display().to_string(), format!("cannot write the calibration: {e}"))
                .with_kind(kiln::ErrorKind::Io)
        }),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match &cli.command {
        Command::Run(args) => run(args),
        Command::Compile(args) => compile_cmd(args),
        Command::Bench(args) => bench(args),
        Command::Check { model, load } => check(model, load),
        Command::Inspect { model } => inspect(model),
        Command::Calibrate { threads, output } => calibrate(*threads, output.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            for d in error.diagnostics() {
                eprintln!("error: {d}");
            }
            ExitCode::from(1)
        }
    }
}
