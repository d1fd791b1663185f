//! Normalizations and softmax: Softmax, LogSoftmax, LayerNorm and RMSNorm as hand-written row
//! kernels (`crate::simd`, host steps); the other norms as generated row kernels (`kernels::rows`),
//! RegionNorm's own kernel.

use super::*;
use crate::simd::{RowKernel, RowOp};

/// A hand-written host kernel step writing `args[0]`.
pub(super) fn host_step(cx: &mut Ctx, label: &str, k: impl crate::spatial::HostKernel + 'static, args: Vec<Place>) {
    cx.steps.push(Step { label: label.to_string(), kind: StepKind::Host(std::sync::Arc::new(k)), args, n_writes: 1 });
}

/// Softmax, LogSoftmax and the normalizations.
pub(super) fn lower(cx: &mut Ctx, id: NodeId, op: &Op) -> Result<(), Error> {
    let graph = cx.graph;
    let node = graph.node(id);
    let name = node.name.clone();
    let ins = graph.node_inputs(id);
    let in_ty = |k: usize| graph.value_type(ins[k]).clone();
    let out_v = Value { node: id, port: 0 };
    match op {
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let x = in_ty(0);
            let a = normalize_axis(*axis, x.rank().max(1)).map_err(|e| internal(&name, e))?;
            let n = x.shape.get(a).copied().unwrap_or(1);
            let inner: usize = x.shape.get(a + 1..).map(|r| r.iter().product()).unwrap_or(1);
            let total = x.num_elements();
            let outer = total / (n * inner);
            let log = matches!(op, Op::LogSoftmax { .. });
            if n == 0 || total == 0 {
                // Nothing to compute; the output is empty.
                cx.out_buf(out_v);
                return Ok(());
            }
            // The default algorithm runs the hand-written row kernel (`crate::simd`); the
            // generated ones stay, for comparison.
            let row_step = |cx: &mut Ctx, dst: Place, src: Place| {
                if cx.softmax == SoftmaxAlgo::Simd {
                    let op = if log { RowOp::LogSoftmax } else { RowOp::Softmax };
                    let k = RowKernel { op, n, rows: total / n, isa: cx.isa };
                    host_step(cx, &name, k, vec![dst, src]);
                    return Ok(());
                }
                let kname = cx.kname(&name, if log { "logsoftmax" } else { "softmax" });
                rows::softmax(cx.jit, &kname, n, cx.softmax, log).map_err(|e| internal(&name, e))?;
                cx.kernel_step(&name, kname, total / n, total, vec![dst, src]);
                Ok(())
            };
            let src = cx.input(ins[0], &name)?;
            let dst = cx.out_buf(out_v);
            if inner == 1 {
                return row_step(cx, dst, src);
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
            row_step(cx, t_out, t_in)?;
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
                    && let Some(data) = cx.weights[w].f32()
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
            let mut args = vec![cx.out_buf(out_v), cx.input(ins[0], &name)?];
            args.extend(params);
            let total = x.num_elements();
            if n == 0 || total == 0 {
                return Ok(());
            }
            let op = if rms { RowOp::RmsNorm { eps: *epsilon } } else { RowOp::LayerNorm { eps: *epsilon, bias } };
            host_step(cx, &name, RowKernel { op, n, rows: total / n, isa: cx.isa }, args);
            Ok(())
        }
        Op::CrmsNormalization { epsilon, d } => {
            let x = in_ty(0);
            let n = x.shape.last().copied().unwrap_or(0);
            if n + 1 != *d {
                return Err(internal(&name, "CRMSNormalization's x is not d − 1 wide (the IR checks it)"));
            }
            let args = vec![cx.out_buf(out_v), cx.input(ins[0], &name)?];
            let total = x.num_elements();
            if total == 0 {
                return Ok(());
            }
            let op = RowOp::CrmsNorm { eps: *epsilon, d: *d };
            host_step(cx, &name, RowKernel { op, n, rows: total / n, isa: cx.isa }, args);
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
        Op::BatchNormalization { .. } | Op::UnifiedNorm { .. } => {
            Err(excluded(op.name(), &name, "an input of rank < 2 or a non-f32 operand"))
        }
        _ => Err(internal(&name, format!("{} is not lowered by this family", op.name()))),
    }
}

/// EvoNorm-S0/B0 (NCHW, per-channel parameters) on the group-statistics kernel.
pub(super) fn lower_evo(cx: &mut Ctx, id: NodeId, groups: usize, eps: f32, mode: rows::GroupMode) -> Result<(), Error> {
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

pub(super) fn lower_group_norm(cx: &mut Ctx, id: NodeId, groups: usize, eps: f32) -> Result<(), Error> {
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
