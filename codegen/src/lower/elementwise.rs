//! Elementwise ops: fused f32/bool groups (one generated loop, optionally a GEMM epilogue or in
//! place), i64 Binary/Where as scalar kernels, and casts that change representation.

use super::*;

/// The unfused elementwise ops: i64 Binary/Where and representation-changing casts.
pub(super) fn lower(cx: &mut Ctx, id: NodeId, op: &Op) -> Result<(), Error> {
    let graph = cx.graph;
    let node = graph.node(id);
    let name = node.name.clone();
    let ins = graph.node_inputs(id);
    let in_ty = |k: usize| graph.value_type(ins[k]).clone();
    let out_v = Value { node: id, port: 0 };
    let out_ty = graph.value_type(out_v).clone();
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
        _ => Err(internal(&name, format!("{} is not lowered by this family", op.name()))),
    }
}

pub(super) fn lower_fused(cx: &mut Ctx, root: NodeId, members: &[NodeId]) -> Result<(), Error> {
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
    // One-element f32 weights, known now: a Mul, Add or Sub reads them as constants, so a chain
    // like x·0.25 → Clip → Exp becomes the host map kernel's own input stage (`MapPre`) rather
    // than a generated pass (the value is the same: a splat of the constant instead of a load).
    let scalar_weight = |v: Value| -> Option<f32> {
        if v.port != 0 {
            return None;
        }
        let w = graph.weights().iter().position(|&id| id == v.node)?;
        let data = match cx.weights.get(w)? {
            super::WeightData::F32(d) => d.as_slice(),
            super::WeightData::Shared(t) => t.as_f32()?,
            _ => return None,
        };
        match data {
            [c] => Some(*c),
            _ => None,
        }
    };
    // Only in a group a host map kernel will cut (an op with a `MapOp`, an ISA with the
    // kernels): elsewhere the constant would cost a broadcast per vector in the generated loop
    // (Cranelift re-materialises constants inside loops) where the leaf is loaded once per row.
    let has_map_op = members
        .iter()
        .any(|&m| matches!(graph.node(m).op(), Some(Op::Unary(u)) if crate::simd::MapOp::of(*u).is_some()));
    let mut consts: HashMap<Value, f32> = HashMap::new();
    for &m in members.iter().filter(|_| has_map_op && cx.jit.host_map.is_some()) {
        if let Some(Op::Binary(kiln_ir::BinaryOp::Mul | kiln_ir::BinaryOp::Add | kiln_ir::BinaryOp::Sub)) =
            graph.node(m).op()
        {
            for v in graph.node_inputs(m) {
                if !member_set.contains(&v.node)
                    && let Some(c) = scalar_weight(v)
                {
                    consts.insert(v, c);
                }
            }
        }
    }
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
            if let (Some(&c), Op::Binary(_)) = (consts.get(&v), op) {
                nodes.push(Expr::Const(c));
                return nodes.len() - 1;
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
    if epilogue_of.is_none()
        && let [m] = members
        && let Some(Op::Unary(u)) = graph.node(*m).op()
        && let Some(op) = crate::simd::MapOp::of(*u)
        && leaves.len() == 1
        && leaves[0].1 == out_shape
    {
        // A lone transcendental: the hand-written wide-vector kernel (`crate::simd`).
        let len = out_shape.iter().product();
        let dst = cx.out_buf(out_v);
        let k = crate::simd::MapKernel { op, len, isa: cx.isa };
        super::norm::host_step(cx, &root_name, k, vec![dst, leaf_places[0]]);
        return Ok(());
    }
    if epilogue_of.is_some()
        && let [m] = members
        && let Some(Op::Unary(u)) = graph.node(*m).op()
        && let Some(Step { kind: StepKind::Depthwise { spec, epilogue: None }, .. }) = cx.steps.last()
        && let Some((fused, what)) = depthwise_store_op(spec, *u, cx.isa)
        && let Some(p) = in_place_leaf(cx, &leaves, &leaf_places, &out_shape, members)
        && cx.steps.last().is_some_and(|st| st.args[0] == p)
    {
        // A Relu or Clip (a clamp), or a SiLU or HardSwish, after a depthwise conv: applied in
        // registers by the conv's kernels as they store each output, in place of a generated
        // epilogue pass over every plane.
        cx.bind(out_v, p);
        if let Some(step) = cx.steps.last_mut() {
            step.kind = StepKind::Depthwise { spec: std::sync::Arc::new(fused), epilogue: None };
            step.label = format!("{} + {what} {root_name}", step.label);
        }
        return Ok(());
    }
    if epilogue_of.is_some()
        && let Some((residual, relu, clip)) = conv_store_ops(cx, members, &leaves, &leaf_places, &out_shape)
        && let Some(step) = cx.steps.last_mut()
        && let StepKind::PackedConv { spec, epilogue: None } = &mut step.kind
        && let Some(conv) = std::sync::Arc::get_mut(spec)
    {
        // A residual Add and/or a Relu or Clip after a packed conv: applied by the conv to each
        // register tile as its last K block is stored (in L1), in the conv's buffer, in place of
        // a generated epilogue pass over every output row (22% of a 64→256 1×1 on 56²; MobileNet
        // v2's ReLU6 pass 23% of its 16→96 1×1 on 112²).
        let res_arg = residual.map(|_| step.args.len());
        conv.set_post(res_arg, relu, clip);
        step.args.extend(residual);
        // Labelled as a generated epilogue is (the nodes it computes); the step's description
        // says "in-store".
        let label = if members.len() > 1 {
            let names: Vec<&str> = members.iter().map(|&m| graph.node(m).name.as_str()).collect();
            format!("fused[{}]", names.join(", "))
        } else {
            root_name.clone()
        };
        step.label = format!("{} + epilogue {label}", step.label);
        let conv_buf = step.args[0];
        cx.bind(out_v, conv_buf);
        return Ok(());
    }
    let out_place = match in_place_leaf(cx, &leaves, &leaf_places, &out_shape, members) {
        Some(p) => {
            cx.bind(out_v, p);
            p
        }
        None => cx.out_buf(out_v),
    };
    // Leaves in the output's buffer (written in place): a cut chain must not read them after
    // the cut (`elementwise_kernels::define_aliased`).
    let may_alias_out: Vec<bool> = leaf_places.iter().map(|&p| p == out_place).collect();
    let lay = elementwise_kernels::define_aliased(cx.jit, &kname, &fused, epilogue_of.is_some(), &may_alias_out)
        .map_err(|e| internal(&root_name, e))?;
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
        if let StepKind::Depthwise { spec, epilogue } = &mut step.kind {
            // The executor calls the kernel on each plane's OH rows of OW.
            if lay.inner() != spec.win.ow
                || lay.rows() != crate::spatial::HostKernel::units(spec.as_ref()) * spec.win.oh
            {
                return Err(internal(&root_name, "depthwise epilogue rows do not match the conv's rows"));
            }
            cx.kernel_labels.push(kname);
            *epilogue = Some((cx.kernel_labels.len() - 1, step.args.len()));
            step.args.extend(args);
            step.label = format!("{} + epilogue {label}", step.label);
            cx.steps.push(step);
            return Ok(());
        }
        if let StepKind::PackedConv { spec, epilogue } = &mut step.kind {
            // The executor calls the kernel on each channel's block of rows of OW.
            if lay.inner() != spec.geo.ow || lay.rows() != spec.n * spec.groups * spec.m * spec.geo.oh {
                return Err(internal(&root_name, "conv epilogue rows do not match the conv's rows"));
            }
            cx.kernel_labels.push(kname);
            *epilogue = Some((cx.kernel_labels.len() - 1, step.args.len()));
            step.args.extend(args);
            step.label = format!("{} + epilogue {label}", step.label);
            cx.steps.push(step);
            return Ok(());
        }
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

/// Whether a fused group that is the epilogue of the packed conv just emitted is a residual Add
/// (`conv + r`, r of the output's shape, in another buffer), a Relu or a Clip, or a Relu or Clip
/// of such an Add, which the conv applies as it stores its tiles
/// ([`crate::gemm::conv::PackedConv::set_post`]), writing its result in place of the conv's
/// output: `(the residual's place, relu, the Clip's bounds)`.
#[allow(clippy::type_complexity)]
fn conv_store_ops(
    cx: &Ctx,
    members: &[NodeId],
    leaves: &[(Value, Vec<usize>)],
    places: &[Place],
    out_shape: &[usize],
) -> Option<(Option<Place>, bool, Option<(f32, f32)>)> {
    let step = cx.steps.last()?;
    let StepKind::PackedConv { spec, epilogue: None } = &step.kind else { return None };
    if spec.post().is_some() || std::sync::Arc::strong_count(spec) != 1 {
        return None;
    }
    let (graph, conv_buf) = (cx.graph, step.args[0]);
    let is_add = |m: NodeId| matches!(graph.node(m).op(), Some(Op::Binary(kiln_ir::BinaryOp::Add)));
    let is_relu = |m: NodeId| {
        matches!(graph.node(m).op(), Some(Op::Unary(kiln_ir::UnaryOp::Relu | kiln_ir::UnaryOp::Clip { .. })))
    };
    let (add, relu) = match *members {
        [m] if is_relu(m) => (None, m),
        [m] if is_add(m) => (Some(m), m),
        [x, y] if is_add(x) && is_relu(y) => (Some(x), y),
        [x, y] if is_add(y) && is_relu(x) => (Some(y), x),
        _ => return None,
    };
    let has_relu = is_relu(relu);
    // The activation: a Relu, or a Clip's bounds (±∞ where it has none).
    let clip = match graph.node(relu).op() {
        Some(Op::Unary(kiln_ir::UnaryOp::Clip { min, max })) => {
            Some((min.unwrap_or(f32::NEG_INFINITY), max.unwrap_or(f32::INFINITY)))
        }
        _ => None,
    };
    // The value the conv's result feeds: the Add's operands, or the Relu's input.
    let operands = match add {
        Some(a) => {
            let out = Value { node: a, port: 0 };
            if has_relu && (graph.node_inputs(relu) != [out] || !graph.users(out).iter().all(|(u, _)| *u == relu)) {
                return None;
            }
            graph.node_inputs(a)
        }
        None => graph.node_inputs(relu),
    };
    let place = |v: &Value| cx.place.get(v).copied();
    let conv_at = operands.iter().position(|v| place(v) == Some(conv_buf))?;
    let residual = match (add, operands.len()) {
        (None, 1) => None,
        (Some(_), 2) => {
            let r = &operands[1 - conv_at];
            let p = place(r)?;
            if p == conv_buf || graph.value_type(*r).shape != out_shape || graph.value_type(*r).dtype != DType::F32 {
                return None;
            }
            Some(p)
        }
        _ => return None,
    };
    // The conv's buffer takes the result in place: read only by this group, of the result's size.
    let i = places.iter().position(|&p| p == conv_buf)?;
    if in_place_leaf(cx, &leaves[i..=i], &places[i..=i], out_shape, members) != Some(conv_buf) {
        return None;
    }
    Some((residual, has_relu && clip.is_none(), clip))
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
pub(super) fn gemm_epilogue_target(
    cx: &Ctx,
    leaves: &[(Value, Vec<usize>)],
    places: &[Place],
    out_shape: &[usize],
    members: &HashSet<NodeId>,
) -> Option<usize> {
    let last = cx.steps.last()?;
    let n = match &last.kind {
        StepKind::MatMul { call, epilogue: None, .. } => call.n,
        // A depthwise conv's planes are rows of OW (crate::window).
        StepKind::Depthwise { spec, epilogue: None } => spec.win.ow,
        StepKind::PackedConv { spec, epilogue: None } => spec.geo.ow,
        _ => return None,
    };
    if out_shape.last() != Some(&n) {
        return None;
    }
    leaves.iter().zip(places).position(|((v, shape), &p)| {
        p == last.args[0]
            && shape.as_slice() == out_shape
            && cx.graph.value_type(*v).shape == out_shape
            && !cx.outputs.contains(v)
            && cx.graph.users(*v).iter().all(|(u, _)| members.contains(u))
            && matches!(cx.graph.node(v.node).op(), Some(Op::MatMul | Op::Gemm { .. } | Op::Conv { .. }))
    })
}

/// A leaf buffer the fused kernel may overwrite with its result: read at the same index it is
/// written (same shape as the output), the only leaf in that buffer, and dead afterwards (every
/// value stored in the buffer is read only by this group and is not a graph output).
///
/// "Read only by this group" compares counts instead of scanning every placed value (which made
/// lowering quadratic): the reads of the buffer's values by the group's members must be all the
/// reads it has ([`Ctx::buf_reads`]).
pub(super) fn in_place_leaf(
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
pub(super) fn affine_norm(
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

/// Binary on i64 operands, or Where choosing between i64 values (the f32/bool forms are fused
/// and never get here): one scalar i64 kernel, checked when the op can fail.
pub(super) fn lower_int_elementwise(cx: &mut Ctx, id: NodeId, op: &Op) -> Result<(), Error> {
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

/// A depthwise conv with unary `u` applied as its kernels store, and how the step's label names
/// it: a Relu or Clip as the kernel's clamp (when it has none yet), a SiLU or HardSwish as its
/// activation (`lower::conv::depthwise_with_act`); `None` for any other op.
fn depthwise_store_op(
    spec: &crate::window::DepthwiseSpec,
    u: kiln_ir::UnaryOp,
    isa: crate::Isa,
) -> Option<(crate::window::DepthwiseSpec, &'static str)> {
    let clamp = match u {
        kiln_ir::UnaryOp::Relu => Some((0.0, f32::INFINITY)),
        kiln_ir::UnaryOp::Clip { min, max } => Some((min.unwrap_or(f32::NEG_INFINITY), max.unwrap_or(f32::INFINITY))),
        _ => None,
    };
    match clamp {
        Some((lo, hi)) if spec.clamp().is_none() => spec.clone().with_clamp(lo, hi).map(|s| (s, "clamp")),
        Some(_) => None,
        None => super::conv::depthwise_with_act(spec, u, isa).map(|s| (s, "epilogue")),
    }
}
