//! kiln: a neural-network model compiler. A model graph goes in (kiln JSON, ONNX, or the IR text
//! form), a function that runs it in-process comes out.
//!
//! ```
//! use kiln::{Options, Tensor};
//!
//! let model = kiln::load("models/mlp_bn.json")?;
//! let compiled = kiln::compile(model, &Options::default())?;
//! let x = Tensor::from_f32([8, 16], vec![0.5; 8 * 16])?;
//! let outputs = compiled.run(&[("x".to_string(), x)])?;
//! let (name, y) = &outputs[0];
//! assert_eq!(name, "y");
//! assert_eq!(y.shape(), &[8, 10]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The stages live in their own crates: [`ir`] (`kiln_ir`: the graph, its text form and the
//! reference interpreter), [`frontends`] (`kiln_frontends`: model files), `kiln_passes` (the
//! optimizer) and `kiln_codegen` (the Cranelift JIT). This crate ties them together and is what the
//! `kiln` command uses. A model whose inputs have dynamic dimensions runs at any shape through a
//! [`Session`]; [`save`] writes a compiled model that [`load`] reads back.

pub mod calibrate;
pub mod dot;
pub mod session;

pub use session::Session;

pub use kiln_frontends as frontends;
/// `.npy` files: [`kiln_frontends::npy`].
pub use kiln_frontends::npy;
pub use kiln_ir as ir;
pub use kiln_ir::{DType, Error, ErrorKind, Graph, Model, Tensor, TensorData, TensorType, Weights};
// Borrowed inputs and caller-owned outputs for `CompiledModel::run_into`; a worker pool that
// several compiled models may share (`Options::pool`); the optimizer's limits (`Options::optimizer`).
pub use kiln_codegen::pool::Pool as ThreadPool;
/// How a JIT-compiled model's first runs choose between all threads and one.
pub use kiln_codegen::threads;
pub use kiln_codegen::{DataMut, DataRef, Isa, TensorRef};
pub use kiln_passes::OptimizeConfig;
pub use kiln_passes::explain::{Change, Derivation, Explanation, Fate, Step};

use std::path::Path;
use std::time::Instant;

/// Loads a model file; the format is chosen by the file's extension (`.json`, `.onnx`, `.kir`, or
/// `.kiln`, a compiled model saved by [`save`], already optimised: compile it at [`OptLevel::O0`]).
pub fn load(path: impl AsRef<Path>) -> Result<Model, Error> {
    load_with(path, &LoadOptions::default())
}

/// What a model file may need besides itself: ONNX models with dynamic dimensions need them fixed,
/// and ONNX graph inputs that feed static parameters (a Reshape's shape, …) need their values.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Full shapes of graph inputs, by name.
    pub fixed_dims: Vec<(String, Vec<usize>)>,
    /// Values of graph inputs known at load time, by name; an ONNX input that feeds a static
    /// parameter and has a value here becomes a constant. Other formats ignore them.
    pub values: Vec<(String, Tensor)>,
    /// The most bytes of weights the model may hold, checked before they are read or generated;
    /// `None` is [`kiln_ir::DEFAULT_MEMORY_CAP`].
    pub memory_cap: Option<u64>,
}

/// [`load`] with [`LoadOptions`].
pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Model, Error> {
    let path = path.as_ref();
    let mut limits = kiln_frontends::ReadLimits::default();
    if let Some(cap) = options.memory_cap {
        limits.memory_cap = cap;
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => kiln_frontends::json::load_json_with(path, &limits),
        Some("onnx") => kiln_frontends::onnx::load_onnx_with(path, &options.fixed_dims, &options.values, &limits),
        Some("kir") => kiln_frontends::artifact::load_kir(path, &limits),
        Some("kiln") => kiln_frontends::artifact::load_kiln(path, &limits),
        _ => Err(Error::new(
            path.display().to_string(),
            "unknown model format: kiln reads .json (kiln JSON), .onnx (ONNX), .kir (kiln IR text) and .kiln (saved by kiln compile -o) files",
        )
        .with_kind(ErrorKind::Io)),
    }
}

/// Reads a tensor file for `--input`: `.npy`, or `.pb` (one ONNX TensorProto, as in the ONNX
/// test data). Its errors are [`ErrorKind::Input`] errors: the file is an input of a run.
pub fn read_tensor_file(path: &Path) -> Result<Tensor, Error> {
    let read = match path.extension().and_then(|e| e.to_str()) {
        Some("pb") => kiln_frontends::onnx::read_tensor_pb(path).map(|(_, tensor)| tensor),
        _ => npy::read_npy(path),
    };
    read.map_err(|e| e.with_kind(ErrorKind::Input))
}

/// Which engine runs a compiled model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The reference interpreter: slow, obviously correct, the oracle for everything else.
    Interp,
    /// Native code from Cranelift (`kiln_codegen`), run on a persistent pool of worker threads.
    #[default]
    Jit,
}

/// How much to optimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum OptLevel {
    /// The graph as loaded.
    O0,
    /// Normalization folding, scalings and algebra; no Pre-LN → Pre-RMSNorm rewrite and no fused
    /// kiln-domain ops (MaskedSoftmax, Attention).
    O1,
    /// Everything the optimizer knows.
    #[default]
    O2,
}

/// Compilation options. The library reads no environment variables: everything is here (the
/// `kiln` command maps its `KILN_*` variables to these fields).
#[derive(Debug, Clone)]
pub struct Options {
    pub backend: Backend,
    pub opt_level: OptLevel,
    /// Worker threads for execution, the most a run uses; `None` means all cores.
    pub threads: Option<usize>,
    /// Let the JIT's first runs measure all threads against one, step by step, and keep the
    /// fastest of all, one, or splitting only the steps that gained ([`threads`]; results are
    /// the same bits either way, NaN payloads aside). Off: every run uses `threads`. Default on.
    pub adaptive_threads: bool,
    /// Most bytes one model may hold: weights plus what one run allocates for intermediates (the
    /// JIT's arena; the interpreter's peak of live values and inputs). A model above it is
    /// refused by [`compile`] with an error naming it and the size, before anything of that size
    /// is allocated. Default [`kiln_ir::DEFAULT_MEMORY_CAP`] (4 GiB).
    pub memory_cap: u64,
    /// Highest instruction set the JIT's hand-written kernels may use; `None` means what this
    /// CPU has. Lowered to what the CPU supports, never raised.
    pub isa: Option<Isa>,
    /// A worker pool shared with other compiled models (`Arc::new(ThreadPool::new(n))`); when set
    /// it decides the thread count and `threads` is ignored. `None`: the model gets its own pool.
    pub pool: Option<std::sync::Arc<ThreadPool>>,
    /// The optimizer's limits and switches at -O2 (-O1 also turns off `ln_to_rms`, `kiln_ops` and
    /// `crms`).
    pub optimizer: OptimizeConfig,
    /// Print each generated kernel's machine code to stderr while compiling (the CLI's
    /// `KILN_DISASM`).
    pub disasm: bool,
    /// Keep the model's weights beside the JIT's own (packed) copy, for [`save`] and
    /// [`CompiledModel::clif_text`]. Off by default: a JIT-compiled model holds each weight once
    /// (the interpreter always keeps them: they are what it runs on).
    pub keep_weights: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: Backend::default(),
            opt_level: OptLevel::default(),
            threads: None,
            adaptive_threads: true,
            memory_cap: kiln_ir::DEFAULT_MEMORY_CAP,
            isa: None,
            pool: None,
            optimizer: OptimizeConfig::default(),
            disasm: false,
            keep_weights: false,
        }
    }
}

/// Parses a memory size for `--memory-cap`: bytes, or a number with a unit — `KiB`, `MiB`,
/// `GiB`, `TiB` (powers of 1024), `KB`, `MB`, `GB`, `TB` (powers of 1000) or `B`; the unit is
/// case-insensitive and may follow a space (`16GiB`, `512 mib`, `1.5GiB`).
pub fn parse_memory_size(s: &str) -> Result<u64, Error> {
    let bad = || {
        Error::new("", format!("expected a size in bytes such as 4294967296, 512MiB or 16GiB, got {s:?}"))
            .with_kind(ErrorKind::Input)
    };
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(bad);
    }
    let x: f64 = num.parse().map_err(|_| bad())?;
    let bytes = (x * mult as f64).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// The interpreter's memory for one run at its peak, in bytes: the weights, the inputs and the
/// values live at once in topological order (it frees a value after its last read), the outputs
/// of the op being evaluated included.
fn interp_peak_bytes(graph: &Graph) -> u64 {
    let bytes = |ty: &TensorType| ty.num_elements() as u64 * ty.dtype.size_bytes() as u64;
    let mut reads: std::collections::HashMap<kiln_ir::Value, usize> = std::collections::HashMap::new();
    for id in graph.op_nodes() {
        for v in graph.node_inputs(id) {
            *reads.entry(v).or_insert(0) += 1;
        }
    }
    for &v in graph.outputs() {
        *reads.entry(v).or_insert(0) += 1;
    }
    let mut live: u64 = 0;
    let mut peak: u64 = 0;
    for id in graph.topo_order() {
        let node = graph.node(id);
        for info in &node.outputs {
            live = live.saturating_add(bytes(&info.ty));
        }
        peak = peak.max(live);
        if node.op().is_some() {
            for v in graph.node_inputs(id) {
                if let Some(n) = reads.get_mut(&v) {
                    *n -= 1;
                    // Weights stay alive (the model owns them); other values are freed.
                    if *n == 0 && !matches!(graph.node(v.node).kind, kiln_ir::NodeKind::Weight) {
                        live = live.saturating_sub(bytes(graph.value_type(v)));
                    }
                }
            }
        }
    }
    peak
}

/// What compilation did, for `kiln compile --emit stats`.
#[derive(Debug, Clone)]
pub struct CompileStats {
    pub ops_before: std::collections::BTreeMap<&'static str, usize>,
    pub ops_after: std::collections::BTreeMap<&'static str, usize>,
    /// The optimizer's report; `None` at -O0.
    pub optimizer: Option<kiln_passes::OptimizeReport>,
    pub compile_ms: f64,
}

/// `kiln compile --emit stats`: one JSON object. `ops_before`, `ops_after` and `compile_ms` are
/// always there; the optimizer's fields are there unless -O0.
impl CompileStats {
    pub fn to_json(&self) -> serde_json::Value {
        let stats = self;
        let mut json = serde_json::json!({
            "ops_before": stats.ops_before,
            "ops_after": stats.ops_after,
            "compile_ms": stats.compile_ms,
        });
        if let Some(report) = &stats.optimizer {
            let phases: serde_json::Map<String, serde_json::Value> =
                report.phase_ms.iter().map(|(phase, ms)| (phase.clone(), serde_json::json!(ms))).collect();
            json["optimizer"] = serde_json::json!({
                "rules_fired": report.rules_fired,
                "egraph_nodes": report.egraph_nodes,
                "egraph_peak_nodes": report.egraph_peak_nodes,
                "rules_refused": report.rules_refused,
                "egraph_classes": report.egraph_classes,
                "iterations": report.iterations,
                "stop_reason": report.stop_reason,
                "phase_ms": phases,
                "estimated_ms_before": report.cost_before * 1e3,
                "estimated_ms_after": report.cost_after * 1e3,
            });
            if let Some(crms) = &report.crms {
                json["optimizer"]["crms"] = serde_json::json!({
                    "converted": crms.converted,
                    "refused": crms.refused,
                    "estimated_ms_before": crms.cost_before * 1e3,
                    "estimated_ms_after": crms.cost_after * 1e3,
                });
            }
        }
        json
    }
}

/// `kiln compile --explain --json`: schema `kiln-explain/1`, documented in docs/explain.md.
pub fn explanation_json(explanation: &Explanation) -> serde_json::Value {
    let derivation = |d: &Derivation| {
        let rules: Vec<serde_json::Value> =
            d.rules.iter().map(|s| serde_json::json!({ "rule": s.rule, "at": s.at })).collect();
        serde_json::json!({ "node": d.node, "op": d.op, "rules": rules })
    };
    let changed: Vec<serde_json::Value> = explanation
        .changed
        .iter()
        .map(|c| {
            serde_json::json!({
                "node": c.node,
                "op": c.op,
                "fate": c.fate.name(),
                "by": c.by.iter().map(derivation).collect::<Vec<_>>(),
                "into": c.into,
                "absorbs": c.absorbs,
                "recentred": c.recentred,
                "recentred_for": c.recentred_for,
            })
        })
        .collect();
    serde_json::json!({
        "schema": "kiln-explain/1",
        "graph": explanation.graph,
        "input_nodes": explanation.input_nodes,
        "note": explanation.note,
        "changed": changed,
    })
}

/// Tensors by name, in the model's declaration order (inputs or outputs).
pub type NamedTensors = Vec<(String, Tensor)>;

/// One step of a compiled schedule and how long it took in one run.
#[derive(Debug, Clone)]
pub struct StepTime {
    /// What ran: `kernel NAME (ROWS rows)`, `gemm (N units)`, `copy`, …
    pub what: String,
    /// The node (or fused nodes) the step computes.
    pub node: String,
    pub time: std::time::Duration,
}

/// A model ready to run. `Send + Sync`: one compiled model may serve many threads at once.
pub struct CompiledModel {
    model: Model,
    engine: Engine,
    stats: CompileStats,
    /// At -O0 with `options.optimizer.explain`: the explanation that nothing changed.
    unoptimised: Option<Explanation>,
}

enum Engine {
    Interp,
    Jit(Box<kiln_codegen::Executable>),
}

/// Compiles a model with the given options.
pub fn compile(model: Model, options: &Options) -> Result<CompiledModel, Error> {
    let start = Instant::now();
    let ops_before = model.graph.op_counts();
    model.weights.check_against(&model.graph)?;
    let unoptimised = (options.opt_level == OptLevel::O0 && options.optimizer.explain).then(|| {
        let note = "-O0: the optimizer did not run";
        Explanation::unchanged(model.graph.name(), model.graph.num_op_nodes(), note)
    });
    let (mut model, optimizer) = match options.opt_level {
        OptLevel::O0 => (model, None),
        level => {
            let mut config = options.optimizer.clone();
            if level == OptLevel::O1 {
                config.ln_to_rms = false;
                config.kiln_ops = false;
                config.crms = false;
            }
            let (optimized, report) = kiln_passes::optimize(&model, &config)?;
            // Weights the optimizer replaced (folded) are freed now, not after code generation.
            drop(model);
            (optimized, Some(report))
        }
    };
    let engine = match options.backend {
        Backend::Interp => {
            let peak = interp_peak_bytes(&model.graph);
            if peak > options.memory_cap {
                return Err(Error::new(
                    format!("model '{}'", model.graph.name()),
                    format!(
                        "needs {peak} bytes ({:.2} GiB) of weights, inputs and live values in the interpreter, \
                         above the memory cap of {} bytes; raise the cap (kiln --memory-cap, \
                         Options::memory_cap) to run it",
                        peak as f64 / (1u64 << 30) as f64,
                        options.memory_cap
                    ),
                )
                .with_kind(ErrorKind::ResourceLimit));
            }
            Engine::Interp
        }
        Backend::Jit => {
            let mut codegen = kiln_codegen::CodegenOptions {
                memory_cap: options.memory_cap,
                pool: options.pool.clone(),
                disasm: options.disasm,
                adaptive_threads: options.adaptive_threads,
                ..Default::default()
            };
            if let Some(threads) = options.threads {
                codegen.threads = threads;
            }
            if let Some(isa) = options.isa {
                codegen.isa = isa;
            }
            let executable = if options.keep_weights {
                kiln_codegen::compile(&model.graph, &model.weights, &codegen)?
            } else {
                // The executable takes the weights: it shares those it reads as they are, and a
                // GEMM weight becomes its packed form in place. Each is then held once.
                let weights = std::mem::take(&mut model.weights);
                kiln_codegen::compile_owned(&model.graph, weights, &codegen)?
            };
            Engine::Jit(Box::new(executable))
        }
    };
    let ops_after = model.graph.op_counts();
    let stats = CompileStats { ops_before, ops_after, optimizer, compile_ms: start.elapsed().as_secs_f64() * 1e3 };
    Ok(CompiledModel { model, engine, stats, unoptimised })
}

impl CompiledModel {
    /// Runs the model. Inputs are checked by name, element type and shape before anything runs;
    /// outputs come back in the model's output order, by name.
    pub fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, Error> {
        match &self.engine {
            Engine::Interp => kiln_ir::eval::run(&self.model.graph, &self.model.weights, inputs),
            Engine::Jit(executable) => {
                let ordered = kiln_ir::eval::check_inputs(&self.model.graph, inputs)?;
                let outputs = executable.run(&ordered)?;
                let graph = &self.model.graph;
                Ok(graph.outputs().iter().map(|&v| graph.value_name(v).to_string()).zip(outputs).collect())
            }
        }
    }

    /// Runs the model on borrowed inputs, by name, and writes the outputs into the caller's
    /// buffers, in [`CompiledModel::output_types`] order (each exactly its output's element type
    /// and count). Nothing is allocated per call on the JIT beyond small tables; outputs that the
    /// plan computes in a buffer of their own are written there directly. Every problem (an input
    /// missing, given twice, unknown, of the wrong type or shape; an output buffer of the wrong
    /// type or size) is an error naming the tensor, before anything runs.
    pub fn run_into(&self, inputs: &[(&str, TensorRef<'_>)], outputs: &mut [DataMut<'_>]) -> Result<(), Error> {
        let graph = &self.model.graph;
        let mut ordered: Vec<TensorRef<'_>> = Vec::with_capacity(graph.inputs().len());
        for &id in graph.inputs() {
            let info = &graph.node(id).outputs[0];
            let mut found = inputs.iter().filter(|(n, _)| *n == info.name);
            // Input errors are ErrorKind::Input with `CompiledModel::run`'s messages.
            let input_error =
                |message: String| Error::new(format!("input '{}'", info.name), message).with_kind(ErrorKind::Input);
            let Some(&(_, t)) = found.next() else {
                return Err(input_error(format!("is missing (expected {})", info.ty)));
            };
            if found.next().is_some() {
                return Err(input_error("is given twice".to_string()));
            }
            let given = TensorType { dtype: t.data.dtype(), shape: t.shape.to_vec() };
            if t.data.len() != given.num_elements() {
                return Err(input_error(format!(
                    "expected {} but was given {} elements of data with shape {:?}",
                    info.ty,
                    t.data.len(),
                    t.shape
                )));
            }
            if given != info.ty {
                return Err(input_error(format!("expected {} but was given {given}", info.ty)));
            }
            ordered.push(t);
        }
        if let Some((name, _)) =
            inputs.iter().find(|(n, _)| !graph.inputs().iter().any(|&id| graph.node(id).name == *n))
        {
            let known: Vec<&str> = graph.inputs().iter().map(|&id| graph.node(id).name.as_str()).collect();
            return Err(Error::new(
                format!("input '{name}'"),
                format!("is not an input of the model (inputs: {})", known.join(", ")),
            )
            .with_kind(ErrorKind::Input));
        }
        let out_values = graph.outputs();
        if outputs.len() != out_values.len() {
            return Err(Error::new(
                "outputs",
                format!("the model has {} outputs but {} buffers were given", out_values.len(), outputs.len()),
            ));
        }
        for (buf, &v) in outputs.iter().zip(out_values) {
            let ty = graph.value_type(v);
            if buf.dtype() != ty.dtype || buf.len() != ty.num_elements() {
                return Err(Error::new(
                    format!("output '{}'", graph.value_name(v)),
                    format!(
                        "is {ty}: needs a buffer of {} {:?} elements, was given {} {:?} elements",
                        ty.num_elements(),
                        ty.dtype,
                        buf.len(),
                        buf.dtype()
                    ),
                ));
            }
        }
        match &self.engine {
            Engine::Jit(executable) => executable.run_into(&ordered, outputs),
            Engine::Interp => {
                // The interpreter owns its values: copy in, run, copy out.
                let owned: Vec<(String, Tensor)> = ordered
                    .iter()
                    .zip(graph.inputs())
                    .map(|(t, &id)| {
                        let data = match t.data {
                            DataRef::F32(v) => TensorData::F32(v.to_vec()),
                            DataRef::I64(v) => TensorData::I64(v.to_vec()),
                            DataRef::Bool(v) => TensorData::Bool(v.to_vec()),
                        };
                        let name = graph.node(id).name.clone();
                        let tensor = Tensor::new(t.shape.to_vec(), data)
                            .map_err(|e| Error::new(format!("input '{name}'"), e))?;
                        Ok((name, tensor))
                    })
                    .collect::<Result<_, Error>>()?;
                let results = kiln_ir::eval::run(graph, &self.model.weights, &owned)?;
                for (buf, (_, t)) in outputs.iter_mut().zip(&results) {
                    match (buf, t.data()) {
                        (DataMut::F32(d), TensorData::F32(s)) => d.copy_from_slice(s),
                        (DataMut::I64(d), TensorData::I64(s)) => d.copy_from_slice(s),
                        (DataMut::Bool(d), TensorData::Bool(s)) => d.copy_from_slice(s),
                        _ => return Err(Error::new("outputs", "internal error: an output's type changed")),
                    }
                }
                Ok(())
            }
        }
    }

    /// The outputs, by name and type, in order: the buffers [`CompiledModel::run_into`] takes.
    pub fn output_types(&self) -> Vec<(String, TensorType)> {
        let graph = &self.model.graph;
        graph.outputs().iter().map(|&v| (graph.value_name(v).to_string(), graph.value_type(v).clone())).collect()
    }

    /// Runs the model like [`CompiledModel::run`] and times each step of the JIT's schedule (kernel,
    /// GEMM call, copy…). On the interpreter the profile is empty.
    pub fn run_profiled(&self, inputs: &[(String, Tensor)]) -> Result<(NamedTensors, Vec<StepTime>), Error> {
        match &self.engine {
            Engine::Interp => Ok((self.run(inputs)?, Vec::new())),
            Engine::Jit(executable) => {
                let ordered = kiln_ir::eval::check_inputs(&self.model.graph, inputs)?;
                let (outputs, times) = executable.run_profiled(&ordered)?;
                let graph = &self.model.graph;
                let named = graph.outputs().iter().map(|&v| graph.value_name(v).to_string()).zip(outputs).collect();
                let steps = executable
                    .step_descriptions()
                    .into_iter()
                    .zip(times)
                    .map(|((what, node), time)| StepTime { what, node, time })
                    .collect();
                Ok((named, steps))
            }
        }
    }

    /// The Cranelift IR of each generated kernel, by kernel name; empty on the interpreter.
    pub fn clif_text(&self) -> Vec<(String, String)> {
        match &self.engine {
            Engine::Interp => Vec::new(),
            // Printing CLIF costs a quarter of a compile, so the model is compiled again with
            // the text kept, only when it is asked for.
            Engine::Jit(_) if !self.has_weights() => vec![(
                "error".to_string(),
                "; the model was compiled without Options::keep_weights: recompiling to print CLIF needs them"
                    .to_string(),
            )],
            Engine::Jit(executable) => {
                let options = kiln_codegen::CodegenOptions {
                    threads: executable.threads(),
                    keep_clif: true,
                    memory_cap: u64::MAX,
                    ..Default::default()
                };
                match kiln_codegen::compile(&self.model.graph, &self.model.weights, &options) {
                    Ok(again) => again.clif_text().to_vec(),
                    Err(e) => vec![("error".to_string(), format!("; recompiling to print CLIF failed: {e}"))],
                }
            }
        }
    }

    /// Bytes of weight data the compiled model holds: the model's weights while it keeps them (the
    /// interpreter, or [`Options::keep_weights`]) and the JIT's, plain or packed, each buffer
    /// counted once however many hold it. A JIT-compiled model without `keep_weights` holds each
    /// weight once (issue 15): about the bytes of the optimised graph's weights (more only where a
    /// packed GEMM operand is padded to whole 16-column panels).
    pub fn weight_bytes(&self) -> u64 {
        let mut buffers: Vec<(usize, usize)> = self
            .model
            .weights
            .iter()
            .map(|(_, t)| {
                let (at, bytes) = match t.data() {
                    TensorData::F32(v) => (v.as_ptr() as usize, v.len() * 4),
                    TensorData::I64(v) => (v.as_ptr() as usize, v.len() * 8),
                    TensorData::Bool(v) => (v.as_ptr() as usize, v.len()),
                };
                (at, bytes)
            })
            .collect();
        if let Engine::Jit(executable) = &self.engine {
            buffers.extend(executable.weight_buffers());
        }
        buffers.sort_unstable();
        buffers.dedup();
        buffers.iter().map(|&(_, bytes)| bytes as u64).sum()
    }

    /// The JIT's static memory plan (its arena is what one run allocates for intermediates);
    /// `None` on the interpreter.
    pub fn memory(&self) -> Option<kiln_codegen::MemoryReport> {
        match &self.engine {
            Engine::Interp => None,
            Engine::Jit(executable) => Some(executable.memory()),
        }
    }

    /// Whether the model's weights are still held (the interpreter, or `Options::keep_weights`).
    fn has_weights(&self) -> bool {
        self.model.graph.weights().len() == self.model.weights.len()
    }

    /// The graph that runs (after optimisation).
    pub fn graph(&self) -> &Graph {
        &self.model.graph
    }

    /// The instruction set of the JIT's hand-written kernels (`None` on the interpreter).
    pub fn isa(&self) -> Option<kiln_codegen::Isa> {
        match &self.engine {
            Engine::Interp => None,
            Engine::Jit(executable) => Some(executable.isa()),
        }
    }

    /// The threads each run uses from now on (the JIT's first runs may measure one thread
    /// faster than all: [`Options::adaptive_threads`]); `None` while they are still measuring,
    /// and on the interpreter.
    pub fn threads_in_use(&self) -> Option<usize> {
        match &self.engine {
            Engine::Interp => None,
            Engine::Jit(executable) => executable.threads_in_use(),
        }
    }

    pub fn stats(&self) -> &CompileStats {
        &self.stats
    }

    /// Why each changed node of the input graph changed: set when compiled with
    /// `options.optimizer.explain` (the CLI's `--explain`); at -O0 it says that nothing changed.
    /// Its `Display` is the `--explain` text; [`explanation_json`] its JSON.
    pub fn explanation(&self) -> Option<&Explanation> {
        self.stats.optimizer.as_ref().and_then(|r| r.explanation.as_ref()).or(self.unoptimised.as_ref())
    }

    /// The declared inputs, by name and type, in order.
    pub fn input_types(&self) -> Vec<(String, TensorType)> {
        let graph = &self.model.graph;
        graph.inputs().iter().map(|&id| (graph.node(id).name.clone(), graph.node(id).outputs[0].ty.clone())).collect()
    }
}

/// Saves a compiled model's optimised graph and its (folded) weights: a `.kiln` path gets one file
/// (safetensors, the graph's text form in its metadata), a `.kir` path the text form and a
/// `.safetensors` file beside it. Either reloads with [`load`] and runs without re-optimising
/// (compile it at [`OptLevel::O0`]).
pub fn save(compiled: &CompiledModel, path: impl AsRef<Path>) -> Result<(), Error> {
    let path = path.as_ref();
    if !compiled.has_weights() {
        return Err(Error::new(
            path.display().to_string(),
            "cannot save: the model was compiled for the JIT without Options::keep_weights, so its weights \
             live only in the JIT's packed form; compile it with keep_weights (or the interpreter) to save it",
        ));
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("kiln") => kiln_frontends::artifact::write_kiln(path, &compiled.model),
        Some("kir") => kiln_frontends::artifact::write_kir(path, &compiled.model),
        _ => Err(Error::new(
            path.display().to_string(),
            "a compiled model is saved as FILE.kiln (one file) or FILE.kir (with FILE.safetensors beside it)",
        )),
    }
}

/// `kiln run`'s line for one output: `NAME f32[d0,d1] mean=… std=… min=… max=…`.
pub fn summary_line(name: &str, tensor: &Tensor) -> String {
    let values: Vec<f64> = match tensor.data() {
        TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
    };
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{name} {} mean={mean:.6} std={std:.6} min={min:.6} max={max:.6}", tensor.ty())
}

/// Inputs for a model when none are given: f32 inputs get seeded standard-normal values (input i in
/// declaration order uses seed i), i64 inputs zeros, bool inputs false. See docs/model-format.md.
pub fn default_inputs(graph: &Graph) -> Result<Vec<(String, Tensor)>, Error> {
    default_inputs_seeded(graph, 0)
}

/// [`default_inputs`] from another seed (`kiln run --seed S`): input i uses seed
/// `S·2^32 + i`, so seed 0 gives [`default_inputs`]' values and different seeds never share a stream.
pub fn default_inputs_seeded(graph: &Graph, seed: u32) -> Result<Vec<(String, Tensor)>, Error> {
    graph
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let info = &graph.node(id).outputs[0];
            let tensor = kiln_ir::init::standard_normal_input(&info.ty, ((seed as u64) << 32) + i as u64)
                .map_err(|e| Error::new(format!("input '{}'", info.name), e))?;
            Ok((info.name.clone(), tensor))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn compiled_model_is_send_and_sync() {
        assert_send_sync::<super::CompiledModel>();
    }

    #[test]
    fn memory_sizes_parse_with_and_without_units() {
        use super::parse_memory_size as p;
        assert_eq!(p("4294967296"), Ok(4 << 30));
        assert_eq!(p("16GiB"), Ok(16 << 30));
        assert_eq!(p("512 mib"), Ok(512 << 20));
        assert_eq!(p("1.5GiB"), Ok(3 << 29));
        assert_eq!(p("2GB"), Ok(2_000_000_000));
        assert_eq!(p("64k"), Ok(65536));
        assert_eq!(p("100B"), Ok(100));
        for bad in ["", "GiB", "-1", "12 parsecs", "99999999999999999999TiB", "1e3", "1.2.3"] {
            assert!(p(bad).is_err(), "{bad:?} parsed");
        }
    }
}

/// Runs the README's Rust example as a doctest, so it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
