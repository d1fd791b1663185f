//! Scheduling and lowering: groups the graph's ops into kernels and plan steps, in topological
//! order, and records which buffer each step reads and writes. This file holds the plan being
//! built (`Ctx`), fusion grouping and the walk over the graph; each op is lowered by the file of
//! its IR family (`kiln_ir::ops::family`): elementwise, linalg, conv (also Resize), pool, norm, reduce,
//! movement, index (gather/scatter, sorts and scans), and attention for the fused ops the optimizer
//! introduces.
//!
//! - Fusion: elementwise ops (Unary, Binary, Where, Cast to bool) and the per-channel affine norms
//!   (BatchNormalization, UnifiedNorm) fuse into one generated loop whenever every user of an
//!   intermediate is inside the group and the intermediate is not a graph output. Each group is
//!   rooted at its last op; its other members are never materialised.
//! - GEMM epilogues: a fused group that reads a MatMul/Gemm result elementwise right after it
//!   runs inside the GEMM step, per row block, while the block is in cache.
//! - In place: a fused kernel writes its result over a same-shaped operand buffer that dies with
//!   it (see `in_place_leaf`).
//! - Views: Identity, Reshape, Flatten, Squeeze, Unsqueeze and same-representation casts cost
//!   nothing: the output names the input's buffer.
//! - Everything else is one step:
//!   - a generated row kernel: Softmax, LogSoftmax (a non-innermost axis is copied to rows and
//!     back), LayerNorm and RMSNorm (a broadcast scale or bias is expanded to the normalized
//!     shape: at compile time for a weight, by a copy step otherwise), GroupNorm, InstanceNorm, PowerNorm, EvoNormS0/B0, f32 Reduce* (one
//!     kernel per block of reduced axes);
//!   - RegionNorm as one generated kernel per channel (`kernels::region`);
//!   - i64 Binary ops, Where on i64 values and i64 ReduceSum/ReduceMax as scalar generated
//!     kernels (`kernels::int`);
//!   - MaskedSoftmax as five generated kernels; Attention as one step that runs, per block of
//!     query rows, GEMM + bias kernel + softmax row kernel + GEMM in an L2-sized scratch block
//!     (`AttentionSpec`);
//!   - a GEMM: kiln's packed sgemm (`crate::gemm`) when B is a weight, kiln's micro-kernels
//!     with B packed per call for two activations (a Transpose read only by such products takes
//!     no step: they read its input through strides), else the `gemm` crate (narrow products,
//!     Conv via a Rust im2col); leading dims of A fold into M when B is 2-D;
//!   - a Rust copy loop: Transpose, Slice, Expand, Split, Concat, Pad, nearest Resize through
//!     one table-driven copy (Tile too); Gather; casts to or from i64;
//!   - a Rust host step ([`IndexStep`], `lower/index.rs`): GatherElements, GatherND, ScatterND,
//!     ScatterElements, ArgMax/ArgMin, CumSum, TopK (index out of range: a run-time error).
//! - Evaluation errors the reference raises at run time (i64 division by zero, a negative i64
//!   Pow exponent, i64 ReduceSum overflow, a RegionNorm mask value other than 0/1, Gather index
//!   out of range) are raised by the JIT too: checked kernels write an error cell that the
//!   executor turns into an error ([`StepKind::Checked`]).
//! - Every op of the IR, in every form the IR's checks admit, is lowered; nothing falls back to
//!   the interpreter. The IR's Conv is 2-D (rank-4 NCHW) only, so 1-D and 3-D convolution never
//!   reach the JIT (they are refused when the model is read).
//!
//! Storage inside the arena: f32 as f32, bool as f32 0.0/1.0, i64 as i64.

use crate::host::{AxisCopy, Convert, GatherSpec, GemmCall, Im2Col, IndexStep, PAD};
use crate::jit::Jit;
use crate::kernels::elementwise::{self as elementwise_kernels, Expr, Fused};
use crate::kernels::int::{self, IntOp};
use crate::kernels::rows::{self, SoftmaxAlgo};
use kiln_ir::ops::{Family, family, normalize_axis};
use kiln_ir::tensor::strides;
use kiln_ir::{DType, Error, Graph, NodeId, NodeKind, Op, PadMode, ReduceKind, TensorType, Value};
use std::collections::{HashMap, HashSet};

mod alias;
pub(crate) use alias::alias_root;
mod attention;
mod conv;
mod elementwise;
mod index;
mod linalg;
mod movement;
mod norm;
mod pool;
mod reduce;

use elementwise::lower_fused;
use movement::{broadcast_copy, copy_step, copy_to_contiguous};

pub use attention::AttentionSpec;
#[cfg(test)]
pub(crate) use conv::{conv_parts, pad_copy, resize_copy};
#[cfg(test)]
pub(crate) use linalg::{gemm_parts, matmul_parts};

/// Where a tensor lives at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    /// Arena buffer (index into `Lowered::buffers`).
    Buf(usize),
    Weight(usize),
    Input(usize),
}

#[derive(Debug, Clone)]
pub enum StepKind {
    /// Generated kernel `func` over `rows` rows; `elems` is the total element count (to decide
    /// whether splitting across threads pays).
    Kernel { func: usize, rows: usize, elems: usize },
    /// A kernel that can raise an evaluation error: its last argument is an 8-byte error cell
    /// that the executor zeroes before the kernel and reads after it; non-zero fails the run
    /// with `error`.
    Checked { func: usize, rows: usize, elems: usize, error: String },
    /// One strided copy per write (args: writes…, then the single source).
    Copies(Vec<AxisCopy>),
    /// args: [out, data, indices].
    Gather(GatherSpec),
    /// args: [dst, src].
    Convert(Convert, usize),
    /// A bool graph input (Rust `bool` bytes) to f32 0/1; args: [dst, input].
    BoolInput(usize),
    /// args: [out, a, b] or [out, a, b, c]. `units` are (a_off, b_off, d_off, m_lo, m_hi) in
    /// elements; `c_fill` broadcasts C into out first (Gemm's bias).
    ///
    /// `epilogue`: a fused elementwise kernel (func, index of its first arg in `args`) applied to
    /// each unit's rows right after the GEMM wrote them, while they are in cache; its rows are
    /// the output's matrix rows (batch·M).
    ///
    /// `packed`: B is a weight packed at compile time (`crate::gemm`); the step has one batch,
    /// runs kiln's own sgemm, and never reads `args[2]` (whose plain copy may be dropped).
    MatMul {
        call: GemmCall,
        units: Vec<[usize; 5]>,
        c_fill: Option<AxisCopy>,
        epilogue: Option<(usize, usize)>,
        packed: Option<std::sync::Arc<crate::gemm::PackedB>>,
    },
    /// args: [out, col scratch, x, w] or [.., bias].
    Conv(ConvSpec),
    /// Depthwise convolution (see [`crate::window::DepthwiseSpec`]); args: [out, x, w] or
    /// [.., bias], then the epilogue's. `epilogue` as MatMul's, over the output's rows of OW,
    /// applied to each (image, channel) plane right after it is written.
    Depthwise { spec: std::sync::Arc<crate::window::DepthwiseSpec>, epilogue: Option<(usize, usize)> },
    /// Dense convolution on weights packed at compile time (see [`crate::gemm::conv`]); args:
    /// [out, x, w] or [.., bias] (`w` never read), then the epilogue's. `epilogue` as
    /// Depthwise's, applied to each block's channels × output rows right after they are final.
    PackedConv { spec: std::sync::Arc<crate::gemm::conv::PackedConv>, epilogue: Option<(usize, usize)> },
    /// Blocked attention (see [`AttentionSpec`]); args: [out, score scratch, q, kt, v] or
    /// [.., bias].
    Attention(std::sync::Arc<AttentionSpec>),
    /// A gather/scatter, along-axis scan or sort in Rust (see [`IndexStep`]); args: its outputs,
    /// then its inputs.
    Index(Box<IndexStep>),
    /// A Rust host kernel over independent work units (pooling, ConvTranspose, interpolating
    /// Resize: `crate::spatial`); args as the kernel documents.
    Host(std::sync::Arc<dyn crate::spatial::HostKernel>),
}

#[derive(Debug, Clone)]
pub struct ConvSpec {
    pub n: usize,
    pub groups: usize,
    pub m_per_group: usize,
    pub im2col: Im2Col,
    pub bias: bool,
}

#[derive(Debug, Clone)]
pub struct Step {
    /// Node name (for fused groups, the root's) and what runs.
    pub label: String,
    pub kind: StepKind,
    pub args: Vec<Place>,
    pub n_writes: usize,
}

/// A weight's data in arena representation.
#[derive(Debug, Clone)]
pub enum WeightData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    /// The model's own f32 or i64 tensor, shared rather than copied, so that a compiled model
    /// does not hold its weights twice (issue 15).
    Shared(std::sync::Arc<kiln_ir::Tensor>),
    /// None left: the weight became the packed operand of the one GEMM that reads it (issue 15:
    /// it is packed in place rather than held twice). A step may name it but never reads it.
    Packed,
}

impl Step {
    /// Bytes of the index tables the step's copies hold, and of its packed weight.
    pub fn table_bytes(&self) -> usize {
        let tables = |c: &AxisCopy| c.src_tab.iter().map(|t| t.len() * 8).sum::<usize>();
        match &self.kind {
            StepKind::Copies(copies) => copies.iter().map(tables).sum(),
            StepKind::MatMul { c_fill, packed, .. } => {
                c_fill.as_ref().map_or(0, tables) + packed.as_ref().map_or(0, |p| p.bytes())
            }
            StepKind::PackedConv { spec, .. } => spec.bytes(),
            _ => 0,
        }
    }
}

impl WeightData {
    pub fn bytes(&self) -> usize {
        match self {
            WeightData::F32(v) => v.len() * 4,
            WeightData::I64(v) => v.len() * 8,
            WeightData::Shared(t) => match t.data() {
                kiln_ir::TensorData::F32(v) => v.len() * 4,
                kiln_ir::TensorData::I64(v) => v.len() * 8,
                kiln_ir::TensorData::Bool(v) => v.len(),
            },
            WeightData::Packed => 0,
        }
    }

    /// The data if it is f32.
    pub fn f32(&self) -> Option<&[f32]> {
        match self {
            WeightData::F32(v) => Some(v),
            WeightData::Shared(t) => match t.data() {
                kiln_ir::TensorData::F32(v) => Some(v),
                _ => None,
            },
            WeightData::I64(_) | WeightData::Packed => None,
        }
    }

    /// Where the data starts, for the executor.
    pub fn as_ptr(&self) -> *const u8 {
        match self {
            WeightData::F32(v) => v.as_ptr() as *const u8,
            WeightData::I64(v) => v.as_ptr() as *const u8,
            WeightData::Shared(t) => match t.data() {
                kiln_ir::TensorData::F32(v) => v.as_ptr() as *const u8,
                kiln_ir::TensorData::I64(v) => v.as_ptr() as *const u8,
                kiln_ir::TensorData::Bool(v) => v.as_ptr() as *const u8,
            },
            // Never dereferenced (see `Packed`): aligned and non-null like an empty vector's.
            WeightData::Packed => std::ptr::NonNull::<f32>::dangling().as_ptr() as *const u8,
        }
    }
}

impl Lowered {
    /// The weight data the plan holds, as (address, bytes) of each buffer: plain weights (one
    /// shared with the model has the model's address) and packed GEMM operands, each once.
    pub fn weight_buffers(&self) -> Vec<(usize, usize)> {
        let mut buffers: Vec<(usize, usize)> =
            self.weights.iter().filter(|w| w.bytes() > 0).map(|w| (w.as_ptr() as usize, w.bytes())).collect();
        for step in &self.steps {
            if let StepKind::MatMul { packed: Some(p), .. } = &step.kind {
                buffers.push((std::sync::Arc::as_ptr(p) as usize, p.bytes()));
            }
        }
        buffers.sort_unstable();
        buffers.dedup();
        buffers
    }
}

pub struct Lowered {
    pub steps: Vec<Step>,
    /// Byte size of each arena buffer.
    pub buffers: Vec<usize>,
    pub weights: Vec<WeightData>,
    pub input_types: Vec<TensorType>,
    pub outputs: Vec<(Place, TensorType)>,
    /// Kernel names and what they came from, in function order.
    pub kernel_labels: Vec<String>,
    /// The graph's name, for errors at run time.
    pub model_name: String,
    /// Per buffer: `Some((c, offset))` when it is no buffer of its own but the bytes of buffer
    /// `c` from `offset` (a Concat input written in place, see `alias`); `c` may be an alias in
    /// turn (chains end at a buffer of its own).
    pub aliases: Vec<Option<(usize, usize)>>,
}

pub fn elem_bytes(d: DType) -> usize {
    match d {
        DType::I64 => 8,
        DType::F32 | DType::Bool => 4,
    }
}

/// A weight's data in arena representation: f32 and i64 tensors shared with the model, bool ones
/// widened into a copy (`Err(bytes)` when it cannot be allocated: an error for the caller to name,
/// not an abort).
fn copy_weight(tensor: &std::sync::Arc<kiln_ir::Tensor>) -> Result<WeightData, usize> {
    fn copy<T: Copy, U>(src: &[T], f: impl Fn(T) -> U) -> Result<Vec<U>, usize> {
        let mut v = Vec::new();
        v.try_reserve_exact(src.len()).map_err(|_| src.len() * std::mem::size_of::<U>())?;
        v.extend(src.iter().map(|&x| f(x)));
        Ok(v)
    }
    Ok(match tensor.data() {
        kiln_ir::TensorData::F32(_) | kiln_ir::TensorData::I64(_) => WeightData::Shared(std::sync::Arc::clone(tensor)),
        kiln_ir::TensorData::Bool(v) => WeightData::F32(copy(v, |b| b as u8 as f32)?),
    })
}

/// A form of an op that the IR's type and shape checks rule out before lowering (so reaching it
/// is an internal error, not a gap): names the op, the node and what was wrong.
fn excluded(op: &str, node: &str, why: &str) -> Error {
    internal(node, format!("{op} with {why}, which the IR's checks exclude"))
}

fn internal(node: &str, msg: impl Into<String>) -> Error {
    Error::new(format!("node '{node}'"), format!("internal JIT error: {}", msg.into()))
}

/// The element type an op output has in the arena is the IR type; these ops keep representation.
fn is_view(graph: &Graph, id: NodeId, op: &Op) -> bool {
    match op {
        Op::Identity | Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => true,
        Op::Cast { to } => {
            let from = graph.value_type(graph.node_inputs(id)[0]).dtype;
            from == *to || (from == DType::Bool && *to == DType::F32)
        }
        _ => false,
    }
}

/// Ops that can join a fused elementwise group (given f32/bool operands).
fn is_fusable(graph: &Graph, id: NodeId) -> bool {
    let Some(op) = graph.node(id).op() else { return false };
    let ins = graph.node_inputs(id);
    let f32ish = |v: &Value| matches!(graph.value_type(*v).dtype, DType::F32 | DType::Bool);
    match op {
        Op::Unary(_) | Op::Binary(_) | Op::Where => ins.iter().all(f32ish),
        Op::Cast { to: DType::Bool } => graph.value_type(ins[0]).dtype == DType::F32,
        Op::BatchNormalization { .. } => graph.value_type(ins[0]).rank() >= 2 && ins.iter().all(f32ish),
        Op::UnifiedNorm { .. } => ins.iter().all(f32ish),
        _ => false,
    }
}

/// Most ops fused into one kernel, so that one generated function stays a bounded size (a
/// 100k-op chain as one function spent 25 s in Cranelift, 2.5× a 50k-op one, and printing its
/// CLIF took 9 s); a kernel this long spends its time in arithmetic, not in the one extra store
/// and load a split costs.
const MAX_GROUP: usize = 1024;

/// Fused groups: member → root.
///
/// Roots are taken in reverse topological order; a group grows from its root through producers
/// whose every user is already in the group. Candidates are visited latest first (a max-heap on
/// topological position): all users of a producer come after it, so when it is popped every user
/// that will ever join has joined, and one look at its users decides. Each producer is looked at
/// once per user that joins a group, so the walk is O(E log V) (a rescan to a fixed point was
/// quadratic: a 20k-node chain took a minute).
///
/// A transcendental (an op with a map kernel) whose value the group would broadcast at least
/// twice over does not join: inside the group it would be computed once per output element —
/// a squeeze-excite block's Sigmoid of one value per channel, times every pixel — where on its
/// own it runs once per value.
fn fusion_groups(graph: &Graph, order: &[NodeId]) -> HashMap<NodeId, NodeId> {
    let outputs: HashSet<Value> = graph.outputs().iter().copied().collect();
    let position: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut root_of: HashMap<NodeId, NodeId> = HashMap::new();
    for &id in order.iter().rev() {
        if root_of.contains_key(&id) || !is_fusable(graph, id) {
            continue;
        }
        root_of.insert(id, id);
        let root_elems = graph.node(id).outputs.first().map_or(0, |o| o.ty.num_elements());
        let mut group: HashSet<NodeId> = HashSet::from([id]);
        let mut queued: HashSet<NodeId> = HashSet::new();
        let mut heap: std::collections::BinaryHeap<(usize, NodeId)> = std::collections::BinaryHeap::new();
        let mut push_producers = |m: NodeId, heap: &mut std::collections::BinaryHeap<(usize, NodeId)>| {
            for v in graph.node_inputs(m) {
                if let Some(&pos) = position.get(&v.node)
                    && queued.insert(v.node)
                {
                    heap.push((pos, v.node));
                }
            }
        };
        push_producers(id, &mut heap);
        while let Some((_, p)) = heap.pop() {
            if group.len() >= MAX_GROUP {
                // The rest becomes other groups: one generated function stays a bounded size.
                break;
            }
            if group.contains(&p) || root_of.contains_key(&p) || !is_fusable(graph, p) {
                continue;
            }
            let node = graph.node(p);
            let broadcast = node.outputs.first().is_some_and(|o| 2 * o.ty.num_elements() <= root_elems);
            if broadcast && matches!(node.op(), Some(Op::Unary(u)) if crate::simd::MapOp::of(*u).is_some()) {
                continue;
            }
            // Every value p makes must be private to the group: it is never materialised.
            let joins = (0..graph.node(p).outputs.len()).all(|port| {
                let v = Value { node: p, port };
                !outputs.contains(&v) && graph.users(v).iter().all(|(u, _)| group.contains(u))
            });
            if joins {
                group.insert(p);
                root_of.insert(p, id);
                push_producers(p, &mut heap);
            }
        }
    }
    root_of
}

struct Ctx<'g> {
    graph: &'g Graph,
    jit: &'g mut Jit,
    softmax: SoftmaxAlgo,
    /// Work splits are planned for this many threads (the executor's pool size).
    threads: usize,
    /// The instruction set hand-written host kernels use (already what this CPU supports).
    isa: crate::Isa,
    place: HashMap<Value, Place>,
    /// The graph's outputs, for O(1) membership tests.
    outputs: HashSet<Value>,
    /// Per arena buffer: how many reads by op nodes the values stored in it have in all, and
    /// whether one of those values is a graph output. A buffer whose reads are all by one fused
    /// group dies with it ([`in_place_leaf`]).
    buf_reads: Vec<(usize, bool)>,
    buffers: Vec<usize>,
    steps: Vec<Step>,
    kernel_labels: Vec<String>,
    /// The graph's weights, then constants the plan adds (i64 reduction offsets, expanded norm
    /// parameters).
    weights: Vec<WeightData>,
    /// Concat inputs that are contiguous blocks of the output (candidates for `alias`).
    concat_parts: Vec<alias::ConcatPart>,
}

impl Ctx<'_> {
    fn new_buf(&mut self, ty: &TensorType) -> Place {
        self.buffers.push(ty.num_elements() * elem_bytes(ty.dtype));
        self.buf_reads.push((0, false));
        Place::Buf(self.buffers.len() - 1)
    }

    fn out_buf(&mut self, v: Value) -> Place {
        let ty = self.graph.value_type(v).clone();
        let p = self.new_buf(&ty);
        self.bind(v, p);
        p
    }

    /// Records that value `v` lives at `p`.
    fn bind(&mut self, v: Value, p: Place) {
        self.place.insert(v, p);
        if let Place::Buf(b) = p {
            self.buf_reads[b].0 += self.graph.users(v).len();
            self.buf_reads[b].1 |= self.outputs.contains(&v);
        }
    }

    fn input(&self, v: Value, node: &str) -> Result<Place, Error> {
        self.place.get(&v).copied().ok_or_else(|| internal(node, "reads a value with no buffer"))
    }

    fn kernel_step(&mut self, label: &str, kname: String, rows: usize, elems: usize, args: Vec<Place>) {
        self.kernel_labels.push(kname);
        let func = self.kernel_labels.len() - 1;
        self.steps.push(Step {
            label: label.to_string(),
            kind: StepKind::Kernel { func, rows, elems },
            args,
            n_writes: 1,
        });
    }

    /// A checked kernel step (see [`StepKind::Checked`]): `args` get a fresh error cell appended.
    fn checked_step(
        &mut self,
        label: &str,
        kname: String,
        rows: usize,
        elems: usize,
        mut args: Vec<Place>,
        error: &str,
    ) {
        args.push(self.new_buf(&TensorType::new(DType::I64, [1])));
        self.kernel_labels.push(kname);
        let func = self.kernel_labels.len() - 1;
        self.steps.push(Step {
            label: label.to_string(),
            kind: StepKind::Checked { func, rows, elems, error: error.to_string() },
            args,
            n_writes: 1,
        });
    }

    /// A constant i64 table, readable by kernels like a weight.
    fn table(&mut self, data: Vec<i64>) -> Place {
        self.weights.push(WeightData::I64(data));
        Place::Weight(self.weights.len() - 1)
    }

    /// The f32 data of graph weight `w`, taken out of the plan (leaving [`WeightData::Packed`]) for
    /// its one reader to consume: only when exactly one op input reads it, it is no graph output,
    /// and the plan holds the only reference to it (the caller gave the weights up, see
    /// `kiln_codegen::compile_owned`). Otherwise `None`, and the weight stays as it is.
    fn take_sole_weight(&mut self, w: usize) -> Option<Vec<f32>> {
        let &id = self.graph.weights().get(w)?;
        let v = Value { node: id, port: 0 };
        if self.graph.users(v).len() != 1 || self.outputs.contains(&v) {
            return None;
        }
        let WeightData::Shared(t) = &self.weights[w] else { return None };
        if std::sync::Arc::strong_count(t) != 1 || t.as_f32().is_none() {
            return None;
        }
        let WeightData::Shared(t) = std::mem::replace(&mut self.weights[w], WeightData::Packed) else { return None };
        match std::sync::Arc::try_unwrap(t) {
            Ok(tensor) => match tensor.into_data() {
                kiln_ir::TensorData::F32(data) => Some(data),
                // f32 (checked above).
                _ => None,
            },
            Err(t) => {
                self.weights[w] = WeightData::Shared(t);
                None
            }
        }
    }

    fn kname(&self, node: &str, what: &str) -> String {
        let clean: String = node.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        format!("{what}_{clean}")
    }
}

/// The plan's data of each weight the graph declares, in declaration order (the `weights` of
/// [`lower`]). `weights` must match the graph (checked by the caller).
pub fn weight_data(graph: &Graph, weights: &kiln_ir::Weights) -> Result<Vec<WeightData>, Error> {
    graph
        .weights()
        .iter()
        .map(|&id| {
            let name = &graph.node(id).name;
            let t = weights.get(name).ok_or_else(|| Error::new(format!("weight '{name}'"), "has no data"))?;
            copy_weight(t).map_err(|bytes| {
                Error::new(
                    format!("model '{}', weight '{name}'", graph.name()),
                    format!("cannot allocate {bytes} bytes for its copy"),
                )
            })
        })
        .collect()
}

/// Lowers the graph; `weights` is [`weight_data`]'s.
///
/// `memory_cap` bounds what lowering itself allocates: before each op is lowered, the weights,
/// the plan's tables so far and the op's own output and tables must fit in it (an Expand to 2³¹
/// floats built a 16 GiB copy table before the plan's total could be checked).
pub fn lower(
    graph: &Graph,
    weights: Vec<WeightData>,
    jit: &mut Jit,
    softmax: SoftmaxAlgo,
    threads: usize,
    memory_cap: u64,
    isa: crate::Isa,
) -> Result<Lowered, Error> {
    let mut cx = Ctx {
        graph,
        jit,
        softmax,
        threads,
        isa,
        place: HashMap::new(),
        outputs: graph.outputs().iter().copied().collect(),
        buf_reads: Vec::new(),
        buffers: Vec::new(),
        steps: Vec::new(),
        kernel_labels: Vec::new(),
        weights: Vec::new(),
        concat_parts: Vec::new(),
    };
    if weights.len() != graph.weights().len() {
        return Err(internal(graph.name(), "the weights do not match the graph"));
    }
    cx.weights = weights;
    for (i, &id) in graph.weights().iter().enumerate() {
        cx.bind(Value { node: id, port: 0 }, Place::Weight(i));
    }
    let mut input_types = Vec::new();
    for (i, &id) in graph.inputs().iter().enumerate() {
        let ty = graph.node(id).outputs[0].ty.clone();
        let v = Value { node: id, port: 0 };
        if ty.dtype == DType::Bool {
            // Bool inputs are converted to the arena's f32 0/1 representation by the executor
            // before the first step; they get an arena buffer defined at step 0.
            let p = cx.out_buf(v);
            cx.steps.push(Step {
                label: format!("input '{}' (bool → f32)", graph.node(id).name),
                kind: StepKind::BoolInput(ty.num_elements()),
                args: vec![p, Place::Input(i)],
                n_writes: 1,
            });
        } else {
            cx.bind(v, Place::Input(i));
        }
        input_types.push(ty);
    }

    let order = graph.op_nodes();
    let root_of = fusion_groups(graph, &order);
    // Members of each group in topological order (the root last).
    let mut members_of: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    for &id in &order {
        if let Some(&root) = root_of.get(&id) {
            members_of.entry(root).or_default().push(id);
        }
    }
    let weight_bytes: u64 = cx.weights.iter().map(|w| w.bytes() as u64).sum();
    let mut table_bytes: u64 = 0;
    for &id in &order {
        let node = graph.node(id);
        let NodeKind::Op(op) = &node.kind else { continue };
        if root_of.get(&id).is_none_or(|&r| r == id) && !is_view(graph, id, op) {
            // The op's output gets a buffer (or shares one of its size), and a copy step a table
            // of one i64 per output index along each axis.
            let need: u64 = node
                .outputs
                .iter()
                .map(|o| {
                    let bytes = (o.ty.num_elements() * elem_bytes(o.ty.dtype)) as u64;
                    bytes + 8 * o.ty.shape.iter().sum::<usize>() as u64
                })
                .sum();
            let total = weight_bytes.saturating_add(table_bytes).saturating_add(need);
            if total > memory_cap {
                return Err(Error::new(
                    format!("model '{}', node '{}'", graph.name(), node.name),
                    format!(
                        "needs {total} bytes ({:.2} GiB) with the weights and the plan so far, above the memory \
                         cap of {memory_cap} bytes; raise the cap (kiln --memory-cap, Options::memory_cap) to run it",
                        total as f64 / (1u64 << 30) as f64
                    ),
                ));
            }
        }
        let steps_before = cx.steps.len();
        if let Some(&root) = root_of.get(&id) {
            if root == id {
                let members = members_of.remove(&id).unwrap_or_default();
                // A scale only MatMuls read takes no step: they multiply by it (alpha).
                if !(members.len() == 1 && linalg::scale_folds(&cx, id).is_some()) {
                    lower_fused(&mut cx, id, &members)?;
                }
            }
        } else {
            lower_op(&mut cx, id, op)?;
        }
        table_bytes += cx.steps[steps_before.min(cx.steps.len())..].iter().map(|s| s.table_bytes() as u64).sum::<u64>();
    }

    let mut outputs = Vec::new();
    for &v in graph.outputs() {
        let p = cx.input(v, graph.value_name(v))?;
        outputs.push((p, graph.value_type(v).clone()));
    }
    linalg::drop_packed_copies(&mut cx.weights, &cx.steps, &outputs)?;
    let mut aliases = alias::concat_in_place(&mut cx.steps, &mut cx.buffers, &outputs, &cx.concat_parts);
    alias::copy_views(&mut cx.steps, &cx.buffers, &outputs, &mut aliases);
    Ok(Lowered {
        steps: cx.steps,
        buffers: cx.buffers,
        weights: cx.weights,
        input_types,
        outputs,
        kernel_labels: cx.kernel_labels,
        model_name: graph.name().to_string(),
        aliases,
    })
}

/// Lowers one op that is not a fused group member, by family (the families of `kiln_ir::ops`).
fn lower_op(cx: &mut Ctx, id: NodeId, op: &Op) -> Result<(), Error> {
    let graph = cx.graph;
    let node = graph.node(id);
    let ins = graph.node_inputs(id);
    if is_view(graph, id, op) {
        let p = cx.input(ins[0], &node.name)?;
        cx.bind(Value { node: id, port: 0 }, p);
        return Ok(());
    }
    if linalg::transpose_folds(cx, id) {
        // Every reader (a MatMul, or an Attention reading it as Q, Kt or V) reads the input through
        // strides: no step, no buffer.
        return Ok(());
    }
    match family(op) {
        Family::Elementwise => elementwise::lower(cx, id, op),
        Family::Linalg => linalg::lower(cx, id, op),
        Family::Conv | Family::Resize => conv::lower(cx, id, op),
        Family::Pool => pool::lower(cx, id, op),
        Family::Norm => norm::lower(cx, id, op),
        Family::Reduce => reduce::lower(cx, id, op),
        Family::Movement => movement::lower(cx, id, op),
        Family::Index => index::lower(cx, id, op),
        Family::Fused => attention::lower(cx, id, op),
    }
}
