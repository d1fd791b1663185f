//! One ONNX node → kiln nodes. The ONNX-specific parts live here (static inputs turned into
//! attributes, opset differences, `auto_pad`, variadic Max/Min, Constant); attribute names, types
//! and defaults are left to [`Op::from_parts`], the one place that knows them.

use super::import::{Ctx, present, trim_outputs};
use super::proto::NodeProto;
use kiln_ir::{Attr, Attrs, DType, Op, Tensor, TensorData};

/// A kiln node produced by lowering.
pub(crate) struct LNode {
    pub name: String,
    pub op: Result<Op, String>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// What one ONNX node becomes: kiln nodes (in order) and new constant tensors.
#[derive(Default)]
pub(crate) struct Lowered {
    pub nodes: Vec<LNode>,
    pub consts: Vec<(String, Tensor)>,
}

impl Lowered {
    pub fn single(name: &str, op: Result<Op, String>, inputs: Vec<String>, outputs: Vec<String>) -> Lowered {
        Lowered { nodes: vec![LNode { name: name.to_string(), op, inputs, outputs }], consts: Vec::new() }
    }

    /// Adds a node built from an op that cannot fail.
    pub fn push(&mut self, name: String, op: Op, inputs: Vec<String>, outputs: Vec<String>) {
        self.nodes.push(LNode { name, op: Ok(op), inputs, outputs });
    }
}

/// The default-domain op types kiln imports (kiln-domain ops are imported by their kiln names).
pub const ONNX_OPS: &[&str] = &[
    "Abs",
    "Add",
    "Attention",
    "BatchNormalization",
    "Cast",
    "CastLike",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "Div",
    "Dropout",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Gather",
    "Gelu",
    "Gemm",
    "Greater",
    "GroupNormalization",
    "Identity",
    "InstanceNormalization",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "Log",
    "LogSoftmax",
    "MatMul",
    "Max",
    "Min",
    "Mul",
    "Neg",
    "Pad",
    "Pow",
    "RMSNormalization",
    "Reciprocal",
    "ReduceL2",
    "ReduceMax",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Resize",
    "Selu",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Swish",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Upsample",
    "Where",
    // Spatial ops, imported by spatial.rs (its SPATIAL_OPS).
    "AveragePool",
    "ConvTranspose",
    "DepthToSpace",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "LRN",
    "LpPool",
    "MaxPool",
    "SpaceToDepth",
    // Elementwise ops of issue 12 (kept together so merges are "take both").
    "Acos",
    "Acosh",
    "And",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "Ceil",
    "Celu",
    "Cos",
    "Cosh",
    "Einsum",
    "Elu",
    "Floor",
    "GreaterOrEqual",
    "HardSigmoid",
    "HardSwish",
    "IsInf",
    "IsNaN",
    "LessOrEqual",
    "Mean",
    "Mish",
    "Mod",
    "Not",
    "Or",
    "PRelu",
    "Round",
    "Shrink",
    "Sign",
    "Sin",
    "Sinh",
    "Softplus",
    "Softsign",
    "Tan",
    "ThresholdedRelu",
    "Xor",
];

/// The input positions of an op that kiln reads at load time (static parameters).
pub(crate) fn static_slots(op_type: &str, opset: i64) -> &'static [usize] {
    match op_type {
        "Clip" => &[1, 2],
        "Pad" => &[1, 2, 3],
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceL2" | "Reshape" | "Expand" | "Split" | "Unsqueeze"
        | "Squeeze" => &[1],
        "Slice" => &[1, 2, 3, 4],
        // roi (1) is only used by tf_crop_and_resize, but it must not be a run-time input either.
        "Resize" => &[1, 2, 3],
        "GroupNormalization" if opset < 21 => &[1, 2],
        "Upsample" | "Dropout" => &[1, 2],
        op if super::data_ops::OPS.contains(&op) => super::data_ops::static_slots(op),
        _ => &[],
    }
}

/// The input at `index`, or `None` when it is absent (missing or "").
pub(crate) fn input(node: &NodeProto, index: usize) -> Option<&str> {
    node.input.get(index).map(String::as_str).filter(|s| !s.is_empty())
}

/// A static input: its value when it is a load-time constant, `None` when absent, an error when it
/// is computed at run time.
pub(crate) fn static_tensor<'c>(
    ctx: &'c Ctx,
    node: &NodeProto,
    index: usize,
    what: &str,
) -> Result<Option<&'c Tensor>, String> {
    let Some(name) = input(node, index) else { return Ok(None) };
    match ctx.consts.get(name) {
        Some(t) => Ok(Some(t)),
        None if ctx.graph_inputs.contains(name) => Err(format!(
            "input {index} ('{name}', the {what}) is a graph input, but kiln fixes the {what} at load time: \
             give its value when loading (kiln run --input {name}=FILE)"
        )),
        None => Err(format!(
            "input {index} ('{name}', the {what}) must be a constant (an initializer or a Constant node): kiln fixes it at load time"
        )),
    }
}

pub(crate) fn static_ints(ctx: &Ctx, node: &NodeProto, index: usize, what: &str) -> Result<Option<Vec<i64>>, String> {
    let Some(t) = static_tensor(ctx, node, index, what)? else { return Ok(None) };
    if t.shape().len() > 1 {
        return Err(format!("the {what} must be a 1-D tensor, got shape {:?}", t.shape()));
    }
    match t.data() {
        TensorData::I64(v) => Ok(Some(v.clone())),
        _ => Err(format!("the {what} must be int64, got {}", t.dtype())),
    }
}

pub(crate) fn static_floats(ctx: &Ctx, node: &NodeProto, index: usize, what: &str) -> Result<Option<Vec<f32>>, String> {
    let Some(t) = static_tensor(ctx, node, index, what)? else { return Ok(None) };
    if t.shape().len() > 1 {
        return Err(format!("the {what} must be a 1-D tensor, got shape {:?}", t.shape()));
    }
    match t.data() {
        TensorData::F32(v) => Ok(Some(v.clone())),
        // Integer bounds of an integer op (Clip on int64, Pad of int64 data) as kiln's f32 attribute.
        TensorData::I64(v) => Ok(Some(v.iter().map(|&x| x as f32).collect())),
        TensorData::Bool(_) => Err(format!("the {what} must be a number, got bool")),
    }
}

/// A scalar (or one-element) static float.
fn static_scalar(ctx: &Ctx, node: &NodeProto, index: usize, what: &str) -> Result<Option<f32>, String> {
    match static_floats(ctx, node, index, what)? {
        None => Ok(None),
        Some(v) if v.len() == 1 => Ok(Some(v[0])),
        Some(v) => Err(format!("the {what} must be a scalar, got {} values", v.len())),
    }
}

/// The rank of a tensor, known at load time unless something upstream failed.
fn rank_of(ctx: &Ctx, node: &NodeProto, index: usize) -> Result<usize, String> {
    shape_of(ctx, node, index).map(|s| s.len())
}

fn shape_of<'c>(ctx: &'c Ctx, node: &NodeProto, index: usize) -> Result<&'c [usize], String> {
    let name = input(node, index).ok_or_else(|| format!("input {index} is missing"))?;
    ctx.ty(name)
        .map(|t| t.shape.as_slice())
        .ok_or_else(|| format!("the shape of input {index} ('{name}') is not known at load time"))
}

fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    kiln_ir::ops::normalize_axis(axis, rank)
}

/// Lowers one default-domain node. `Ok(None)`: kiln does not implement the op.
pub(crate) fn lower_node(
    ctx: &Ctx,
    name: &str,
    op_type: &str,
    node: &NodeProto,
    mut attrs: Attrs,
) -> Result<Option<Lowered>, String> {
    let ins = present(&node.input);
    let outs = trim_outputs(&node.output);
    let data = |n: usize| -> Vec<String> { ins.iter().take(n).cloned().collect() };
    let single = |op_name: &str, attrs: &Attrs, inputs: Vec<String>| {
        Ok(Some(Lowered::single(name, Op::from_parts(op_name, attrs), inputs, outs.clone())))
    };
    if let Some(l) = super::fold::integer_unary(ctx, op_type, node)? {
        return Ok(Some(l));
    }
    if let Some(l) = super::upgrade::lower(ctx, name, op_type, node, &mut attrs)? {
        return Ok(Some(l));
    }
    match op_type {
        "Add"
        | "Sub"
        | "Mul"
        | "Div"
        | "Equal"
        | "Less"
        | "Where"
        | "Identity"
        | "Sqrt"
        | "Reciprocal"
        | "Exp"
        | "Log"
        | "Tanh"
        | "Erf"
        | "Sigmoid"
        | "Relu"
        | "LeakyRelu"
        | "Selu"
        | "Gelu"
        | "MatMul"
        | "Gemm"
        | "BatchNormalization"
        | "InstanceNormalization"
        | "RMSNormalization"
        | "Softmax"
        | "LogSoftmax"
        | "Transpose"
        | "Concat"
        | "Gather"
        | "Flatten" => single(op_type, &attrs, ins.clone()),
        // Elementwise ops of issue 12: one kiln op each (Neg/Abs/Sign on int64 are decomposed in
        // `int_unary`, Mean in `variadic`, Einsum in `einsum`).
        "Greater" | "GreaterOrEqual" | "LessOrEqual" | "And" | "Or" | "Xor" | "Not" | "Mod" | "PRelu" | "Sin"
        | "Cos" | "Tan" | "Asin" | "Acos" | "Atan" | "Sinh" | "Cosh" | "Asinh" | "Acosh" | "Atanh" | "Floor"
        | "Ceil" | "Round" | "Softplus" | "Softsign" | "Mish" | "HardSwish" | "HardSigmoid" | "Elu" | "Celu"
        | "ThresholdedRelu" | "Shrink" | "IsNaN" | "IsInf" => single(op_type, &attrs, ins.clone()),
        "Neg" | "Abs" | "Sign" if ins.first().and_then(|x| ctx.ty(x)).is_some_and(|t| t.dtype == DType::I64) => {
            Ok(Some(int_unary(name, op_type, &attrs, &ins, &outs)?))
        }
        "Neg" | "Abs" | "Sign" => single(op_type, &attrs, ins.clone()),
        "Mean" => Ok(Some(variadic(name, "Mean", "Add", &ins, &outs, &attrs)?)),
        "Einsum" => Ok(Some(super::einsum::lower(ctx, name, node, &attrs)?)),
        "Pow" => {
            // ONNX lets the exponent's type differ from the base's; kiln's Pow takes one type. An
            // int64 exponent of a float base is cast to float (exact for |e| < 2^24).
            let types = (ins.first().and_then(|b| ctx.ty(b)), ins.get(1).and_then(|e| ctx.ty(e)));
            if let (Some(b), Some(e)) = types
                && b.dtype == DType::F32
                && e.dtype == DType::I64
            {
                let cast = format!("{name}/exponent_f32");
                let mut l = Lowered::default();
                l.push(
                    format!("{name}/cast_exponent"),
                    Op::Cast { to: DType::F32 },
                    vec![ins[1].clone()],
                    vec![cast.clone()],
                );
                l.nodes.push(LNode {
                    name: name.to_string(),
                    op: Op::from_parts("Pow", &attrs),
                    inputs: vec![ins[0].clone(), cast],
                    outputs: outs.clone(),
                });
                return Ok(Some(l));
            }
            single(op_type, &attrs, ins.clone())
        }
        "LayerNormalization" => {
            if outs.len() > 1 {
                return Ok(Some(layer_norm_with_stats(ctx, name, node, &attrs, &ins, &outs)?));
            }
            single(op_type, &attrs, ins.clone())
        }
        "Max" | "Min" => Ok(Some(variadic(name, op_type, op_type, &ins, &outs, &attrs)?)),
        "Sum" => Ok(Some(variadic(name, "Sum", "Add", &ins, &outs, &attrs)?)),
        "CastLike" => {
            let to = super::fold::cast_like_target(ctx, node)?;
            attrs.remove("saturate");
            attrs.insert("to".into(), Attr::Str(to.name().into()));
            single("Cast", &attrs, data(1))
        }
        op if super::fold::LOAD_TIME_OPS.contains(&op) => super::fold::lower(ctx, op_type, node, &attrs),
        "Cast" => {
            let to = match attrs.get("to") {
                Some(Attr::Int(code)) => *code,
                _ => return Err("Cast needs the int attribute 'to'".into()),
            };
            // Narrow types are held widened (tensor.rs's `Elem`): a Cast to int32 or uint8 is a Cast
            // to int64 (no wrap-around on overflow), one to float16 a Cast to float (no rounding to
            // half precision). docs/ops.md says so.
            let dtype = i32::try_from(to)
                .map_err(|_| format!("Cast's 'to' {to} is not an element type"))
                .and_then(super::tensor::dtype_from_onnx)
                .map_err(|e| format!("Cast to {}: {e}", super::tensor::onnx_dtype_name(to as i32)))?;
            attrs.insert("to".into(), Attr::Str(dtype.name().into()));
            // `saturate` only matters for float8 targets, which kiln refuses above.
            attrs.remove("saturate");
            single(op_type, &attrs, ins.clone())
        }
        "Clip" => {
            // Opset ≥ 11: bounds are optional inputs 1 and 2.
            if let Some(min) = static_scalar(ctx, node, 1, "lower bound")? {
                attrs.insert("min".into(), Attr::Float(min));
            }
            if let Some(max) = static_scalar(ctx, node, 2, "upper bound")? {
                attrs.insert("max".into(), Attr::Float(max));
            }
            single(op_type, &attrs, data(1))
        }
        "Conv" if rank_of(ctx, node, 0)? != 4 => super::spatial::lower(ctx, name, op_type, node, attrs),
        op if super::spatial::SPATIAL_OPS.contains(&op) => super::spatial::lower(ctx, name, op_type, node, attrs),
        "Conv" => {
            resolve_auto_pad(ctx, node, &mut attrs)?;
            single(op_type, &attrs, ins.clone())
        }
        "Pad" => {
            let pads = static_ints(ctx, node, 1, "pads")?.ok_or("Pad needs its 'pads' input")?;
            let pads = match static_ints(ctx, node, 3, "axes")? {
                None => pads,
                Some(axes) => {
                    let rank = rank_of(ctx, node, 0)?;
                    if pads.len() != 2 * axes.len() {
                        return Err(format!(
                            "Pad has {} axes but {} pads (want twice as many)",
                            axes.len(),
                            pads.len()
                        ));
                    }
                    let mut full = vec![0; 2 * rank];
                    for (k, &axis) in axes.iter().enumerate() {
                        let a = norm_axis(axis, rank)?;
                        full[a] = pads[k];
                        full[rank + a] = pads[axes.len() + k];
                    }
                    full
                }
            };
            attrs.insert("pads".into(), Attr::Ints(pads));
            if let Some(value) = static_scalar(ctx, node, 2, "constant_value")? {
                attrs.insert("value".into(), Attr::Float(value));
            }
            single(op_type, &attrs, data(1))
        }
        "GroupNormalization" => {
            if ctx.opset >= 21 {
                return single(op_type, &attrs, ins.clone());
            }
            Ok(Some(group_norm_18(ctx, name, node, &attrs, &outs)?))
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceL2" => {
            let axes_are_input = if op_type == "ReduceSum" { ctx.opset >= 13 } else { ctx.opset >= 18 };
            if axes_are_input {
                match static_ints(ctx, node, 1, "axes")? {
                    Some(axes) if !axes.is_empty() => {
                        attrs.insert("axes".into(), Attr::Ints(axes));
                    }
                    _ => {}
                }
            }
            single(op_type, &attrs, data(1))
        }
        "Reshape" => {
            let shape = static_ints(ctx, node, 1, "target shape")?.ok_or("Reshape needs its 'shape' input")?;
            attrs.insert("shape".into(), Attr::Ints(shape));
            single(op_type, &attrs, data(1))
        }
        "Expand" => {
            let shape = static_ints(ctx, node, 1, "target shape")?.ok_or("Expand needs its 'shape' input")?;
            attrs.insert("shape".into(), Attr::Ints(shape));
            single(op_type, &attrs, data(1))
        }
        "Split" => {
            if let Some(split) = static_ints(ctx, node, 1, "split sizes")? {
                attrs.insert("split".into(), Attr::Ints(split));
            } else if !attrs.contains_key("split") && !attrs.contains_key("num_outputs") {
                // Opset 13: no sizes means equal parts, one per output.
                attrs.insert("num_outputs".into(), Attr::Int(node.output.len() as i64));
            }
            Lowered::single(name, Op::from_parts(op_type, &attrs), data(1), node.output.clone()).into_ok()
        }
        "Slice" => {
            let starts = static_ints(ctx, node, 1, "starts")?.ok_or("Slice needs its 'starts' input")?;
            let ends = static_ints(ctx, node, 2, "ends")?.ok_or("Slice needs its 'ends' input")?;
            attrs.insert("starts".into(), Attr::Ints(starts));
            attrs.insert("ends".into(), Attr::Ints(ends));
            if let Some(axes) = static_ints(ctx, node, 3, "axes")? {
                attrs.insert("axes".into(), Attr::Ints(axes));
            }
            if let Some(steps) = static_ints(ctx, node, 4, "steps")? {
                attrs.insert("steps".into(), Attr::Ints(steps));
            }
            single(op_type, &attrs, data(1))
        }
        "Unsqueeze" => {
            let axes = static_ints(ctx, node, 1, "axes")?.ok_or("Unsqueeze needs its 'axes' input")?;
            attrs.insert("axes".into(), Attr::Ints(axes));
            single(op_type, &attrs, data(1))
        }
        "Squeeze" => {
            if let Some(axes) = static_ints(ctx, node, 1, "axes")? {
                attrs.insert("axes".into(), Attr::Ints(axes));
            }
            single(op_type, &attrs, data(1))
        }
        "Resize" => {
            resolve_resize(ctx, node, &mut attrs)?;
            single(op_type, &attrs, data(1))
        }
        "Swish" => {
            // Swish (opset 24) is x·σ(αx); α = 1 is kiln's Silu.
            let alpha = match attrs.remove("alpha") {
                None => 1.0,
                Some(Attr::Float(a)) => a,
                Some(other) => return Err(format!("Swish's 'alpha' must be a float, got {other}")),
            };
            if let Some(extra) = attrs.keys().next() {
                return Err(format!("Swish has no attribute '{extra}'"));
            }
            if alpha == 1.0 {
                return single("Silu", &attrs, ins.clone());
            }
            let x = ins.first().cloned().ok_or("Swish needs an input")?;
            let out = outs.first().cloned().ok_or("Swish needs an output")?;
            let mut l = Lowered::default();
            let alpha_name = format!("{name}/alpha");
            l.consts.push((alpha_name.clone(), Tensor::scalar_f32(alpha)));
            l.push(
                format!("{name}/scale"),
                Op::Binary(kiln_ir::BinaryOp::Mul),
                vec![x.clone(), alpha_name],
                vec![format!("{name}/ax")],
            );
            l.push(
                format!("{name}/sigmoid"),
                Op::Unary(kiln_ir::UnaryOp::Sigmoid),
                vec![format!("{name}/ax")],
                vec![format!("{name}/s")],
            );
            l.push(name.to_string(), Op::Binary(kiln_ir::BinaryOp::Mul), vec![x, format!("{name}/s")], vec![out]);
            Ok(Some(l))
        }
        "Constant" => Ok(Some(constant(&attrs, &outs)?)),
        "Attention" => Ok(Some(super::attention::lower(ctx, name, node, attrs)?)),
        op if super::data_ops::OPS.contains(&op) => super::data_ops::lower(ctx, name, op_type, node, attrs),
        _ => Ok(None),
    }
}

trait IntoOk {
    fn into_ok(self) -> Result<Option<Lowered>, String>;
}

impl IntoOk for Lowered {
    fn into_ok(self) -> Result<Option<Lowered>, String> {
        Ok(Some(self))
    }
}

/// Variadic Max/Min/Sum (1 or more inputs) as a chain of kiln's binary op.
fn variadic(
    name: &str,
    op_type: &str,
    kiln_op: &str,
    ins: &[String],
    outs: &[String],
    attrs: &Attrs,
) -> Result<Lowered, String> {
    if let Some(a) = attrs.keys().next() {
        return Err(format!("{op_type} has no attribute '{a}'"));
    }
    let out = outs.first().cloned().ok_or_else(|| format!("{op_type} needs an output"))?;
    if ins.iter().any(String::is_empty) {
        return Err(format!("{op_type} has an empty input name"));
    }
    let op = Op::from_parts(kiln_op, attrs)?;
    let mut l = Lowered::default();
    // Mean = (x₀ + x₁ + …)/n: the chain of Adds ends in a Div by n (ONNX Runtime's
    // sum-then-divide, up to the order of the additions).
    let (mean_n, out) =
        if op_type == "Mean" && ins.len() > 1 { (Some(ins.len()), format!("{name}/sum")) } else { (None, out) };
    match ins {
        [] => return Err(format!("{op_type} needs at least one input")),
        [x] => l.push(name.to_string(), Op::Identity, vec![x.clone()], vec![out.clone()]),
        [first, rest @ ..] => {
            let mut acc = first.clone();
            for (i, x) in rest.iter().enumerate() {
                let last = i + 1 == rest.len();
                let (node_name, result) = if last {
                    let node_name = if mean_n.is_some() { format!("{name}/add") } else { name.to_string() };
                    (node_name, out.clone())
                } else {
                    (format!("{name}/{i}"), format!("{name}/{i}:out"))
                };
                l.push(node_name, op.clone(), vec![acc, x.clone()], vec![result.clone()]);
                acc = result;
            }
        }
    }
    if let Some(n) = mean_n {
        let count = format!("{name}/count");
        l.consts.push((count.clone(), Tensor::scalar_f32(n as f32)));
        let result = outs.first().cloned().ok_or_else(|| format!("{op_type} needs an output"))?;
        l.push(name.to_string(), Op::Binary(kiln_ir::BinaryOp::Div), vec![out, count], vec![result]);
    }
    Ok(l)
}

/// Neg, Abs and Sign of int64 as kiln's i64 ops: −x = 0 − x, |x| = x < 0 ? 0 − x : x (wrapping
/// at i64::MIN, as two's complement negation), sign(x) = (0 < x) − (x < 0).
fn int_unary(name: &str, op_type: &str, attrs: &Attrs, ins: &[String], outs: &[String]) -> Result<Lowered, String> {
    use kiln_ir::BinaryOp;
    if let Some(a) = attrs.keys().next() {
        return Err(format!("{op_type} has no attribute '{a}'"));
    }
    let [x] = ins else { return Err(format!("{op_type} takes 1 input, got {}", ins.len())) };
    let out = outs.first().cloned().ok_or_else(|| format!("{op_type} needs an output"))?;
    let mut l = Lowered::default();
    let zero = format!("{name}/zero");
    l.consts.push((zero.clone(), Tensor::from_i64(Vec::<usize>::new(), vec![0])?));
    let neg = format!("{name}/neg");
    let is_neg = format!("{name}/is_negative");
    match op_type {
        "Neg" => l.push(name.to_string(), Op::Binary(BinaryOp::Sub), vec![zero, x.clone()], vec![out]),
        "Abs" => {
            l.push(format!("{name}/sub"), Op::Binary(BinaryOp::Sub), vec![zero.clone(), x.clone()], vec![neg.clone()]);
            l.push(format!("{name}/less"), Op::Binary(BinaryOp::Less), vec![x.clone(), zero], vec![is_neg.clone()]);
            l.push(name.to_string(), Op::Where, vec![is_neg, neg, x.clone()], vec![out]);
        }
        _ => {
            let is_pos = format!("{name}/is_positive");
            let (p, n) = (format!("{name}/positive"), format!("{name}/negative"));
            l.push(
                format!("{name}/less"),
                Op::Binary(BinaryOp::Less),
                vec![x.clone(), zero.clone()],
                vec![is_neg.clone()],
            );
            l.push(format!("{name}/greater"), Op::Binary(BinaryOp::Less), vec![zero, x.clone()], vec![is_pos.clone()]);
            l.push(format!("{name}/cast_pos"), Op::Cast { to: DType::I64 }, vec![is_pos], vec![p.clone()]);
            l.push(format!("{name}/cast_neg"), Op::Cast { to: DType::I64 }, vec![is_neg], vec![n.clone()]);
            l.push(name.to_string(), Op::Binary(BinaryOp::Sub), vec![p, n], vec![out]);
        }
    }
    Ok(l)
}

/// Conv's `auto_pad` → explicit pads, from the static input and weight shapes.
fn resolve_auto_pad(ctx: &Ctx, node: &NodeProto, attrs: &mut Attrs) -> Result<(), String> {
    let mode = match attrs.remove("auto_pad") {
        None => return Ok(()),
        Some(Attr::Str(s)) => s,
        Some(other) => return Err(format!("Conv's 'auto_pad' must be a string, got {other}")),
    };
    let pads = match mode.as_str() {
        "NOTSET" => return Ok(()),
        "VALID" => vec![0; 4],
        "SAME_UPPER" | "SAME_LOWER" => {
            let x = shape_of(ctx, node, 0)?;
            let w = shape_of(ctx, node, 1)?;
            if x.len() != 4 || w.len() != 4 {
                return Err(format!("kiln's Conv is 2-D: input and weight must be rank 4, got {x:?} and {w:?}"));
            }
            let pair = |key: &str| -> Result<[usize; 2], String> {
                match attrs.get(key) {
                    None => Ok([1, 1]),
                    Some(Attr::Ints(v)) if v.len() == 2 && v.iter().all(|&s| s >= 1) => {
                        Ok([v[0] as usize, v[1] as usize])
                    }
                    Some(other) => Err(format!("Conv's '{key}' must be 2 positive ints, got {other}")),
                }
            };
            let strides = pair("strides")?;
            let dilations = pair("dilations")?;
            let mut begin = [0i64; 2];
            let mut end = [0i64; 2];
            for i in 0..2 {
                // i128: attribute values come from the file and may be huge.
                let (n, k, s, d) = (x[2 + i] as i128, w[2 + i] as i128, strides[i] as i128, dilations[i] as i128);
                let out = (n + s - 1) / s;
                let total = ((out - 1) * s + (k - 1) * d + 1 - n).max(0);
                let total = i64::try_from(total).map_err(|_| "Conv's SAME padding is out of range".to_string())?;
                // SAME_UPPER puts the odd extra pad at the end, SAME_LOWER at the beginning.
                let small = total / 2;
                (begin[i], end[i]) = if mode == "SAME_UPPER" { (small, total - small) } else { (total - small, small) };
            }
            vec![begin[0], begin[1], end[0], end[1]]
        }
        other => return Err(format!("Conv's auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER, got {other:?}")),
    };
    attrs.insert("pads".into(), Attr::Ints(pads));
    Ok(())
}

/// Resize's roi/scales/sizes inputs (and opset-18 `axes`, `keep_aspect_ratio_policy`) → kiln
/// attributes over every axis. Attributes that do not apply to the mode are dropped (ONNX ignores
/// them too).
fn resolve_resize(ctx: &Ctx, node: &NodeProto, attrs: &mut Attrs) -> Result<(), String> {
    let mode = match attrs.get("mode") {
        None => "nearest".to_string(),
        Some(Attr::Str(m)) => m.clone(),
        Some(other) => return Err(format!("Resize's 'mode' must be a string, got {other}")),
    };
    let crop = matches!(attrs.get("coordinate_transformation_mode"), Some(Attr::Str(c)) if c == "tf_crop_and_resize");
    let scales = static_floats(ctx, node, 2, "scales")?.filter(|s| !s.is_empty());
    let sizes = static_ints(ctx, node, 3, "sizes")?.filter(|s| !s.is_empty());
    let roi = if crop { static_floats(ctx, node, 1, "roi")?.filter(|r| !r.is_empty()) } else { None };
    let axes = match attrs.remove("axes") {
        None => None,
        Some(Attr::Ints(a)) => Some(a),
        Some(other) => return Err(format!("Resize's 'axes' must be a list of ints, got {other}")),
    };
    if mode != "cubic" {
        attrs.remove("cubic_coeff_a");
        attrs.remove("exclude_outside");
    }
    if !crop {
        attrs.remove("extrapolation_value");
    }
    let policy = match attrs.remove("keep_aspect_ratio_policy") {
        None => "stretch".to_string(),
        Some(Attr::Str(p)) => p,
        Some(other) => return Err(format!("Resize's 'keep_aspect_ratio_policy' must be a string, got {other}")),
    };
    let shape = shape_of(ctx, node, 0)?.to_vec();
    let rank = shape.len();
    // The axes the scales/sizes/roi values are for, in order.
    let given_axes: Vec<usize> = match &axes {
        None => (0..rank).collect(),
        Some(axes) => axes.iter().map(|&a| norm_axis(a, rank)).collect::<Result<Vec<_>, _>>()?,
    };
    let check_len = |what: &str, len: usize, per_axis: usize| -> Result<(), String> {
        if len != per_axis * given_axes.len() {
            return Err(format!("Resize has {len} {what} for {} axes", given_axes.len()));
        }
        Ok(())
    };
    if let Some(roi) = roi {
        check_len("roi values", roi.len(), 2)?;
        let n = given_axes.len();
        let mut full: Vec<f32> = [vec![0.0; rank], vec![1.0; rank]].concat();
        for (k, &a) in given_axes.iter().enumerate() {
            full[a] = roi[k];
            full[rank + a] = roi[n + k];
        }
        attrs.insert("roi".into(), Attr::Floats(full));
    }
    if let Some(scales) = scales {
        check_len("scales", scales.len(), 1)?;
        let mut full = vec![1.0; rank];
        for (&s, &a) in scales.iter().zip(&given_axes) {
            full[a] = s;
        }
        attrs.insert("scales".into(), Attr::Floats(full));
    }
    if let Some(sizes) = sizes {
        check_len("sizes", sizes.len(), 1)?;
        let mut full: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        for (&s, &a) in sizes.iter().zip(&given_axes) {
            full[a] = s;
        }
        match policy.as_str() {
            "stretch" => {}
            "not_larger" | "not_smaller" => {
                // One scale for every given axis, the smallest (largest) sizes/in, and sizes
                // rounded from it (ONNX: round(scale·in)); the coordinates use that scale.
                let ratios = given_axes.iter().map(|&a| full[a] as f64 / shape[a].max(1) as f64);
                let scale = if policy == "not_larger" {
                    ratios.fold(f64::INFINITY, f64::min)
                } else {
                    ratios.fold(0.0, f64::max)
                };
                let mut scales = vec![1.0f32; rank];
                for &a in &given_axes {
                    full[a] = (scale * shape[a] as f64 + 0.5).floor() as i64;
                    scales[a] = scale as f32;
                }
                attrs.insert("scales".into(), Attr::Floats(scales));
            }
            other => {
                return Err(format!("Resize's keep_aspect_ratio_policy {other:?} is not supported in mode {mode:?}"));
            }
        }
        attrs.insert("sizes".into(), Attr::Ints(full));
    }
    Ok(())
}

/// GroupNormalization before opset 21 scales and shifts per group; kiln's op (opset-21 semantics)
/// does so per channel, so constant per-group parameters are repeated over each group's channels.
fn group_norm_18(ctx: &Ctx, name: &str, node: &NodeProto, attrs: &Attrs, outs: &[String]) -> Result<Lowered, String> {
    let x = input(node, 0).ok_or("GroupNormalization needs an input")?;
    let channels = *shape_of(ctx, node, 0)?.get(1).ok_or("GroupNormalization's input must have a channel axis")?;
    let mut l = Lowered::default();
    let mut inputs = vec![x.to_string()];
    for (index, what) in [(1, "scale"), (2, "bias")] {
        let t = static_tensor(ctx, node, index, what)?
            .ok_or_else(|| format!("GroupNormalization needs its {what} input"))?;
        let Some(values) = t.as_f32() else { return Err(format!("the {what} must be float")) };
        let groups = values.len();
        if channels > 1 << 24 {
            return Err(format!("GroupNormalization over {channels} channels is more than kiln expands at load time"));
        }
        if groups == 0 || channels % groups != 0 {
            return Err(format!("the {what} has {groups} values, which does not divide the {channels} channels"));
        }
        let per_channel: Vec<f32> = (0..channels).map(|c| values[c / (channels / groups)]).collect();
        let const_name = format!("{name}/{what}_per_channel");
        l.consts.push((const_name.clone(), Tensor::from_f32([channels], per_channel)?));
        inputs.push(const_name);
    }
    l.nodes.push(LNode {
        name: name.to_string(),
        op: Op::from_parts("GroupNormalization", attrs),
        inputs,
        outputs: outs.to_vec(),
    });
    Ok(l)
}

/// LayerNormalization whose Mean and InvStdDev outputs are used: Y from kiln's op, the statistics
/// written out (mean and 1/√(var + ε) over the normalised axes, kept as size-1 axes).
fn layer_norm_with_stats(
    ctx: &Ctx,
    name: &str,
    node: &NodeProto,
    attrs: &Attrs,
    ins: &[String],
    outs: &[String],
) -> Result<Lowered, String> {
    let op = Op::from_parts("LayerNormalization", attrs)?;
    let Op::LayerNormalization { axis, epsilon } = op else {
        return Err("internal error: LayerNormalization did not build a LayerNormalization".into());
    };
    let rank = rank_of(ctx, node, 0)?;
    let first = norm_axis(axis, rank)?;
    let axes: Vec<i64> = (first as i64..rank as i64).collect();
    let x = ins.first().cloned().ok_or("LayerNormalization needs an input")?;
    let out = |i: usize| outs.get(i).filter(|s| !s.is_empty()).cloned();
    let mut l = Lowered::default();
    if let Some(y) = out(0) {
        l.push(name.to_string(), op, ins.to_vec(), vec![y]);
    }
    let mean_op = |axes: &[i64]| Op::Reduce {
        kind: kiln_ir::ReduceKind::Mean,
        axes: Some(axes.to_vec()),
        keepdims: true,
        noop_with_empty_axes: false,
    };
    let t = |what: &str| format!("{name}/{what}");
    let mean = out(1).unwrap_or_else(|| t("mean"));
    l.push(t("reduce_mean"), mean_op(&axes), vec![x.clone()], vec![mean.clone()]);
    if let Some(inv) = out(2) {
        use kiln_ir::{BinaryOp, UnaryOp};
        l.push(t("sub_mean"), Op::Binary(BinaryOp::Sub), vec![x, mean], vec![t("centered")]);
        l.push(t("square"), Op::Binary(BinaryOp::Mul), vec![t("centered"), t("centered")], vec![t("squared")]);
        l.push(t("reduce_var"), mean_op(&axes), vec![t("squared")], vec![t("var")]);
        l.consts.push((t("epsilon"), Tensor::scalar_f32(epsilon)));
        l.push(t("add_epsilon"), Op::Binary(BinaryOp::Add), vec![t("var"), t("epsilon")], vec![t("var_eps")]);
        l.push(t("sqrt"), Op::Unary(UnaryOp::Sqrt), vec![t("var_eps")], vec![t("std")]);
        l.push(t("reciprocal"), Op::Unary(UnaryOp::Reciprocal), vec![t("std")], vec![inv]);
    }
    Ok(l)
}

/// A Constant node becomes a constant tensor named after its output.
fn constant(attrs: &Attrs, outs: &[String]) -> Result<Lowered, String> {
    let [out] = outs else { return Err("Constant must have exactly one output".into()) };
    if attrs.len() != 1 {
        return Err("Constant needs exactly one value attribute".into());
    }
    let (key, value) = attrs.iter().next().ok_or("Constant has no value")?;
    let tensor = match (key.as_str(), value) {
        ("value", Attr::Tensor(t)) => t.clone(),
        ("value_float", Attr::Float(v)) => Tensor::scalar_f32(*v),
        ("value_floats", Attr::Floats(v)) => Tensor::from_f32([v.len()], v.clone())?,
        ("value_int", Attr::Int(v)) => Tensor::from_i64(vec![], vec![*v])?,
        ("value_ints", Attr::Ints(v)) => Tensor::from_i64([v.len()], v.clone())?,
        (key, value) => return Err(format!("Constant's '{key}' ({}) is not supported", value.kind_name())),
    };
    Ok(Lowered { nodes: Vec::new(), consts: vec![(out.clone(), tensor)] })
}
