//! The plan executor: resolves each step's buffers to pointers into one arena (plus the caller's
//! inputs and the model's weights) and runs the steps in order, splitting row kernels and GEMMs
//! across the worker pool.
//!
//! **Invariant:** steps write only arena buffers (the plan builder never makes an input or weight
//! a write target), so inputs and weights are only read and one `Executable` can run on many
//! threads at once, each run with its own arena (taken from a small free list).

use crate::host::GemmCall;
use crate::jit::{CodeMemory, KernelFn};
use crate::lower::{AttentionSpec, ConvSpec, Lowered, Place, StepKind};
use crate::memplan::Placement;
use crate::pool::{Pool, chunk};
use crate::threads::{Plan, RunThreads, ThreadChoice};
use kiln_ir::{DType, Error, Tensor, TensorData, TensorType};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a step is split: by its estimated one-core time (flops and bytes at the rates below),
/// into chunks of at least [`MIN_CHUNK_NS`]. The rates are estimates of one AVX2 EPYC core, not
/// yet measured (issue 13's cost-model calibration is to replace them); they only need to be
/// right within a factor of two, since they decide chunk counts, never results.
///
/// Generated kernels: bytes of their arguments streamed per ns, and ns per element computed.
const KERNEL_BYTES_PER_NS: f64 = 8.0;
const KERNEL_NS_PER_ELEM: f64 = 0.25;
/// GEMM (the `gemm` crate, AVX2+FMA, small and medium shapes).
const GEMM_FLOPS_PER_NS: f64 = 40.0;
/// A chunk handed to another thread must take at least this long on one core: below it, the
/// hand-off (cache lines moving between cores, waiting for the slowest chunk) costs more than it
/// saves (graph_transformer_edge ran 2× slower at 2 threads than at 1 when tiny steps split).
const MIN_CHUNK_NS: f64 = 20_000.0;
/// im2col tile size in floats (256 KiB): half of this machine's per-core L2.
const IM2COL_TILE_FLOATS: usize = 1 << 16;

/// Memory figures of the static plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReport {
    /// Arena size in bytes (what one run allocates for intermediates).
    pub arena_bytes: usize,
    /// Max bytes simultaneously live: no placement of these buffers can use less.
    pub lower_bound_bytes: usize,
    /// Sum of all intermediate buffers: what a plan without reuse would need.
    pub unshared_bytes: usize,
}

/// A compiled model: generated kernels, a plan and the weights. `Send + Sync`.
pub struct Executable {
    pub(crate) plan: Lowered,
    pub(crate) kernels: Vec<KernelFn>,
    pub(crate) offsets: Vec<usize>,
    pub(crate) memory: MemoryReport,
    pub(crate) clif: Vec<(String, String)>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) isa: crate::Isa,
    /// All of the pool's threads per run, or one (measured by the first runs).
    thread_choice: ThreadChoice,
    arenas: Mutex<Vec<Vec<u64>>>,
    /// Outputs written straight into the caller's buffer: (output index, arena buffer).
    direct: Vec<(usize, usize)>,
    /// Bytes of each step's arguments (its memory traffic, for the split).
    step_bytes: Vec<usize>,
    // Last: the generated code must outlive every field that can call into it.
    _code: CodeMemory,
}

/// Base pointers of one step's arguments, shareable with worker threads.
struct Ptrs(Vec<*mut u8>);
// SAFETY: the pointers address the run's arena, inputs and weights, which outlive every job of
// the step: `Pool::run` returns only after all chunks finish. Chunks write disjoint rows.
unsafe impl Send for Ptrs {}
// SAFETY: as above; the Vec itself is only read.
unsafe impl Sync for Ptrs {}

impl Executable {
    pub(crate) fn new(
        plan: Lowered,
        kernels: Vec<KernelFn>,
        placement: Placement,
        clif: Vec<(String, String)>,
        pool: Arc<Pool>,
        isa: crate::Isa,
        code: CodeMemory,
    ) -> Executable {
        let memory = MemoryReport {
            arena_bytes: placement.peak,
            lower_bound_bytes: placement.lower_bound,
            unshared_bytes: plan
                .buffers
                .iter()
                .zip(&plan.aliases)
                .filter(|(_, a)| a.is_none())
                .map(|(b, _)| b.div_ceil(crate::memplan::ALIGN) * crate::memplan::ALIGN)
                .sum(),
        };
        let direct = direct_outputs(&plan);
        let step_bytes = plan.steps.iter().map(|st| step_bytes(&plan, st)).collect();
        Executable {
            step_bytes,
            direct,
            plan,
            kernels,
            offsets: placement.offsets,
            memory,
            clif,
            thread_choice: ThreadChoice::new(pool.threads(), false),
            pool,
            isa,
            arenas: Mutex::new(Vec::new()),
            _code: code,
        }
    }

    /// Lets the first runs choose between all threads and one ([`crate::threads`]).
    pub(crate) fn with_adaptive_threads(mut self, adaptive: bool) -> Executable {
        self.thread_choice = ThreadChoice::new(self.pool.threads(), adaptive);
        self
    }

    pub fn memory(&self) -> MemoryReport {
        self.memory
    }

    /// The weight data this executable holds, as (address, bytes) of each buffer
    /// ([`crate::lower::Lowered::weight_buffers`]).
    pub fn weight_buffers(&self) -> Vec<(usize, usize)> {
        self.plan.weight_buffers()
    }

    /// Each kernel's name and its Cranelift IR (as generated, before Cranelift's optimiser); the
    /// IR is empty unless compiled with `CodegenOptions::keep_clif`.
    pub fn clif_text(&self) -> &[(String, String)] {
        &self.clif
    }

    /// The schedule, one line per step: what runs and for which node(s).
    pub fn schedule_text(&self) -> String {
        let mut s = String::new();
        for (i, (what, label)) in self.step_descriptions().into_iter().enumerate() {
            s.push_str(&format!("{i:3}  {what:40}  {label}\n"));
        }
        s
    }

    /// Each step of the schedule as (what runs, the node label it comes from), in run order; the
    /// same order as the times of [`Executable::run_profiled`].
    pub fn step_descriptions(&self) -> Vec<(String, String)> {
        let mut steps = Vec::with_capacity(self.plan.steps.len());
        for st in &self.plan.steps {
            let what = match &st.kind {
                StepKind::Kernel { func, rows, .. } => format!("kernel {} ({rows} rows)", self.clif[*func].0),
                StepKind::Checked { func, rows, .. } => {
                    format!("checked kernel {} ({rows} rows)", self.clif[*func].0)
                }
                StepKind::Copies(copies) if copies.len() == 1 => "copy".to_string(),
                StepKind::Copies(copies) => format!("copy ({} outputs)", copies.len()),
                StepKind::Gather(_) => "gather".to_string(),
                StepKind::Convert(c, _) => format!("convert {c:?}"),
                StepKind::BoolInput(_) => "bool input".to_string(),
                StepKind::MatMul { packed: Some(_), .. } => "gemm (packed B)".to_string(),
                StepKind::MatMul { call, units, .. } if crate::gemm::strided_pays(call.m, call.n) => {
                    format!("gemm (B packed per call, {} units)", units.len())
                }
                StepKind::MatMul { units, .. } => format!("gemm ({} units)", units.len()),
                StepKind::Conv(_) => "conv (im2col + gemm)".to_string(),
                StepKind::Depthwise { spec, .. } => crate::spatial::HostKernel::describe(spec.as_ref()),
                StepKind::PackedConv { spec, .. } => format!(
                    "conv (implicit gemm, packed weights{}{}{})",
                    if spec.subsamples() { ", compact 1×1 input" } else { "" },
                    if spec.post().is_some() { ", epilogue in-store" } else { "" },
                    if spec.streams() { ", channel panels streamed" } else { "" }
                ),
                StepKind::Index(s) => s.label().to_string(),
                StepKind::Host(k) => k.describe(),
                StepKind::Attention(a) => format!(
                    "attention ({} blocks of ≤ {} rows × {} keys{})",
                    a.batches.len() * a.lq.div_ceil(a.block),
                    a.block,
                    a.lk,
                    if a.packed_kt { ", Kt packed per head" } else { "" }
                ),
            };
            steps.push((what, st.label.clone()));
        }
        steps
    }

    /// The most threads a run uses (the pool's).
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The most threads a step of each run uses from now on: `threads()` when some steps split
    /// (all, or those the first runs measured faster split: [`crate::threads`]), 1 when none
    /// does; `None` while those runs are still measuring.
    pub fn threads_in_use(&self) -> Option<usize> {
        self.thread_choice.chosen()
    }

    /// The instruction set the hand-written kernels of this model were chosen for.
    pub fn isa(&self) -> crate::Isa {
        self.isa
    }

    /// The declared inputs' types, in graph-input order.
    pub fn input_types(&self) -> &[TensorType] {
        &self.plan.input_types
    }

    /// The outputs' types, in graph-output order: what [`Executable::run_into`] expects.
    pub fn output_types(&self) -> Vec<&TensorType> {
        self.plan.outputs.iter().map(|(_, ty)| ty).collect()
    }

    /// Runs the model. `inputs` are in graph-input order with the declared types (the caller has
    /// validated them with `kiln_ir::eval::check_inputs`; they are checked again here because
    /// generated code trusts the sizes). A thin wrapper over [`Executable::run_into`].
    pub fn run(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, Error> {
        let views: Vec<TensorRef<'_>> = inputs.iter().map(|t| TensorRef::from(*t)).collect();
        let mut outs = self.alloc_outputs()?;
        let mut bufs: Vec<DataMut<'_>> = outs.iter_mut().map(DataMut::from).collect();
        self.run_timed(&views, &mut bufs, None)?;
        self.wrap_outputs(outs)
    }

    /// Runs the model like [`Executable::run`] and also returns the wall time of each step, in the
    /// order of [`Executable::step_descriptions`] (for `kiln bench --profile`).
    pub fn run_profiled(&self, inputs: &[&Tensor]) -> Result<(Vec<Tensor>, Vec<Duration>), Error> {
        let views: Vec<TensorRef<'_>> = inputs.iter().map(|t| TensorRef::from(*t)).collect();
        let mut outs = self.alloc_outputs()?;
        let mut bufs: Vec<DataMut<'_>> = outs.iter_mut().map(DataMut::from).collect();
        let mut times = Vec::with_capacity(self.plan.steps.len());
        self.run_timed(&views, &mut bufs, Some(&mut times))?;
        Ok((self.wrap_outputs(outs)?, times))
    }

    /// Runs the model on borrowed inputs (graph-input order) and writes each output into the
    /// caller's buffer (graph-output order, exactly [`Executable::output_types`]' element type
    /// and count). Nothing is allocated per call but the step pointer tables; where the plan
    /// allows, the step that computes an output writes it straight into the caller's buffer.
    /// Wrong counts, types, shapes or buffer sizes are errors naming the input or output index.
    pub fn run_into(&self, inputs: &[TensorRef<'_>], outputs: &mut [DataMut<'_>]) -> Result<(), Error> {
        self.run_timed(inputs, outputs, None)
    }

    /// Zeroed output data of the declared types, allocated fallibly.
    fn alloc_outputs(&self) -> Result<Vec<TensorData>, Error> {
        fn zeros<T: Clone>(n: usize, zero: T) -> Option<Vec<T>> {
            let mut v = Vec::new();
            v.try_reserve_exact(n).ok()?;
            v.resize(n, zero);
            Some(v)
        }
        let mut outs = Vec::with_capacity(self.plan.outputs.len());
        for (_, ty) in &self.plan.outputs {
            let n = ty.num_elements();
            let data = match ty.dtype {
                DType::F32 => zeros(n, 0.0f32).map(TensorData::F32),
                DType::I64 => zeros(n, 0i64).map(TensorData::I64),
                DType::Bool => zeros(n, false).map(TensorData::Bool),
            };
            outs.push(data.ok_or_else(|| {
                Error::new(
                    format!("model '{}'", self.plan.model_name),
                    format!(
                        "cannot allocate {} bytes for an output of type {ty}",
                        n * crate::lower::elem_bytes(ty.dtype)
                    ),
                )
            })?);
        }
        Ok(outs)
    }

    fn wrap_outputs(&self, outs: Vec<TensorData>) -> Result<Vec<Tensor>, Error> {
        outs.into_iter()
            .zip(&self.plan.outputs)
            .map(|(data, (_, ty))| {
                Tensor::new(ty.shape.clone(), data)
                    .map_err(|e| Error::new(format!("model '{}'", self.plan.model_name), e))
            })
            .collect()
    }

    /// Checks inputs and output buffers against the plan: generated code trusts every size.
    fn check_io(&self, inputs: &[TensorRef<'_>], outputs: &[DataMut<'_>]) -> Result<(), Error> {
        if inputs.len() != self.plan.input_types.len() {
            return Err(Error::new(
                "inputs",
                format!("expected {} inputs, got {}", self.plan.input_types.len(), inputs.len()),
            ));
        }
        for (i, (t, ty)) in inputs.iter().zip(&self.plan.input_types).enumerate() {
            if t.data.dtype() != ty.dtype || t.shape != ty.shape.as_slice() || t.data.len() != ty.num_elements() {
                return Err(Error::new(
                    format!("input {i}"),
                    format!(
                        "expected {ty}, got {:?} data of {} elements with shape {:?}",
                        t.data.dtype(),
                        t.data.len(),
                        t.shape
                    ),
                ));
            }
        }
        if outputs.len() != self.plan.outputs.len() {
            return Err(Error::new(
                "outputs",
                format!("expected {} output buffers, got {}", self.plan.outputs.len(), outputs.len()),
            ));
        }
        for (i, (o, (_, ty))) in outputs.iter().zip(&self.plan.outputs).enumerate() {
            if o.dtype() != ty.dtype || o.len() != ty.num_elements() {
                return Err(Error::new(
                    format!("output {i}"),
                    format!(
                        "expected a buffer of {} {:?} elements (type {ty}), got {} {:?} elements",
                        ty.num_elements(),
                        ty.dtype,
                        o.len(),
                        o.dtype()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn run_timed(
        &self,
        inputs: &[TensorRef<'_>],
        outputs: &mut [DataMut<'_>],
        times: Option<&mut Vec<Duration>>,
    ) -> Result<(), Error> {
        self.check_io(inputs, outputs)?;
        let words = self.memory.arena_bytes.div_ceil(8);
        let mut arena = self.arenas.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
        if arena.len() < words {
            // Fallible: a plan within the memory cap may still not fit in what the system has.
            arena.try_reserve_exact(words - arena.len()).map_err(|_| {
                Error::new(
                    format!("model '{}'", self.plan.model_name),
                    format!("cannot allocate its {} byte arena", self.memory.arena_bytes),
                )
            })?;
            arena.resize(words, 0);
        }
        // Profiled runs are not samples of the thread choice: timing each step slows them.
        let ticket = self.thread_choice.next(times.is_none());
        // A sample run of the thread choice times its steps too (both arms alike).
        let mut step_times = Vec::new();
        let times = match times {
            None if ticket.timed() => Some(&mut step_times),
            t => t,
        };
        let start = Instant::now();
        let result = self.run_in(inputs, outputs, &mut arena, times, &ticket.plan);
        if result.is_ok() {
            self.thread_choice.record(&ticket, start.elapsed(), step_times);
        }
        self.arenas.lock().unwrap_or_else(|p| p.into_inner()).push(arena);
        result
    }

    fn run_in(
        &self,
        inputs: &[TensorRef<'_>],
        outputs: &mut [DataMut<'_>],
        arena: &mut [u64],
        mut times: Option<&mut Vec<Duration>>,
        plan: &Plan,
    ) -> Result<(), Error> {
        let base = arena.as_mut_ptr() as *mut u8;
        // Arena buffers redirected to the caller's output buffers (see `direct_outputs`).
        let direct: Vec<(usize, *mut u8)> = self.direct.iter().map(|&(j, b)| (b, outputs[j].as_mut_ptr())).collect();
        let ptr = |p: Place| -> *mut u8 {
            match p {
                Place::Buf(b) => match direct.iter().find(|d| d.0 == b) {
                    Some(&(_, p)) => p,
                    // SAFETY (offset): offsets[b] + size ≤ arena_bytes ≤ arena length in bytes.
                    None => unsafe { base.add(self.offsets[b]) },
                },
                // Weights are only read: the cast is for the kernels' uniform argument type.
                Place::Weight(w) => self.plan.weights[w].as_ptr() as *mut u8,
                Place::Input(i) => inputs[i].data.as_ptr() as *mut u8,
            }
        };
        for (s, step) in self.plan.steps.iter().enumerate() {
            let start = times.is_some().then(Instant::now);
            let _limit = RunThreads::enter(plan.limit(s));
            let ptrs: Vec<*mut u8> = step.args.iter().map(|&p| ptr(p)).collect();
            let fail = |what: &str| Error::new(format!("step '{}'", step.label), what.to_string());
            match &step.kind {
                StepKind::Kernel { func, rows, elems } => {
                    self.kernel(*func, *rows, *elems, self.step_bytes[s], ptrs).map_err(fail)?
                }
                StepKind::Checked { func, rows, elems, error } => {
                    let cell = ptrs[ptrs.len() - 1] as *mut i64;
                    // SAFETY: the last argument of a checked kernel is its own 8-byte arena buffer.
                    unsafe { cell.write(0) };
                    self.kernel(*func, *rows, *elems, self.step_bytes[s], ptrs).map_err(fail)?;
                    // SAFETY: as above; the kernel (and every chunk of it) has returned.
                    if unsafe { cell.read() } != 0 {
                        return Err(fail(error));
                    }
                }
                StepKind::Copies(copies) => {
                    let src = ptrs[step.n_writes];
                    for (c, &dst) in copies.iter().zip(&ptrs[..step.n_writes]) {
                        // SAFETY: the plan checked the source extent against the source tensor and
                        // sized the destination buffer from the output type.
                        unsafe { c.run(src, dst) };
                    }
                }
                StepKind::Gather(g) => {
                    // SAFETY: buffer sizes match the spec (checked when lowering).
                    let r = unsafe { g.run(ptrs[1], ptrs[2] as *const i64, ptrs[0]) };
                    if let Err(i) = r {
                        return Err(fail(&format!("index {i} is out of range for an axis of {}", g.axis_len)));
                    }
                }
                StepKind::Convert(c, n) => {
                    // SAFETY: both buffers hold n elements of their types.
                    unsafe { c.run(ptrs[1], ptrs[0], *n) };
                }
                StepKind::BoolInput(n) => {
                    // SAFETY: the input is a bool tensor of n elements (checked above); the
                    // destination buffer holds n f32.
                    unsafe {
                        let s = std::slice::from_raw_parts(ptrs[1] as *const bool, *n);
                        let d = std::slice::from_raw_parts_mut(ptrs[0] as *mut f32, *n);
                        d.iter_mut().zip(s).for_each(|(d, &s)| *d = s as u8 as f32);
                    }
                }
                StepKind::MatMul { call, units, c_fill, epilogue, packed } => {
                    if let Some(c) = c_fill {
                        // SAFETY: C broadcasts to the output; extents checked when lowering.
                        unsafe { c.run(ptrs[3], ptrs[0]) };
                    }
                    let epi = epilogue.map(|(f, first)| (self.kernels[f], first));
                    match packed {
                        Some(b) => self.packed_matmul(call, b, epi, Ptrs(ptrs)).map_err(fail)?,
                        None => self.matmul(call, units, epi, Ptrs(ptrs)).map_err(fail)?,
                    }
                }
                StepKind::Conv(spec) => self.conv(spec, Ptrs(ptrs)).map_err(fail)?,
                StepKind::Depthwise { spec, epilogue } => {
                    let epi = epilogue.map(|(f, first)| (self.kernels[f], first));
                    self.depthwise(spec, epi, Ptrs(ptrs)).map_err(fail)?
                }
                StepKind::PackedConv { spec, epilogue } => {
                    let epi = epilogue.map(|(f, first)| (self.kernels[f], first));
                    self.packed_conv(spec, epi, Ptrs(ptrs)).map_err(fail)?
                }
                StepKind::Attention(spec) => self.attention(spec, Ptrs(ptrs)).map_err(fail)?,
                StepKind::Index(s) => {
                    // SAFETY: the plan sized every buffer from the op's types, which the IR checked
                    // against each other; index values are checked inside before any access.
                    unsafe { s.run(&ptrs) }.map_err(|e| fail(&e))?;
                }
                StepKind::Host(k) => self.host(k, Ptrs(ptrs)).map_err(fail)?,
            }
            if let (Some(times), Some(start)) = (times.as_deref_mut(), start) {
                times.push(start.elapsed());
            }
        }
        for (j, (p, ty)) in self.plan.outputs.iter().enumerate() {
            if self.direct.iter().any(|d| d.0 == j) {
                continue;
            }
            let src = ptr(*p);
            let n = ty.num_elements();
            // SAFETY: `src` addresses a buffer holding the value of type `ty` in arena
            // representation (bool as f32 0/1); the caller's buffer was checked to hold n elements
            // of its type and does not overlap the arena, inputs or weights (it is a `&mut`).
            unsafe {
                match &mut outputs[j] {
                    DataMut::F32(d) => std::ptr::copy_nonoverlapping(src as *const f32, d.as_mut_ptr(), n),
                    DataMut::I64(d) => std::ptr::copy_nonoverlapping(src as *const i64, d.as_mut_ptr(), n),
                    DataMut::Bool(d) => {
                        let s = std::slice::from_raw_parts(src as *const f32, n);
                        d.iter_mut().zip(s).for_each(|(d, &s)| *d = s != 0.0);
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs generated kernel `func` over `rows` rows, split across the pool when it pays.
    fn kernel(
        &self,
        func: usize,
        rows: usize,
        elems: usize,
        bytes: usize,
        ptrs: Vec<*mut u8>,
    ) -> Result<(), &'static str> {
        let f = self.kernels[func];
        let cost = bytes as f64 / KERNEL_BYTES_PER_NS + elems as f64 * KERNEL_NS_PER_ELEM;
        let threads = self.par(cost, rows);
        if threads <= 1 {
            // SAFETY: the kernel was generated for exactly these argument buffers and sizes (plan
            // invariant); rows [0, rows) are all in range.
            unsafe { f(ptrs.as_ptr(), 0, rows as i64) };
            return Ok(());
        }
        let p = Arc::new(Ptrs(ptrs));
        self.split(threads, move |c| {
            let (lo, hi) = chunk(rows, threads, c);
            // SAFETY: as above; chunks cover disjoint row ranges.
            unsafe { f(p.0.as_ptr(), lo as i64, hi as i64) };
        })
    }

    fn matmul(
        &self,
        call: &GemmCall,
        units: &[[usize; 5]],
        epilogue: Option<(KernelFn, usize)>,
        ptrs: Ptrs,
    ) -> Result<(), &'static str> {
        let rows: usize = units.iter().map(|u| u[4] - u[3]).sum();
        let flops = 2 * rows * call.n * call.k;
        let threads = self.par(flops as f64 / GEMM_FLOPS_PER_NS, units.len());
        let units: Arc<Vec<[usize; 5]>> = Arc::new(units.to_vec());
        let call = *call;
        let p = Arc::new(ptrs);
        let isa = self.isa;
        // kiln's micro-kernels with B packed per unit, the epilogue per row block of C while it
        // is in cache; too narrow or short a product stays with the `gemm` crate.
        let own = call.n > 0 && crate::gemm::strided_pays(call.m, call.n);
        let prod = call.product();
        let job = move |c: usize| {
            let (lo, hi) = chunk(units.len(), threads, c);
            for u in &units[lo..hi] {
                let [ao, bo, d, m0, m1] = *u;
                if own {
                    // Output rows of this unit, counting batches as consecutive blocks of m rows.
                    let row0 = d / call.n;
                    let mut after = |r0: usize, r1: usize| {
                        if let Some((f, first)) = epilogue {
                            // SAFETY: the epilogue kernel was generated for these argument
                            // buffers with one row per output matrix row; rows [row0 + r0,
                            // row0 + r1) exist and were just finished by this unit (units cover
                            // disjoint rows).
                            unsafe { f(p.0[first..].as_ptr(), (row0 + r0) as i64, (row0 + r1) as i64) };
                        }
                    };
                    // SAFETY: offsets and row ranges come from the plan, which sized every
                    // operand (A m×k, B k×n and C m×n through their strides at the unit's
                    // offsets); units write disjoint row blocks of the output.
                    unsafe {
                        let a = (p.0[1] as *const f32).add(ao);
                        let b = (p.0[2] as *const f32).add(bo);
                        let dst = (p.0[0] as *mut f32).add(d);
                        prod.run_strided(isa, a, b, [call.k, call.n], [call.b_rs, call.b_cs], dst, m0..m1, &mut after);
                    }
                    continue;
                }
                let mut sub = call;
                sub.m = m1 - m0;
                // SAFETY: offsets and row ranges come from the plan, which sized every operand;
                // units write disjoint row blocks of the output.
                unsafe {
                    let a = (p.0[1] as *const f32).add(ao).offset(m0 as isize * call.a_rs);
                    let b = (p.0[2] as *const f32).add(bo);
                    let dst = (p.0[0] as *mut f32).add(d).offset(m0 as isize * call.d_rs);
                    sub.run(a, b, dst);
                }
                if let Some((f, first)) = epilogue {
                    // Output rows of this unit, counting batches as consecutive blocks of m rows.
                    let row0 = d / call.n.max(1);
                    // SAFETY: the epilogue kernel was generated for these argument buffers with
                    // one row per output matrix row; rows [row0 + m0, row0 + m1) exist and were
                    // just written by this unit (units cover disjoint rows).
                    unsafe { f(p.0[first..].as_ptr(), (row0 + m0) as i64, (row0 + m1) as i64) };
                }
            }
        };
        self.split(threads, job)
    }

    /// A GEMM whose B was packed at compile time (one batch of `call.m` rows): threads take row
    /// ranges (whole MR panels) or, for few rows, column panels; the packed B is shared. The
    /// epilogue runs per row block as the kernel finishes it, or after all column ranges when
    /// they are split.
    fn packed_matmul(
        &self,
        call: &GemmCall,
        b: &Arc<crate::gemm::PackedB>,
        epilogue: Option<(KernelFn, usize)>,
        ptrs: Ptrs,
    ) -> Result<(), &'static str> {
        let flops = 2 * call.m * call.n * call.k;
        // Units: row panels or column panels, whichever the split takes (gemm::split_rows).
        let threads = self.par(flops as f64 / GEMM_FLOPS_PER_NS, call.m.max(b.panels()));
        let by_rows = crate::gemm::split_rows(call.m, call.n, threads);
        let prod = call.product();
        let (isa, b, p) = (self.isa, b.clone(), Arc::new(ptrs));
        let (m, panels, mr) = (call.m, b.panels(), crate::gemm::tile_rows(isa));
        let p2 = p.clone();
        let job = move |c: usize| {
            let (rows, cols) = if by_rows {
                // Whole tile-row panels per thread, so no micro-tile is split.
                let mp = m.div_ceil(mr);
                let (lo, hi) = chunk(mp, threads, c);
                ((lo * mr).min(m)..(hi * mr).min(m), 0..panels)
            } else {
                let (lo, hi) = chunk(panels, threads, c);
                (0..m, lo..hi)
            };
            let mut after = |r0: usize, r1: usize| {
                if let (Some((f, first)), true) = (epilogue, by_rows) {
                    // SAFETY: the epilogue kernel was generated for these argument buffers with
                    // one row per output row; rows [r0, r1) were just finished by this thread.
                    unsafe { f(p.0[first..].as_ptr(), r0 as i64, r1 as i64) };
                }
            };
            // SAFETY: the plan sized A (m×k through its strides) and the output (m rows of
            // d_rs); threads write disjoint rows or disjoint column panels.
            unsafe {
                prod.run(isa, p.0[1] as *const f32, &b, p.0[0] as *mut f32, rows, cols, &mut after);
            }
        };
        self.split(threads, job)?;
        if let (Some((f, first)), false) = (epilogue, by_rows) {
            let p = p2;
            self.split(threads, move |c| {
                let (lo, hi) = chunk(m, threads, c);
                // SAFETY: as above; every row is final and chunks are disjoint.
                unsafe { f(p.0[first..].as_ptr(), lo as i64, hi as i64) };
            })?;
        }
        Ok(())
    }

    /// Runs a host kernel's units, split into contiguous runs across the pool when it pays.
    fn host(&self, k: &Arc<dyn crate::spatial::HostKernel>, ptrs: Ptrs) -> Result<(), &'static str> {
        let units = k.units();
        let threads = self.par(k.cost_ns(), units);
        let (k, p, isa) = (k.clone(), Arc::new(ptrs), self.isa);
        self.split(threads, move |c| {
            let (lo, hi) = chunk(units, threads, c);
            // SAFETY: the plan sized every argument as the kernel documents; chunks are disjoint
            // unit ranges, which write disjoint parts of the output.
            unsafe { k.run(&p.0, lo, hi, isa) };
        })
    }

    /// Depthwise convolution: contiguous runs of (image, channel) planes across the pool, the
    /// fused epilogue (if any) run on each plane's rows right after the plane is written.
    fn depthwise(
        &self,
        spec: &Arc<crate::window::DepthwiseSpec>,
        epilogue: Option<(KernelFn, usize)>,
        ptrs: Ptrs,
    ) -> Result<(), &'static str> {
        use crate::spatial::HostKernel;
        let units = spec.units();
        let threads = self.par(spec.cost_ns(), units);
        let (spec, p, isa) = (Arc::clone(spec), Arc::new(ptrs), self.isa);
        self.split(threads, move |c| {
            let (lo, hi) = chunk(units, threads, c);
            let oh = spec.win.oh as i64;
            let after = |u0: usize, u1: usize| {
                if let Some((f, first)) = epilogue {
                    // SAFETY: the epilogue kernel was generated for these argument buffers with
                    // one row per output row of OW floats; planes [u0, u1) are rows
                    // [u0·oh, u1·oh), just written by this chunk (chunks own disjoint planes).
                    unsafe { f(p.0[first..].as_ptr(), u0 as i64 * oh, u1 as i64 * oh) };
                }
            };
            // SAFETY: the plan sized every argument as DepthwiseSpec documents; chunks are
            // disjoint plane ranges, which write disjoint parts of the output.
            unsafe { spec.run_planes(&p.0, lo, hi, isa, after) };
        })
    }

    /// Dense convolution on packed weights: units are (image, group, block of output rows), each
    /// block's channel panels also split in parts when there are too few blocks for the pool;
    /// the fused epilogue (if any) runs on each unit's channels × rows as soon as they are final.
    fn packed_conv(
        &self,
        spec: &Arc<crate::gemm::conv::PackedConv>,
        epilogue: Option<(KernelFn, usize)>,
        ptrs: Ptrs,
    ) -> Result<(), &'static str> {
        let blocks = spec.units(1);
        let threads = self.par(spec.flops() as f64 / GEMM_FLOPS_PER_NS, blocks * spec.m_panels());
        let parts = if blocks >= 4 * threads { 1 } else { threads.min(spec.m_panels()).max(1) };
        let units = spec.units(parts);
        let (spec, p, isa) = (Arc::clone(spec), Arc::new(ptrs), self.isa);
        self.split(threads, move |c| {
            let (lo, hi) = chunk(units, threads, c);
            let (m, oh) = (spec.m * spec.groups, spec.geo.oh);
            let mut after = |img: usize, c0: usize, c1: usize, oh0: usize, oh1: usize| {
                if let Some((f, first)) = epilogue {
                    if oh0 == 0 && oh1 == oh {
                        // Whole planes: channels [c0, c1)'s rows are contiguous, one call (per
                        // channel, a 3² plane of an EfficientNet's SiLU epilogue was a call of
                        // 9 floats, 1152 per conv).
                        let row = (img * m + c0) * oh;
                        // SAFETY: as below, for the rows of every channel of [c0, c1).
                        unsafe { f(p.0[first..].as_ptr(), row as i64, (row + (c1 - c0) * oh) as i64) };
                        return;
                    }
                    for ch in c0..c1 {
                        let row = (img * m + ch) * oh;
                        // SAFETY: the epilogue kernel was generated for these argument buffers
                        // with one row per output row of OW floats; rows [oh0, oh1) of channel
                        // ch were just finished by this chunk (units write disjoint blocks).
                        unsafe { f(p.0[first..].as_ptr(), (row + oh0) as i64, (row + oh1) as i64) };
                    }
                }
            };
            // SAFETY: the plan sized every argument as PackedConv documents; chunks are disjoint
            // unit ranges, which write disjoint parts of the output.
            unsafe { spec.run(&p.0, lo, hi, parts, isa, &mut after) };
        })
    }

    /// How many chunks a step of `cost_ns` (one-core estimate) over `units` units splits into.
    fn par(&self, cost_ns: f64, units: usize) -> usize {
        let by_cost = (cost_ns / MIN_CHUNK_NS) as usize;
        self.pool.threads().min(RunThreads::current()).min(units).min(by_cost).max(1)
    }

    /// Runs `job(0..threads)`: inline when there is one chunk, else on the pool.
    fn split(&self, threads: usize, job: impl Fn(usize) + Send + Sync + 'static) -> Result<(), &'static str> {
        if threads <= 1 {
            job(0);
            Ok(())
        } else if self.pool.run(threads, Arc::new(job)) {
            Ok(())
        } else {
            Err("a worker thread panicked")
        }
    }

    fn conv(&self, spec: &ConvSpec, ptrs: Ptrs) -> Result<(), &'static str> {
        let ic = spec.im2col.clone();
        let ncol = ic.oh * ic.ow;
        let ckk = ic.c * ic.kh * ic.kw;
        let flops = 2 * spec.n * spec.groups * spec.m_per_group * ckk * ncol;
        let threads = self.par(flops as f64 / GEMM_FLOPS_PER_NS, ncol);
        let spec = spec.clone();
        let p = Arc::new(ptrs);
        let job = move |c: usize| {
            let (c0, c1) = chunk(ncol, threads, c);
            if c1 == c0 {
                return;
            }
            let ckk = ic.c * ic.kh * ic.kw;
            let mg = spec.m_per_group;
            let m = mg * spec.groups;
            // Columns go through im2col and the GEMM one tile at a time, a tile small enough to stay
            // in this core's L2 while the GEMM reads it (im2col of a whole 128×128 image with a
            // 5×5×64 kernel would be 100 MB written and read back once).
            // A 1×1 stride-1 unpadded conv reads the image as its column matrix: one GEMM over the
            // chunk's columns (smaller tiles only made the GEMM repack the weights per tile).
            let tile = if ic.is_identity() { c1 - c0 } else { (IM2COL_TILE_FLOATS / ckk.max(1)).max(16).min(c1 - c0) };
            for n in 0..spec.n {
                for g in 0..spec.groups {
                    let mut t0 = c0;
                    while t0 < c1 {
                        let t1 = (t0 + tile).min(c1);
                        // SAFETY: every offset below stays inside the buffers the plan sized:
                        // x [N, C, H, W], w [M, C/g, kh, kw], bias [M], out [N, M, OH, OW],
                        // col [C/g·kh·kw, OH·OW] of which this chunk owns the ckk·(c1 − c0) floats
                        // at ckk·c0 (a [ckk, t1 − t0] tile fits there); the chunk writes only
                        // output columns [t0, t1) ⊂ [c0, c1).
                        unsafe {
                            let x = (p.0[2] as *const f32).add((n * spec.groups + g) * ic.c * ic.h * ic.w);
                            let (b, b_rs) = if ic.is_identity() {
                                (x.add(t0), ncol)
                            } else {
                                let col = (p.0[1] as *mut f32).add(ckk * c0);
                                ic.run_tile(x, col, t0, t1);
                                (col as *const f32, t1 - t0)
                            };
                            let w = (p.0[3] as *const f32).add(g * mg * ckk);
                            let dst = (p.0[0] as *mut f32).add((n * m + g * mg) * ncol + t0);
                            if spec.bias {
                                let bias = (p.0[4] as *const f32).add(g * mg);
                                for r in 0..mg {
                                    let row = std::slice::from_raw_parts_mut(dst.add(r * ncol), t1 - t0);
                                    row.fill(*bias.add(r));
                                }
                            }
                            let call = GemmCall {
                                m: mg,
                                n: t1 - t0,
                                k: ckk,
                                a_rs: ckk as isize,
                                a_cs: 1,
                                b_rs: b_rs as isize,
                                b_cs: 1,
                                d_rs: ncol as isize,
                                alpha: 1.0,
                                beta: 1.0,
                                accumulate: spec.bias,
                            };
                            call.run(w, b, dst);
                        }
                        t0 = t1;
                    }
                }
            }
        };
        self.split(threads, job)
    }

    /// Blocked attention: units are (output batch, block of query rows), split into contiguous
    /// runs across the pool; each unit is computed entirely by one thread in that thread's scratch
    /// slot with a block size fixed at compile time, so the result does not depend on which
    /// thread ran which unit.
    fn attention(&self, spec: &Arc<AttentionSpec>, ptrs: Ptrs) -> Result<(), &'static str> {
        let blocks = spec.lq.div_ceil(spec.block);
        let units = spec.batches.len() * blocks;
        let flops = 2 * spec.batches.len() * spec.lq * spec.lk * (spec.d + spec.dv);
        let threads = self.par(flops as f64 / GEMM_FLOPS_PER_NS, units.min(spec.slots));
        let softmax = self.kernels[spec.softmax_kernel];
        let bias = spec.bias_kernel.map(|f| self.kernels[f]);
        let (spec, isa) = (Arc::clone(spec), self.isa);
        let p = Arc::new(ptrs);
        let job = move |c: usize| {
            let (u0, u1) = chunk(units, threads, c);
            let (lq, lk, d, dv, block) = (spec.lq, spec.lk, spec.d, spec.dv, spec.block);
            // SAFETY: the scratch buffer holds `slots` slots of slot_len floats and c < threads ≤
            // slots, so this chunk's slot is its own: scores [block, lk], then `block` factors.
            let s = unsafe { (p.0[1] as *mut f32).add(c * AttentionSpec::slot_len(block, lk)) };
            // SAFETY: the factors follow the scores inside the same slot.
            let inv = unsafe { s.add(block * lk) };
            // This thread's packed Kt, tagged with the element offset of the head it holds:
            // consecutive blocks of one head pack it once.
            let mut kt_pack = ATTN_KT.with(|cell| cell.take()).unwrap_or_else(crate::gemm::PackedB::empty);
            let mut kt_of = None;
            let [q_rs, q_cs] = spec.q_strides;
            let [k_rs, k_cs] = spec.kt_strides;
            let [v_rs, v_cs] = spec.v_strides;
            let scores = crate::gemm::Product {
                m: block,
                a_rs: q_rs as isize,
                a_cs: q_cs as isize,
                c_rs: lk as isize,
                alpha: spec.scale,
                beta: 0.0,
                accumulate: false,
            };
            // The AVX2 6×16 tile even where the AVX-512 12×32 one runs: with K = d ≤ 128 per
            // call it measured faster (yoso's [2, 1024, 1024] heads with d = 32: 3.51 against
            // 3.76 ms), the taller tile's fixed cost per call not paid back over so few k steps.
            let kisa = isa.min(crate::Isa::Avx2Fma);
            for u in u0..u1 {
                let (b, row0) = (u / blocks, (u % blocks) * block);
                let r = block.min(lq - row0);
                let [qo, ko, vo, bo] = spec.batches[b];
                // SAFETY: the plan sized every operand from the graph's types: Q [.., lq, d],
                // Kt [.., d, lk], V [.., lk, dv] at the batch offsets of `batches` through their
                // strides (row-major, or a transposed view of the buffer), the bias matrix
                // [rows, cols] at its offset (rows of bias_row_stride elements), the output of
                // batches·lq·dv floats. Rows [row0, row0 + r) ⊂ [0, lq); the kernels were generated
                // for rows of lk (bias kernel: block rows) and run over r ≤ block rows of the
                // slot (softmax: r ≤ block factors after the scores); a NaN row's fix-up reads
                // V[j, c] for j < lk, c < dv. Units write disjoint output rows; the slot and the
                // packed operands are this chunk's own.
                unsafe {
                    let q = (p.0[2] as *const f32).add(qo + row0 * q_rs);
                    let kt = (p.0[3] as *const f32).add(ko);
                    if spec.packed_kt {
                        if kt_of != Some(ko) {
                            kt_pack.repack_strided(kt, d, lk, k_rs as isize, k_cs as isize);
                            kt_of = Some(ko);
                        }
                        scores.run(kisa, q, &kt_pack, s, 0..r, 0..kt_pack.panels(), &mut |_, _| {});
                    } else {
                        attention_call(r, lk, d, [[q_rs, q_cs], [k_rs, k_cs]], lk, spec.scale).run(q, kt, s);
                    }
                    if let Some(f) = bias {
                        let bp = (p.0[5] as *mut f32).add(bo + row0 * spec.bias_row_stride);
                        let args = [s as *mut u8, s as *mut u8, bp as *mut u8];
                        f(args.as_ptr(), 0, r as i64);
                    }
                    // The AVX2 row kernel where the ISA has it (8 lanes against the generated
                    // kernel's 4), else the generated one; both write E and the factors.
                    if !crate::simd::softmax_exp_rows(isa, s, inv, r, lk, spec.clamp_logits) {
                        let args = [s as *mut u8, s as *mut u8, inv as *mut u8];
                        softmax(args.as_ptr(), 0, r as i64);
                    }
                    let v = (p.0[4] as *const f32).add(vo);
                    let out = (p.0[0] as *mut f32).add((b * lq + row0) * dv);
                    attention_call(r, dv, lk, [[lk, 1], [v_rs, v_cs]], dv, 1.0).run(s, v, out);
                    let out = std::slice::from_raw_parts_mut(out, r * dv);
                    let inv = std::slice::from_raw_parts(inv, r);
                    for (row, &k) in out.chunks_exact_mut(dv).zip(inv) {
                        if spec.nan_to_zero && k.is_nan() {
                            // Probabilities zeroed, then ·V as the exported graph does it:
                            // Σⱼ 0·V[j, c] is NaN where column c of V holds an inf or a NaN.
                            for (c, x) in row.iter_mut().enumerate() {
                                let column = (0..lk).map(|j| *v.add(j * v_rs + c * v_cs));
                                *x = column.fold(0.0, |acc, vj| acc + 0.0 * vj);
                            }
                        } else {
                            row.iter_mut().for_each(|x| *x *= k);
                        }
                    }
                }
            }
            // Kept for the next step unless large: a thread does not hold a big head's copy for
            // its lifetime.
            if kt_pack.bytes() <= ATTN_KT_KEEP_BYTES {
                ATTN_KT.with(|cell| cell.set(Some(kt_pack)));
            }
        };
        self.split(threads, job)
    }
}

/// A block product of attention on the `gemm` crate: C[m×n] = alpha·A[m×k]·B, A and B with
/// element strides `[[a_rs, a_cs], [b_rs, b_cs]]`, C row-major with rows `c_rs` apart.
fn attention_call(m: usize, n: usize, k: usize, [a, b]: [[usize; 2]; 2], c_rs: usize, alpha: f32) -> GemmCall {
    GemmCall {
        m,
        n,
        k,
        a_rs: a[0] as isize,
        a_cs: a[1] as isize,
        b_rs: b[0] as isize,
        b_cs: b[1] as isize,
        d_rs: c_rs as isize,
        alpha,
        beta: 0.0,
        accumulate: false,
    }
}

/// Largest packed Kt (4 MiB) a thread keeps between attention steps.
const ATTN_KT_KEEP_BYTES: usize = 4 << 20;

thread_local! {
    /// Each thread's packed Kt of the attention kernel's blocks, reused across steps.
    static ATTN_KT: std::cell::Cell<Option<crate::gemm::PackedB>> = const { std::cell::Cell::new(None) };
}

/// Borrowed element data of one tensor (bool as Rust `bool` bytes).
#[derive(Debug, Clone, Copy)]
pub enum DataRef<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
    Bool(&'a [bool]),
}

/// A borrowed input tensor: its row-major data and its shape.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub shape: &'a [usize],
    pub data: DataRef<'a>,
}

/// A caller-owned output buffer of one element type.
#[derive(Debug)]
pub enum DataMut<'a> {
    F32(&'a mut [f32]),
    I64(&'a mut [i64]),
    Bool(&'a mut [bool]),
}

impl DataRef<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            DataRef::F32(_) => DType::F32,
            DataRef::I64(_) => DType::I64,
            DataRef::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            DataRef::F32(v) => v.len(),
            DataRef::I64(v) => v.len(),
            DataRef::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn as_ptr(&self) -> *const u8 {
        match self {
            DataRef::F32(v) => v.as_ptr() as *const u8,
            DataRef::I64(v) => v.as_ptr() as *const u8,
            DataRef::Bool(v) => v.as_ptr() as *const u8,
        }
    }
}

impl<'a> From<&'a TensorData> for DataRef<'a> {
    fn from(d: &'a TensorData) -> Self {
        match d {
            TensorData::F32(v) => DataRef::F32(v),
            TensorData::I64(v) => DataRef::I64(v),
            TensorData::Bool(v) => DataRef::Bool(v),
        }
    }
}

impl<'a> From<&'a Tensor> for TensorRef<'a> {
    fn from(t: &'a Tensor) -> Self {
        TensorRef { shape: t.shape(), data: DataRef::from(t.data()) }
    }
}

impl DataMut<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            DataMut::F32(_) => DType::F32,
            DataMut::I64(_) => DType::I64,
            DataMut::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            DataMut::F32(v) => v.len(),
            DataMut::I64(v) => v.len(),
            DataMut::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn as_mut_ptr(&mut self) -> *mut u8 {
        match self {
            DataMut::F32(v) => v.as_mut_ptr() as *mut u8,
            DataMut::I64(v) => v.as_mut_ptr() as *mut u8,
            DataMut::Bool(v) => v.as_mut_ptr() as *mut u8,
        }
    }
}

impl<'a> From<&'a mut TensorData> for DataMut<'a> {
    fn from(d: &'a mut TensorData) -> Self {
        match d {
            TensorData::F32(v) => DataMut::F32(v),
            TensorData::I64(v) => DataMut::I64(v),
            TensorData::Bool(v) => DataMut::Bool(v),
        }
    }
}

/// Bytes of a step's arguments.
fn step_bytes(plan: &Lowered, step: &crate::lower::Step) -> usize {
    step.args
        .iter()
        .map(|p| match *p {
            Place::Buf(b) => plan.buffers[b],
            Place::Weight(w) => plan.weights[w].bytes(),
            Place::Input(i) => {
                let ty = &plan.input_types[i];
                ty.num_elements() * crate::lower::elem_bytes(ty.dtype)
            }
        })
        .sum()
}

/// Outputs whose arena buffer can be the caller's buffer for a whole run, as (output index,
/// buffer): f32/i64 outputs (bool ones are f32 in the arena) held in an arena buffer of exactly
/// the output's size that no other output shares. Every step reaches a buffer through its
/// `Place`, so redirecting the buffer redirects every write and read of it; the arena plan only
/// ever overlaps it with buffers dead before its first write, which stay in the arena.
fn direct_outputs(plan: &Lowered) -> Vec<(usize, usize)> {
    let mut direct = Vec::new();
    for (j, (p, ty)) in plan.outputs.iter().enumerate() {
        let Place::Buf(b) = *p else { continue };
        let shared = plan.outputs.iter().filter(|(q, _)| *q == Place::Buf(b)).count() > 1;
        let exact = plan.buffers[b] == ty.num_elements() * crate::lower::elem_bytes(ty.dtype);
        if ty.dtype != DType::Bool && exact && !shared && ty.num_elements() > 0 {
            direct.push((j, b));
        }
    }
    direct
}
