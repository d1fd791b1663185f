//! Fused elementwise/broadcast kernels: a small expression DAG over broadcast leaves, evaluated in
//! one loop nest that writes the root's value once per output element.
//!
//! Layout: the output shape is collapsed into `[rows, inner]` (adjacent axes merge when every leaf
//! reads them the same way), each leaf reads its inner axis either contiguously (f32x4 loads) or
//! as one broadcast scalar per row (loaded once per row and splatted). Row offsets of broadcast
//! leaves are recomputed per row from the row index with constant divisors. Rows are the unit of
//! parallel work. Main loop f32x4, scalar tail for `inner % 4`.
//!
//! Bool values (Equal/Less results, Where's condition) are f32 0.0/1.0 inside kiln's arena.

use super::loops::{RowLoop, load_arg_ptr};
use crate::jit::{HostFeatures, Jit};
use crate::simd::{HostMapFn, MapOp, MapPre};
use crate::vmath::Lanes;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Signature, Value, types};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::{BinaryOp, UnaryOp};

/// One node of a fused expression. Operands index earlier nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Kernel input `i` (argument `1 + i`).
    Leaf(usize),
    Const(f32),
    Unary(UnaryOp, usize),
    Binary(BinaryOp, usize, usize),
    /// Where(cond, x, y); cond is 0.0/1.0.
    Where(usize, usize, usize),
    /// x ≠ 0 as 0.0/1.0 (Cast f32 → bool).
    NonZero(usize),
}

/// A fused elementwise kernel: `nodes` in dependency order, the last is the result.
#[derive(Debug, Clone)]
pub struct Fused {
    pub nodes: Vec<Expr>,
    pub out_shape: Vec<usize>,
    /// Shape of each leaf; each broadcasts to `out_shape`.
    pub leaf_shapes: Vec<Vec<usize>>,
}

/// The loop structure chosen for a fused kernel.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Collapsed output dims; the last is the inner (contiguous) one.
    pub dims: Vec<usize>,
    /// Per leaf, its element stride along each collapsed dim (0 where broadcast).
    pub strides: Vec<Vec<usize>>,
}

impl Layout {
    pub fn rows(&self) -> usize {
        self.dims[..self.dims.len() - 1].iter().product()
    }
    pub fn inner(&self) -> usize {
        self.dims[self.dims.len() - 1]
    }
}

/// Broadcast strides of `leaf` against `out` (right-aligned numpy rules), 0 on broadcast axes.
pub fn broadcast_strides(leaf: &[usize], out: &[usize]) -> Vec<usize> {
    let off = out.len() - leaf.len();
    let mut strides = vec![0; out.len()];
    let mut s = 1;
    for i in (0..leaf.len()).rev() {
        if leaf[i] != 1 {
            strides[i + off] = s;
        }
        s *= leaf[i];
    }
    strides
}

/// Collapses the iteration space. Large single-axis spaces are split into rows of a power-of-two
/// chunk so that threads have rows to share.
pub fn layout(out_shape: &[usize], leaf_shapes: &[Vec<usize>]) -> Layout {
    layout_with(out_shape, leaf_shapes, false)
}

/// As [`layout`]; with `keep_last` the last axis stays the inner dimension on its own (never merged
/// or split), so kernel rows are exactly the rows of the output seen as a matrix (GEMM epilogues).
pub fn layout_with(out_shape: &[usize], leaf_shapes: &[Vec<usize>], keep_last: bool) -> Layout {
    let mut dims: Vec<usize> = Vec::new();
    let mut strides: Vec<Vec<usize>> = vec![Vec::new(); leaf_shapes.len()];
    let full: Vec<Vec<usize>> = leaf_shapes.iter().map(|l| broadcast_strides(l, out_shape)).collect();
    for (axis, &d) in out_shape.iter().enumerate() {
        let last = keep_last && axis + 1 == out_shape.len();
        if d == 1 && !last {
            continue;
        }
        // Merge into the previous dim when every leaf's stride continues it.
        let mergeable =
            !last && !dims.is_empty() && full.iter().zip(&strides).all(|(f, s)| s[s.len() - 1] == f[axis] * d);
        if mergeable {
            let last = dims.len() - 1;
            dims[last] *= d;
            for (f, s) in full.iter().zip(strides.iter_mut()) {
                let l = s.len() - 1;
                s[l] = f[axis];
            }
        } else {
            dims.push(d);
            for (f, s) in full.iter().zip(strides.iter_mut()) {
                s.push(f[axis]);
            }
        }
    }
    if dims.is_empty() {
        dims.push(1);
        for s in &mut strides {
            s.push(0);
        }
    }
    if dims.len() == 1
        && !keep_last
        && dims[0] >= 8192
        && let Some(chunk) = [4096usize, 2048, 1024, 512, 256].into_iter().find(|&c| dims[0].is_multiple_of(c))
    {
        {
            let n = dims[0];
            dims = vec![n / chunk, chunk];
            for s in &mut strides {
                let st = s[0];
                *s = vec![st * chunk, st];
            }
        }
    }
    if dims.len() == 1 {
        dims.insert(0, 1);
        for s in &mut strides {
            s.insert(0, 0);
        }
    }
    Layout { dims, strides }
}

/// Defines the kernel in `jit`; returns its layout (the executor needs the row count).
/// Arguments: `[out, leaf0, leaf1, …]`.
pub fn define(jit: &mut Jit, name: &str, f: &Fused) -> Result<Layout, String> {
    define_with(jit, name, f, false)
}

/// [`define`] with the loop layout of [`layout_with`]. Any leaf may share the output's buffer.
pub fn define_with(jit: &mut Jit, name: &str, f: &Fused, keep_last: bool) -> Result<Layout, String> {
    define_aliased(jit, name, f, keep_last, &vec![true; f.leaf_shapes.len()])
}

/// [`define_with`], told which leaves may share the output's buffer (`may_alias_out[i]`: the
/// kernel then writes where it reads that leaf). A chain cut around a host map kernel
/// (`MapSplit`) writes whole groups of output rows before it reads the leaves again, so only
/// leaves that cannot alias the output may be read after the cut.
pub fn define_aliased(
    jit: &mut Jit,
    name: &str,
    f: &Fused,
    keep_last: bool,
    may_alias_out: &[bool],
) -> Result<Layout, String> {
    let lay = layout_with(&f.out_shape, &f.leaf_shapes, keep_last);
    let nodes = f.nodes.clone();
    let lay2 = lay.clone();
    match jit.host_map.and_then(|entry| split_at_map_op(&nodes, may_alias_out).map(|s| (entry, s))) {
        Some((entry, split)) => jit.define(name, move |b, [args, start, end], feat| {
            body_with_host_map(b, args, start, end, feat, &split, &lay2, entry)
        })?,
        None => jit.define(name, move |b, [args, start, end], feat| {
            let (out, leaves) = load_args(b, args, lay2.strides.len());
            rows(b, start, end, feat, &nodes, &lay2.dims, &lay2.strides, out, &leaves);
            b.ins().return_(&[]);
        })?,
    }
    Ok(lay)
}

/// A fused chain cut around one op that has a hand-written 8-wide kernel ([`MapOp`]): generated
/// code computes the op's operand into the output, the host kernel maps the output in place, and
/// generated code finishes the chain reading the op's value back as one more leaf.
#[derive(Debug, Clone)]
struct MapSplit {
    /// Nodes up to the op's operand (the last of them).
    before: Vec<Expr>,
    op: MapOp,
    /// The nodes after the op, its value as `Leaf(nleaves)`; `None` when the op is the result.
    after: Option<Vec<Expr>>,
    /// When `before` is a leaf under at most a Mul, an Add (or Sub) by constants and a Clip, in
    /// that order: the leaf and that stage, which the host kernel applies itself reading the leaf
    /// (if the leaf is dense in the output's layout: [`body_with_host_map`] checks), so no
    /// generated pass runs before the call.
    pre: Option<(usize, MapPre)>,
}

/// The leaf and [`MapPre`] stage that node `a` computes, if it is a leaf under at most a Mul by a
/// constant, then an Add or Sub of a constant, then a Clip (x − c is x + (−c) exactly in IEEE
/// arithmetic; a Div is not a Mul by the reciprocal and is not taken).
fn pre_of(nodes: &[Expr], a: usize) -> Option<(usize, MapPre)> {
    let konst = |i: usize| match nodes.get(i) {
        Some(Expr::Const(c)) => Some(*c),
        _ => None,
    };
    // A commutative op's constant and its other operand (exactly one side constant).
    let one_const = |x: usize, y: usize| match (konst(x), konst(y)) {
        (None, Some(c)) => Some((c, x)),
        (Some(c), None) => Some((c, y)),
        _ => None,
    };
    let mut pre = MapPre::IDENTITY;
    // The stages met walking back from `a`: 3 = Clip, 2 = Add, 1 = Mul; each must be lower than
    // the last one met (so the forward order is Mul, Add, Clip, each at most once).
    let mut last = 4;
    let mut i = a;
    loop {
        let (stage, next) = match *nodes.get(i)? {
            Expr::Leaf(l) => return Some((l, pre)),
            Expr::Unary(UnaryOp::Clip { min, max }, x) => {
                pre.lo = min.unwrap_or(f32::NEG_INFINITY);
                pre.hi = max.unwrap_or(f32::INFINITY);
                (3, x)
            }
            Expr::Binary(BinaryOp::Add, x, y) => {
                let (c, x) = one_const(x, y)?;
                pre.shift = c;
                (2, x)
            }
            Expr::Binary(BinaryOp::Sub, x, y) => {
                pre.shift = -konst(y)?;
                (2, x)
            }
            Expr::Binary(BinaryOp::Mul, x, y) => {
                let (c, x) = one_const(x, y)?;
                pre.scale = c;
                (1, x)
            }
            _ => return None,
        };
        if stage >= last || next >= i {
            return None;
        }
        last = stage;
        i = next;
    }
}

/// Where a chain can be cut ([`MapSplit`]): at the last op with a map kernel such that the nodes
/// after it use only its value, leaves that do not alias the output (`may_alias_out`), constants
/// and each other (a leaf or constant before the op is repeated after the cut), and every node
/// between its operand and it is a leaf or constant. A chain whose later nodes need an earlier
/// computed value (x·σ(x) written out) or the output's own buffer is not cut.
fn split_at_map_op(nodes: &[Expr], may_alias_out: &[bool]) -> Option<MapSplit> {
    let nleaves = may_alias_out.len();
    let (h, op, a) = nodes.iter().enumerate().rev().find_map(|(i, n)| match *n {
        Expr::Unary(u, a) => MapOp::of(u).map(|m| (i, m, a)),
        _ => None,
    })?;
    let cheap = |i: usize| matches!(nodes[i], Expr::Leaf(_) | Expr::Const(_));
    // A leaf the kernel may be writing over (unknown leaves count as aliased).
    let aliased = |i: usize| matches!(nodes[i], Expr::Leaf(l) if may_alias_out.get(l).copied().unwrap_or(true));
    if !(a + 1..h).all(cheap) {
        return None;
    }
    if h + 1 == nodes.len() {
        return Some(MapSplit { before: nodes[..=a].to_vec(), op, after: None, pre: pre_of(nodes, a) });
    }
    // Rebuild the nodes after the cut: `map[i]` is node i's index in `after`.
    let mut after = vec![Expr::Leaf(nleaves)];
    let mut map: Vec<Option<usize>> = vec![None; nodes.len()];
    map[h] = Some(0);
    for i in h + 1..nodes.len() {
        let operands: Vec<usize> = match nodes[i] {
            Expr::Leaf(_) | Expr::Const(_) => vec![],
            Expr::Unary(_, x) | Expr::NonZero(x) => vec![x],
            Expr::Binary(_, x, y) => vec![x, y],
            Expr::Where(c, x, y) => vec![c, x, y],
        };
        for &o in &operands {
            if map[o].is_none() {
                if o > h || !cheap(o) || aliased(o) {
                    return None;
                }
                map[o] = Some(after.len());
                after.push(nodes[o].clone());
            }
        }
        if aliased(i) {
            return None;
        }
        let m = |x: usize| map[x].unwrap_or(usize::MAX);
        let node = match nodes[i] {
            Expr::Leaf(l) => Expr::Leaf(l),
            Expr::Const(c) => Expr::Const(c),
            Expr::Unary(u, x) => Expr::Unary(u, m(x)),
            Expr::NonZero(x) => Expr::NonZero(m(x)),
            Expr::Binary(o, x, y) => Expr::Binary(o, m(x), m(y)),
            Expr::Where(c, x, y) => Expr::Where(m(c), m(x), m(y)),
        };
        map[i] = Some(after.len());
        after.push(node);
    }
    Some(MapSplit { before: nodes[..=a].to_vec(), op, after: Some(after), pre: pre_of(nodes, a) })
}

/// Rows per host-kernel call: about 4096 floats (16 KB), so the three passes over a group of
/// rows stay in L1/L2.
const HOST_MAP_GROUP: usize = 4096;

/// The kernel of a [`MapSplit`] chain: for each group of rows, the generated part before the op,
/// one call of the host kernel over the group's output (contiguous: the output is dense), then the
/// generated part after it.
#[allow(clippy::too_many_arguments)]
fn body_with_host_map(
    b: &mut FunctionBuilder,
    args: Value,
    start: Value,
    end: Value,
    feat: HostFeatures,
    split: &MapSplit,
    lay: &Layout,
    entry: HostMapFn,
) {
    let nleaves = lay.strides.len();
    let (out, leaves) = load_args(b, args, nleaves);
    let inner = lay.inner();
    let group = (HOST_MAP_GROUP / inner).max(1) as i64;
    // The output read as a leaf after the cut: dense strides over the collapsed dims.
    let mut dense = vec![0usize; lay.dims.len()];
    let mut st = 1;
    for (d, &n) in dense.iter_mut().zip(&lay.dims).rev() {
        *d = st;
        st *= n;
    }
    let mut strides_after = lay.strides.clone();
    strides_after.push(dense.clone());
    let mut leaves_after = leaves.clone();
    leaves_after.push(out);

    // The host kernel reads a leaf itself when its stage is a `MapPre` and the leaf is dense in
    // the output's layout (then its rows [r0, r1) are one run, as the output's are).
    // (A dimension of one row may have any stride: it is never stepped.)
    let is_dense = |st: &Vec<usize>| st.iter().zip(&dense).zip(&lay.dims).all(|((&s, &d), &n)| n == 1 || s == d);
    let pre = split.pre.filter(|&(l, _)| lay.strides.get(l).is_some_and(is_dense));
    let mut sig = Signature::new(b.func.signature.call_conv);
    sig.params.push(AbiParam::new(types::I32));
    for _ in 0..3 {
        sig.params.push(AbiParam::new(types::I64));
    }
    for _ in 0..4 {
        sig.params.push(AbiParam::new(types::F32));
    }
    let sig = b.import_signature(sig);

    let head = b.create_block();
    let grp = b.create_block();
    let exit = b.create_block();
    let r0 = b.append_block_param(head, types::I64);
    b.ins().jump(head, &[start.into()]);
    b.switch_to_block(head);
    let more = b.ins().icmp(IntCC::SignedLessThan, r0, end);
    b.ins().brif(more, grp, &[], exit, &[]);
    b.switch_to_block(grp);
    let next = b.ins().iadd_imm_s(r0, group);
    let past = b.ins().icmp(IntCC::SignedGreaterThan, next, end);
    let r1 = b.ins().select(past, end, next);
    if pre.is_none() {
        rows(b, r0, r1, feat, &split.before, &lay.dims, &lay.strides, out, &leaves);
    }
    let first = b.ins().imul_imm_s(r0, (inner * 4) as i64);
    let ptr = b.ins().iadd(out, first);
    let (src, stage) = match pre {
        Some((l, stage)) => (b.ins().iadd(leaves[l], first), stage),
        None => (ptr, MapPre::IDENTITY),
    };
    let nrows = b.ins().isub(r1, r0);
    let n = b.ins().imul_imm_s(nrows, inner as i64);
    let code = b.ins().iconst(types::I32, split.op.code() as i64);
    let callee = b.ins().iconst(types::I64, entry as usize as i64);
    let mut call_args = vec![code, src, ptr, n];
    for c in [stage.scale, stage.shift, stage.lo, stage.hi] {
        call_args.push(b.ins().f32const(c));
    }
    b.ins().call_indirect(sig, callee, &call_args);
    if let Some(after) = &split.after {
        rows(b, r0, r1, feat, after, &lay.dims, &strides_after, out, &leaves_after);
    }
    b.ins().jump(head, &[r1.into()]);
    b.switch_to_block(exit);
    b.ins().return_(&[]);
}

/// The output pointer and the `n` leaf pointers of the kernel's argument array.
fn load_args(b: &mut FunctionBuilder, args: Value, n: usize) -> (Value, Vec<Value>) {
    let out = load_arg_ptr(b, args, 0);
    (out, (0..n).map(|i| load_arg_ptr(b, args, 1 + i)).collect())
}

/// The row loop over `[start, end)` evaluating `nodes` into `out`; leaves read with `strides`
/// over the collapsed `dims`. Leaves the builder after the loop.
#[allow(clippy::too_many_arguments)]
fn rows(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    feat: HostFeatures,
    nodes: &[Expr],
    dims: &[usize],
    strides: &[Vec<usize>],
    out: Value,
    leaves: &[Value],
) {
    let nleaves = strides.len();
    let inner = dims[dims.len() - 1];
    let outer_dims = &dims[..dims.len() - 1];
    let flags = MemFlagsData::new().with_notrap();
    let rl = RowLoop::begin(b, start, end);
    let r = rl.row;
    // Row bases.
    let out_off = b.ins().imul_imm_s(r, (inner * 4) as i64);
    let out_row = b.ins().iadd(out, out_off);
    let leaf_rows: Vec<Value> = strides
        .iter()
        .zip(leaves)
        .map(|(st, &base)| {
            let off = row_offset(b, r, outer_dims, st, 4);
            b.ins().iadd(base, off)
        })
        .collect();
    let leaf_inner_contig: Vec<bool> = strides.iter().map(|st| st[st.len() - 1] != 0).collect();
    // Broadcast-scalar leaves: one load per row.
    let mut scalars: Vec<Option<Value>> = vec![None; nleaves];
    for i in 0..nleaves {
        if !leaf_inner_contig[i] {
            scalars[i] = Some(b.ins().load(types::F32, flags, leaf_rows[i], 0));
        }
    }

    let emit = |b: &mut FunctionBuilder, vector: bool, idx: Value| {
        let lanes_ty = if vector { types::F32X4 } else { types::F32 };
        let byte = b.ins().ishl_imm_s(idx, 2);
        let mut leaf_vals = Vec::with_capacity(nleaves);
        for i in 0..nleaves {
            let v = match scalars[i] {
                Some(s) => {
                    if vector {
                        b.ins().splat(types::F32X4, s)
                    } else {
                        s
                    }
                }
                None => {
                    let addr = b.ins().iadd(leaf_rows[i], byte);
                    b.ins().load(lanes_ty, flags, addr, 0)
                }
            };
            leaf_vals.push(v);
        }
        let mut l = Lanes::new(b, vector, feat.fma);
        let v = emit_expr(&mut l, nodes, &leaf_vals);
        let addr = b.ins().iadd(out_row, byte);
        b.ins().store(flags, v, addr, 0);
    };
    super::loops::inner_loop(b, inner, &emit);
    rl.close(b);
}

/// Byte offset of row `r` in a leaf read with element strides `st` over the collapsed `outer_dims`
/// (elements of `elem` bytes).
pub fn row_offset(b: &mut FunctionBuilder, r: Value, outer_dims: &[usize], st: &[usize], elem: usize) -> Value {
    let mut off = b.ins().iconst(types::I64, 0);
    // Coordinate j of the row index: (r / P_j) % d_j, P_j = product of later outer dims.
    let mut p = 1usize;
    for j in (0..outer_dims.len()).rev() {
        let d = outer_dims[j];
        if st[j] != 0 {
            let q = if p == 1 { r } else { b.ins().udiv_imm_s(r, p as i64) };
            let c = if j == 0 { q } else { b.ins().urem_imm_s(q, d as i64) };
            let t = b.ins().imul_imm_s(c, (st[j] * elem) as i64);
            off = b.ins().iadd(off, t);
        }
        p *= d;
    }
    off
}

/// Emits the expression for one vector (or scalar) of elements.
pub fn emit_expr(l: &mut Lanes, nodes: &[Expr], leaf_vals: &[Value]) -> Value {
    let mut vals: Vec<Value> = Vec::with_capacity(nodes.len());
    for n in nodes {
        let v = match *n {
            Expr::Leaf(i) => leaf_vals[i],
            Expr::Const(c) => l.c(c),
            Expr::Unary(op, a) => unary(l, op, vals[a]),
            Expr::Binary(op, a, c) => binary(l, op, vals[a], vals[c]),
            Expr::Where(c, x, y) => {
                let zero = l.c(0.0);
                let m = l.cmp(FloatCC::NotEqual, vals[c], zero);
                l.sel(m, vals[x], vals[y])
            }
            Expr::NonZero(a) => {
                let zero = l.c(0.0);
                let m = l.cmp(FloatCC::NotEqual, vals[a], zero);
                l.mask_to_f32(m)
            }
        };
        vals.push(v);
    }
    vals[vals.len() - 1]
}

pub fn unary(l: &mut Lanes, op: UnaryOp, x: Value) -> Value {
    match op {
        UnaryOp::Sqrt => l.sqrt(x),
        UnaryOp::Reciprocal => {
            let one = l.c(1.0);
            l.div(one, x)
        }
        UnaryOp::Neg => l.neg(x),
        UnaryOp::Abs => l.abs(x),
        UnaryOp::Exp => l.exp(x),
        UnaryOp::Log => l.log(x),
        UnaryOp::Tanh => l.tanh(x),
        UnaryOp::Erf => l.erf(x),
        UnaryOp::Sigmoid => l.sigmoid(x),
        UnaryOp::Relu => {
            // (x > 0 or NaN) ? x : +0 — keeps NaN, maps −0 to +0, one compare and a blend.
            let zero = l.c(0.0);
            let keep = l.cmp(FloatCC::UnorderedOrGreaterThan, x, zero);
            l.sel(keep, x, zero)
        }
        UnaryOp::Silu => {
            let s = l.sigmoid(x);
            l.mul(x, s)
        }
        UnaryOp::LeakyRelu { alpha } => {
            let zero = l.c(0.0);
            let a = l.c(alpha);
            let ax = l.mul(a, x);
            let pos = l.cmp(FloatCC::GreaterThanOrEqual, x, zero);
            l.sel(pos, x, ax)
        }
        UnaryOp::Selu { alpha, gamma } => {
            let zero = l.c(0.0);
            let em1 = l.expm1(x);
            let a = l.c(alpha);
            let neg = l.mul(a, em1);
            let pos = l.cmp(FloatCC::GreaterThan, x, zero);
            let v = l.sel(pos, x, neg);
            let g = l.c(gamma);
            l.mul(g, v)
        }
        UnaryOp::Gelu { tanh: false } => l.gelu_erf(x),
        UnaryOp::Gelu { tanh: true } => {
            // ½x·(1 + tanh(u)) = x·σ(2u), u = √(2/π)·(x + 0.044715·x³): the sigmoid keeps the
            // negative tail that 1 + tanh cancels to 0.
            let x2 = l.mul(x, x);
            let c = l.c(0.044_715);
            let one = l.c(1.0);
            let inner = l.mul_add(c, x2, one);
            let xi = l.mul(x, inner);
            let k = l.c(2.0 * 0.797_884_6);
            let arg = l.mul(k, xi);
            let s = l.sigmoid(arg);
            l.mul(x, s)
        }
        UnaryOp::Clip { min, max } => {
            // v < lo ? lo : v, then v > hi ? hi : v — the interpreter's rule (NaN kept, −0 kept),
            // a compare and a blend each. Cranelift's fmax/fmin (IEEE NaN and signed-zero rules)
            // lower to long sequences on x86: a ReLU6 epilogue took 47% of a 1×1 conv.
            let mut v = x;
            if let Some(lo) = min {
                let c = l.c(lo);
                let below = l.cmp(FloatCC::LessThan, v, c);
                v = l.sel(below, c, v);
            }
            if let Some(hi) = max {
                let c = l.c(hi);
                let above = l.cmp(FloatCC::GreaterThan, v, c);
                v = l.sel(above, c, v);
            }
            v
        }
        UnaryOp::Sin => l.sin_cos(x, false),
        UnaryOp::Cos => l.sin_cos(x, true),
        UnaryOp::Tan => l.tan(x),
        UnaryOp::Asin => l.asin(x),
        UnaryOp::Acos => l.acos(x),
        UnaryOp::Atan => l.atan(x),
        UnaryOp::Sinh => l.sinh_cosh(x, false),
        UnaryOp::Cosh => l.sinh_cosh(x, true),
        UnaryOp::Asinh => l.asinh(x),
        UnaryOp::Acosh => l.acosh(x),
        UnaryOp::Atanh => l.atanh(x),
        UnaryOp::Floor => l.floor(x),
        UnaryOp::Ceil => l.ceil(x),
        UnaryOp::Round => l.round_even(x),
        UnaryOp::Sign => {
            // ±0 and NaN pass through.
            let zero = l.c(0.0);
            let one = l.c(1.0);
            let m1 = l.c(-1.0);
            let pos = l.cmp(FloatCC::GreaterThan, x, zero);
            let neg = l.cmp(FloatCC::LessThan, x, zero);
            let v = l.sel(neg, m1, x);
            l.sel(pos, one, v)
        }
        UnaryOp::Softplus => l.softplus(x),
        UnaryOp::Softsign => {
            let one = l.c(1.0);
            let a = l.abs(x);
            let d = l.add(one, a);
            l.div(x, d)
        }
        UnaryOp::Mish => {
            let sp = l.softplus(x);
            let t = l.tanh(sp);
            l.mul(x, t)
        }
        UnaryOp::HardSwish => {
            let h = hard_sigmoid(l, x, 1.0 / 6.0, 0.5);
            l.mul(x, h)
        }
        UnaryOp::HardSigmoid { alpha, beta } => hard_sigmoid(l, x, alpha, beta),
        UnaryOp::Elu { alpha } => {
            let em1 = l.expm1(x);
            let a = l.c(alpha);
            let neg = l.mul(a, em1);
            let zero = l.c(0.0);
            let pos = l.cmp(FloatCC::GreaterThan, x, zero);
            l.sel(pos, x, neg)
        }
        UnaryOp::Celu { alpha } => {
            let inv = l.c(1.0 / alpha);
            let xs = l.mul(x, inv);
            let em1 = l.expm1(xs);
            let a = l.c(alpha);
            let neg = l.mul(a, em1);
            let zero = l.c(0.0);
            let pos = l.cmp(FloatCC::GreaterThan, x, zero);
            l.sel(pos, x, neg)
        }
        UnaryOp::ThresholdedRelu { alpha } => {
            // NaN compares false: 0, as ONNX defines it.
            let a = l.c(alpha);
            let zero = l.c(0.0);
            let keep = l.cmp(FloatCC::GreaterThan, x, a);
            l.sel(keep, x, zero)
        }
        UnaryOp::Shrink { bias, lambd } => {
            let lo = l.c(-lambd);
            let hi = l.c(lambd);
            let bc = l.c(bias);
            let plus = l.add(x, bc);
            let minus = l.sub(x, bc);
            let zero = l.c(0.0);
            let below = l.cmp(FloatCC::LessThan, x, lo);
            let above = l.cmp(FloatCC::GreaterThan, x, hi);
            let v = l.sel(above, minus, zero);
            l.sel(below, plus, v)
        }
        UnaryOp::IsNaN => {
            let m = l.cmp(FloatCC::Unordered, x, x);
            l.mask_to_f32(m)
        }
        UnaryOp::IsInf { positive, negative } => {
            let inf = l.c(f32::INFINITY);
            let ninf = l.c(f32::NEG_INFINITY);
            let p = l.cmp(FloatCC::Equal, x, inf);
            let n = l.cmp(FloatCC::Equal, x, ninf);
            match (positive, negative) {
                (true, true) => {
                    let m = l.mask_or(p, n);
                    l.mask_to_f32(m)
                }
                (true, false) => l.mask_to_f32(p),
                (false, true) => l.mask_to_f32(n),
                (false, false) => l.c(0.0),
            }
        }
        UnaryOp::Not => {
            let zero = l.c(0.0);
            let m = l.cmp(FloatCC::Equal, x, zero);
            l.mask_to_f32(m)
        }
    }
}

/// max(0, min(1, α·x + β)), NaN kept.
fn hard_sigmoid(l: &mut Lanes, x: Value, alpha: f32, beta: f32) -> Value {
    let a = l.c(alpha);
    let b = l.c(beta);
    let y = l.mul_add(a, x, b);
    l.clamp_keep_nan(y, 0.0, 1.0)
}

/// A bool operand (0.0/1.0) as a lane mask.
fn truth(l: &mut Lanes, x: Value) -> Value {
    let zero = l.c(0.0);
    l.cmp(FloatCC::NotEqual, x, zero)
}

pub fn binary(l: &mut Lanes, op: BinaryOp, a: Value, b: Value) -> Value {
    match op {
        BinaryOp::Add => l.add(a, b),
        BinaryOp::Sub => l.sub(a, b),
        BinaryOp::Mul => l.mul(a, b),
        BinaryOp::Div => l.div(a, b),
        BinaryOp::Pow => l.pow(a, b),
        BinaryOp::Max => l.max(a, b),
        BinaryOp::Min => l.min(a, b),
        BinaryOp::Equal => {
            let m = l.cmp(FloatCC::Equal, a, b);
            l.mask_to_f32(m)
        }
        BinaryOp::Less => {
            let m = l.cmp(FloatCC::LessThan, a, b);
            l.mask_to_f32(m)
        }
        BinaryOp::Greater => {
            let m = l.cmp(FloatCC::GreaterThan, a, b);
            l.mask_to_f32(m)
        }
        BinaryOp::GreaterOrEqual => {
            let m = l.cmp(FloatCC::GreaterThanOrEqual, a, b);
            l.mask_to_f32(m)
        }
        BinaryOp::LessOrEqual => {
            let m = l.cmp(FloatCC::LessThanOrEqual, a, b);
            l.mask_to_f32(m)
        }
        BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => {
            let (p, q) = (truth(l, a), truth(l, b));
            let m = match op {
                BinaryOp::And => l.mask_and(p, q),
                BinaryOp::Or => l.mask_or(p, q),
                _ => l.mask_xor(p, q),
            };
            l.mask_to_f32(m)
        }
        BinaryOp::Mod { fmod: true } => l.fmod(a, b),
        BinaryOp::Mod { fmod: false } => {
            // Floor-mod: fmod moved to the divisor's sign; a zero takes the divisor's sign.
            let r = l.fmod(a, b);
            let zero = l.c(0.0);
            let r_neg = l.cmp(FloatCC::LessThan, r, zero);
            let r_pos = l.cmp(FloatCC::GreaterThan, r, zero);
            let b_neg = l.cmp(FloatCC::LessThan, b, zero);
            let b_pos = l.cmp(FloatCC::GreaterThan, b, zero);
            let differ_a = l.mask_and(r_neg, b_pos);
            let differ_b = l.mask_and(r_pos, b_neg);
            let differ = l.mask_or(differ_a, differ_b);
            let rb = l.add(r, b);
            let moved = l.sel(differ, rb, r);
            let is_zero = l.cmp(FloatCC::Equal, r, zero);
            let signed_zero = l.copysign_zero(b);
            l.sel(is_zero, signed_zero, moved)
        }
        BinaryOp::PRelu => {
            let zero = l.c(0.0);
            let neg = l.cmp(FloatCC::LessThan, a, zero);
            let ab = l.mul(a, b);
            l.sel(neg, ab, a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_collapses_and_broadcasts() {
        // [2,3,4] + [4]: rows 6 of 4, leaf 1 reads a broadcast row.
        let l = layout(&[2, 3, 4], &[vec![2, 3, 4], vec![4]]);
        assert_eq!(l.dims, vec![6, 4]);
        assert_eq!(l.strides, vec![vec![4, 1], vec![0, 1]]);
        // [2,3,4] * [2,3,1]: inner axis broadcast for leaf 1.
        let l = layout(&[2, 3, 4], &[vec![2, 3, 4], vec![2, 3, 1]]);
        assert_eq!(l.dims, vec![6, 4]);
        assert_eq!(l.strides, vec![vec![4, 1], vec![1, 0]]);
        // [2,3,4] + [3,1]: the outer axes no longer merge.
        let l = layout(&[2, 3, 4], &[vec![2, 3, 4], vec![3, 1]]);
        assert_eq!(l.dims, vec![2, 3, 4]);
        assert_eq!(l.strides, vec![vec![12, 4, 1], vec![0, 1, 0]]);
        // A scalar output.
        let l = layout(&[], &[vec![]]);
        assert_eq!(l.dims, vec![1, 1]);
        // A big contiguous vector is split into rows.
        let l = layout(&[16384], &[vec![16384], vec![1]]);
        assert_eq!(l.dims, vec![4, 4096]);
        assert_eq!(l.strides, vec![vec![4096, 1], vec![0, 0]]);
    }

    /// The cut records a `MapPre` for a leaf under Mul, Add/Sub, Clip in that order (either
    /// operand the constant), and none for other orders, a Div, a repeated stage or a non-leaf.
    #[test]
    fn the_cut_finds_the_pre_stage() {
        use Expr::*;
        let clip = UnaryOp::Clip { min: Some(-5.0), max: Some(5.0) };
        let pre = |nodes: &[Expr]| split_at_map_op(nodes, &[true, false]).and_then(|s| s.pre);
        // exp(clip(0.25·x)) · adj: the graph-transformer scores.
        let scores = [
            Leaf(0),
            Const(0.25),
            Binary(BinaryOp::Mul, 1, 0),
            Unary(clip, 2),
            Unary(UnaryOp::Exp, 3),
            Leaf(1),
            Binary(BinaryOp::Mul, 4, 5),
        ];
        assert_eq!(pre(&scores), Some((0, MapPre { scale: 0.25, lo: -5.0, hi: 5.0, ..MapPre::IDENTITY })));
        let sub = [Leaf(1), Const(2.0), Binary(BinaryOp::Sub, 0, 1), Unary(UnaryOp::Tanh, 2)];
        assert_eq!(pre(&sub), Some((1, MapPre { shift: -2.0, ..MapPre::IDENTITY })));
        let bare = [Leaf(0), Unary(UnaryOp::Sigmoid, 0)];
        assert_eq!(pre(&bare), Some((0, MapPre::IDENTITY)));
        let clip_first = [Leaf(0), Unary(clip, 0), Const(0.5), Binary(BinaryOp::Mul, 1, 2), Unary(UnaryOp::Exp, 3)];
        assert_eq!(pre(&clip_first), None);
        let div = [Leaf(0), Const(4.0), Binary(BinaryOp::Div, 0, 1), Unary(UnaryOp::Exp, 2)];
        assert_eq!(pre(&div), None);
        let twice =
            [Leaf(0), Const(4.0), Binary(BinaryOp::Mul, 0, 1), Binary(BinaryOp::Mul, 2, 1), Unary(UnaryOp::Exp, 3)];
        assert_eq!(pre(&twice), None);
        let two_leaves = [Leaf(0), Leaf(1), Binary(BinaryOp::Mul, 0, 1), Unary(UnaryOp::Exp, 2)];
        assert_eq!(pre(&two_leaves), None);
    }
}
