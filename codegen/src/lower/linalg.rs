//! MatMul and Gemm: calls into the GEMM core, split into work units for the pool.

use super::*;

/// MatMul and Gemm.
pub(super) fn lower(cx: &mut Ctx, id: NodeId, op: &Op) -> Result<(), Error> {
    let graph = cx.graph;
    let node = graph.node(id);
    let name = node.name.clone();
    match op {
        Op::MatMul => lower_matmul(cx, id),
        Op::Gemm { alpha, beta, trans_a, trans_b } => lower_gemm(cx, id, *alpha, *beta, *trans_a, *trans_b),
        _ => Err(internal(&name, format!("{} is not lowered by this family", op.name()))),
    }
}

pub(super) fn lower_matmul(cx: &mut Ctx, id: NodeId) -> Result<(), Error> {
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
    let (pa, sa, ca) = operand(cx, ins[0], &name)?;
    let (pb, sb, cb) = operand(cx, ins[1], &name)?;
    let (mut call, units, elems) =
        matmul_parts_strided(&a.shape, &sa, &b.shape, &sb, cx.threads).map_err(|e| internal(&name, e))?;
    call.alpha = ca * cb;
    if elems != out.num_elements() {
        return Err(internal(&name, "matmul output size mismatch"));
    }
    // The packed path runs one batch of call.m rows: B one matrix and A's batches folded into M
    // (a transposed A read through strides keeps its batches).
    let packed = if b.rank() == 2 && elems == call.m * call.n { pack_weight(cx, pb, &call, &name)? } else { None };
    let dst = cx.out_buf(out_v);
    cx.steps.push(Step {
        label: name,
        kind: StepKind::MatMul { call, units, c_fill: None, epilogue: None, packed },
        args: vec![dst, pa, pb],
        n_writes: 1,
    });
    Ok(())
}

/// Whether every reader of `v` reads it through strides: a MatMul of two activations with matrix
/// operands ([`read_only_by_products`]), or a blocked Attention reading it as Q, Kt or V
/// ([`attention_reads_strided`]).
fn read_through_strides(graph: &Graph, v: Value) -> bool {
    let users = graph.users(v);
    !graph.outputs().contains(&v)
        && !users.is_empty()
        && users.iter().all(|&(u, port)| read_only_by_products_at(graph, u) || attention_reads_strided(graph, u, port))
}

/// Whether Attention node `u` reads its input `port` through strides: Q (0), Kt (1) or V (2) of
/// the blocked form, where Q, Kt and V are f32 activations of rank ≥ 2 (the bias, read by a
/// generated kernel, stays contiguous).
pub(super) fn attention_reads_strided(graph: &Graph, u: NodeId, port: usize) -> bool {
    let ins = graph.node_inputs(u);
    matches!(graph.node(u).op(), Some(Op::Attention { .. }))
        && port < 3
        && ins.len() >= 3
        && ins[..3].iter().all(|w| {
            let t = graph.value_type(*w);
            t.rank() >= 2 && t.dtype == DType::F32 && !graph.weights().contains(&w.node)
        })
}

/// Whether `u` is a MatMul of two activations with matrix operands.
fn read_only_by_products_at(graph: &Graph, u: NodeId) -> bool {
    matches!(graph.node(u).op(), Some(Op::MatMul))
        && graph.node_inputs(u).iter().all(|w| {
            let t = graph.value_type(*w);
            t.rank() >= 2 && t.dtype == DType::F32 && !graph.weights().contains(&w.node)
        })
}

/// Whether every reader of `v` is a MatMul of two activations with matrix operands (the readers
/// that can take a transposed or scaled operand through their strides and alpha).
fn read_only_by_products(graph: &Graph, v: Value) -> bool {
    let users = graph.users(v);
    !graph.outputs().contains(&v)
        && !users.is_empty()
        && users.iter().all(|&(u, _)| {
            matches!(graph.node(u).op(), Some(Op::MatMul))
                && graph.node_inputs(u).iter().all(|w| {
                    let t = graph.value_type(*w);
                    t.rank() >= 2 && t.dtype == DType::F32 && !graph.weights().contains(&w.node)
                })
        })
}

/// A Transpose that takes no step of its own: every reader is a MatMul, which reads the
/// transpose's input in place through the permuted strides (ONNX Runtime's
/// MatmulTransposeFusion; attention's heads split by Reshape + Transpose), directly or through a
/// scale that folds into its alpha ([`scale_folds`]). Not when the transposed value is a graph
/// output, a reader multiplies by a weight (which keeps its packed GEMM over a contiguous A), or
/// an operand is a vector.
pub(super) fn transpose_folds(cx: &Ctx, id: NodeId) -> bool {
    let graph = cx.graph;
    let Some(Op::Transpose { .. }) = graph.node(id).op() else { return false };
    let v = Value { node: id, port: 0 };
    let ty = graph.value_type(v);
    if ty.dtype != DType::F32 || ty.rank() < 2 {
        return false;
    }
    if read_through_strides(graph, v) {
        return true;
    }
    let users = graph.users(v);
    !graph.outputs().contains(&v)
        && !users.is_empty()
        && users.iter().all(|&(u, _)| scale_folds(cx, u).is_some_and(|(x, _)| x == v))
}

/// A Mul of an f32 value `x` by a finite one-element weight `c` (an attention scale) whose every
/// reader is a MatMul of two activations: it takes no step, each reader multiplying its product
/// by `c` (alpha) and reading `x` (or, when `x` is a transpose that folds, its input through
/// strides). `x` is never a fused group member (its producer does not fuse), so the Mul is a
/// group of its own. Returns `(x, c)`.
pub(super) fn scale_folds(cx: &Ctx, id: NodeId) -> Option<(Value, f32)> {
    let graph = cx.graph;
    let Some(Op::Binary(kiln_ir::BinaryOp::Mul)) = graph.node(id).op() else { return None };
    let ins = graph.node_inputs(id);
    let out = Value { node: id, port: 0 };
    let scalar = |k: usize| {
        let v: Value = ins[k];
        match cx.place.get(&v) {
            Some(&Place::Weight(w)) if graph.value_type(v).num_elements() == 1 => {
                cx.weights[w].f32().and_then(|d| d.first().copied())
            }
            _ => None,
        }
    };
    let (x, c) = match (scalar(0), scalar(1)) {
        (_, Some(c)) => (ins[0], c),
        (Some(c), None) => (ins[1], c),
        _ => return None,
    };
    let (xt, ot) = (graph.value_type(x), graph.value_type(out));
    let fusable_producer = graph.node(x.node).op().is_some() && is_fusable(graph, x.node);
    (c.is_finite()
        && xt.dtype == DType::F32
        && ot.dtype == DType::F32
        && xt.shape == ot.shape
        && !fusable_producer
        && read_only_by_products(graph, out))
    .then_some((x, c))
}

/// Where an Attention operand (Q, Kt or V) or a MatMul operand lives and its element strides:
/// row-major in its own buffer, or for a transpose that takes no step ([`transpose_folds`]) its
/// input's buffer through the permutation.
pub(super) fn strided_operand(cx: &Ctx, v: Value, node: &str) -> Result<(Place, Vec<usize>), Error> {
    let graph = cx.graph;
    if let Some(Op::Transpose { perm }) = graph.node(v.node).op()
        && transpose_folds(cx, v.node)
    {
        let src = graph.node_inputs(v.node)[0];
        let x = graph.value_type(src);
        let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..x.rank()).rev().collect());
        if perm.len() != x.rank() || perm.iter().any(|&p| p >= x.rank()) {
            return Err(internal(node, "transpose perm is not a permutation of the axes"));
        }
        let st = strides(&x.shape);
        return Ok((cx.input(src, node)?, perm.iter().map(|&p| st[p]).collect()));
    }
    Ok((cx.input(v, node)?, strides(&graph.value_type(v).shape)))
}

/// Where a MatMul operand lives, its element strides and its scale: row-major in its own
/// buffer, or for a scale that takes no step ([`scale_folds`]) its input times the factor, and
/// for a transpose that takes no step ([`transpose_folds`]) its input's buffer through the
/// permutation.
fn operand(cx: &Ctx, v: Value, node: &str) -> Result<(Place, Vec<usize>, f32), Error> {
    let (v, scale) = match scale_folds(cx, v.node) {
        Some((x, c)) => (x, c),
        None => (v, 1.0),
    };
    let (place, strides) = strided_operand(cx, v, node)?;
    Ok((place, strides, scale))
}

/// numpy matmul of `a` by `b` (1-D operands promoted and the unit axis dropped, batch axes
/// broadcast): the GEMM, its work units and the output element count.
pub(crate) fn matmul_parts(
    a: &[usize],
    b: &[usize],
    threads: usize,
) -> Result<(GemmCall, Vec<[usize; 5]>, usize), String> {
    matmul_parts_strided(a, &strides(a), b, &strides(b), threads)
}

/// [`matmul_parts`] of operands with element strides `sa` and `sb` (row-major, or a transpose
/// read in place); the output is row-major.
fn matmul_parts_strided(
    a: &[usize],
    sa: &[usize],
    b: &[usize],
    sb: &[usize],
    threads: usize,
) -> Result<(GemmCall, Vec<[usize; 5]>, usize), String> {
    if a.is_empty() || b.is_empty() {
        return Err("matmul operands must have rank ≥ 1".into());
    }
    if sa.len() != a.len() || sb.len() != b.len() {
        return Err("matmul operand strides do not match their ranks".into());
    }
    let (a2, sa2) = if a.len() == 1 { (vec![1, a[0]], vec![a[0] * sa[0], sa[0]]) } else { (a.to_vec(), sa.to_vec()) };
    let (b2, sb2) = if b.len() == 1 { (vec![b[0], 1], vec![sb[0], 1]) } else { (b.to_vec(), sb.to_vec()) };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(format!("matmul inner dimensions differ ({k} vs {k2})"));
    }
    let ba = &a2[..a2.len() - 2];
    let bb = &b2[..b2.len() - 2];
    let a_dense = sa2 == strides(&a2);
    if bb.is_empty() && !ba.is_empty() && a_dense {
        // B is one matrix (a weight, typically) and A's batches are contiguous [.., m, k] blocks:
        // one GEMM of batch·m rows, not one per batch (ViT's [197,1,768]×[768,2304] ran as 197
        // one-row products, each re-reading the weight).
        let rows: usize = ba.iter().product::<usize>() * m;
        let (call, units, _) = matmul_parts_strided(&[rows, k], &[k, 1], &b2, &sb2, threads)?;
        return Ok((call, units, rows * n));
    }
    let batch = kiln_ir::ops::broadcast::broadcast_shapes(ba, bb)?;
    let nb: usize = batch.iter().product();
    let ia = kiln_ir::ops::broadcast::broadcast_indices(ba, &batch);
    let ib = kiln_ir::ops::broadcast::broadcast_indices(bb, &batch);
    // The element offset of flat batch index `i` of an operand with batch dims `dims`, strides `st`.
    let offset = |mut i: usize, dims: &[usize], st: &[usize]| {
        let mut off = 0;
        for (&d, &s) in dims.iter().zip(st).rev() {
            off += (i % d) * s;
            i /= d;
        }
        off
    };
    let units = split_units(nb, m, threads, |bi| [offset(ia[bi], ba, &sa2), offset(ib[bi], bb, &sb2), bi * m * n]);
    let [a_rs, a_cs] = [sa2[sa2.len() - 2], sa2[sa2.len() - 1]].map(|s| s as isize);
    let [b_rs, b_cs] = [sb2[sb2.len() - 2], sb2[sb2.len() - 1]].map(|s| s as isize);
    let call = GemmCall { m, n, k, a_rs, a_cs, b_rs, b_cs, d_rs: n as isize, alpha: 1.0, beta: 0.0, accumulate: false };
    Ok((call, units, nb * m * n))
}

/// Splits `nb` batches of `m` rows into units (a_off, b_off, d_off, m_lo, m_hi): whole batches
/// when there are enough of them, otherwise row blocks of each batch.
pub(super) fn split_units(nb: usize, m: usize, threads: usize, offs: impl Fn(usize) -> [usize; 3]) -> Vec<[usize; 5]> {
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

pub(super) fn lower_gemm(cx: &mut Ctx, id: NodeId, alpha: f32, beta: f32, ta: bool, tb: bool) -> Result<(), Error> {
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
    let pb = cx.input(ins[1], &name)?;
    let packed = pack_weight(cx, pb, &call, &name)?;
    let mut args = vec![cx.out_buf(out_v), cx.input(ins[0], &name)?, pb];
    if c_fill.is_some() {
        args.push(cx.input(ins[2], &name)?);
    }
    cx.steps.push(Step {
        label: name,
        kind: StepKind::MatMul { call, units, c_fill, epilogue: None, packed },
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

/// Fewest columns for which B is packed: narrower products (matrix·vector) would spend most of
/// a 16-wide panel on zero padding, and stay with the `gemm` crate.
const PACK_MIN_N: usize = 8;

/// B packed for `crate::gemm` when it is a weight (a constant, known now) wide enough to pay. A
/// weight this GEMM alone reads and the plan alone holds is packed in place
/// ([`Ctx::take_sole_weight`]); others are packed into a copy, their plain data dropped at the end
/// if nothing else reads it ([`drop_packed_copies`]).
fn pack_weight(
    cx: &mut Ctx,
    b: Place,
    call: &GemmCall,
    node: &str,
) -> Result<Option<std::sync::Arc<crate::gemm::PackedB>>, Error> {
    let Place::Weight(w) = b else { return Ok(None) };
    if cx.weights[w].f32().is_none() || call.n < PACK_MIN_N || call.b_rs < 0 || call.b_cs < 0 {
        return Ok(None);
    }
    let (k, n, rs, cs) = (call.k, call.n, call.b_rs as usize, call.b_cs as usize);
    let packed = match cx.take_sole_weight(w) {
        Some(data) => crate::gemm::PackedB::pack_owned(data, k, n, rs, cs),
        None => crate::gemm::PackedB::pack(cx.weights[w].f32().unwrap_or(&[]), k, n, rs, cs),
    }
    .map_err(|e| Error::new(format!("node '{node}'"), format!("cannot pack its weight: {e}")))?;
    Ok(Some(std::sync::Arc::new(packed)))
}

/// Frees the plain copy of every f32 weight that only packed GEMMs read (their `args[2]`), so a
/// weight is not held twice. The place stays valid (no data) and is never dereferenced: a weight
/// packed in place that another step reads is an internal error, not a read of freed memory.
pub(super) fn drop_packed_copies(
    weights: &mut [WeightData],
    steps: &[Step],
    outputs: &[(Place, TensorType)],
) -> Result<(), Error> {
    let mut read = vec![false; weights.len()];
    for st in steps {
        let packed = matches!(st.kind, StepKind::MatMul { packed: Some(_), .. } | StepKind::PackedConv { .. });
        for (i, p) in st.args.iter().enumerate() {
            if let Place::Weight(w) = *p
                && !(packed && i == 2)
            {
                read[w] = true;
            }
        }
    }
    for (p, _) in outputs {
        if let Place::Weight(w) = *p {
            read[w] = true;
        }
    }
    for (w, data) in weights.iter_mut().enumerate() {
        if read[w] && matches!(data, WeightData::Packed) {
            return Err(internal(&format!("weight #{w}"), "a weight packed in place is read by another step"));
        }
        // Dropping a shared tensor only drops this reference; the model may still hold it.
        if !read[w] && data.f32().is_some() {
            *data = WeightData::Packed;
        }
    }
    Ok(())
}
