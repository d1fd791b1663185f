//! Native code generation for kiln: the graph is scheduled into kernels (fused elementwise loops,
//! row kernels, GEMM calls, copies), each generated kernel becomes one Cranelift function, and
//! an execution plan runs them over one statically planned arena on a persistent worker pool.
//!
//! Entry point: [`compile`] → [`Executable::run`]. Pipeline, in order:
//! 1. [`lower`]: fusion groups and one plan step per kernel or host operation (which ops go
//!    where is listed there). Every IR op is lowered, in every form the IR's checks admit, so
//!    the JIT can run any valid graph; run-time evaluation errors (i64 division by zero, …) are
//!    reported as the interpreter reports them.
//! 2. [`memplan`]: liveness over the steps, best-fit arena offsets, peak vs lower bound.
//! 3. [`jit`]: Cranelift finalises the module; [`exec`] holds the result.
//!
//! **Architecture invariant:** nothing here calls the reference interpreter; it is only the
//! oracle in tests. Only this crate knows Cranelift.

pub mod exec;
pub mod gemm;
pub mod host;
pub mod isa;
pub mod jit;
pub mod kernels;
pub mod lower;
pub mod memplan;
pub mod pool;
pub mod simd;
pub mod spatial;
pub mod threads;
pub mod vmath;
pub mod window;

#[cfg(test)]
mod host_tests;
#[cfg(test)]
mod math_tests;

pub use exec::{DataMut, DataRef, Executable, MemoryReport, TensorRef};
pub use isa::Isa;
pub use kernels::rows::SoftmaxAlgo;

use kiln_ir::{Error, Graph, Weights};

#[cfg(test)]
mod send_sync {
    /// `Executable` must be shareable across threads (run() from many at once).
    #[test]
    fn executable_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::Executable>();
    }
}

/// Options for [`compile`].
#[derive(Debug, Clone)]
pub struct CodegenOptions {
    /// Threads per run (the caller's thread plus `threads − 1` pool workers): the most a run
    /// uses. Results are deterministic for a given count, and a run of the compiled model gives
    /// the same bits (NaN payloads aside) whether it uses all of them or one (a model compiled for another count may
    /// split its GEMMs into other calls, which can round differently).
    pub threads: usize,
    /// Let the first runs measure all threads against one, step by step, and keep the fastest
    /// plan (see
    /// [`threads`]). Off by default here, so that a test of split steps gets exactly `threads`;
    /// the `kiln` facade turns it on for its users.
    pub adaptive_threads: bool,
    /// Softmax kernels (default: [`SoftmaxAlgo::Simd`], the hand-written row kernel).
    pub softmax: SoftmaxAlgo,
    /// Most bytes the model may hold: its weights (as copied for the plan) plus the arena of one
    /// run. A larger model or plan is refused at compile time, before it is allocated (default:
    /// [`kiln_ir::DEFAULT_MEMORY_CAP`]).
    pub memory_cap: u64,
    /// Keep each kernel's Cranelift IR as text for [`Executable::clif_text`]. Off by default:
    /// printing it took a quarter of the compile time of a 100k-op chain (9 of 38 s).
    pub keep_clif: bool,
    /// Highest instruction set the hand-written kernels may use (default: what this CPU has);
    /// lowered to what the CPU supports, never raised. Tests force lower levels with it.
    pub isa: Isa,
    /// A worker pool shared with other models; when set, its thread count replaces `threads`.
    pub pool: Option<std::sync::Arc<pool::Pool>>,
    /// Print each kernel's machine code (Cranelift's VCode) to stderr while compiling.
    pub disasm: bool,
}

impl Default for CodegenOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        CodegenOptions {
            threads,
            adaptive_threads: false,
            softmax: SoftmaxAlgo::Simd,
            memory_cap: kiln_ir::DEFAULT_MEMORY_CAP,
            keep_clif: false,
            isa: Isa::detect(),
            pool: None,
            disasm: false,
        }
    }
}

/// Compiles a validated graph with its weights into native code.
pub fn compile(graph: &Graph, weights: &Weights, options: &CodegenOptions) -> Result<Executable, Error> {
    check_weights(graph, weights, options)?;
    compile_plan(graph, lower::weight_data(graph, weights)?, options)
}

/// [`compile`], taking the weights: the executable then holds the only reference to each, and a
/// weight that only a packed GEMM reads becomes its packed form in place, so that it is never
/// held twice, not even while it is packed (issue 15). [`compile`] leaves the caller's weights as
/// they are and packs copies.
pub fn compile_owned(graph: &Graph, weights: Weights, options: &CodegenOptions) -> Result<Executable, Error> {
    check_weights(graph, &weights, options)?;
    let data = lower::weight_data(graph, &weights)?;
    drop(weights);
    compile_plan(graph, data, options)
}

fn check_weights(graph: &Graph, weights: &Weights, options: &CodegenOptions) -> Result<(), Error> {
    weights.check_against(graph)?;
    // The plan holds the weights (shared; bool ones widened into copies): refuse them first.
    let weight_bytes: u64 = graph
        .weights()
        .iter()
        .map(|&id| {
            let ty = &graph.node(id).outputs[0].ty;
            (ty.num_elements() * lower::elem_bytes(ty.dtype)) as u64
        })
        .sum();
    check_cap(graph, "weights", weight_bytes, options.memory_cap)
}

fn compile_plan(graph: &Graph, weights: Vec<lower::WeightData>, options: &CodegenOptions) -> Result<Executable, Error> {
    let pool = match &options.pool {
        Some(pool) => std::sync::Arc::clone(pool),
        None => std::sync::Arc::new(pool::Pool::new(options.threads)),
    };
    let threads = pool.threads();
    let mut jit = jit::Jit::new(jit::HostFeatures::detect()).map_err(|e| Error::new("JIT", e))?;
    jit.keep_clif = options.keep_clif;
    jit.disasm = options.disasm;
    let isa = Isa::supported(options.isa);
    jit.host_map = simd::host_map_entry(isa);
    let plan = lower::lower(graph, weights, &mut jit, options.softmax, threads, options.memory_cap, isa)?;
    let placement = placement(&plan);
    // The arena is allocated on the first run: refuse the plan now if it does not fit.
    let plan_bytes: u64 = plan.weights.iter().map(|w| w.bytes() as u64).sum::<u64>()
        + plan.steps.iter().map(|s| s.table_bytes() as u64).sum::<u64>();
    check_cap(graph, "weights, copy tables and planned arena", plan_bytes + placement.peak as u64, options.memory_cap)?;
    let clif = std::mem::take(&mut jit.clif);
    let (funcs, code) = jit.finish().map_err(|e| Error::new("JIT", e))?;
    if funcs.len() != plan.kernel_labels.len() {
        return Err(Error::new("JIT", "internal error: kernel count does not match the plan"));
    }
    let kernels = funcs.into_iter().map(|c| c.func).collect();
    Ok(Executable::new(plan, kernels, placement, clif, pool, isa, code).with_adaptive_threads(options.adaptive_threads))
}

/// Refuses `bytes` of `what` above the memory cap, naming the model and both sizes.
fn check_cap(graph: &Graph, what: &str, bytes: u64, cap: u64) -> Result<(), Error> {
    if bytes <= cap {
        return Ok(());
    }
    Err(Error::new(
        format!("model '{}'", graph.name()),
        format!(
            "needs {bytes} bytes ({:.2} GiB) of {what}, above the memory cap of {cap} bytes ({:.2} GiB); \
             raise the cap (kiln --memory-cap, Options::memory_cap) to run it",
            bytes as f64 / (1u64 << 30) as f64,
            cap as f64 / (1u64 << 30) as f64
        ),
    )
    .with_kind(kiln_ir::ErrorKind::ResourceLimit))
}

/// The arena offset of every buffer: the memory plan over [`intervals`], then each alias at its
/// offset inside the buffer its chain ends at.
pub(crate) fn placement(plan: &lower::Lowered) -> memplan::Placement {
    let mut placement = memplan::place(&intervals(plan));
    for b in 0..plan.aliases.len() {
        let (root, off) = lower::alias_root(&plan.aliases, b);
        if root != b {
            placement.offsets[b] = placement.offsets[root] + off;
        }
    }
    placement
}

/// Lifetime of every arena buffer over the steps: first write to last access; graph outputs live
/// to the end. An alias has no bytes of its own: its accesses count for the buffer its chain
/// ends at.
pub(crate) fn intervals(plan: &lower::Lowered) -> Vec<memplan::Interval> {
    let end = plan.steps.len();
    let owner = |b: usize| lower::alias_root(&plan.aliases, b).0;
    let mut iv: Vec<memplan::Interval> = plan
        .buffers
        .iter()
        .enumerate()
        .map(|(b, &bytes)| memplan::Interval { bytes: if owner(b) == b { bytes } else { 0 }, def: usize::MAX, last: 0 })
        .collect();
    for (s, step) in plan.steps.iter().enumerate() {
        for p in &step.args {
            if let lower::Place::Buf(b) = *p {
                let b = owner(b);
                iv[b].def = iv[b].def.min(s);
                iv[b].last = iv[b].last.max(s);
            }
        }
    }
    for (p, _) in &plan.outputs {
        if let lower::Place::Buf(b) = *p {
            iv[owner(b)].last = end;
        }
    }
    for i in &mut iv {
        if i.def == usize::MAX {
            i.def = 0;
        }
        i.last = i.last.max(i.def);
    }
    iv
}
