//! Scheduling and lowering: groups the graph's ops into kernels and plan steps, in topological
//! order, and records which buffer each step reads and writes.
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
//!   - a GEMM call into the `gemm` crate (MatMul, Gemm, Conv via a Rust im2col);
//!   - a Rust copy loop: Transpose, Slice, Expand, Split, Concat, Pad, nearest Resize through
//!     one table-driven copy; Gather; casts to or from i64.
//! - Evaluation errors the reference raises at run time (i64 division by zero, a negative i64
//!   Pow exponent, i64 ReduceSum overflow, a RegionNorm mask value other than 0/1, Gather index
//!   out of range) are raised by the JIT too: checked kernels write an error cell that the
//!   executor turns into an error ([`StepKind::Checked`]).
//! - Every op of the IR, in every form the IR's checks admit, is lowered; nothing falls back to
//!   the interpreter. The IR's Conv is 2-D (rank-4 NCHW) only, so 1-D and 3-D convolution never
//!   reach the JIT (they are refused when the model is read).
//!
//! Storage inside the arena: f32 as f32, bool as f32 0.0/1.0, i64 as i64.

use crate::host::{AxisCopy, Convert, GatherSpec, GemmCall, Im2Col, PAD};
use crate::jit::Jit;
use crate::kernels::elementwise::{self, Expr, Fused};
use crate::kernels::int::{self, IntOp};
use crate::kernels::rows::{self, SoftmaxAlgo};
use kiln_ir::ops::normalize_axis;
use kiln_ir::tensor::strides;
use kiln_ir::{DType, Error, Graph, NodeId, NodeKind, Op, PadMode, ReduceKind, TensorType, Value};
use std::collections::{HashMap, HashSet};

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
    MatMul { call: GemmCall, units: Vec<[usize; 5]>, c_fill: Option<AxisCopy>, epilogue: Option<(usize, usize)> },
    /// args: [out, col scratch, x, w] or [.., bias].
    Conv(ConvSpec),
    /// Blocked attention (see [`AttentionSpec`]); args: [out, score scratch, q, kt, v] or
    /// [.., bias].
    Attention(std::sync::Arc<AttentionSpec>),
}

/// Attention one block of query rows at a time: per (output batch, block of `block` query rows),
/// S = scale·Q_blk·Kt (GEMM into the worker's own scratch slot), S += bias (generated kernel),
/// E = exp(S − rowmax S) in place and 1/ΣE per row (generated row kernel, one exp per score:
/// `rows::softmax_exp`), out_blk = E·V (GEMM), each output row ·= its 1/ΣE (dv multiplies per row
/// instead of Lk for normalising the probabilities). The full score matrix
/// never exists; a block is sized to stay in L2 while the three passes read it.
#[derive(Debug, Clone)]
pub struct AttentionSpec {
    pub lq: usize,
    pub lk: usize,
    pub d: usize,
    pub dv: usize,
    /// Query rows per block (≥ 1, ≤ lq); fixed at compile time, independent of the thread count,
    /// so results do not depend on how blocks are spread over threads.
    pub block: usize,
    pub scale: f32,
    /// Per output batch: element offsets of its Q, Kt, V and bias matrices (batch broadcast
    /// resolved); the output matrix of batch i is at i·lq·dv.
    pub batches: Vec<[usize; 4]>,
    /// Elements from one query row of the bias to the next (0 when the bias broadcasts over rows).
    pub bias_row_stride: usize,
    /// Row stride of V in elements (dv, or 1 for a 1-D V).
    pub v_rs: usize,
    /// Generated kernels: S + bias over block rows (args [S, S, bias block]), and the softmax
    /// row kernel over rows of lk (args [S, S, row factors]).
    pub bias_kernel: Option<usize>,
    pub softmax_kernel: usize,
    /// Scratch slots (one per thread the plan was made for), each [`AttentionSpec::slot_len`]
    /// floats: the [block, lk] scores, then the block's `block` row factors 1/ΣE.
    pub slots: usize,
}

impl AttentionSpec {
    pub fn slot_len(block: usize, lk: usize) -> usize {
        block * lk + block
    }
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
}

impl Step {
    /// Bytes of the index tables the step's copies hold.
    pub fn table_bytes(&self) -> usize {
        let tables = |c: &AxisCopy| c.src_tab.iter().map(|t| t.len() * 8).sum::<usize>();
        match &self.kind {
            StepKind::Copies(copies) => copies.iter().map(tables).sum(),
            StepKind::MatMul { c_fill: Some(c), .. } => tables(c),
            _ => 0,
        }
    }
}

impl WeightData {
    pub fn bytes(&self) -> usize {
        match self {
            WeightData::F32(v) => v.len() * 4,
            WeightData::I64(v) => v.len() * 8,
        }
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
}

pub fn elem_bytes(d: DType) -> usize {
    match d {
        DType::I64 => 8,
        DType::F32 | DType::Bool => 4,
    }
}

/// A copy of a weight's data in arena representation; `Err(bytes)` when the copy cannot be
/// allocated (an error for the caller to name, not an abort).
fn copy_weight(data: &kiln_ir::TensorData) -> Result<WeightData, usize> {
    fn copy<T: Copy, U>(src: &[T], f: impl Fn(T) -> U) -> Result<Vec<U>, usize> {
        let mut v = Vec::new();
        v.try_reserve_exact(src.len()).map_err(|_| src.len() * std::mem::size_of::<U>())?;
        v.extend(src.iter().map(|&x| f(x)));
        Ok(v)
    }
    Ok(match data {
        kiln_ir::TensorData::F32(v) => WeightData::F32(copy(v, |x| x)?),
        kiln_ir::TensorData::I64(v) => WeightData::I64(copy(v, |x| x)?),
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
fn fusion_groups(graph: &Graph, order: &[NodeId]) -> HashMap<NodeId, NodeId> {
    let outputs: HashSet<Value> = graph.outputs().iter().copied().collect();
    let position: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut root_of: HashMap<NodeId, NodeId> = HashMap::new();
    for &id in order.iter().rev() {
        if root_of.contains_key(&id) || !is_fusable(graph, id) {
            continue;
        }
        root_of.insert(id, id);
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

    fn kname(&self, node: &str, what: &str) -> String {
        let clean: String = node.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        format!("{what}_{clean}")
    }
}

/// Lowers the graph. `weights` must match the graph (checked by the caller).
///
/// `memory_cap` bounds what lowering itself allocates: before each op is lowered, the copies of
/// the weights, the plan's tables so far and the op's own output and tables must fit in it (an
/// Expand to 2³¹ floats built a 16 GiB copy table before the plan's total could be checked).
pub fn lower(
    graph: &Graph,
    weights: &kiln_ir::Weights,
    jit: &mut Jit,
    softmax: SoftmaxAlgo,
    threads: usize,
    memory_cap: u64,
) -> Result<Lowered, Error> {
    let mut cx = Ctx {
        graph,
        jit,
        softmax,
        threads,
        place: HashMap::new(),
        outputs: graph.outputs().iter().copied().collect(),
        buf_reads: Vec::new(),
        buffers: Vec::new(),
        steps: Vec::new(),
        kernel_labels: Vec::new(),
        weights: Vec::new(),
    };
    for (i, &id) in graph.weights().iter().enumerate() {
        let name = &graph.node(id).name;
        let t = weights.get(name).ok_or_else(|| Error::new(format!("weight '{name}'"), "has no data"))?;
        let data = copy_weight(t.data()).map_err(|bytes| {
            Error::new(
                format!("model '{}', weight '{name}'", graph.name()),
                format!("cannot allocate {bytes} bytes for its copy"),
            )
        })?;
        cx.weights.push(data);
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
                lower_fused(&mut cx, id, &members)?;
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
    Ok(Lowered {
        steps: cx.steps,
        buffers: cx.buffers,
        weights: cx.weights,
        input_types,
        outputs,
        kernel_labels: cx.kernel_labels,
        model_name: graph.name().to_string(),
    })
}

fn lower_fused(cx: &mut Ctx, root: NodeId, members: &[NodeId]) -> Result<(), Error> {
    let graph = cx.graph;
    let root_name = graph.node(root).name.clone();
    let out_v = Value { node: root, port: 0 };
    let out_shape = graph.value_type(out_v).shape.clone();
    let member_set: HashSet<NodeId> = members.iter().copied().collect();
    // Leaves keyed by (value, shape as read): BatchNorm reads its [C] parameters as [C,1,…,1].
    let mut leaves: Vec<(Value, Vec<usize>)> = Vec::new();
    let mut nodes: Vec<Expr> = Vec::new();
    let mut index: HashMap<Value, usize> = HashMap::new();
    let mut leaf_index: HashMap<(Value, Vec<usize>), usize> = HashMap::new();
    let mut leaf_node = |v: Value, shape: Vec<usize>, nodes: &mut Vec<Expr>, leaves: &mut Vec<(Value, Vec<usize>)>| {
        *leaf_index.entry((v, shape.clone())).or_insert_with(|| {
            leaves.push((v, shape));
            nodes.push(Expr::Leaf(leaves.len() - 1));
            nodes.len() - 1
        })
    };
    for &m in members {
        let node = graph.node(m);
        let op = node.op().ok_or_else(|| internal(&node.name, "fused a non-op"))?;
        let ins = graph.node_inputs(m);
        let x_rank = graph.value_type(ins[0]).rank();
        let mut operand = |k: usize, nodes: &mut Vec<Expr>, leaves: &mut Vec<(Value, Vec<usize>)>| -> usize {
            let v = ins[k];
            if member_set.contains(&v.node) {
                return index[&v];
            }
            let mut shape = graph.value_type(v).shape.clone();
            match op {
                Op::BatchNormalization { .. } if k > 0 => shape.extend(std::iter::repeat_n(1, x_rank - 2)),
                Op::UnifiedNorm { axis, .. } if k > 0 => {
                    let a = normalize_axis(*axis, x_rank).unwrap_or(0);
                    shape.extend(std::iter::repeat_n(1, x_rank - 1 - a));
                }
                _ => {}
            }
            leaf_node(v, shape, nodes, leaves)
        };
        let push = |nodes: &mut Vec<Expr>, e: Expr| {
            nodes.push(e);
            nodes.len() - 1
        };
        let r = match op {
            Op::Unary(u) => {
                let a = operand(0, &mut nodes, &mut leaves);
                push(&mut nodes, Expr::Unary(*u, a))
            }
            Op::Binary(bop) => {
                let a = operand(0, &mut nodes, &mut leaves);
                let b = operand(1, &mut nodes, &mut leaves);
                push(&mut nodes, Expr::Binary(*bop, a, b))
            }
            Op::Where => {
                let c = operand(0, &mut nodes, &mut leaves);
                let a = operand(1, &mut nodes, &mut leaves);
                let b = operand(2, &mut nodes, &mut leaves);
                push(&mut nodes, Expr::Where(c, a, b))
            }
            Op::Cast { .. } => {
                let a = operand(0, &mut nodes, &mut leaves);
                push(&mut nodes, Expr::NonZero(a))
            }
            Op::BatchNormalization { epsilon } => {
                // (x − mean)·(scale/√(var + ε)) + bias
                let x = operand(0, &mut nodes, &mut leaves);
                let scale = operand(1, &mut nodes, &mut leaves);
                let bias = operand(2, &mut nodes, &mut leaves);
                let mean = operand(3, &mut nodes, &mut leaves);
                let var = operand(4, &mut nodes, &mut leaves);
                affine_norm(&mut nodes, x, scale, bias, Some(mean), var, *epsilon)
            }
            Op::UnifiedNorm { epsilon, .. } => {
                // scale·x/√(running_var + ε) + bias
                let x = operand(0, &mut nodes, &mut leaves);
                let scale = operand(1, &mut nodes, &mut leaves);
                let bias = operand(2, &mut nodes, &mut leaves);
                let var = operand(3, &mut nodes, &mut leaves);
                affine_norm(&mut nodes, x, scale, bias, None, var, *epsilon)
            }
            other => return Err(internal(&node.name, format!("{} is not fusable", other.name()))),
        };
        index.insert(Value { node: m, port: 0 }, r);
    }
    let leaf_shapes: Vec<Vec<usize>> = leaves.iter().map(|(_, s)| s.clone()).collect();
    for s in &leaf_shapes {
        if s.len() > out_shape.len()
            || kiln_ir::ops::broadcast::broadcast_shapes(s, &out_shape).ok().as_ref() != Some(&out_shape)
        {
            return Err(internal(&root_name, "fused operand does not broadcast to the result"));
        }
    }
    let fused = Fused { nodes, out_shape: out_shape.clone(), leaf_shapes };
    let kname = cx.kname(&root_name, "fused");
    let mut leaf_places = Vec::with_capacity(leaves.len());
    for (v, _) in &leaves {
        leaf_places.push(cx.input(*v, &root_name)?);
    }
    let epilogue_of = gemm_epilogue_target(cx, &leaves, &leaf_places, &out_shape, &member_set);
    let lay =
        elementwise::define_with(cx.jit, &kname, &fused, epilogue_of.is_some()).map_err(|e| internal(&root_name, e))?;
    let out_place = match in_place_leaf(cx, &leaves, &leaf_places, &out_shape, members) {
        Some(p) => {
            cx.bind(out_v, p);
            p
        }
        None => cx.out_buf(out_v),
    };
    let mut args = vec![out_place];
    args.extend(leaf_places);
    let elems = lay.rows() * lay.inner();
    let label = if members.len() > 1 {
        let names: Vec<&str> = members.iter().map(|&m| graph.node(m).name.as_str()).collect();
        format!("fused[{}]", names.join(", "))
    } else {
        root_name.clone()
    };
    if epilogue_of.is_some()
        && let Some(mut step) = cx.steps.pop()
    {
        if let StepKind::MatMul { call, units, epilogue, .. } = &mut step.kind {
            // The executor calls the kernel on GEMM rows [row0 + m0, row0 + m1) with row0 = d/n:
            // they must be exactly the kernel's rows, or the kernel writes past the output.
            let gemm_rows: usize = units.iter().map(|u| u[4] - u[3]).sum();
            let units_in_range =
                units.iter().all(|u| u[2] % call.n.max(1) == 0 && u[2] / call.n.max(1) + u[4] <= lay.rows());
            if lay.inner() != call.n || gemm_rows != lay.rows() || !units_in_range {
                return Err(internal(&root_name, "GEMM epilogue rows do not match the GEMM's rows"));
            }
            cx.kernel_labels.push(kname);
            *epilogue = Some((cx.kernel_labels.len() - 1, step.args.len()));
            step.args.extend(args);
            step.label = format!("{} + epilogue {label}", step.label);
            cx.steps.push(step);
            return Ok(());
        }
        return Err(internal(&root_name, "GEMM epilogue lost its GEMM step"));
    }
    cx.kernel_step(&label, kname, lay.rows(), elems, args);
    Ok(())
}

/// Whether a fused group can run as the epilogue of the GEMM step just emitted: one of its leaves
/// is that step's output, read elementwise (same shape as the group's result), used by this group
/// only and not a graph output. The GEMM step must be the last one so that every other leaf is
/// already computed when the GEMM runs.
///
/// The executor runs the epilogue over the GEMM's rows (batch·m rows of n), while the kernel's
/// rows are those of the output's last axis; they agree only when that axis is n. A 1-D second
/// operand drops n = 1 from the output ([2,4,6] @ [6] → [2,4]: rows of 4, not of 1), so such a
/// group runs as its own kernel after the GEMM instead.
fn gemm_epilogue_target(
    cx: &Ctx,
    leaves: &[(Value, Vec<usize>)],
    places: &[Place],
    out_shape: &[usize],
    members: &HashSet<NodeId>,
) -> Option<usize> {
    let last = cx.steps.last()?;
    let StepKind::MatMul { call, epilogue: None, .. } = &last.kind else { return None };
    if out_shape.last() != Some(&call.n) {
        return None;
    }
    leaves.iter().zip(places).position(|((v, shape), &p)| {
        p == last.args[0]
            && shape.as_slice() == out_shape
            && cx.graph.value_type(*v).shape == out_shape
            && !cx.outputs.contains(v)
            && cx.graph.users(*v).iter().all(|(u, _)| members.contains(u))
            && matches!(cx.graph.node(v.node).op(), Some(Op::MatMul | Op::Gemm { .. }))
    })
}

/// A leaf buffer the fused kernel may overwrite with its result: read at the same index it is
/// written (same shape as the output), the only leaf in that buffer, and dead afterwards (every
/// value stored in the buffer is read only by this group and is not a graph output).
///
/// "Read only by this group" compares counts instead of scanning every placed value (which made
/// lowering quadratic): the reads of the buffer's values by the group's members must be all the
/// reads it has ([`Ctx::buf_reads`]).
fn in_place_leaf(
    cx: &Ctx,
    leaves: &[(Value, Vec<usize>)],
    places: &[Place],
    out_shape: &[usize],
    members: &[NodeId],
) -> Option<Place> {
    let mut leaves_in: HashMap<Place, usize> = HashMap::new();
    for &p in places {
        *leaves_in.entry(p).or_insert(0) += 1;
    }
    let mut reads_by_group: HashMap<Place, usize> = HashMap::new();
    for v in members.iter().flat_map(|&m| cx.graph.node_inputs(m)) {
        if let Some(&p) = cx.place.get(&v) {
            *reads_by_group.entry(p).or_insert(0) += 1;
        }
    }
    for ((_, shape), &p) in leaves.iter().zip(places) {
        let Place::Buf(b) = p else { continue };
        if shape.as_slice() != out_shape || leaves_in[&p] != 1 {
            continue;
        }
        let (reads, is_output) = cx.buf_reads[b];
        if !is_output
            && reads == reads_by_group.get(&p).copied().unwrap_or(0)
            && cx.buffers[b] == out_shape.iter().product::<usize>() * 4
        {
            return Some(p);
        }
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn affine_norm(
    nodes: &mut Vec<Expr>,
    x: usize,
    scale: usize,
    bias: usize,
    mean: Option<usize>,
    var: usize,
    eps: f32,
) -> usize {
    let mut push = |e: Expr| {
        nodes.push(e);
        nodes.len() - 1
    };
    let eps_n = push(Expr::Const(eps));
    let ve = push(Expr::Binary(kiln_ir::BinaryOp::Add, var, eps_n));
    let sd = push(Expr::Unary(kiln_ir::UnaryOp::Sqrt, ve));
    let g = push(Expr::Binary(kiln_ir::BinaryOp::Div, scale, sd));
    let d = match mean {
        Some(m) => push(Expr::Binary(kiln_ir::BinaryOp::Sub, x, m)),
        None => x,
    };
    let y = push(Expr::Binary(kiln_ir::BinaryOp::Mul, d, g));
    push(Expr::Binary(kiln_ir::BinaryOp::Add, y, bias))
}

fn lower_op(cx: &mut Ctx, id: NodeId, op: &Op) -> Result<(), Error> {
    let graph = cx.graph;
    let node = graph.node(id);
    let name = node.name.clone();
    let ins = graph.node_inputs(id);
    let in_ty = |k: usize| graph.value_type(ins[k]).clone();
    let out_v = Value { node: id, port: 0 };
    let out_ty = graph.value_type(out_v).clone();
    if is_view(graph, id, op) {
        let p = cx.input(ins[0], &name)?;
        cx.bind(out_v, p);
        return Ok(());
    }
    match op {
        Op::Binary(_) | Op::Where => lower_int_elementwise(cx, id, op),
        Op::Unary(_) => Err(internal(&name, "Unary on a non-f32 operand (the IR admits f32 only)")),
        Op::Cast { to } => {
            let from = in_ty(0).dtype;
            let conv = match (from, to) {
                (DType::F32, DType::I64) => Convert::F32ToI64,
                (DType::I64, DType::F32) => Convert::I64ToF32,
                (DType::I64, DType::Bool) => Convert::I64ToBool,
                (DType::Bool, DType::I64) => Convert::BoolToI64,
                _ => return Err(internal(&name, format!("cast {from} → {to} has no lowering"))),
            };
            let src = cx.input(ins[0], &name)?;
            let dst = cx.out_buf(out_v);
            cx.steps.push(Step {
                label: name,
                kind: StepKind::Convert(conv, out_ty.num_elements()),
                args: vec![dst, src],
                n_writes: 1,
            });
            Ok(())
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let x = in_ty(0);
            let a = normalize_axis(*axis, x.rank().max(1)).map_err(|e| internal(&name, e))?;
            let n = x.shape.get(a).copied().unwrap_or(1);
            let inner: usize = x.shape.get(a + 1..).map(|r| r.iter().product()).unwrap_or(1);
            let total = x.num_elements();
            let outer = total / (n * inner);
            let log = matches!(op, Op::LogSoftmax { .. });
            let kname = cx.kname(&name, if log { "logsoftmax" } else { "softmax" });
            rows::softmax(cx.jit, &kname, n, cx.softmax, log).map_err(|e| internal(&name, e))?;
            let src = cx.input(ins[0], &name)?;
            let dst = cx.out_buf(out_v);
            if inner == 1 {
                cx.kernel_step(&name, kname, total / n, total, vec![dst, src]);
                return Ok(());
            }
            // A non-innermost axis: transpose [outer, n, inner] → [outer, inner, n], run the row
            // kernel, transpose back (two copy steps around the generated kernel).
            let t_in = cx.new_buf(&x);
            let t_out = cx.new_buf(&x);
            let ax = |sh: [usize; 3], tabs: [Box<dyn Fn(usize) -> usize>; 3]| AxisCopy {
                shape: sh.to_vec(),
                src_tab: (0..3).map(|j| (0..sh[j]).map(|i| tabs[j](i) as i64).collect()).collect(),
                dst_strides: strides(&sh),
                dst_off: 0,
                elem: 4,
                pad: 0.0,
            };
            let to_rows = ax(
                [outer, inner, n],
                [Box::new(move |i| i * n * inner), Box::new(|j| j), Box::new(move |k| k * inner)],
            );
            let back =
                ax([outer, n, inner], [Box::new(move |i| i * n * inner), Box::new(|k| k), Box::new(move |j| j * n)]);
            cx.steps.push(Step {
                label: format!("{name} (to rows)"),
                kind: StepKind::Copies(vec![to_rows]),
                args: vec![t_in, src],
                n_writes: 1,
            });
            cx.kernel_step(&name, kname, outer * inner, total, vec![t_out, t_in]);
            cx.steps.push(Step {
                label: format!("{name} (back)"),
                kind: StepKind::Copies(vec![back]),
                args: vec![dst, t_out],
                n_writes: 1,
            });
            Ok(())
        }
        Op::LayerNormalization { axis, epsilon } | Op::RmsNormalization { axis, epsilon } => {
            let rms = matches!(op, Op::RmsNormalization { .. });
            let x = in_ty(0);
            let a = normalize_axis(*axis, x.rank()).map_err(|e| internal(&name, e))?;
            let n: usize = x.shape[a..].iter().product();
            let trailing = &x.shape[a..];
            // The row kernel reads full-size parameters. A broadcast weight is expanded to the
            // normalized shape once, here; a broadcast run-time value by a copy step before the
            // kernel (n elements per run, beside a kernel that reads the whole input).
            let mut params = Vec::with_capacity(ins.len() - 1);
            for (k, &v) in ins.iter().enumerate().skip(1) {
                let p = graph.value_type(v);
                // p broadcasts to the normalized shape (checked by the IR), so with as many
                // elements it broadcasts along no axis: its layout is the full-size one.
                let full = p.num_elements() == n;
                let src = cx.input(v, &name)?;
                if full {
                    params.push(src);
                    continue;
                }
                if let Place::Weight(w) = src
                    && let WeightData::F32(data) = &cx.weights[w]
                {
                    let idx = kiln_ir::ops::broadcast::broadcast_indices(&p.shape, trailing);
                    let expanded: Option<Vec<f32>> = idx.iter().map(|&i| data.get(i).copied()).collect();
                    let expanded =
                        expanded.ok_or_else(|| internal(&name, "parameter weight smaller than its shape"))?;
                    cx.weights.push(WeightData::F32(expanded));
                    params.push(Place::Weight(cx.weights.len() - 1));
                    continue;
                }
                let target = TensorType::f32(trailing.to_vec());
                let copy = broadcast_copy(&p.shape, &target).map_err(|e| internal(&name, e))?;
                let dst = cx.new_buf(&target);
                cx.steps.push(Step {
                    label: format!("{name} (expand parameter {k})"),
                    kind: StepKind::Copies(vec![copy]),
                    args: vec![dst, src],
                    n_writes: 1,
                });
                params.push(dst);
            }
            let bias = ins.len() == 3;
            let kname = cx.kname(&name, if rms { "rmsnorm" } else { "layernorm" });
            rows::norm(cx.jit, &kname, n, *epsilon, rms, bias).map_err(|e| internal(&name, e))?;
            let mut args = vec![cx.out_buf(out_v), cx.input(ins[0], &name)?];
            args.extend(params);
            let total = x.num_elements();
            cx.kernel_step(&name, kname, total / n, total, args);
            Ok(())
        }
        Op::Reduce { kind, axes, noop_with_empty_axes, .. } => lower_reduce(cx, id, *kind, axes, *noop_with_empty_axes),
        Op::MatMul => lower_matmul(cx, id),
        Op::Gemm { alpha, beta, trans_a, trans_b } => lower_gemm(cx, id, *alpha, *beta, *trans_a, *trans_b),
        Op::Conv { strides, dilations, pads, group } => lower_conv(cx, id, *strides, *dilations, *pads, *group),
        Op::Transpose { perm } => {
            let x = in_ty(0);
            let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..x.rank()).rev().collect());
            let mut seen = vec![false; x.rank()];
            if perm.len() != x.rank() || !perm.iter().all(|&p| p < x.rank() && !std::mem::replace(&mut seen[p], true)) {
                return Err(internal(&name, "transpose perm is not a permutation of the axes"));
            }
            let st = strides(&x.shape);
            let tabs = perm.iter().map(|&p| (0..x.shape[p]).map(|i| (i * st[p]) as i64).collect()).collect();
            copy_step(cx, id, vec![out_v], vec![copy_to_contiguous(&out_ty, tabs)], ins[0])
        }
        Op::Expand { .. } => {
            let copy = broadcast_copy(&in_ty(0).shape, &out_ty).map_err(|e| internal(&name, e))?;
            copy_step(cx, id, vec![out_v], vec![copy], ins[0])
        }
        Op::Slice { starts, ends, axes, steps } => {
            let x = in_ty(0);
            let r = x.rank();
            let mut start = vec![0i64; r];
            let mut step = vec![1i64; r];
            let axes: Vec<i64> = axes.clone().unwrap_or_else(|| (0..starts.len() as i64).collect());
            for (k, &ax) in axes.iter().enumerate() {
                let a = normalize_axis(ax, r).map_err(|e| internal(&name, e))?;
                let d = x.shape[a] as i64;
                let s = steps.as_ref().and_then(|s| s.get(k).copied()).unwrap_or(1);
                let st = starts.get(k).copied().unwrap_or(0);
                let st = if st < 0 { st + d } else { st };
                start[a] = if s > 0 { st.clamp(0, d) } else { st.clamp(0, d - 1) };
                step[a] = s;
                let _ = ends;
            }
            let xs = strides(&x.shape);
            let mut tabs = Vec::new();
            for j in 0..r {
                let tab: Vec<i64> = (0..out_ty.shape[j] as i64).map(|i| start[j] + i * step[j]).collect();
                if tab.iter().any(|&c| c < 0 || c >= x.shape[j] as i64) {
                    return Err(internal(&name, "slice reads outside its input"));
                }
                tabs.push(tab.into_iter().map(|c| c * xs[j] as i64).collect());
            }
            copy_step(cx, id, vec![out_v], vec![copy_to_contiguous(&out_ty, tabs)], ins[0])
        }
        Op::Split { axis, .. } => {
            let x = in_ty(0);
            let a = normalize_axis(*axis, x.rank()).map_err(|e| internal(&name, e))?;
            let xs = strides(&x.shape);
            let mut offset = 0;
            let mut copies = Vec::new();
            let mut outs = Vec::new();
            for port in 0..node.outputs.len() {
                let v = Value { node: id, port };
                let t = graph.value_type(v).clone();
                let tabs = (0..t.rank())
                    .map(|j| {
                        let base = if j == a { offset } else { 0 };
                        (0..t.shape[j]).map(|i| ((i + base) * xs[j]) as i64).collect()
                    })
                    .collect();
                offset += t.shape[a];
                copies.push(copy_to_contiguous(&t, tabs));
                outs.push(v);
            }
            if offset != x.shape[a] {
                return Err(internal(&name, "split sizes do not add up to the input"));
            }
            copy_step(cx, id, outs, copies, ins[0])
        }
        Op::Concat { axis } => {
            let a = normalize_axis(*axis, out_ty.rank()).map_err(|e| internal(&name, e))?;
            let os = strides(&out_ty.shape);
            let dst = cx.out_buf(out_v);
            let mut offset = 0;
            for (k, &v) in ins.iter().enumerate() {
                let t = graph.value_type(v).clone();
                let ts = strides(&t.shape);
                let tabs = (0..t.rank()).map(|j| (0..t.shape[j]).map(|i| (i * ts[j]) as i64).collect()).collect();
                let copy = AxisCopy {
                    shape: t.shape.clone(),
                    src_tab: tabs,
                    dst_strides: os.clone(),
                    dst_off: offset * os[a],
                    elem: elem_bytes(t.dtype),
                    pad: 0.0,
                };
                offset += t.shape[a];
                let src = cx.input(v, &name)?;
                cx.steps.push(Step {
                    label: format!("{name} (input {k})"),
                    kind: StepKind::Copies(vec![copy]),
                    args: vec![dst, src],
                    n_writes: 1,
                });
            }
            if offset != out_ty.shape[a] {
                return Err(internal(&name, "concat sizes do not add up"));
            }
            Ok(())
        }
        Op::Pad { mode, pads, value } => {
            let copy = pad_copy(&in_ty(0), &out_ty, *mode, pads, *value).map_err(|e| internal(&name, e))?;
            copy_step(cx, id, vec![out_v], vec![copy], ins[0])
        }
        Op::Resize { .. } => {
            let copy = resize_copy(op, &in_ty(0), &out_ty).map_err(|e| internal(&name, e))?;
            copy_step(cx, id, vec![out_v], vec![copy], ins[0])
        }
        Op::Gather { axis } => {
            let x = in_ty(0);
            let idx = in_ty(1);
            if idx.dtype != DType::I64 {
                return Err(excluded("Gather", &name, "non-i64 indices"));
            }
            let a = normalize_axis(*axis, x.rank()).map_err(|e| internal(&name, e))?;
            let spec = GatherSpec {
                outer: x.shape[..a].iter().product(),
                axis_len: x.shape[a],
                inner: x.shape[a + 1..].iter().product(),
                n_idx: idx.num_elements(),
                elem: elem_bytes(x.dtype),
            };
            if spec.outer * spec.n_idx * spec.inner != out_ty.num_elements() {
                return Err(internal(&name, "gather output size mismatch"));
            }
            let data = cx.input(ins[0], &name)?;
            let ind = cx.input(ins[1], &name)?;
            let dst = cx.out_buf(out_v);
            cx.steps.push(Step { label: name, kind: StepKind::Gather(spec), args: vec![dst, data, ind], n_writes: 1 });
            Ok(())
        }
        Op::GroupNormalization { num_groups, epsilon } => lower_group_norm(cx, id, *num_groups, *epsilon),
        Op::InstanceNormalization { epsilon } => {
            let c = in_ty(0).shape.get(1).copied().unwrap_or(1);
            lower_group_norm(cx, id, c, *epsilon)
        }
        Op::PowerNorm { groups, epsilon, group_epsilon } => {
            let x = in_ty(0);
            let d = x.shape.last().copied().unwrap_or(1);
            if x.rank() == 0
                || *groups == 0
                || !d.is_multiple_of(*groups)
                || (1..4).any(|k| in_ty(k).num_elements() != d)
            {
                return Err(internal(&name, "PowerNorm shapes are inconsistent"));
            }
            let kname = cx.kname(&name, "powernorm");
            rows::power_norm(cx.jit, &kname, *groups, d / groups, *epsilon, *group_epsilon)
                .map_err(|e| internal(&name, e))?;
            let mut args = vec![cx.out_buf(out_v)];
            for v in &ins {
                args.push(cx.input(*v, &name)?);
            }
            let total = x.num_elements();
            cx.kernel_step(&name, kname, total / (d / groups), total, args);
            Ok(())
        }
        Op::MaskedSoftmax => lower_masked_softmax(cx, id),
        Op::EvoNormS0 { groups, epsilon } => lower_evo(cx, id, *groups, *epsilon, rows::GroupMode::EvoS0),
        Op::EvoNormB0 { epsilon } => {
            let c = in_ty(0).shape.get(1).copied().unwrap_or(1);
            lower_evo(cx, id, c, *epsilon, rows::GroupMode::EvoB0)
        }
        Op::RegionNorm { epsilon } => {
            let x = in_ty(0);
            if x.rank() != 4 || ins[1..].iter().any(|v| graph.value_type(*v).dtype != DType::F32) {
                return Err(internal(&name, "RegionNorm's operands are not NCHW f32 (the IR checks them)"));
            }
            let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3]);
            if in_ty(1).shape != [n, 1, x.shape[2], x.shape[3]] || (2..6).any(|k| in_ty(k).shape != [c]) {
                return Err(internal(&name, "RegionNorm's mask or parameters do not match x"));
            }
            let kname = cx.kname(&name, "regionnorm");
            crate::kernels::region::region_norm(cx.jit, &kname, n, c, hw, *epsilon).map_err(|e| internal(&name, e))?;
            let mut args = vec![cx.out_buf(out_v)];
            for v in &ins {
                args.push(cx.input(*v, &name)?);
            }
            let error = "RegionNorm's mask must be 0 or 1 everywhere";
            cx.checked_step(&name, kname, c, x.num_elements(), args, error);
            Ok(())
        }
        Op::Attention { scale } => lower_attention(cx, id, *scale),
        // FIXME(spatial): temporary until the lowering split lands; replaced by lower/pool.rs.
        Op::ConvTranspose { .. }
        | Op::MaxPool(_)
        | Op::AveragePool { .. }
        | Op::LpPool { .. }
        | Op::ResizeInterp { .. } => Err(excluded(op.name(), &name, "no JIT lowering yet")),
        Op::BatchNormalization { .. } | Op::UnifiedNorm { .. } => {
            Err(excluded(op.name(), &name, "an input of rank < 2 or a non-f32 operand"))
        }
        Op::Identity | Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
            Err(internal(&name, "view op reached the copy path"))
        }
    }
}

/// Binary on i64 operands, or Where choosing between i64 values (the f32/bool forms are fused
/// and never get here): one scalar i64 kernel, checked when the op can fail.
fn lower_int_elementwise(cx: &mut Ctx, id: NodeId, op: &Op) -> Result<(), Error> {
    let graph = cx.graph;
    let name = graph.node(id).name.clone();
    let ins = graph.node_inputs(id);
    let iop = match op {
        Op::Binary(b) => IntOp::Binary(*b),
        _ => IntOp::Where,
    };
    let data = if iop == IntOp::Where { &ins[1..] } else { &ins[..] };
    if data.iter().any(|v| graph.value_type(*v).dtype != DType::I64) {
        return Err(internal(&name, format!("{} reached the i64 path with non-i64 operands", op.name())));
    }
    let out_v = Value { node: id, port: 0 };
    let out_shape = graph.value_type(out_v).shape.clone();
    let leaf_shapes: Vec<Vec<usize>> = ins.iter().map(|v| graph.value_type(*v).shape.clone()).collect();
    for s in &leaf_shapes {
        if s.len() > out_shape.len()
            || kiln_ir::ops::broadcast::broadcast_shapes(s, &out_shape).ok().as_ref() != Some(&out_shape)
        {
            return Err(internal(&name, "operand does not broadcast to the result"));
        }
    }
    let kname = cx.kname(&name, "int");
    let lay = int::elementwise(cx.jit, &kname, iop, &out_shape, &leaf_shapes).map_err(|e| internal(&name, e))?;
    let mut args = vec![cx.out_buf(out_v)];
    for v in &ins {
        args.push(cx.input(*v, &name)?);
    }
    let elems = lay.rows() * lay.inner();
    match iop.error() {
        Some(error) => cx.checked_step(&name, kname, lay.rows(), elems, args, error),
        None => cx.kernel_step(&name, kname, lay.rows(), elems, args),
    }
    Ok(())
}

/// ReduceSum/ReduceMax over i64: one kernel folding each output's elements in the reference's
/// order through two offset tables (see [`int::reduce`]).
fn lower_reduce_i64(cx: &mut Ctx, id: NodeId, kind: ReduceKind, reduced: &HashSet<usize>) -> Result<(), Error> {
    let graph = cx.graph;
    let name = graph.node(id).name.clone();
    let ins = graph.node_inputs(id);
    let x = graph.value_type(ins[0]).clone();
    let st = strides(&x.shape);
    // Offsets of every combination of the chosen axes' coordinates, in row-major order.
    let offsets = |pick: &dyn Fn(usize) -> bool| -> Vec<i64> {
        let mut offs = vec![0i64];
        for (j, &d) in x.shape.iter().enumerate() {
            if pick(j) {
                let sj = st[j] as i64;
                offs = offs.iter().flat_map(|&o| (0..d as i64).map(move |i| o + i * sj)).collect();
            }
        }
        offs
    };
    let base = offsets(&|j| !reduced.contains(&j));
    let red = offsets(&|j| reduced.contains(&j));
    let out_v = Value { node: id, port: 0 };
    if base.len() != graph.value_type(out_v).num_elements() || base.len() * red.len() != x.num_elements() {
        return Err(internal(&name, "i64 reduction tables do not match the shapes"));
    }
    let kname = cx.kname(&name, "reduce_i64");
    int::reduce(cx.jit, &kname, kind, red.len()).map_err(|e| internal(&name, e))?;
    let rows = base.len();
    let src = cx.input(ins[0], &name)?;
    let dst = cx.out_buf(out_v);
    let (bt, rt) = (cx.table(base), cx.table(red));
    let op_name = graph.node(id).op().map(|o| o.name()).unwrap_or("ReduceSum");
    cx.checked_step(&name, kname, rows, x.num_elements(), vec![dst, src, bt, rt], &format!("{op_name} overflows i64"));
    Ok(())
}

/// MaskedSoftmax as five generated kernels: kept x (−∞ where masked), its row max,
/// e = exp(x − max)·M where kept (0 elsewhere, in place over the kept x), row sum, e/sum (in place).
fn lower_masked_softmax(cx: &mut Ctx, id: NodeId) -> Result<(), Error> {
    let graph = cx.graph;
    let name = graph.node(id).name.clone();
    let ins = graph.node_inputs(id);
    let x = graph.value_type(ins[0]).clone();
    let mask = graph.value_type(ins[1]).clone();
    if x.dtype != DType::F32 || mask.dtype != DType::F32 || x.rank() == 0 {
        return Err(excluded("MaskedSoftmax", &name, "non-f32 operands or a scalar input"));
    }
    if mask.rank() > x.rank()
        || kiln_ir::ops::broadcast::broadcast_shapes(&mask.shape, &x.shape).ok().as_ref() != Some(&x.shape)
    {
        return Err(internal(&name, "mask does not broadcast to the input"));
    }
    let d = x.shape[x.rank() - 1];
    let total = x.num_elements();
    let rows_n = total / d;
    let mut row_shape = x.shape.clone();
    *row_shape.last_mut().unwrap_or(&mut 0) = 1;
    let row_ty = TensorType::f32(row_shape.clone());
    let (px, pm) = (cx.input(ins[0], &name)?, cx.input(ins[1], &name)?);
    // The row maximum is over the kept elements only (mask ≠ 0; ir's MaskedSoftmax): masked ones
    // are −∞ for the max and exactly 0 in e, so a masked-out maximum cannot underflow the row.
    let f = Fused {
        nodes: vec![
            Expr::Leaf(0),
            Expr::Leaf(1),
            Expr::NonZero(1),
            Expr::Const(f32::NEG_INFINITY),
            Expr::Where(2, 0, 3),
        ],
        out_shape: x.shape.clone(),
        leaf_shapes: vec![x.shape.clone(), mask.shape.clone()],
    };
    let kkept = cx.kname(&name, "msm_kept");
    let lay = elementwise::define(cx.jit, &kkept, &f).map_err(|e| internal(&name, e))?;
    let e = cx.new_buf(&x);
    cx.kernel_step(&format!("{name} (kept)"), kkept, lay.rows(), total, vec![e, px, pm]);
    let kmax = cx.kname(&name, "msm_max");
    rows::reduce_rows(cx.jit, &kmax, d, ReduceKind::Max).map_err(|e| internal(&name, e))?;
    let mx = cx.new_buf(&row_ty);
    cx.kernel_step(&format!("{name} (max)"), kmax, rows_n, total, vec![mx, e]);
    let f = Fused {
        nodes: vec![
            Expr::Leaf(0),
            Expr::Leaf(1),
            Expr::Leaf(2),
            Expr::Binary(kiln_ir::BinaryOp::Sub, 0, 1),
            Expr::Unary(kiln_ir::UnaryOp::Exp, 3),
            Expr::Binary(kiln_ir::BinaryOp::Mul, 4, 2),
            Expr::NonZero(2),
            Expr::Const(0.0),
            Expr::Where(6, 5, 7),
        ],
        out_shape: x.shape.clone(),
        leaf_shapes: vec![x.shape.clone(), row_shape.clone(), mask.shape.clone()],
    };
    let kexp = cx.kname(&name, "msm_exp");
    let lay = elementwise::define(cx.jit, &kexp, &f).map_err(|e| internal(&name, e))?;
    cx.kernel_step(&format!("{name} (exp·mask)"), kexp, lay.rows(), total, vec![e, px, mx, pm]);
    let ksum = cx.kname(&name, "msm_sum");
    rows::reduce_rows(cx.jit, &ksum, d, ReduceKind::Sum).map_err(|e| internal(&name, e))?;
    let sm = cx.new_buf(&row_ty);
    cx.kernel_step(&format!("{name} (sum)"), ksum, rows_n, total, vec![sm, e]);
    let f = Fused {
        nodes: vec![Expr::Leaf(0), Expr::Leaf(1), Expr::Binary(kiln_ir::BinaryOp::Div, 0, 1)],
        out_shape: x.shape.clone(),
        leaf_shapes: vec![x.shape.clone(), row_shape],
    };
    let kdiv = cx.kname(&name, "msm_div");
    let lay = elementwise::define(cx.jit, &kdiv, &f).map_err(|e| internal(&name, e))?;
    cx.kernel_step(&format!("{name} (÷sum)"), kdiv, lay.rows(), total, vec![e, e, sm]);
    cx.bind(Value { node: id, port: 0 }, e);
    Ok(())
}

/// Score block size in floats (256 KiB): half of this machine's per-core L2, so that a block stays
/// in cache through its scale/bias, softmax and ·V passes.
const ATTENTION_BLOCK_FLOATS: usize = 1 << 16;

/// Query rows per attention block for `lk` keys: as many as fit [`ATTENTION_BLOCK_FLOATS`], a
/// multiple of 8 when there is room (whole GEMM micro-tiles), at most `lq`, at least 1.
pub(crate) fn attention_block(lq: usize, lk: usize) -> usize {
    let b = (ATTENTION_BLOCK_FLOATS / lk.max(1)).max(1);
    let b = if b >= 8 { b / 8 * 8 } else { b };
    b.min(lq).max(1)
}

/// Attention as one blocked step ([`AttentionSpec`]) whenever Q and Kt are at least matrices, so
/// each batch has its own [Lq, Lk] scores. A 1-D Q or Kt makes numpy matmul drop an axis and the
/// scores' rows are no longer (batch, query) pairs; those rare forms keep the unblocked plan.
fn lower_attention(cx: &mut Ctx, id: NodeId, scale: f32) -> Result<(), Error> {
    let graph = cx.graph;
    let name = graph.node(id).name.clone();
    let ins = graph.node_inputs(id);
    let tys: Vec<TensorType> = ins.iter().map(|v| graph.value_type(*v).clone()).collect();
    if tys.iter().any(|t| t.dtype != DType::F32) {
        return Err(excluded("Attention", &name, "non-f32 operands"));
    }
    if tys.len() < 3 {
        return Err(excluded("Attention", &name, "fewer than 3 inputs"));
    }
    if tys[0].rank() < 2 || tys[1].rank() < 2 || tys[2].rank() == 0 {
        return lower_attention_unblocked(cx, id, scale);
    }
    let bad = |why: String| internal(&name, format!("attention shapes: {why}"));
    let (q, kt, v) = (&tys[0].shape, &tys[1].shape, &tys[2].shape);
    let (lq, d) = (q[q.len() - 2], q[q.len() - 1]);
    let (d2, lk) = (kt[kt.len() - 2], kt[kt.len() - 1]);
    // A 1-D V is a [Lk, 1] matrix whose unit axis numpy drops from the output: same layout.
    let (vb, lk2, dv) = match v.len() {
        1 => (&v[..0], v[0], 1),
        r => (&v[..r - 2], v[r - 2], v[r - 1]),
    };
    if d != d2 || lk != lk2 {
        return Err(bad(format!("Q {q:?}, Kt {kt:?} and V {v:?} do not chain")));
    }
    let (qb, kb) = (&q[..q.len() - 2], &kt[..kt.len() - 2]);
    let sb = kiln_ir::ops::broadcast::broadcast_shapes(qb, kb).map_err(bad)?;
    let ob = kiln_ir::ops::broadcast::broadcast_shapes(&sb, vb).map_err(bad)?;
    let nb: usize = ob.iter().product();
    let out_v = Value { node: id, port: 0 };
    let out = graph.value_type(out_v).clone();
    if out.num_elements() != nb * lq * dv {
        return Err(bad(format!("output {out} is not {nb} batches of [{lq}, {dv}]")));
    }
    // The bias, left-padded with unit axes to the scores' rank: [bias batch…, rows, cols] with rows
    // ∈ {1, lq} and cols ∈ {1, lk}.
    let scores: Vec<usize> = sb.iter().copied().chain([lq, lk]).collect();
    let bias = match tys.get(3) {
        Some(t) => {
            if t.rank() > scores.len()
                || kiln_ir::ops::broadcast::broadcast_shapes(&t.shape, &scores).ok().as_ref() != Some(&scores)
            {
                return Err(internal(&name, "attention bias does not broadcast to the scores"));
            }
            let mut bn = vec![1; scores.len() - t.rank()];
            bn.extend_from_slice(&t.shape);
            Some(bn)
        }
        None => None,
    };
    let idx = |shape: &[usize]| kiln_ir::ops::broadcast::broadcast_indices(shape, &ob);
    let (iq, ik, iv) = (idx(qb), idx(kb), idx(vb));
    let (ib, brows, bcols) = match &bias {
        Some(bn) => {
            let r = bn.len();
            (idx(&bn[..r - 2]), bn[r - 2], bn[r - 1])
        }
        None => (vec![0; nb], 1, 1),
    };
    let batches: Vec<[usize; 4]> =
        (0..nb).map(|i| [iq[i] * lq * d, ik[i] * d * lk, iv[i] * lk * dv, ib[i] * brows * bcols]).collect();
    let block = attention_block(lq, lk);
    let bias_kernel = match &bias {
        Some(_) => {
            // S ← S + bias over one block: the bias leaf is the block's rows of the bias (the
            // executor offsets its pointer to the block's first row), or one row broadcast.
            let leaf = vec![if brows == 1 { 1 } else { block }, bcols];
            let fused = Fused {
                nodes: vec![Expr::Leaf(0), Expr::Leaf(1), Expr::Binary(kiln_ir::BinaryOp::Add, 0, 1)],
                out_shape: vec![block, lk],
                leaf_shapes: vec![vec![block, lk], leaf],
            };
            let kname = cx.kname(&name, "attn_bias");
            let lay = elementwise::define_with(cx.jit, &kname, &fused, true).map_err(|e| internal(&name, e))?;
            if lay.rows() != block || lay.inner() != lk {
                return Err(internal(&name, "attention bias kernel rows are not the block's rows"));
            }
            cx.kernel_labels.push(kname);
            Some(cx.kernel_labels.len() - 1)
        }
        None => None,
    };
    // The block is in cache: the softmax that stores its exponentials (one exp per score) beats
    // either streaming algorithm; it keeps the chosen algorithm's treatment of huge and fully
    // masked logits.
    let sname = cx.kname(&name, "attn_softmax");
    rows::softmax_exp(cx.jit, &sname, lk, cx.softmax == SoftmaxAlgo::TwoPass).map_err(|e| internal(&name, e))?;
    cx.kernel_labels.push(sname);
    let softmax_kernel = cx.kernel_labels.len() - 1;
    let slots = cx.threads.max(1);
    let spec = AttentionSpec {
        lq,
        lk,
        d,
        dv,
        block,
        scale,
        batches,
        bias_row_stride: if brows == 1 { 0 } else { bcols },
        v_rs: if v.len() == 1 { 1 } else { dv },
        bias_kernel,
        softmax_kernel,
        slots,
    };
    let dst = cx.out_buf(out_v);
    let scratch = cx.new_buf(&TensorType::f32([slots * AttentionSpec::slot_len(block, lk)]));
    let mut args = vec![dst, scratch];
    for v in &ins {
        args.push(cx.input(*v, &name)?);
    }
    cx.steps.push(Step { label: name, kind: StepKind::Attention(std::sync::Arc::new(spec)), args, n_writes: 2 });
    Ok(())
}

/// Attention as GEMM (Q·Kt), a generated ·scale + bias kernel (in place), the softmax row kernel,
/// and GEMM (·V): four steps over the full score matrix, for the forms [`lower_attention`] does
/// not block.
fn lower_attention_unblocked(cx: &mut Ctx, id: NodeId, scale: f32) -> Result<(), Error> {
    let graph = cx.graph;
    let name = graph.node(id).name.clone();
    let ins = graph.node_inputs(id);
    let tys: Vec<TensorType> = ins.iter().map(|v| graph.value_type(*v).clone()).collect();
    let out_v = Value { node: id, port: 0 };
    let out = graph.value_type(out_v).clone();
    let scores = Op::MatMul.infer(&[&tys[0], &tys[1]]).map_err(|e| internal(&name, e))?.remove(0);
    if scores.rank() < 2 {
        return Err(internal(&name, "attention scores must have rank ≥ 2"));
    }
    let (call1, units1, e1) = matmul_parts(&tys[0].shape, &tys[1].shape, cx.threads).map_err(|e| internal(&name, e))?;
    let (call2, units2, e2) = matmul_parts(&scores.shape, &tys[2].shape, cx.threads).map_err(|e| internal(&name, e))?;
    if e1 != scores.num_elements() || e2 != out.num_elements() {
        return Err(internal(&name, "attention shapes are inconsistent"));
    }
    // Epilogue: S ← S·scale (+ bias), written over S.
    let mut nodes = vec![Expr::Leaf(0), Expr::Const(scale), Expr::Binary(kiln_ir::BinaryOp::Mul, 0, 1)];
    let mut leaf_shapes = vec![scores.shape.clone()];
    if let Some(bias) = tys.get(3) {
        if kiln_ir::ops::broadcast::broadcast_shapes(&bias.shape, &scores.shape).ok().as_ref() != Some(&scores.shape)
            || bias.rank() > scores.rank()
        {
            return Err(internal(&name, "attention bias does not broadcast to the scores"));
        }
        leaf_shapes.push(bias.shape.clone());
        nodes.push(Expr::Leaf(1));
        nodes.push(Expr::Binary(kiln_ir::BinaryOp::Add, 2, 3));
    }
    let s_buf = cx.new_buf(&scores);
    let (q, kt, v) = (cx.input(ins[0], &name)?, cx.input(ins[1], &name)?, cx.input(ins[2], &name)?);
    cx.steps.push(Step {
        label: format!("{name} (scores)"),
        kind: StepKind::MatMul { call: call1, units: units1, c_fill: None, epilogue: None },
        args: vec![s_buf, q, kt],
        n_writes: 1,
    });
    // Not a GEMM epilogue: with a 1-D Kt the GEMM's rows (batch·Lq rows of one key) are not the
    // scores' rows, which an epilogue assumes.
    let fused = Fused { nodes, out_shape: scores.shape.clone(), leaf_shapes };
    let ename = cx.kname(&name, "attn_scale");
    let lay = elementwise::define(cx.jit, &ename, &fused).map_err(|e| internal(&name, e))?;
    let mut args = vec![s_buf, s_buf];
    if ins.len() == 4 {
        args.push(cx.input(ins[3], &name)?);
    }
    cx.kernel_step(&format!("{name} (·scale + bias)"), ename, lay.rows(), scores.num_elements(), args);
    let lk = scores.shape[scores.rank() - 1];
    let sname = cx.kname(&name, "attn_softmax");
    rows::softmax(cx.jit, &sname, lk, cx.softmax, false).map_err(|e| internal(&name, e))?;
    let p_buf = cx.new_buf(&scores);
    let total = scores.num_elements();
    cx.kernel_step(&format!("{name} (softmax)"), sname, total / lk, total, vec![p_buf, s_buf]);
    let dst = cx.out_buf(out_v);
    cx.steps.push(Step {
        label: format!("{name} (·V)"),
        kind: StepKind::MatMul { call: call2, units: units2, c_fill: None, epilogue: None },
        args: vec![dst, p_buf, v],
        n_writes: 1,
    });
    Ok(())
}

/// EvoNorm-S0/B0 (NCHW, per-channel parameters) on the group-statistics kernel.
fn lower_evo(cx: &mut Ctx, id: NodeId, groups: usize, eps: f32, mode: rows::GroupMode) -> Result<(), Error> {
    let graph = cx.graph;
    let name = graph.node(id).name.clone();
    let op_name = graph.node(id).op().map(|o| o.name()).unwrap_or("EvoNorm");
    let ins = graph.node_inputs(id);
    let x = graph.value_type(ins[0]).clone();
    if x.rank() != 4 || x.dtype != DType::F32 {
        return Err(excluded(op_name, &name, "an input that is not f32 NCHW"));
    }
    let c = x.shape[1];
    if groups == 0 || !c.is_multiple_of(groups) || ins[1..].iter().any(|v| graph.value_type(*v).num_elements() != c) {
        return Err(internal(&name, "EvoNorm shapes are inconsistent"));
    }
    let s = x.shape[2] * x.shape[3];
    let kname = cx.kname(&name, "evonorm");
    rows::group_stats_kernel(cx.jit, &kname, groups, c / groups, s, eps, mode).map_err(|e| internal(&name, e))?;
    let mut args = vec![cx.out_buf(Value { node: id, port: 0 })];
    for v in &ins {
        args.push(cx.input(*v, &name)?);
    }
    let total = x.num_elements();
    cx.kernel_step(&name, kname, x.shape[0] * groups, total, args);
    Ok(())
}

fn lower_group_norm(cx: &mut Ctx, id: NodeId, groups: usize, eps: f32) -> Result<(), Error> {
    let graph = cx.graph;
    let name = graph.node(id).name.clone();
    let ins = graph.node_inputs(id);
    let x = graph.value_type(ins[0]).clone();
    let op_name = graph.node(id).op().map(|o| o.name()).unwrap_or("GroupNormalization");
    if x.rank() < 2 || x.dtype != DType::F32 {
        return Err(excluded(op_name, &name, "an input of rank < 2"));
    }
    let c = x.shape[1];
    if groups == 0 || !c.is_multiple_of(groups) {
        return Err(internal(&name, "channels are not divisible by the groups"));
    }
    for v in &ins[1..3] {
        if graph.value_type(*v).num_elements() != c {
            return Err(excluded(op_name, &name, "scale/bias that are not per-channel vectors"));
        }
    }
    let s: usize = x.shape[2..].iter().product();
    let kname = cx.kname(&name, "groupnorm");
    rows::group_norm(cx.jit, &kname, groups, c / groups, s, eps).map_err(|e| internal(&name, e))?;
    let out_v = Value { node: id, port: 0 };
    let mut args = vec![cx.out_buf(out_v)];
    for v in &ins {
        args.push(cx.input(*v, &name)?);
    }
    let total = x.num_elements();
    cx.kernel_step(&name, kname, x.shape[0] * groups, total, args);
    Ok(())
}

/// ONNX Pad (`pads` = begins then ends, negative crops) as a table-driven copy.
pub(crate) fn pad_copy(
    x: &TensorType,
    out: &TensorType,
    mode: PadMode,
    pads: &[i64],
    value: f32,
) -> Result<AxisCopy, String> {
    let r = x.rank();
    if pads.len() != 2 * r || out.rank() != r {
        return Err("pads length is not 2·rank".into());
    }
    for j in 0..r {
        if x.shape[j] as i64 + pads[j] + pads[j + r] != out.shape[j] as i64 {
            return Err(format!("padded axis {j} does not match the output shape"));
        }
    }
    let xs = strides(&x.shape);
    let mut tabs = Vec::new();
    for j in 0..r {
        let d = x.shape[j] as i64;
        let tab = (0..out.shape[j] as i64)
            .map(|i| {
                let c = i - pads[j];
                let c = match mode {
                    PadMode::Constant if !(0..d).contains(&c) => return PAD,
                    PadMode::Constant => c,
                    PadMode::Edge => c.clamp(0, d - 1),
                    PadMode::Reflect => reflect(c, d),
                };
                c * xs[j] as i64
            })
            .collect();
        tabs.push(tab);
    }
    let mut copy = copy_to_contiguous(out, tabs);
    // Bool data is f32 0/1 in the arena: any non-zero pad value is true.
    copy.pad = if out.dtype == DType::Bool { (value != 0.0) as u8 as f32 } else { value };
    Ok(copy)
}

/// Nearest-neighbour Resize as a table-driven copy; the source indices are the interpreter's
/// ([`kiln_ir::ops::resize_nearest_sources`]), so both backends agree by construction.
pub(crate) fn resize_copy(op: &Op, x: &TensorType, out: &TensorType) -> Result<AxisCopy, String> {
    let sources = kiln_ir::ops::resize_nearest_sources(op, &x.shape)?;
    if out.rank() != x.rank() || sources.iter().zip(&out.shape).any(|(s, &o)| s.len() != o) {
        return Err("resize sources do not match the output shape".into());
    }
    let xs = strides(&x.shape);
    let tabs = sources.iter().zip(&xs).map(|(src, &st)| src.iter().map(|&i| (i * st) as i64).collect()).collect();
    Ok(copy_to_contiguous(out, tabs))
}

/// Reflect mode index (ONNX/numpy "reflect": the edge is not repeated).
fn reflect(c: i64, d: i64) -> i64 {
    if d == 1 {
        return 0;
    }
    let period = 2 * (d - 1);
    let m = c.rem_euclid(period);
    if m < d { m } else { period - m }
}

/// Broadcasts a tensor of shape `src` (numpy rules, right-aligned) into a new contiguous `out`.
fn broadcast_copy(src: &[usize], out: &TensorType) -> Result<AxisCopy, String> {
    if src.len() > out.rank() || src.iter().zip(&out.shape[out.rank() - src.len()..]).any(|(&s, &o)| s != o && s != 1) {
        return Err(format!("shape {src:?} does not broadcast to {}", out));
    }
    let off = out.rank() - src.len();
    let st = strides(src);
    let tabs = (0..out.rank())
        .map(|j| {
            (0..out.shape[j]).map(|i| if j < off || src[j - off] == 1 { 0 } else { (i * st[j - off]) as i64 }).collect()
        })
        .collect();
    Ok(copy_to_contiguous(out, tabs))
}

fn copy_to_contiguous(out: &TensorType, tabs: Vec<Vec<i64>>) -> AxisCopy {
    AxisCopy {
        shape: out.shape.clone(),
        src_tab: tabs,
        dst_strides: strides(&out.shape),
        dst_off: 0,
        elem: elem_bytes(out.dtype),
        pad: 0.0,
    }
}

fn copy_step(cx: &mut Ctx, id: NodeId, outs: Vec<Value>, copies: Vec<AxisCopy>, src: Value) -> Result<(), Error> {
    let name = cx.graph.node(id).name.clone();
    let s = cx.input(src, &name)?;
    let src_elems = cx.graph.value_type(src).num_elements();
    for c in &copies {
        if c.src_extent() > src_elems {
            return Err(internal(&name, "copy reads outside its source"));
        }
    }
    let mut args: Vec<Place> = outs.iter().map(|&v| cx.out_buf(v)).collect();
    let n = args.len();
    args.push(s);
    cx.steps.push(Step { label: name, kind: StepKind::Copies(copies), args, n_writes: n });
    Ok(())
}

fn lower_reduce(
    cx: &mut Ctx,
    id: NodeId,
    kind: ReduceKind,
    axes: &Option<Vec<i64>>,
    noop_empty: bool,
) -> Result<(), Error> {
    let graph = cx.graph;
    let name = graph.node(id).name.clone();
    let ins = graph.node_inputs(id);
    let x = graph.value_type(ins[0]).clone();
    let out_v = Value { node: id, port: 0 };
    let reduced: HashSet<usize> = match axes {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|&ax| normalize_axis(ax, x.rank()))
            .collect::<Result<_, _>>()
            .map_err(|e| internal(&name, e))?,
        _ if noop_empty && axes.as_ref().is_some_and(|a| a.is_empty()) => HashSet::new(),
        _ if noop_empty && axes.is_none() => HashSet::new(),
        _ => (0..x.rank()).collect(),
    };
    match x.dtype {
        DType::F32 => {}
        DType::I64 if matches!(kind, ReduceKind::Sum | ReduceKind::Max) => {
            return lower_reduce_i64(cx, id, kind, &reduced);
        }
        other => return Err(internal(&name, format!("{kind:?} over {other} (the IR admits f32, or i64 for Sum/Max)"))),
    }
    // Segments of (size, reduced) over non-unit axes, adjacent equal kinds merged.
    let mut seg: Vec<(usize, bool)> = Vec::new();
    for (j, &d) in x.shape.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let r = reduced.contains(&j);
        match seg.last_mut() {
            Some((s, rr)) if *rr == r => *s *= d,
            _ => seg.push((d, r)),
        }
    }
    let total = x.num_elements();
    let src = cx.input(ins[0], &name)?;
    if !seg.iter().any(|s| s.1) {
        // Nothing of size > 1 is reduced: one kernel over rows of 1 (L2 still takes |x|).
        let k = cx.kname(&name, "reduce");
        rows::reduce_rows(cx.jit, &k, 1, kind).map_err(|e| internal(&name, e))?;
        let dst = cx.out_buf(out_v);
        cx.kernel_step(&name, k, total, total, vec![dst, src]);
        return Ok(());
    }
    // One kernel per block of reduced axes, innermost block first. Chaining is exact for every
    // kind: Sum and Max compose, Mean of equal-count means is the mean, and L2 of L2s is L2.
    let mut cur = src;
    let mut part = 0;
    while let Some(j) = seg.iter().rposition(|s| s.1) {
        let outer: usize = seg[..j].iter().map(|s| s.0).product();
        let r = seg[j].0;
        let inner: usize = seg[j + 1..].iter().map(|s| s.0).product();
        let k = cx.kname(&name, &format!("reduce{part}"));
        if inner == 1 {
            rows::reduce_rows(cx.jit, &k, r, kind).map_err(|e| internal(&name, e))?;
        } else {
            rows::reduce_strided(cx.jit, &k, r, inner, kind).map_err(|e| internal(&name, e))?;
        }
        seg.remove(j);
        if j > 0 && j < seg.len() && seg[j - 1].1 == seg[j].1 {
            let merged = seg[j - 1].0 * seg[j].0;
            seg[j - 1].0 = merged;
            seg.remove(j);
        }
        let dst =
            if seg.iter().any(|s| s.1) { cx.new_buf(&TensorType::f32([outer * inner])) } else { cx.out_buf(out_v) };
        cx.kernel_step(&name, k, outer, outer * r * inner, vec![dst, cur]);
        cur = dst;
        part += 1;
    }
    Ok(())
}

fn lower_matmul(cx: &mut Ctx, id: NodeId) -> Result<(), Error> {
    let graph = cx.graph;
    let name = graph.node(id).name.clone();
    let ins = graph.node_inputs(id);
    let a = graph.value_type(ins[0]).clone();
    let b = graph.value_type(ins[1]).clone();
    let out_v = Value { node: id, port: 0 };
    let out = graph.value_type(out_v).clone();
    if a.dtype != DType::F32 || b.dtype != DType::F32 {
        return Err(excluded("MatMul", &name, "non-f32 operands"));
    }
    let (call, units, elems) = matmul_parts(&a.shape, &b.shape, cx.threads).map_err(|e| internal(&name, e))?;
    if elems != out.num_elements() {
        return Err(internal(&name, "matmul output size mismatch"));
    }
    let pa = cx.input(ins[0], &name)?;
    let pb = cx.input(ins[1], &name)?;
    let dst = cx.out_buf(out_v);
    cx.steps.push(Step {
        label: name,
        kind: StepKind::MatMul { call, units, c_fill: None, epilogue: None },
        args: vec![dst, pa, pb],
        n_writes: 1,
    });
    Ok(())
}

/// numpy matmul of `a` by `b` (1-D operands promoted and the unit axis dropped, batch axes
/// broadcast): the GEMM, its work units and the output element count.
pub(crate) fn matmul_parts(
    a: &[usize],
    b: &[usize],
    threads: usize,
) -> Result<(GemmCall, Vec<[usize; 5]>, usize), String> {
    if a.is_empty() || b.is_empty() {
        return Err("matmul operands must have rank ≥ 1".into());
    }
    let a2 = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
    let b2 = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(format!("matmul inner dimensions differ ({k} vs {k2})"));
    }
    let ba = &a2[..a2.len() - 2];
    let bb = &b2[..b2.len() - 2];
    let batch = kiln_ir::ops::broadcast::broadcast_shapes(ba, bb)?;
    let nb: usize = batch.iter().product();
    let ia = kiln_ir::ops::broadcast::broadcast_indices(ba, &batch);
    let ib = kiln_ir::ops::broadcast::broadcast_indices(bb, &batch);
    let units = split_units(nb, m, threads, |bi| [ia[bi] * m * k, ib[bi] * k * n, bi * m * n]);
    let call = GemmCall {
        m,
        n,
        k,
        a_rs: k as isize,
        a_cs: 1,
        b_rs: n as isize,
        b_cs: 1,
        d_rs: n as isize,
        alpha: 1.0,
        beta: 0.0,
        accumulate: false,
    };
    Ok((call, units, nb * m * n))
}

/// Splits `nb` batches of `m` rows into units (a_off, b_off, d_off, m_lo, m_hi): whole batches
/// when there are enough of them, otherwise row blocks of each batch.
fn split_units(nb: usize, m: usize, threads: usize, offs: impl Fn(usize) -> [usize; 3]) -> Vec<[usize; 5]> {
    let per_batch = if nb >= threads { 1 } else { threads.div_ceil(nb).min(m).max(1) };
    let mut units = Vec::new();
    for bi in 0..nb {
        let [ao, bo, d] = offs(bi);
        for c in 0..per_batch {
            let (lo, hi) = crate::pool::chunk(m, per_batch, c);
            if hi > lo {
                units.push([ao, bo, d, lo, hi]);
            }
        }
    }
    units
}

fn lower_gemm(cx: &mut Ctx, id: NodeId, alpha: f32, beta: f32, ta: bool, tb: bool) -> Result<(), Error> {
    let graph = cx.graph;
    let name = graph.node(id).name.clone();
    let ins = graph.node_inputs(id);
    let a = graph.value_type(ins[0]).clone();
    let b = graph.value_type(ins[1]).clone();
    let out_v = Value { node: id, port: 0 };
    let out = graph.value_type(out_v).clone();
    let c = if ins.len() == 3 { Some(graph.value_type(ins[2]).shape.clone()) } else { None };
    let (call, units, c_fill) = gemm_parts(&a.shape, &b.shape, c.as_deref(), alpha, beta, ta, tb, cx.threads)
        .map_err(|e| internal(&name, e))?;
    if out.shape != [call.m, call.n] {
        return Err(internal(&name, "gemm output shape mismatch"));
    }
    let mut args = vec![cx.out_buf(out_v), cx.input(ins[0], &name)?, cx.input(ins[1], &name)?];
    if c_fill.is_some() {
        args.push(cx.input(ins[2], &name)?);
    }
    cx.steps.push(Step {
        label: name,
        kind: StepKind::MatMul { call, units, c_fill, epilogue: None },
        args,
        n_writes: 1,
    });
    Ok(())
}

/// ONNX Gemm: the GEMM call, its work units, and the copy that broadcasts C into the output.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub(crate) fn gemm_parts(
    a: &[usize],
    b: &[usize],
    c: Option<&[usize]>,
    alpha: f32,
    beta: f32,
    ta: bool,
    tb: bool,
    threads: usize,
) -> Result<(GemmCall, Vec<[usize; 5]>, Option<AxisCopy>), String> {
    if a.len() != 2 || b.len() != 2 {
        return Err("Gemm operands must be 2-D".into());
    }
    let (m, k) = if ta { (a[1], a[0]) } else { (a[0], a[1]) };
    let (k2, n) = if tb { (b[1], b[0]) } else { (b[0], b[1]) };
    if k != k2 {
        return Err(format!("gemm inner dimensions differ ({k} vs {k2})"));
    }
    let (a_rs, a_cs) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let c_fill = match c {
        Some(c) if beta != 0.0 => {
            if c.len() > 2 || kiln_ir::ops::broadcast::broadcast_shapes(c, &[m, n]).ok().as_deref() != Some(&[m, n][..])
            {
                return Err("Gemm's C does not broadcast to the output".into());
            }
            let off = 2 - c.len();
            let cs = strides(c);
            let tabs = (0..2)
                .map(|j| {
                    let len = [m, n][j];
                    (0..len).map(|i| if j < off || c[j - off] == 1 { 0 } else { (i * cs[j - off]) as i64 }).collect()
                })
                .collect();
            Some(copy_to_contiguous(&TensorType::f32([m, n]), tabs))
        }
        _ => None,
    };
    let call =
        GemmCall { m, n, k, a_rs, a_cs, b_rs, b_cs, d_rs: n as isize, alpha, beta, accumulate: c_fill.is_some() };
    Ok((call, split_units(1, m, threads, |_| [0, 0, 0]), c_fill))
}

fn lower_conv(
    cx: &mut Ctx,
    id: NodeId,
    stride: [usize; 2],
    dil: [usize; 2],
    pads: [usize; 4],
    group: usize,
) -> Result<(), Error> {
    let graph = cx.graph;
    let name = graph.node(id).name.clone();
    let ins = graph.node_inputs(id);
    let x = graph.value_type(ins[0]).clone();
    let w = graph.value_type(ins[1]).clone();
    let out_v = Value { node: id, port: 0 };
    let out = graph.value_type(out_v).clone();
    if x.rank() != 4 || w.rank() != 4 {
        return Err(excluded("Conv", &name, "an input or weight that is not rank 4 (the IR's Conv is 2-D NCHW)"));
    }
    let (spec, out_shape) =
        conv_parts(&x.shape, &w.shape, stride, dil, pads, group, ins.len() == 3).map_err(|e| internal(&name, e))?;
    if out.shape != out_shape {
        return Err(internal(&name, "conv output shape mismatch"));
    }
    let ic = &spec.im2col;
    let col = cx.new_buf(&TensorType::f32([ic.c * ic.kh * ic.kw, ic.oh * ic.ow]));
    let mut args = vec![cx.out_buf(out_v), col];
    for v in &ins {
        args.push(cx.input(*v, &name)?);
    }
    cx.steps.push(Step { label: name, kind: StepKind::Conv(spec), args, n_writes: 2 });
    Ok(())
}

/// 2-D NCHW convolution: the im2col + GEMM plan and the output shape.
pub(crate) fn conv_parts(
    x: &[usize],
    w: &[usize],
    stride: [usize; 2],
    dil: [usize; 2],
    pads: [usize; 4],
    group: usize,
    bias: bool,
) -> Result<(ConvSpec, Vec<usize>), String> {
    let (n, c, h, wd) = (x[0], x[1], x[2], x[3]);
    let (m, cg, kh, kw) = (w[0], w[1], w[2], w[3]);
    if group == 0 || c != cg * group || m % group != 0 || stride.contains(&0) || dil.contains(&0) {
        return Err("conv shapes are inconsistent".into());
    }
    let out_len = |inp: usize, pa: usize, pb: usize, k: usize, d: usize, s: usize| {
        let span = d * (k - 1) + 1;
        (inp + pa + pb).checked_sub(span).map(|r| r / s + 1)
    };
    let oh = out_len(h, pads[0], pads[2], kh, dil[0], stride[0]).ok_or("kernel larger than the padded input")?;
    let ow = out_len(wd, pads[1], pads[3], kw, dil[1], stride[1]).ok_or("kernel larger than the padded input")?;
    let spec = ConvSpec {
        n,
        groups: group,
        m_per_group: m / group,
        im2col: Im2Col { c: cg, h, w: wd, kh, kw, oh, ow, stride, dil, pad: [pads[0], pads[1]] },
        bias,
    };
    Ok((spec, vec![n, m, oh, ow]))
}
