//! The fused ops the optimizer introduces: MaskedSoftmax (generated kernels) and blocked
//! Attention (GEMM + bias + softmax row kernel + GEMM per block of query rows).

use super::linalg::matmul_parts;
use super::*;

/// MaskedSoftmax and Attention.
pub(super) fn lower(cx: &mut Ctx, id: NodeId, op: &Op) -> Result<(), Error> {
    let graph = cx.graph;
    let node = graph.node(id);
    let name = node.name.clone();
    match op {
        Op::MaskedSoftmax => lower_masked_softmax(cx, id),
        Op::Attention { scale, nan_to_zero } => lower_attention(cx, id, *scale, *nan_to_zero),
        _ => Err(internal(&name, format!("{} is not lowered by this family", op.name()))),
    }
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
    /// A row whose probabilities are NaN (1/ΣE is NaN: all scores −inf, or a NaN score, which
    /// makes every probability of the row NaN) is written as zeros (`Op::Attention::nan_to_zero`).
    pub nan_to_zero: bool,
    /// Per output batch: element offsets of its Q, Kt, V and bias matrices (batch broadcast
    /// resolved, through each operand's strides); the output matrix of batch i is at i·lq·dv.
    pub batches: Vec<[usize; 4]>,
    /// Elements from one query row of the bias to the next (0 when the bias broadcasts over rows).
    pub bias_row_stride: usize,
    /// Element strides [row, column] of Q [lq, d], Kt [d, lk] and V [lk, dv] (a 1-D V: [1, 1]):
    /// row-major, or a transpose read in place (`linalg::transpose_folds`; K read as Kᵀ is
    /// [1, d]).
    pub q_strides: [usize; 2],
    pub kt_strides: [usize; 2],
    pub v_strides: [usize; 2],
    /// Generated kernels: S + bias over block rows (args [S, S, bias block]), and the softmax
    /// row kernel over rows of lk (args [S, S, row factors]).
    pub bias_kernel: Option<usize>,
    pub softmax_kernel: usize,
    /// The softmax clamps logits to [−1e5, 1e5] (SoftmaxAlgo::TwoPass), for the AVX2 row kernel
    /// that replaces the generated one where the ISA has it (`simd::softmax_exp_rows`).
    pub clamp_logits: bool,
    /// Scratch slots (one per thread the plan was made for), each [`AttentionSpec::slot_len`]
    /// floats: the [block, lk] scores, then the block's `block` row factors 1/ΣE.
    pub slots: usize,
    /// QKᵀ on kiln's micro-kernels (`gemm::Product::run`, AVX2 tile) with Kt packed once per
    /// head by each thread and read by all its blocks of that head, rather than on the `gemm`
    /// crate, which packs Kt again for every block (`kt_packed_per_head`).
    pub packed_kt: bool,
}

/// Whether attention's QKᵀ runs on kiln's micro-kernels with Kt packed once per head: when a head
/// has more than one block of query rows (the crate packs its B per call, so a head of n blocks
/// packs Kt n times). Chosen by measurement (tools/bench/attention_ort.py, Zen 4, 1 thread):
/// yoso's heads ([1024 × 1024], 16 blocks) ran 5–8% faster this way, while heads of one block
/// (BERT's 128, ViT's 197 tokens) ran 1–3% slower than on the crate, which reads small operands
/// with less packing. Not for blocks under 4 rows (a row or two of Q per packed Kt).
pub(crate) fn kt_packed_per_head(lq: usize, block: usize) -> bool {
    block >= 4 && lq > block
}

impl AttentionSpec {
    pub fn slot_len(block: usize, lk: usize) -> usize {
        block * lk + block
    }
}

/// MaskedSoftmax as five generated kernels: kept x (−∞ where masked), its row max,
/// e = exp(x − max)·M where kept (0 elsewhere, in place over the kept x), row sum, e/sum (in place).
pub(super) fn lower_masked_softmax(cx: &mut Ctx, id: NodeId) -> Result<(), Error> {
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
    let lay = elementwise_kernels::define(cx.jit, &kkept, &f).map_err(|e| internal(&name, e))?;
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
    let lay = elementwise_kernels::define(cx.jit, &kexp, &f).map_err(|e| internal(&name, e))?;
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
    let lay = elementwise_kernels::define(cx.jit, &kdiv, &f).map_err(|e| internal(&name, e))?;
    cx.kernel_step(&format!("{name} (÷sum)"), kdiv, lay.rows(), total, vec![e, e, sm]);
    cx.bind(Value { node: id, port: 0 }, e);
    Ok(())
}

/// Score block size in floats (256 KiB): half of this machine's per-core L2, so that a block stays
/// in cache through its scale/bias, softmax and ·V passes.
pub(super) const ATTENTION_BLOCK_FLOATS: usize = 1 << 16;

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
pub(super) fn lower_attention(cx: &mut Ctx, id: NodeId, scale: f32, nan_to_zero: bool) -> Result<(), Error> {
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
        return lower_attention_unblocked(cx, id, scale, nan_to_zero);
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
    // Q, Kt and V in their buffers through strides: row-major, or a transpose that takes no step
    // (attention heads split by Transpose, Kᵀ) read in place.
    let (pq, sq) = linalg::strided_operand(cx, ins[0], &name)?;
    let (pk, sk) = linalg::strided_operand(cx, ins[1], &name)?;
    let (pv, sv) = linalg::strided_operand(cx, ins[2], &name)?;
    // The element offset of flat batch index `i` of an operand with batch dims `dims`, strides `st`.
    let offset = |mut i: usize, dims: &[usize], st: &[usize]| {
        let mut off = 0;
        for (&n, &s) in dims.iter().zip(st).rev() {
            off += (i % n) * s;
            i /= n;
        }
        off
    };
    let batches: Vec<[usize; 4]> = (0..nb)
        .map(|i| [offset(iq[i], qb, &sq), offset(ik[i], kb, &sk), offset(iv[i], vb, &sv), ib[i] * brows * bcols])
        .collect();
    let rc = |st: &[usize]| [st[st.len() - 2], st[st.len() - 1]];
    // A 1-D V is one column: rows sv[0] apart.
    let v_strides = if v.len() == 1 { [sv[0], 1] } else { rc(&sv) };
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
            let lay = elementwise_kernels::define_with(cx.jit, &kname, &fused, true).map_err(|e| internal(&name, e))?;
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
        nan_to_zero,
        batches,
        bias_row_stride: if brows == 1 { 0 } else { bcols },
        q_strides: rc(&sq),
        kt_strides: rc(&sk),
        v_strides,
        bias_kernel,
        softmax_kernel,
        clamp_logits: cx.softmax == SoftmaxAlgo::TwoPass,
        slots,
        packed_kt: kt_packed_per_head(lq, block),
    };
    let dst = cx.out_buf(out_v);
    let scratch = cx.new_buf(&TensorType::f32([slots * AttentionSpec::slot_len(block, lk)]));
    let mut args = vec![dst, scratch, pq, pk, pv];
    for v in &ins[3..] {
        args.push(cx.input(*v, &name)?);
    }
    cx.steps.push(Step { label: name, kind: StepKind::Attention(std::sync::Arc::new(spec)), args, n_writes: 2 });
    Ok(())
}

/// Attention as GEMM (Q·Kt), a generated ·scale + bias kernel (in place), the softmax row kernel,
/// and GEMM (·V): four steps over the full score matrix, for the forms [`lower_attention`] does
/// not block.
pub(super) fn lower_attention_unblocked(cx: &mut Ctx, id: NodeId, scale: f32, nan_to_zero: bool) -> Result<(), Error> {
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
        kind: StepKind::MatMul { call: call1, units: units1, c_fill: None, epilogue: None, packed: None },
        args: vec![s_buf, q, kt],
        n_writes: 1,
    });
    // Not a GEMM epilogue: with a 1-D Kt the GEMM's rows (batch·Lq rows of one key) are not the
    // scores' rows, which an epilogue assumes.
    let fused = Fused { nodes, out_shape: scores.shape.clone(), leaf_shapes };
    let ename = cx.kname(&name, "attn_scale");
    let lay = elementwise_kernels::define(cx.jit, &ename, &fused).map_err(|e| internal(&name, e))?;
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
    if nan_to_zero {
        // p = p == p ? p : 0, in place.
        let nodes =
            vec![Expr::Leaf(0), Expr::Binary(kiln_ir::BinaryOp::Equal, 0, 0), Expr::Const(0.0), Expr::Where(1, 0, 2)];
        let fused = Fused { nodes, out_shape: scores.shape.clone(), leaf_shapes: vec![scores.shape.clone()] };
        let zname = cx.kname(&name, "attn_nan_to_zero");
        let lay = elementwise_kernels::define(cx.jit, &zname, &fused).map_err(|e| internal(&name, e))?;
        cx.kernel_step(&format!("{name} (NaN → 0)"), zname, lay.rows(), total, vec![p_buf, p_buf]);
    }
    let dst = cx.out_buf(out_v);
    cx.steps.push(Step {
        label: format!("{name} (·V)"),
        kind: StepKind::MatMul { call: call2, units: units2, c_fill: None, epilogue: None, packed: None },
        args: vec![dst, p_buf, v],
        n_writes: 1,
    });
    Ok(())
}
