//! Import of the ONNX reductions, index and data-movement ops added for issue 12: the ones kiln
//! has as IR ops (ReduceMin/Prod, ArgMax/ArgMin, CumSum, TopK, Tile, GatherElements, GatherND,
//! ScatterND, ScatterElements) with their static inputs turned into attributes, and the ones
//! built from IR ops here because the result is exact or within rounding (each says why):
//! ReduceL1, ReduceSumSquare, ReduceLogSum, ReduceLogSumExp, Trilu, OneHot,
//! MeanVarianceNormalization.

use super::import::{Ctx, present, trim_outputs};
use super::lower::{Lowered, input, static_ints, static_tensor};
use super::proto::NodeProto;
use kiln_ir::{Attr, Attrs, BinaryOp, DType, Op, ReduceKind, Tensor, TensorData, UnaryOp};

/// The ONNX op types this module imports.
pub const OPS: &[&str] = &[
    "ArgMax",
    "ArgMin",
    "CumSum",
    "GatherElements",
    "GatherND",
    "MeanVarianceNormalization",
    "OneHot",
    "ReduceL1",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
    "Scatter",
    "ScatterElements",
    "ScatterND",
    "Tile",
    "TopK",
    "Trilu",
];

/// The input positions of these ops that kiln reads at load time.
pub(crate) fn static_slots(op_type: &str) -> &'static [usize] {
    match op_type {
        "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceSumSquare" | "ReduceLogSum" | "ReduceLogSumExp" => &[1],
        "CumSum" | "TopK" | "Tile" | "Trilu" => &[1],
        "OneHot" => &[1],
        _ => &[],
    }
}

/// A scalar (or one-element) static integer input.
fn static_int(ctx: &Ctx, node: &NodeProto, index: usize, what: &str) -> Result<Option<i64>, String> {
    let Some(t) = static_tensor(ctx, node, index, what)? else { return Ok(None) };
    if t.len() != 1 {
        return Err(format!("the {what} must be a single value, got shape {:?}", t.shape()));
    }
    match t.data() {
        TensorData::I64(v) => Ok(Some(v[0])),
        // OneHot's depth may be any numeric type; ONNX casts it to an integer.
        TensorData::F32(v) if v[0].is_finite() => Ok(Some(v[0] as i64)),
        _ => Err(format!("the {what} must be an integer, got {}", t.dtype())),
    }
}

/// Builds the nodes of one decomposition, naming intermediates after the ONNX node.
struct Chain<'a> {
    name: &'a str,
    l: Lowered,
}

impl Chain<'_> {
    fn tmp(&self, what: &str) -> String {
        format!("{}/{what}", self.name)
    }

    /// Adds `op` reading `inputs`, writing `out`; returns `out`.
    fn node(&mut self, what: &str, op: Op, inputs: Vec<String>, out: String) -> String {
        self.l.push(self.tmp(what), op, inputs, vec![out.clone()]);
        out
    }

    /// Adds `op` with a fresh intermediate output named after `what`.
    fn step(&mut self, what: &str, op: Op, inputs: Vec<String>) -> String {
        let out = self.tmp(&format!("{what}:out"));
        self.node(what, op, inputs, out)
    }

    /// The last node, which writes the ONNX node's output, carries the ONNX node's own name.
    fn last(&mut self, op: Op, inputs: Vec<String>, out: String) {
        self.l.push(self.name.to_string(), op, inputs, vec![out]);
    }

    fn konst(&mut self, what: &str, t: Tensor) -> String {
        let n = self.tmp(what);
        self.l.consts.push((n.clone(), t));
        n
    }
}

pub(crate) fn lower(
    ctx: &Ctx,
    name: &str,
    op_type: &str,
    node: &NodeProto,
    mut attrs: Attrs,
) -> Result<Option<Lowered>, String> {
    let ins = present(&node.input);
    let outs = trim_outputs(&node.output);
    let out0 = || outs.first().cloned().ok_or_else(|| format!("{op_type} needs an output"));
    let x = || ins.first().cloned().ok_or_else(|| format!("{op_type} needs an input"));
    let single = |op_name: &str, attrs: &Attrs, inputs: Vec<String>| -> Result<Option<Lowered>, String> {
        Ok(Some(Lowered::single(name, Op::from_parts(op_name, attrs), inputs, outs.clone())))
    };
    let mut c = Chain { name, l: Lowered::default() };
    match op_type {
        "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceSumSquare" | "ReduceLogSum" | "ReduceLogSumExp" => {
            // Opset 18 moved `axes` from an attribute to input 1.
            if ctx.opset >= 18
                && let Some(axes) = static_ints(ctx, node, 1, "axes")?
                && !axes.is_empty()
            {
                attrs.insert("axes".into(), Attr::Ints(axes));
            }
            let (x, out) = (x()?, out0()?);
            if matches!(op_type, "ReduceMin" | "ReduceProd") {
                return single(op_type, &attrs, vec![x]);
            }
            let sum = Op::from_parts("ReduceSum", &attrs)?;
            match op_type {
                // Σ|x|: the sum of the absolute values, the same f64 accumulation.
                "ReduceL1" => {
                    let a = c.step("abs", Op::Unary(UnaryOp::Abs), vec![x]);
                    c.last(sum, vec![a], out);
                }
                // Σx²: each square rounded to f32 before the f64 sum (≤ ½ ulp per term).
                "ReduceSumSquare" => {
                    let sq = c.step("square", Op::Binary(BinaryOp::Mul), vec![x.clone(), x]);
                    c.last(sum, vec![sq], out);
                }
                // log Σx; with noop_with_empty_axes the sum is x and this gives log x, as ONNX Runtime.
                "ReduceLogSum" => {
                    let s = c.step("sum", sum, vec![x]);
                    c.last(Op::Unary(UnaryOp::Log), vec![s], out);
                }
                _ => log_sum_exp(&mut c, ctx, node, &attrs, x, out)?,
            }
            Ok(Some(c.l))
        }
        "ArgMax" | "ArgMin" | "GatherElements" | "GatherND" | "ScatterND" | "ScatterElements" => {
            single(op_type, &attrs, ins.clone())
        }
        // Scatter (opsets 9–10) is ScatterElements under its old name.
        "Scatter" => single("ScatterElements", &attrs, ins.clone()),
        "CumSum" => {
            let axis = static_int(ctx, node, 1, "axis")?.ok_or("CumSum needs its 'axis' input")?;
            attrs.insert("axis".into(), Attr::Int(axis));
            single(op_type, &attrs, vec![x()?])
        }
        "Tile" => {
            let repeats = static_ints(ctx, node, 1, "repeats")?.ok_or("Tile needs its 'repeats' input")?;
            attrs.insert("repeats".into(), Attr::Ints(repeats));
            single(op_type, &attrs, vec![x()?])
        }
        "TopK" => {
            // Opset 10 moved k from an attribute to input 1.
            if ctx.opset >= 10 {
                let k = static_int(ctx, node, 1, "k")?.ok_or("TopK needs its 'k' input")?;
                attrs.insert("k".into(), Attr::Int(k));
            }
            // Both outputs exist in kiln; an unused one gets a private name.
            let outputs = (0..2)
                .map(|i| match node.output.get(i).filter(|o| !o.is_empty()) {
                    Some(o) => o.clone(),
                    None => format!("{name}/unused_output_{i}"),
                })
                .collect();
            Ok(Some(Lowered::single(name, Op::from_parts(op_type, &attrs), vec![x()?], outputs)))
        }
        "Trilu" => {
            trilu(&mut c, ctx, node, &attrs, x()?, out0()?)?;
            Ok(Some(c.l))
        }
        "OneHot" => {
            one_hot(&mut c, ctx, node, &attrs, &ins, out0()?)?;
            Ok(Some(c.l))
        }
        "MeanVarianceNormalization" => {
            mvn(&mut c, &attrs, x()?, out0()?)?;
            Ok(Some(c.l))
        }
        _ => Ok(None),
    }
}

fn int_attr(attrs: &Attrs, op: &str, key: &str, default: i64) -> Result<i64, String> {
    match attrs.get(key) {
        None => Ok(default),
        Some(Attr::Int(v)) => Ok(*v),
        Some(other) => Err(format!("{op}'s '{key}' must be an int, got {other}")),
    }
}

fn no_attrs_but(attrs: &Attrs, op: &str, known: &[&str]) -> Result<(), String> {
    match attrs.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!("{op} has no attribute '{k}'")),
        None => Ok(()),
    }
}

/// log Σ exp(x) as m + log Σ exp(x − m), m the maximum over the reduced axes (as ONNX Runtime, so
/// that large x do not overflow). m is clamped to ±f32::MAX: an infinite m would make x − m NaN,
/// and with the clamp −∞ rows give −∞ and +∞ rows +∞, which is what ONNX Runtime gives.
fn log_sum_exp(
    c: &mut Chain,
    ctx: &Ctx,
    node: &NodeProto,
    attrs: &Attrs,
    x: String,
    out: String,
) -> Result<(), String> {
    no_attrs_but(attrs, "ReduceLogSumExp", &["axes", "keepdims", "noop_with_empty_axes"])?;
    let keepdims = int_attr(attrs, "ReduceLogSumExp", "keepdims", 1)? != 0;
    let noop = int_attr(attrs, "ReduceLogSumExp", "noop_with_empty_axes", 0)? != 0;
    let axes = match attrs.get("axes") {
        None => None,
        Some(Attr::Ints(a)) => Some(a.clone()),
        Some(other) => return Err(format!("ReduceLogSumExp's 'axes' must be ints, got {other}")),
    };
    let empty = axes.as_ref().is_none_or(|a| a.is_empty());
    let reduce = |kind| Op::Reduce { kind, axes: axes.clone(), keepdims: true, noop_with_empty_axes: noop };
    let m = c.step("max", reduce(ReduceKind::Max), vec![x.clone()]);
    let m = c.step("clamp_max", Op::Unary(UnaryOp::Clip { min: Some(-f32::MAX), max: Some(f32::MAX) }), vec![m]);
    let d = c.step("sub_max", Op::Binary(BinaryOp::Sub), vec![x.clone(), m.clone()]);
    let e = c.step("exp", Op::Unary(UnaryOp::Exp), vec![d]);
    let s = c.step("sum", reduce(ReduceKind::Sum), vec![e]);
    let l = c.step("log", Op::Unary(UnaryOp::Log), vec![s]);
    if keepdims || (empty && noop) {
        c.last(Op::Binary(BinaryOp::Add), vec![l, m], out);
        return Ok(());
    }
    let y = c.step("add_max", Op::Binary(BinaryOp::Add), vec![l, m]);
    let rank = input(node, 0).and_then(|n| ctx.ty(n)).map(|t| t.rank()).ok_or("the input's rank is not known")?;
    let squeeze = if empty { (0..rank as i64).collect() } else { axes.unwrap_or_default() };
    c.last(Op::Squeeze { axes: Some(squeeze) }, vec![y], out);
    Ok(())
}

/// Trilu as Where(mask, x, 0) with a constant [N, M] mask over the last two axes: exact.
fn trilu(c: &mut Chain, ctx: &Ctx, node: &NodeProto, attrs: &Attrs, x: String, out: String) -> Result<(), String> {
    no_attrs_but(attrs, "Trilu", &["upper"])?;
    let upper = int_attr(attrs, "Trilu", "upper", 1)? != 0;
    let k = static_int(ctx, node, 1, "k")?.unwrap_or(0);
    let ty = ctx.ty(&x).ok_or_else(|| format!("the type of '{x}' is not known at load time"))?;
    let r = ty.rank();
    if r < 2 {
        return Err(format!("Trilu needs an input of rank ≥ 2, got rank {r}"));
    }
    let (n, m) = (ty.shape[r - 2], ty.shape[r - 1]);
    if n.saturating_mul(m) > kiln_ir::MAX_ELEMENTS {
        return Err(format!("Trilu's {n}×{m} mask is too large"));
    }
    // Upper keeps j − i ≥ k, lower keeps j − i ≤ k (i128: k comes from the file).
    let keep = |i: usize, j: usize| {
        let d = j as i128 - i as i128;
        if upper { d >= k as i128 } else { d <= k as i128 }
    };
    let mask: Vec<bool> = (0..n).flat_map(|i| (0..m).map(move |j| keep(i, j))).collect();
    let mask = c.konst("mask", Tensor::from_bool([n, m], mask)?);
    let zero = match ty.dtype {
        DType::F32 => Tensor::scalar_f32(0.0),
        DType::I64 => Tensor::from_i64(vec![], vec![0])?,
        DType::Bool => Tensor::from_bool(vec![], vec![false])?,
    };
    let zero = c.konst("zero", zero);
    c.last(Op::Where, vec![mask, x, zero], out);
    Ok(())
}

/// OneHot(indices, depth, values) as Where(wrap(indices)[…, None, …] == iota(depth), on, off):
/// exact. A negative index counts from depth; one outside [−depth, depth) matches no position,
/// so its row is all `off`, as the spec says.
fn one_hot(
    c: &mut Chain,
    ctx: &Ctx,
    node: &NodeProto,
    attrs: &Attrs,
    ins: &[String],
    out: String,
) -> Result<(), String> {
    no_attrs_but(attrs, "OneHot", &["axis"])?;
    let [indices, _, values] = ins else { return Err(format!("OneHot takes 3 inputs, got {}", ins.len())) };
    let depth = static_int(ctx, node, 1, "depth")?.ok_or("OneHot needs its 'depth' input")?;
    if depth < 1 || depth as u64 > kiln_ir::MAX_ELEMENTS as u64 {
        return Err(format!("OneHot's depth must be ≥ 1 (kiln needs every dimension ≥ 1), got {depth}"));
    }
    let ity = ctx.ty(indices).ok_or_else(|| format!("the type of '{indices}' is not known at load time"))?;
    let out_rank = ity.rank() + 1;
    let axis = kiln_ir::ops::normalize_axis(int_attr(attrs, "OneHot", "axis", -1)?, out_rank)
        .map_err(|e| format!("OneHot: {e}"))?;
    let idx = match ity.dtype {
        DType::I64 => indices.clone(),
        // ONNX casts non-integer indices to int64 (truncation, as ONNX Runtime).
        DType::F32 => c.step("cast_indices", Op::Cast { to: DType::I64 }, vec![indices.clone()]),
        DType::Bool => return Err("OneHot's indices must be numeric, got bool".into()),
    };
    let zero = c.konst("zero", Tensor::from_i64(vec![], vec![0])?);
    let depth_t = c.konst("depth", Tensor::from_i64(vec![], vec![depth])?);
    let neg = c.step("is_negative", Op::Binary(BinaryOp::Less), vec![idx.clone(), zero]);
    let plus = c.step("plus_depth", Op::Binary(BinaryOp::Add), vec![idx.clone(), depth_t]);
    let wrapped = c.step("wrap", Op::Where, vec![neg, plus, idx]);
    let col = c.step("unsqueeze", Op::Unsqueeze { axes: vec![axis as i64] }, vec![wrapped]);
    let mut shape = vec![1usize; out_rank];
    shape[axis] = depth as usize;
    let iota = c.konst("iota", Tensor::from_i64(shape, (0..depth).collect())?);
    let hit = c.step("equal", Op::Binary(BinaryOp::Equal), vec![col, iota]);
    let (off, on) = match ctx.consts.get(values) {
        Some(v) if v.len() == 2 => {
            let pick = |i: usize| -> Result<Tensor, String> {
                match v.data() {
                    TensorData::F32(d) => Ok(Tensor::scalar_f32(d[i])),
                    TensorData::I64(d) => Tensor::from_i64(vec![], vec![d[i]]),
                    TensorData::Bool(d) => Tensor::from_bool(vec![], vec![d[i]]),
                }
            };
            (c.konst("off_value", pick(0)?), c.konst("on_value", pick(1)?))
        }
        Some(v) => return Err(format!("OneHot's values must hold 2 elements, got {}", v.len())),
        None => {
            let slice = |s: i64| Op::Slice { starts: vec![s], ends: vec![s + 1], axes: None, steps: None };
            (c.step("off_value", slice(0), vec![values.clone()]), c.step("on_value", slice(1), vec![values.clone()]))
        }
    };
    c.last(Op::Where, vec![hit, on, off], out);
    Ok(())
}

/// MeanVarianceNormalization: (x − mean)/(√var + 1e-9) over `axes` (default [0, 2, 3]), as the
/// ONNX function body, except that the variance is the mean of squared deviations rather than
/// E[x²] − E[x]²: the same value without the cancellation.
fn mvn(c: &mut Chain, attrs: &Attrs, x: String, out: String) -> Result<(), String> {
    no_attrs_but(attrs, "MeanVarianceNormalization", &["axes"])?;
    let axes = match attrs.get("axes") {
        None => vec![0, 2, 3],
        Some(Attr::Ints(a)) => a.clone(),
        Some(other) => return Err(format!("MeanVarianceNormalization's 'axes' must be ints, got {other}")),
    };
    let mean =
        || Op::Reduce { kind: ReduceKind::Mean, axes: Some(axes.clone()), keepdims: true, noop_with_empty_axes: false };
    let mu = c.step("mean", mean(), vec![x.clone()]);
    let d = c.step("centre", Op::Binary(BinaryOp::Sub), vec![x, mu]);
    let sq = c.step("square", Op::Binary(BinaryOp::Mul), vec![d.clone(), d.clone()]);
    let var = c.step("variance", mean(), vec![sq]);
    let sd = c.step("sqrt", Op::Unary(UnaryOp::Sqrt), vec![var]);
    let eps = c.konst("epsilon", Tensor::scalar_f32(1e-9));
    let den = c.step("add_epsilon", Op::Binary(BinaryOp::Add), vec![sd, eps]);
    c.last(Op::Binary(BinaryOp::Div), vec![d, den], out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::proto::{
        AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
        TypeProto, ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType,
        tensor_shape_proto::Dimension, tensor_shape_proto::dimension, type_proto,
    };
    use kiln_ir::Tensor;
    use prost::Message;

    fn input(name: &str, dtype: DataType, dims: &[i64]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|&d| Dimension { value: Some(dimension::Value::DimValue(d)), ..Dimension::default() })
            .collect();
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(dtype as i32),
                    shape: Some(TensorShapeProto { dim }),
                })),
                ..TypeProto::default()
            }),
            ..ValueInfoProto::default()
        }
    }

    fn int_attr(name: &str, i: i64) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Int as i32),
            i: Some(i),
            ..Default::default()
        }
    }

    fn i64s(name: &str, dims: &[i64], v: &[i64]) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            data_type: Some(DataType::Int64 as i32),
            dims: dims.to_vec(),
            int64_data: v.to_vec(),
            ..TensorProto::default()
        }
    }

    /// One node `op` named "n" reading `ins`, writing `outs`, over inputs and initializers.
    fn load(
        op: &str,
        ins: &[&str],
        outs: &[&str],
        attrs: Vec<AttributeProto>,
        inputs: Vec<ValueInfoProto>,
        inits: Vec<TensorProto>,
    ) -> Result<kiln_ir::Model, String> {
        let node = NodeProto {
            op_type: Some(op.into()),
            name: Some("n".into()),
            input: ins.iter().map(|s| s.to_string()).collect(),
            output: outs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..NodeProto::default()
        };
        let graph = GraphProto {
            name: Some("g".into()),
            node: vec![node],
            input: inputs,
            output: outs
                .iter()
                .filter(|o| !o.is_empty())
                .map(|o| ValueInfoProto { name: Some(o.to_string()), ..Default::default() })
                .collect(),
            initializer: inits,
            ..GraphProto::default()
        };
        let bytes = ModelProto {
            ir_version: Some(9),
            opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(18) }],
            graph: Some(graph),
            ..ModelProto::default()
        }
        .encode_to_vec();
        super::super::parse_onnx(&bytes, None, &[]).map_err(|e| e.to_string())
    }

    fn run(m: &kiln_ir::Model, inputs: &[(&str, Tensor)]) -> Vec<Tensor> {
        let ins: Vec<(String, Tensor)> = inputs.iter().map(|(n, t)| (n.to_string(), t.clone())).collect();
        kiln_ir::eval::run(&m.graph, &m.weights, &ins).unwrap().into_iter().map(|(_, t)| t).collect()
    }

    #[test]
    fn static_inputs_of_data_ops_must_be_constants_and_errors_name_the_node() {
        let x = || input("x", DataType::Float, &[2, 3]);
        let k = || input("k", DataType::Int64, &[1]);
        let err = load("TopK", &["x", "k"], &["v", "i"], vec![], vec![x(), k()], vec![]).unwrap_err();
        assert!(err.contains("'n'") && err.contains("the k") && err.contains("graph input"), "{err}");
        let err = load("Trilu", &["x"], &["y"], vec![int_attr("uper", 1)], vec![x()], vec![]).unwrap_err();
        assert!(err.contains("'n'") && err.contains("Trilu has no attribute 'uper'"), "{err}");
        let err = load("Tile", &["x", "r"], &["y"], vec![], vec![x()], vec![i64s("r", &[2], &[0, 1])]).unwrap_err();
        assert!(err.contains("'n'") && err.contains("contain 0"), "{err}");
        let inits = vec![i64s("d", &[], &[0]), i64s("v", &[2], &[0, 1])];
        let idx = input("i", DataType::Int64, &[3]);
        let err = load("OneHot", &["i", "d", "v"], &["y"], vec![], vec![idx], inits).unwrap_err();
        assert!(err.contains("'n'") && err.contains("depth must be ≥ 1"), "{err}");
        let err = load(
            "ScatterND",
            &["x", "i", "x"],
            &["y"],
            vec![],
            vec![x(), input("i", DataType::Int64, &[1, 1])],
            vec![],
        )
        .unwrap_err();
        assert!(err.contains("'n'") && err.contains("updates have shape [2,3]"), "{err}");
    }

    #[test]
    fn top_k_with_only_values_used_and_log_sum_exp_without_keepdims() {
        let x = input("x", DataType::Float, &[2, 3]);
        let m = load("TopK", &["x", "k"], &["v", ""], vec![], vec![x.clone()], vec![i64s("k", &[1], &[2])]).unwrap();
        let t = Tensor::from_f32([2, 3], vec![1.0, 5.0, 3.0, 0.0, -1.0, 0.0]).unwrap();
        let out = run(&m, &[("x", t.clone())]);
        assert_eq!(out[0].as_f32().unwrap(), [5.0, 3.0, 0.0, 0.0]);
        let m = load(
            "ReduceLogSumExp",
            &["x", "a"],
            &["y"],
            vec![int_attr("keepdims", 0)],
            vec![x],
            vec![i64s("a", &[1], &[-1])],
        )
        .unwrap();
        let big =
            Tensor::from_f32([2, 3], vec![1000.0, 1000.0, 1000.0, f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0]).unwrap();
        let y = run(&m, &[("x", big)]).remove(0);
        assert_eq!(y.shape(), [2]);
        // log(3·e^1000) = 1000 + ln 3 without overflow; the second row is log(e^0) = 0.
        let v = y.as_f32().unwrap();
        assert!((v[0] - (1000.0 + 3f32.ln())).abs() < 1e-3, "{v:?}");
        assert_eq!(v[1], 0.0);
    }
}
