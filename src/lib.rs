//! kiln: a neural-network model compiler. A model graph goes in (kiln JSON today, ONNX next), a
//! function that runs it in-process comes out.
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
//! The stages live in their own crates: [`kiln_ir`] (the graph, its text form and the reference
//! interpreter), [`kiln_frontends`] (model files), `kiln_passes` (the optimizer) and `kiln_codegen`
//! (the Cranelift JIT). This crate ties them together and is what the `kiln` command uses.

pub mod dot;
pub mod npy;

pub use kiln_frontends as frontends;
pub use kiln_ir as ir;
pub use kiln_ir::{DType, Error, Graph, Model, Tensor, TensorData, TensorType, Weights};

use std::path::Path;
use std::time::Instant;

/// Loads a model file; the format is chosen by the file's extension.
pub fn load(path: impl AsRef<Path>) -> Result<Model, Error> {
    let path = path.as_ref();
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => kiln_frontends::json::load_json(path),
        Some("kir") => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::new(path.display().to_string(), format!("cannot read: {e}")))?;
            kiln_ir::text::parse(&text).map_err(|e| e.within(&path.display().to_string()))
        }
        _ => Err(Error::new(
            path.display().to_string(),
            "unknown model format: kiln reads .json (kiln JSON) and .kir (kiln IR text) files",
        )),
    }
}

/// Which engine runs a compiled model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The reference interpreter: slow, obviously correct, the oracle for everything else.
    #[default]
    Interp,
}

/// How much to optimise. Until the optimizer lands every level compiles the graph unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum OptLevel {
    O0,
    O1,
    #[default]
    O2,
}

/// Compilation options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub backend: Backend,
    pub opt_level: OptLevel,
    /// Worker threads for execution; `None` means all cores.
    pub threads: Option<usize>,
}

/// What compilation did, for `kiln compile --emit stats`.
#[derive(Debug, Clone)]
pub struct CompileStats {
    pub ops_before: std::collections::BTreeMap<&'static str, usize>,
    pub ops_after: std::collections::BTreeMap<&'static str, usize>,
    pub compile_ms: f64,
}

/// A model ready to run. `Send + Sync`: one compiled model may serve many threads at once.
#[derive(Debug, Clone)]
pub struct CompiledModel {
    model: Model,
    stats: CompileStats,
}

/// Compiles a model with the given options.
pub fn compile(model: Model, options: &Options) -> Result<CompiledModel, Error> {
    let start = Instant::now();
    let ops_before = model.graph.op_counts();
    model.weights.check_against(&model.graph)?;
    let Backend::Interp = options.backend;
    let ops_after = model.graph.op_counts();
    let stats = CompileStats { ops_before, ops_after, compile_ms: start.elapsed().as_secs_f64() * 1e3 };
    Ok(CompiledModel { model, stats })
}

impl CompiledModel {
    /// Runs the model. Inputs are checked by name, element type and shape before anything runs;
    /// outputs come back in the model's output order, by name.
    pub fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, Error> {
        kiln_ir::eval::run(&self.model.graph, &self.model.weights, inputs)
    }

    /// The graph that runs (after optimisation).
    pub fn graph(&self) -> &Graph {
        &self.model.graph
    }

    pub fn stats(&self) -> &CompileStats {
        &self.stats
    }

    /// The declared inputs, by name and type, in order.
    pub fn input_types(&self) -> Vec<(String, TensorType)> {
        let graph = &self.model.graph;
        graph.inputs().iter().map(|&id| (graph.node(id).name.clone(), graph.node(id).outputs[0].ty.clone())).collect()
    }
}

/// Inputs for a model when none are given: f32 inputs get seeded standard-normal values (input i in
/// declaration order uses seed i), i64 inputs zeros, bool inputs false. See docs/model-format.md.
pub fn default_inputs(graph: &Graph) -> Result<Vec<(String, Tensor)>, Error> {
    graph
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let info = &graph.node(id).outputs[0];
            let tensor = kiln_ir::init::standard_normal_input(&info.ty, i as u64)
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
}

/// Runs the README's Rust example as a doctest, so it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
