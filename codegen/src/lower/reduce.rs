//! Reductions: f32 through generated reduce kernels, i64 through scalar folding kernels.

use super::*;

/// Reduce*.
pub(super) fn lower(cx: &mut Ctx, id: NodeId, op: &Op) -> Result<(), Error> {
    let graph = cx.graph;
    let node = graph.node(id);
    let name = node.name.clone();
    match op {
        Op::Reduce { kind, axes, noop_with_empty_axes, .. } => lower_reduce(cx, id, *kind, axes, *noop_with_empty_axes),
        _ => Err(internal(&name, format!("{} is not lowered by this family", op.name()))),
    }
}

pub(super) fn lower_reduce(
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

/// ReduceSum/ReduceMax over i64: one kernel folding each output's elements in the reference's
/// order through two offset tables (see [`int::reduce`]).
pub(super) fn lower_reduce_i64(
    cx: &mut Ctx,
    id: NodeId,
    kind: ReduceKind,
    reduced: &HashSet<usize>,
) -> Result<(), Error> {
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
