//! Lowering of the ops that run as Rust host steps ([`IndexStep`]): GatherElements, GatherND,
//! ScatterND, ScatterElements (positions known only at run time), ArgMax/ArgMin, CumSum and TopK
//! (a scan or sort along one axis), and Tile (a table-driven copy). Mirrors `ir/src/ops/index.rs`
//! and the along-axis part of `ir/src/ops/reduce.rs`.

use super::{Ctx, Step, StepKind, copy_step, copy_to_contiguous, internal};
use crate::host::{Elem, IndexStep, Scatter};
use kiln_ir::ops::normalize_axis;
use kiln_ir::tensor::strides;
use kiln_ir::{DType, Error, NodeId, Op, Value};

fn elem(d: DType) -> Elem {
    // bool lives in the arena as f32 0/1.
    if d == DType::I64 { Elem::I64 } else { Elem::F32 }
}

/// `[outer, n, inner]` around axis `a` of `shape`.
fn around(shape: &[usize], a: usize) -> (usize, usize, usize) {
    (shape[..a].iter().product(), shape[a], shape[a + 1..].iter().product())
}

/// Lowers one of the ops above.
pub(super) fn lower(cx: &mut Ctx, id: NodeId, op: &Op) -> Result<(), Error> {
    let graph = cx.graph;
    let name = graph.node(id).name.clone();
    let ins = graph.node_inputs(id);
    let ty = |k: usize| graph.value_type(ins[k]).clone();
    let axis_of = |axis: i64, rank: usize| normalize_axis(axis, rank).map_err(|e| internal(&name, e));
    let step = match op {
        Op::Tile { .. } => {
            let x = ty(0);
            let out = graph.value_type(Value { node: id, port: 0 }).clone();
            let st = strides(&x.shape);
            // Output coordinate c along an axis of size d reads input coordinate c mod d.
            let tabs = (0..out.rank())
                .map(|j| (0..out.shape[j]).map(|c| ((c % x.shape[j]) * st[j]) as i64).collect())
                .collect();
            return copy_step(cx, id, vec![Value { node: id, port: 0 }], vec![copy_to_contiguous(&out, tabs)], ins[0]);
        }
        Op::GatherElements { axis } | Op::ScatterElements { axis, .. } => {
            let (data, idx) = (ty(0), ty(1));
            let scatter = match op {
                Op::ScatterElements { reduction, .. } => Some(Scatter(*reduction)),
                _ => None,
            };
            let axis = axis_of(*axis, data.rank())?;
            if idx.rank() != data.rank() || (0..data.rank()).any(|j| j != axis && idx.shape[j] > data.shape[j]) {
                return Err(internal(&name, "indices do not fit inside the data off the axis"));
            }
            IndexStep::Elements { data_shape: data.shape, idx_shape: idx.shape, axis, elem: elem(data.dtype), scatter }
        }
        Op::GatherND { .. } | Op::ScatterND { .. } => {
            let (data, idx) = (ty(0), ty(1));
            let (b, scatter) = match op {
                Op::GatherND { batch_dims } => (*batch_dims, None),
                Op::ScatterND { reduction } => (0, Some(Scatter(*reduction))),
                _ => (0, None),
            };
            let last = *idx.shape.last().ok_or_else(|| internal(&name, "indices of rank 0"))?;
            if last == 0 || b + last > data.rank() {
                return Err(internal(&name, "index tuples longer than the data's axes"));
            }
            let st = strides(&data.shape);
            IndexStep::Nd {
                data_len: data.num_elements(),
                tuples: idx.num_elements() / last,
                last,
                per_batch: idx.shape[b..idx.rank() - 1].iter().product(),
                batch_stride: if b == 0 { 0 } else { st[b - 1] },
                dims: data.shape[b..b + last].to_vec(),
                strides: st[b..b + last].to_vec(),
                slice_len: data.shape[b + last..].iter().product(),
                elem: elem(data.dtype),
                scatter,
            }
        }
        Op::ArgReduce { max, axis, select_last_index, .. } => {
            let x = ty(0);
            let (outer, n, inner) = around(&x.shape, axis_of(*axis, x.rank())?);
            IndexStep::Arg { outer, n, inner, max: *max, last: *select_last_index, elem: elem(x.dtype) }
        }
        Op::CumSum { axis, exclusive, reverse } => {
            let x = ty(0);
            let (outer, n, inner) = around(&x.shape, axis_of(*axis, x.rank())?);
            IndexStep::CumSum { outer, n, inner, exclusive: *exclusive, reverse: *reverse, elem: elem(x.dtype) }
        }
        Op::TopK { k, axis, largest, .. } => {
            let x = ty(0);
            let (outer, n, inner) = around(&x.shape, axis_of(*axis, x.rank())?);
            if *k == 0 || *k > n {
                return Err(internal(&name, "TopK's k is outside 1..=axis size"));
            }
            IndexStep::TopK { outer, n, inner, k: *k, largest: *largest, elem: elem(x.dtype) }
        }
        _ => return Err(internal(&name, format!("{} is not lowered by this family", op.name()))),
    };
    let n_writes = step.n_writes();
    let mut args = Vec::with_capacity(n_writes + ins.len());
    for port in 0..n_writes {
        args.push(cx.out_buf(Value { node: id, port }));
    }
    for &v in &ins {
        args.push(cx.input(v, &name)?);
    }
    cx.steps.push(Step { label: name, kind: StepKind::Index(Box::new(step)), args, n_writes });
    Ok(())
}
