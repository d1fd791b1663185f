//! Pre-RMSNorm → Pre-CRMSNorm (Jiang et al. 2023, "Pre-RMSNorm and Pre-CRMSNorm Transformers"),
//! a graph pass on the extracted graph, run after the Pre-LN → Pre-RMSNorm conversion.
//!
//! A residual stream x ∈ ℝᵈ that is zero-mean along its last axis is stored as its first d − 1
//! components x′ (x_d = −Σx′):
//! - every write drops its last output column: MatMul(y, W) → MatMul(y, W[:, :d−1]), a constant
//!   addend c (bias, positional embedding) → c[…, :d−1], Gather(E, ids) → Gather(E[:, :d−1], ids);
//! - residual Adds run on d − 1;
//! - each RMSNorm(x, γ) reading the stream becomes CRMSNorm(x′) = x′/√((Σx′² + (Σx′)²)/d + ε)
//!   (the first d − 1 components of RMSNorm(x, 1), itself zero-mean), and each of its consumers
//!   MatMul(y, W) gets W′ = diag(γ′)·W[:d−1] − γ_d·W[d−1] (y·diag(γ)·W = y′·W′ since y_d = −Σy′);
//! - a stream value that is a graph output is restored: Concat(x′, −Σx′).
//!
//! A pass rather than rules: it changes the type of a whole connected stream at once, which an
//! e-graph (one type per e-class) cannot express. The stream is found by closing over the Adds
//! that write it and read it; every producer must be one of the writes above with a constant
//! weight, every reader a residual Add or a last-axis RMSNorm whose readers are all MatMuls by a
//! constant matrix — otherwise the graph is left alone. Zero mean is re-checked on the weights
//! numerically (the e-graph proof is not visible in the extracted graph): every row of a write's
//! weight along the output axis must satisfy |Σw| ≤ 1e-5·Σ|w|. Re-centred f32 weights sum to a
//! few ulps of their magnitudes (≈ 1e-7 relative), 100× under the bound; an uncentred weight's
//! row sum is of the order of its magnitude. The error the check admits, d·mean(x) in the dropped
//! component, is then below f32 rounding of the stream itself.
//!
//! The cost model decides: the pass keeps its result only when [`CostModel::graph_cost`] of the
//! new graph is lower by at least [`MIN_GAIN`] of the whole (d − 1 columns in every write and
//! every consumer of a norm, against the restore nodes at graph outputs). That cost prices widths
//! padded to the kernels' vectors and panels, so the conversion pays where d − 1 saves a whole
//! vector or panel (d = 17 → 16) and is refused where d is already a multiple of 8, as in every
//! transformer of the zoo: measured on prelm_transformer_bench (d = 256), CRMSNorm left the GEMMs
//! as fast as before and made the norm steps slower, with no end-to-end gain out of the noise
//! (docs/benchmarks.md, "Session 7: CRMSNorm"). `KILN_CRMS=2` takes it anyway.

use crate::cost::CostModel;
use kiln_ir::{BinaryOp, Error, Graph, GraphBuilder, Model, NodeId, NodeKind, Op, Tensor, Value, Weights};
use std::collections::{BTreeMap, BTreeSet};

/// Row sums of a write's weight, relative to the row's Σ|w|, accepted as zero (see the module
/// header for why this value).
pub const ZERO_MEAN_TOLERANCE: f64 = 1e-5;

/// The smallest estimated gain, relative to the whole graph's estimate, that the pass takes: less
/// is within the cost model's error (a stream whose d is a multiple of the vector width gains only
/// the norms' γ reads, ~1e-5 of a transformer, and loses its alignment).
pub const MIN_GAIN: f64 = 1e-3;

/// What the pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrmsReport {
    /// Norm nodes that became CRMSNormalization.
    pub converted: Vec<String>,
    /// Why each refused stream was refused, naming the node or weight at fault.
    pub refused: Vec<String>,
    /// Estimated run time (s) of the input graph and of the converted one (equal when nothing
    /// was converted or the conversion did not pay and was dropped).
    pub cost_before: f64,
    pub cost_after: f64,
}

/// One residual stream that qualifies.
#[derive(Default)]
struct Stream {
    d: usize,
    values: BTreeSet<Value>,
    /// (node, input port) whose constant weight is sliced to its first d − 1 columns.
    writes: BTreeSet<(NodeId, usize)>,
    norms: BTreeSet<NodeId>,
}

/// Converts every qualifying stream of `model`; returns the model unchanged (with the reasons)
/// when none qualifies or the cost model finds no gain.
/// With `always`, the cost model's estimate is reported but not obeyed (`KILN_CRMS=2`, for
/// measuring what the estimate predicts).
pub fn compress(model: &Model, cost: &CostModel, always: bool) -> Result<(Model, CrmsReport), Error> {
    let graph = &model.graph;
    let cost_before = cost.graph_cost(graph);
    let mut report = CrmsReport { cost_before, cost_after: cost_before, ..CrmsReport::default() };
    let mut seen: BTreeSet<Value> = BTreeSet::new();
    let mut streams = Vec::new();
    for id in graph.op_nodes() {
        if !matches!(graph.node(id).op(), Some(Op::RmsNormalization { .. })) {
            continue;
        }
        let Some(&x) = graph.node_inputs(id).first() else { continue };
        if seen.contains(&x) {
            continue;
        }
        match explore(model, x) {
            Ok(stream) => {
                seen.extend(stream.values.iter().copied());
                streams.push(stream);
            }
            Err((values, why)) => {
                seen.extend(values);
                seen.insert(x);
                report.refused.push(why);
            }
        }
    }
    if streams.is_empty() {
        return Ok((model.clone(), report));
    }
    let converted = rewrite(model, &streams)?;
    let cost_after = cost.graph_cost(&converted.graph);
    if cost_after > cost_before * (1.0 - MIN_GAIN) && !always {
        report.refused.push(format!(
            "the cost model estimates {cost_after:.3e} s with CRMSNorm against {cost_before:.3e} s without"
        ));
        return Ok((model.clone(), report));
    }
    for s in &streams {
        report.converted.extend(s.norms.iter().map(|&n| graph.node(n).name.clone()));
    }
    report.cost_after = cost_after;
    Ok((converted, report))
}

fn weight_of(model: &Model, v: Value) -> Option<&Tensor> {
    let node = model.graph.node(v.node);
    match node.kind {
        NodeKind::Weight => model.weights.get(&node.name).map(|t| t.as_ref()),
        _ => None,
    }
}

/// Every row (along the last axis, of length d) of `t` sums to zero within the tolerance.
fn zero_mean_rows(t: &Tensor, d: usize) -> Result<(), String> {
    let data = t.as_f32().ok_or("is not f32")?;
    for (i, row) in data.chunks_exact(d).enumerate() {
        let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
        let abs: f64 = row.iter().map(|&v| f64::from(v).abs()).sum();
        // A NaN or infinite weight is not provably zero-mean either.
        if !sum.is_finite() || sum.abs() > ZERO_MEAN_TOLERANCE * abs {
            return Err(format!(
                "is not zero-mean along its last axis (row {i}: |Σw| = {:.3e} > {ZERO_MEAN_TOLERANCE:e}·Σ|w| = {:.3e})",
                sum.abs(),
                ZERO_MEAN_TOLERANCE * abs
            ));
        }
    }
    Ok(())
}

/// A write's constant weight: f32, last dimension d, zero-mean rows; `rank2` for a matrix.
fn check_write(model: &Model, node: NodeId, w: Value, d: usize, rank2: bool) -> Result<(), String> {
    let graph = &model.graph;
    let at = || format!("weight '{}' of node '{}'", graph.value_name(w), graph.node(node).name);
    let Some(t) = weight_of(model, w) else {
        return Err(format!("node '{}' writes the stream from a run-time value, not a weight", graph.node(node).name));
    };
    if t.shape().last() != Some(&d) || (rank2 && t.shape().len() != 2) {
        return Err(format!("{} has shape {:?}, not […, {d}]", at(), t.shape()));
    }
    zero_mean_rows(t, d).map_err(|e| format!("{} {e}", at()))
}

/// A last-axis RMSNorm over width `d` whose scale is a weight and whose every reader is a MatMul
/// by a constant [d, m] matrix.
fn check_norm(model: &Model, id: NodeId, d: usize) -> Result<(), String> {
    let graph = &model.graph;
    let name = &graph.node(id).name;
    let Some(Op::RmsNormalization { axis, .. }) = graph.node(id).op() else {
        return Err(format!("'{name}' is not an RMSNorm"));
    };
    let ins = graph.node_inputs(id);
    let rank = graph.value_type(ins[0]).rank();
    if kiln_ir::ops::normalize_axis(*axis, rank).ok() != Some(rank.saturating_sub(1)) {
        return Err(format!("RMSNorm '{name}' normalises more than the last axis"));
    }
    let gamma = weight_of(model, ins[1]).and_then(|t| t.as_f32());
    if !gamma.is_some_and(|g| g.len() == d || g.len() == 1) {
        return Err(format!("RMSNorm '{name}' has a run-time or non-vector scale"));
    }
    let out = Value { node: id, port: 0 };
    if graph.outputs().contains(&out) {
        return Err(format!("RMSNorm '{name}' is a graph output"));
    }
    for (user, port) in graph.users(out) {
        let u = graph.node(user);
        let w = graph.node_inputs(user).get(1).copied();
        let matrix = w.and_then(|w| weight_of(model, w)).is_some_and(|t| t.shape().len() == 2 && t.shape()[0] == d);
        if !(matches!(u.op(), Some(Op::MatMul)) && port == 0 && matrix) {
            return Err(format!(
                "RMSNorm '{name}' is read by '{}' ({}), not a MatMul by a constant matrix",
                u.name,
                u.op().map_or("?", |o| o.name())
            ));
        }
    }
    Ok(())
}

/// The stream through `start`, closed over the Adds that write and read it; on refusal, the
/// values visited (so that no other norm of the same stream tries again) and why.
fn explore(model: &Model, start: Value) -> Result<Stream, (Vec<Value>, String)> {
    let graph = &model.graph;
    let mut s = Stream::default();
    let fail = |s: &Stream, why: String| Err((s.values.iter().copied().collect(), format!("stream {why}")));
    let Some(&d) = graph.value_type(start).shape.last() else {
        return fail(&s, format!("'{}' is a scalar", graph.value_name(start)));
    };
    s.d = d;
    if d < 2 {
        return fail(&s, format!("'{}' has width {d}", graph.value_name(start)));
    }
    let mut queue = vec![start];
    s.values.insert(start);
    while let Some(v) = queue.pop() {
        let vname = graph.value_name(v);
        let ty = graph.value_type(v);
        if ty.dtype != kiln_ir::DType::F32 || ty.shape.last() != Some(&d) {
            return fail(&s, format!("value '{vname}' is {ty}, not f32 […, {d}]"));
        }
        let node = graph.node(v.node);
        let ins = graph.node_inputs(v.node);
        let written = match &node.kind {
            NodeKind::Input | NodeKind::Weight => Err(format!("value '{vname}' is a graph input or weight")),
            NodeKind::Op(Op::Binary(BinaryOp::Add)) => {
                let mut r = Ok(());
                for (port, &u) in ins.iter().enumerate() {
                    if weight_of(model, u).is_some() {
                        r = r.and(check_write(model, v.node, u, d, false));
                        s.writes.insert((v.node, port));
                    } else if s.values.insert(u) {
                        queue.push(u);
                    }
                }
                r
            }
            NodeKind::Op(Op::MatMul) => {
                s.writes.insert((v.node, 1));
                check_write(model, v.node, ins[1], d, true)
            }
            NodeKind::Op(Op::Gather { axis: 0 }) => {
                s.writes.insert((v.node, 0));
                check_write(model, v.node, ins[0], d, true)
            }
            NodeKind::Op(op) => Err(format!(
                "value '{vname}' is written by '{}' ({}); only Add, MatMul and Gather by constant weights may",
                node.name,
                op.name()
            )),
        };
        if let Err(why) = written {
            return fail(&s, why);
        }
        for (user, port) in graph.users(v) {
            let u = graph.node(user);
            match u.op() {
                Some(Op::Binary(BinaryOp::Add)) => {
                    let out = Value { node: user, port: 0 };
                    if s.values.insert(out) {
                        queue.push(out);
                    }
                }
                Some(Op::RmsNormalization { .. }) if port == 0 => {
                    if let Err(why) = check_norm(model, user, d) {
                        return fail(&s, why);
                    }
                    s.norms.insert(user);
                }
                op => {
                    return fail(
                        &s,
                        format!(
                            "value '{vname}' is read by '{}' ({}); only residual Adds and RMSNorms may",
                            u.name,
                            op.map_or("?", |o| o.name())
                        ),
                    );
                }
            }
        }
    }
    Ok(s)
}

/// `t` (last dimension d) without its last column.
fn drop_last_column(t: &Tensor, d: usize) -> Result<Tensor, String> {
    let data = t.as_f32().ok_or("weight is not f32")?;
    let mut shape = t.shape().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = d - 1;
    }
    let kept: Vec<f32> = data.chunks_exact(d).flat_map(|r| r[..d - 1].iter().copied()).collect();
    Tensor::from_f32(shape, kept)
}

/// W′[i, :] = γᵢ·W[i, :] − γ_d·W[d−1, :] for i < d − 1, in f64, rounded once.
fn compress_rows(w: &Tensor, gamma: &[f32], d: usize) -> Result<Tensor, String> {
    let data = w.as_f32().ok_or("weight is not f32")?;
    let m = w.shape()[1];
    let g = |i: usize| f64::from(if gamma.len() == 1 { gamma[0] } else { gamma[i] });
    let last = &data[(d - 1) * m..d * m];
    let mut out = Vec::with_capacity((d - 1) * m);
    for i in 0..d - 1 {
        let row = &data[i * m..(i + 1) * m];
        out.extend(row.iter().zip(last).map(|(&a, &b)| (g(i) * f64::from(a) - g(d - 1) * f64::from(b)) as f32));
    }
    Tensor::from_f32([d - 1, m], out)
}

/// The graph with every stream compressed, rebuilt through the builder (which re-infers and
/// re-checks every type).
fn rewrite(model: &Model, streams: &[Stream]) -> Result<Model, Error> {
    let graph = &model.graph;
    let internal = |e: String| Error::new("CRMSNorm pass", e);
    // Input edges that read a new weight instead, and the new weights by name.
    let mut edge_weight: BTreeMap<(NodeId, usize), String> = BTreeMap::new();
    let mut new_weights: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut norm_ops: BTreeMap<NodeId, Op> = BTreeMap::new();
    let mut restore: Vec<(Value, usize)> = Vec::new();
    let fresh = |base: &str, new_weights: &BTreeMap<String, Tensor>| {
        let mut name = format!("{base}.crms");
        let mut k = 1;
        while new_weights.contains_key(&name) || graph.find_value(&name).is_some() {
            k += 1;
            name = format!("{base}.crms{k}");
        }
        name
    };
    // Per weight edge: the norm (and its width) whose γ and implied last component fold into the
    // weight's rows (a reader of a converted norm), and the width whose last column is dropped (a
    // write to a stream). One MatMul can be both: a norm's reader that writes a stream.
    type Plan = (Option<(NodeId, usize)>, Option<usize>);
    let mut plans: BTreeMap<(NodeId, usize), Plan> = BTreeMap::new();
    for s in streams {
        let d = s.d;
        for &(node, port) in &s.writes {
            plans.entry((node, port)).or_default().1 = Some(d);
        }
        for &n in &s.norms {
            let Some(Op::RmsNormalization { epsilon, .. }) = graph.node(n).op() else {
                return Err(internal("a converted norm is not an RMSNorm".into()));
            };
            norm_ops.insert(n, Op::CrmsNormalization { epsilon: *epsilon, d });
            for (user, _) in graph.users(Value { node: n, port: 0 }) {
                plans.entry((user, 1)).or_default().0 = Some((n, d));
            }
        }
        restore.extend(graph.outputs().iter().filter(|v| s.values.contains(v)).map(|&v| (v, d)));
    }
    // One new weight per (weight, plan), however many edges share it.
    let mut made: BTreeMap<(Value, Plan), String> = BTreeMap::new();
    for (&(node, port), &plan) in &plans {
        let w = graph.node_inputs(node)[port];
        if let Some(name) = made.get(&(w, plan)) {
            edge_weight.insert((node, port), name.clone());
            continue;
        }
        let mut t = weight_of(model, w)
            .ok_or_else(|| internal(format!("node '{}' lost its weight", graph.node(node).name)))?
            .clone();
        if let Some((n, d)) = plan.0 {
            let gamma = weight_of(model, graph.node_inputs(n)[1]).and_then(|g| g.as_f32()).unwrap_or(&[1.0]).to_vec();
            t = compress_rows(&t, &gamma, d).map_err(internal)?;
        }
        if let Some(d) = plan.1 {
            t = drop_last_column(&t, d).map_err(internal)?;
        }
        let name = fresh(graph.value_name(w), &new_weights);
        new_weights.insert(name.clone(), t);
        made.insert((w, plan), name.clone());
        edge_weight.insert((node, port), name);
    }
    // A restored output keeps its name; the stored d − 1 components get a new one.
    let mut rename: BTreeMap<Value, String> = BTreeMap::new();
    for &(v, _) in &restore {
        let name = fresh(graph.value_name(v), &new_weights);
        rename.insert(v, name);
    }
    let name_of = |v: Value| rename.get(&v).cloned().unwrap_or_else(|| graph.value_name(v).to_string());

    let mut gb = GraphBuilder::new(graph.name());
    for &id in graph.inputs() {
        let info = &graph.node(id).outputs[0];
        gb.input(info.name.clone(), info.name.clone(), info.ty.clone());
    }
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut nodes = Vec::new();
    for id in graph.op_nodes() {
        let node = graph.node(id);
        let Some(op) = node.op() else { continue };
        let mut inputs: Vec<String> = Vec::new();
        for (port, v) in graph.node_inputs(id).into_iter().enumerate() {
            if norm_ops.contains_key(&id) && port > 0 {
                continue; // γ went into the readers' weights
            }
            let name = edge_weight.get(&(id, port)).cloned().unwrap_or_else(|| name_of(v));
            inputs.push(name);
        }
        let outputs: Vec<String> = (0..node.outputs.len()).map(|port| name_of(Value { node: id, port })).collect();
        used.extend(inputs.iter().cloned());
        let op = norm_ops.get(&id).cloned().unwrap_or_else(|| op.clone());
        nodes.push((node.name.clone(), op, inputs, outputs));
    }
    for &(v, _) in &restore {
        let (full, stored) = (graph.value_name(v).to_string(), name_of(v));
        let (sum, last) = (format!("{stored}.sum"), format!("{stored}.last"));
        let reduce = Op::Reduce {
            kind: kiln_ir::ReduceKind::Sum,
            axes: Some(vec![-1]),
            keepdims: true,
            noop_with_empty_axes: false,
        };
        nodes.push((sum.clone(), reduce, vec![stored.clone()], vec![sum.clone()]));
        nodes.push((last.clone(), Op::Unary(kiln_ir::UnaryOp::Neg), vec![sum], vec![last.clone()]));
        nodes.push((format!("{full}.restore"), Op::Concat { axis: -1 }, vec![stored, last], vec![full]));
    }
    for v in graph.outputs() {
        used.insert(graph.value_name(*v).to_string());
    }
    let mut weights = Weights::new();
    for &id in graph.weights() {
        let info = &graph.node(id).outputs[0];
        if used.contains(&info.name)
            && let Some(t) = model.weights.get(&info.name)
        {
            gb.weight(info.name.clone(), info.name.clone(), info.ty.clone());
            weights.insert_shared(info.name.clone(), t.clone());
        }
    }
    for (name, t) in new_weights {
        gb.weight(name.clone(), name.clone(), t.ty());
        weights.insert(name, t);
    }
    for (name, op, inputs, outputs) in nodes {
        gb.node(name.clone(), name, Ok(op), inputs, outputs);
    }
    for v in graph.outputs() {
        let name = graph.value_name(*v).to_string();
        gb.output(name.clone(), name);
    }
    let graph: Graph = gb.finish()?;
    Ok(Model { graph, weights })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Pre-RMSNorm stream as the Pre-LN → Pre-RMSNorm conversion leaves it: token and position
    /// embeddings, one MatMul + bias write, two norms read by MatMuls.
    const STREAM: &str = "kir 1
graph stream
input ids: i64[2,5]
weight emb: f32[10,8]
weight pos: f32[5,8]
weight g0: f32[8]
weight w0: f32[8,8]
weight c0: f32[8]
weight gf: f32[8]
weight wh: f32[8,3]
node embed = Gather(emb, ids) -> e
node addpos = Add(e, pos) -> h0
node n0 = RMSNormalization(h0, g0) -> y0
node fc0 = MatMul(y0, w0) -> m0
node bias0 = Add(m0, c0) -> a0
node res0 = Add(h0, a0) -> h1
node nf = RMSNormalization(h1, gf) -> yf
node head = MatMul(yf, wh) -> out
";

    /// `text` (plus `extra` lines) with pseudo-random weights in [−1, 1); the writes' weights
    /// (emb, pos, w0, c0) are centred along the last axis unless named in `uncentred`.
    fn model(extra: &str, uncentred: &[&str]) -> Model {
        model_of(&format!("{STREAM}{extra}"), uncentred)
    }

    /// [`STREAM`] with width `d` instead of 8.
    fn model_d(d: usize) -> Model {
        let text = STREAM.replace("8]", &format!("{d}]")).replace("[8,", &format!("[{d},"));
        model_of(&format!("{text}output out\n"), &[])
    }

    fn model_of(text: &str, uncentred: &[&str]) -> Model {
        let mut m = kiln_ir::text::parse(text).unwrap();
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        for &id in m.graph.weights() {
            let info = &m.graph.node(id).outputs[0];
            let mut v: Vec<f32> = (0..info.ty.num_elements())
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                })
                .collect();
            let write = ["emb", "pos", "w0", "c0"].contains(&info.name.as_str());
            if write && !uncentred.contains(&info.name.as_str()) {
                let d = *info.ty.shape.last().unwrap();
                for row in v.chunks_mut(d) {
                    let mean = row.iter().sum::<f32>() / d as f32;
                    row.iter_mut().for_each(|x| *x -= mean);
                }
            }
            m.weights.insert(info.name.clone(), Tensor::from_f32(info.ty.shape.clone(), v).unwrap());
        }
        m
    }

    fn outputs(m: &Model) -> Vec<Vec<f32>> {
        let ids = Tensor::from_i64([2, 5], vec![0, 3, 9, 4, 4, 7, 1, 2, 8, 5]).unwrap();
        let out = kiln_ir::eval::run(&m.graph, &m.weights, &[("ids".to_string(), ids)]).unwrap();
        out.into_iter().map(|(_, t)| t.as_f32().unwrap().to_vec()).collect()
    }

    /// Converted and original agree to 1e-5·(1 + |y|): the compressed weights are rounded to f32
    /// once from f64 and the d = 8 terms of each product summed in another order, a few ulps of
    /// values of order 1 (the centred weights' row sums, ~1e-7, add less).
    fn assert_same(a: &Model, b: &Model) {
        for (x, y) in outputs(a).iter().zip(outputs(b)) {
            assert_eq!(x.len(), y.len());
            for (i, (&p, &q)) in x.iter().zip(&y).enumerate() {
                assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "[{i}]: {p} vs {q}");
            }
        }
    }

    fn refusal(m: &Model) -> String {
        let (out, report) = compress(m, &CostModel::default(), false).unwrap();
        assert!(report.converted.is_empty(), "{report:?}");
        assert_eq!(out.graph.op_counts().get("CRMSNormalization"), None);
        report.refused.join("; ")
    }

    #[test]
    fn a_zero_mean_stream_is_stored_in_d_minus_one() {
        let m = model("output out\n", &[]);
        // d = 8 is a whole vector already: the cost model refuses (see `the_cost_model_...`).
        let (c, report) = compress(&m, &CostModel::default(), true).unwrap();
        assert_eq!(report.converted, ["n0", "nf"], "{report:?}");
        let text = kiln_ir::text::print(&c.graph);
        assert!(text.contains("node n0 = CRMSNormalization(h0) {d=8} -> y0: f32[2,5,7]"), "{text}");
        assert!(text.contains("weight emb.crms: f32[10,7]") && text.contains("weight wh.crms: f32[7,3]"), "{text}");
        assert!(!text.contains("weight emb:"), "unused originals are dropped: {text}");
        assert_same(&c, &m);
    }

    #[test]
    fn a_stream_that_is_an_output_is_restored() {
        let m = model("output out\noutput h1\n", &[]);
        // At d = 8 the three restore kernels cost more than the narrower stream saves: the cost
        // model refuses, and says so.
        let (same, report) = compress(&m, &CostModel::default(), false).unwrap();
        assert!(report.converted.is_empty() && same.graph == m.graph, "{report:?}");
        assert!(report.refused.iter().any(|r| r.contains("the cost model estimates")), "{report:?}");
        // The rewrite itself (what a wider stream would get).
        let stream = explore(&m, m.graph.find_value("h0").unwrap()).map_err(|(_, why)| why).unwrap();
        assert_eq!(stream.norms.len(), 2);
        let c = rewrite(&m, &[stream]).unwrap();
        let text = kiln_ir::text::print(&c.graph);
        assert!(text.contains("Concat(h1.crms, h1.crms.last)") && text.contains("-> h1: f32[2,5,8]"), "{text}");
        assert_same(&c, &m);
    }

    /// The cost model takes the conversion where d − 1 saves a whole vector (d = 17 → 16, every
    /// row of the stream then one vector narrower and aligned) and refuses it where d is a
    /// multiple of 8 (d = 16 → 15 saves nothing and misaligns the rows).
    #[test]
    fn the_cost_model_takes_it_only_where_a_vector_is_saved() {
        let m = model_d(17);
        let (c, report) = compress(&m, &CostModel::default(), false).unwrap();
        assert_eq!(report.converted, ["n0", "nf"], "{report:?}");
        assert!(report.cost_after < report.cost_before * (1.0 - MIN_GAIN), "{report:?}");
        assert_same(&c, &m);
        let m = model_d(16);
        let (same, report) = compress(&m, &CostModel::default(), false).unwrap();
        assert!(report.converted.is_empty() && same.graph == m.graph, "{report:?}");
        assert!(report.refused[0].contains("the cost model estimates"), "{report:?}");
        // KILN_CRMS=2 converts it anyway, with the same outputs.
        let (c, report) = compress(&m, &CostModel::default(), true).unwrap();
        assert_eq!(report.converted.len(), 2, "{report:?}");
        assert_same(&c, &m);
    }

    #[test]
    fn look_alikes_are_refused() {
        // One write that is not zero-mean.
        let why = refusal(&model("output out\n", &["w0"]));
        assert!(why.contains("weight 'w0' of node 'fc0' is not zero-mean"), "{why}");
        let why = refusal(&model("output out\n", &["pos"]));
        assert!(why.contains("weight 'pos' of node 'addpos' is not zero-mean"), "{why}");
        // The stream read by something other than a norm or a residual Add.
        let why = refusal(&model("node r = Relu(h1) -> z\noutput out\noutput z\n", &[]));
        assert!(why.contains("'h1' is read by 'r' (Relu)"), "{why}");
        // A norm read by something other than a MatMul by a constant.
        let why = refusal(&model("node r = Relu(yf) -> z\noutput out\noutput z\n", &[]));
        assert!(why.contains("RMSNorm 'nf' is read by 'r' (Relu)"), "{why}");
        // A stream written by a run-time value that is not a MatMul/Gather/Add (post-LN: the
        // norm's output is the stream).
        let why = refusal(&model(
            "node post = RMSNormalization(h1, gf) -> p\nnode res1 = Add(p, h1) -> h2\nnode n2 = RMSNormalization(h2, gf) -> q\nnode fq = MatMul(q, wh) -> o2\noutput out\noutput o2\n",
            &[],
        ));
        assert!(why.contains("written by 'post' (RMSNormalization)") || why.contains("'post'"), "{why}");
    }
}
