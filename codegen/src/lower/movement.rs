//! Data movement: views cost nothing (see `is_view`); the rest are table-driven strided copies
//! (`host::AxisCopy`) and Gather.

use super::*;

/// Transpose, Expand, Slice, Split, Concat, Gather (views never get here).
pub(super) fn lower(cx: &mut Ctx, id: NodeId, op: &Op) -> Result<(), Error> {
    let graph = cx.graph;
    let node = graph.node(id);
    let name = node.name.clone();
    let ins = graph.node_inputs(id);
    let in_ty = |k: usize| graph.value_type(ins[k]).clone();
    let out_v = Value { node: id, port: 0 };
    let out_ty = graph.value_type(out_v).clone();
    match op {
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
            // Each input a contiguous block of the output: its producer may write it in place.
            let blocks = out_ty.shape[..a].iter().product::<usize>() == 1;
            let concat = cx.concat_parts.last().map_or(0, |p| p.concat + 1);
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
                let src = cx.input(v, &name)?;
                if let (true, Place::Buf(d)) = (blocks, dst) {
                    let elem = elem_bytes(t.dtype);
                    cx.concat_parts.push(super::alias::ConcatPart {
                        concat,
                        step: cx.steps.len(),
                        dst: d,
                        src,
                        off: offset * os[a] * elem,
                        bytes: t.num_elements() * elem,
                    });
                }
                offset += t.shape[a];
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
        Op::Identity | Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
            Err(internal(&name, "view op reached the copy path"))
        }
        Op::Tile { .. } => super::index::lower(cx, id, op),
        _ => Err(internal(&name, format!("{} is not lowered by this family", op.name()))),
    }
}

/// Broadcasts a tensor of shape `src` (numpy rules, right-aligned) into a new contiguous `out`.
pub(super) fn broadcast_copy(src: &[usize], out: &TensorType) -> Result<AxisCopy, String> {
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

pub(super) fn copy_to_contiguous(out: &TensorType, tabs: Vec<Vec<i64>>) -> AxisCopy {
    AxisCopy {
        shape: out.shape.clone(),
        src_tab: tabs,
        dst_strides: strides(&out.shape),
        dst_off: 0,
        elem: elem_bytes(out.dtype),
        pad: 0.0,
    }
}

pub(super) fn copy_step(
    cx: &mut Ctx,
    id: NodeId,
    outs: Vec<Value>,
    copies: Vec<AxisCopy>,
    src: Value,
) -> Result<(), Error> {
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
