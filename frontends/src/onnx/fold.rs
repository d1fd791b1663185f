//! ONNX ops that kiln evaluates at load time only: shape arithmetic (Shape, Size, ConstantOfShape,
//! Range) and NonZero on constant inputs (Mod, Not, And, Or, Xor and the comparisons are kiln ops
//! now, run at run time and folded like any op when their inputs are constant). Exporters and
//! ONNX's own function bodies (the "expanded" node tests) compute
//! static parameters this way; since kiln's shapes are static, every such value is a constant.
//!
//! When the inputs are not constants the op is reported as one kiln does not implement.

use super::import::Ctx;
use super::lower::{Lowered, input};
use super::proto::NodeProto;
use crate::files::Budget;
use kiln_ir::{Attr, Attrs, DType, Tensor, TensorData, TensorType};

/// Claims the bytes of a load-time result before it is allocated: what bounds folding is the
/// memory cap (shared with the weights), not an element count.
fn claim(budget: &Budget, count: usize, dtype: DType, what: &str) -> Result<(), String> {
    let bytes = (count as u64).saturating_mul(dtype.size_bytes() as u64);
    budget.claim(bytes, &format!("{what} (evaluated at load time)"))
}

/// Ops handled here.
pub const LOAD_TIME_OPS: &[&str] = &[
    "ConstantOfShape",
    "Range",
    "Shape",
    "Size",
    // Its output's shape depends on the values: only ever a constant in kiln.
    "NonZero",
];

/// Lowers a load-time op into a constant. `Ok(None)`: its inputs are not all constants (and their
/// types are known, so nothing upstream failed): kiln cannot run it.
pub(crate) fn lower(ctx: &Ctx, op_type: &str, node: &NodeProto, attrs: &Attrs) -> Result<Option<Lowered>, String> {
    let out = node.output.first().filter(|o| !o.is_empty()).ok_or_else(|| format!("{op_type} needs an output"))?;
    let value = match op_type {
        "Shape" | "Size" => {
            let x = input(node, 0).ok_or_else(|| format!("{op_type} needs an input"))?;
            let ty = ctx.ty(x).ok_or_else(|| format!("the type of '{x}' is not known at load time"))?;
            if op_type == "Size" {
                Tensor::from_i64(vec![], vec![ty.num_elements() as i64])?
            } else {
                shape(ty, attrs)?
            }
        }
        _ => {
            let mut consts = Vec::new();
            for name in node.input.iter() {
                if name.is_empty() {
                    return Err(format!("{op_type} has an empty input name"));
                }
                match ctx.consts.get(name) {
                    Some(t) => consts.push(t),
                    None if ctx.ty(name).is_none() => {
                        return Err(format!("the value of '{name}' is not known at load time"));
                    }
                    None => return Ok(None),
                }
            }
            match op_type {
                "ConstantOfShape" => constant_of_shape(&consts, attrs, &ctx.budget)?,
                "Range" => range(&consts, &ctx.budget)?,
                "NonZero" => non_zero(&consts, attrs, &ctx.budget)?,
                _ => return Err(format!("internal error: {op_type} is not a load-time op")),
            }
        }
    };
    Ok(Some(Lowered { nodes: Vec::new(), consts: vec![(out.clone(), value)] }))
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

fn shape(ty: &TensorType, attrs: &Attrs) -> Result<Tensor, String> {
    no_attrs_but(attrs, "Shape", &["start", "end"])?;
    let rank = ty.rank() as i64;
    // Negative bounds count from the end; both are clamped to [0, rank] (ONNX Shape-15).
    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let start = clamp(int_attr(attrs, "Shape", "start", 0)?);
    let end = clamp(int_attr(attrs, "Shape", "end", rank)?);
    let dims: Vec<i64> = ty.shape[start..end.max(start)].iter().map(|&d| d as i64).collect();
    Tensor::from_i64([dims.len()], dims)
}

/// `count` copies of `value` in fallibly allocated memory (an error, not an abort, when the
/// process cannot have it).
fn filled<T: Copy>(value: T, count: usize) -> Result<Vec<T>, String> {
    let mut v = crate::files::try_with_capacity(count, "a constant computed at load time")?;
    v.resize(count, value);
    Ok(v)
}

fn constant_of_shape(consts: &[&Tensor], attrs: &Attrs, budget: &Budget) -> Result<Tensor, String> {
    no_attrs_but(attrs, "ConstantOfShape", &["value"])?;
    let [dims] = consts else { return Err("ConstantOfShape takes 1 input".into()) };
    let Some(dims) = dims.as_i64().filter(|_| dims.shape().len() == 1) else {
        return Err("ConstantOfShape's shape must be a 1-D int64 tensor".into());
    };
    let (shape, count) = super::tensor::checked_shape(dims)?;
    let dtype = match attrs.get("value") {
        Some(Attr::Tensor(t)) => t.dtype(),
        _ => DType::F32,
    };
    claim(budget, count, dtype, &format!("ConstantOfShape{shape:?}"))?;
    let data = match attrs.get("value") {
        None => TensorData::F32(filled(0.0, count)?),
        Some(Attr::Tensor(t)) if t.len() == 1 => match t.data() {
            TensorData::F32(v) => TensorData::F32(filled(v[0], count)?),
            TensorData::I64(v) => TensorData::I64(filled(v[0], count)?),
            TensorData::Bool(v) => TensorData::Bool(filled(v[0], count)?),
        },
        Some(other) => return Err(format!("ConstantOfShape's 'value' must be a one-element tensor, got {other}")),
    };
    Tensor::new(shape, data)
}

fn range(consts: &[&Tensor], budget: &Budget) -> Result<Tensor, String> {
    let [start, limit, delta] = consts else { return Err("Range takes 3 inputs".into()) };
    if [start, limit, delta].iter().any(|t| t.len() != 1) {
        return Err("Range's start, limit and delta must be scalars".into());
    }
    let count = |n: f64| -> Result<usize, String> {
        let n = n.ceil().max(0.0);
        if n > kiln_ir::MAX_ELEMENTS as f64 || n.is_nan() {
            return Err(format!("Range of {n} elements is more than kiln accepts ({})", kiln_ir::MAX_ELEMENTS));
        }
        // Both element types are 8 bytes at most; claim as int64 (an f32 range claims double).
        claim(budget, n as usize, DType::I64, &format!("Range of {n} elements"))?;
        Ok(n as usize)
    };
    match (start.data(), limit.data(), delta.data()) {
        (TensorData::I64(s), TensorData::I64(l), TensorData::I64(d)) => {
            let (s, l, d) = (s[0], l[0], d[0]);
            if d == 0 {
                return Err("Range's delta must not be 0".into());
            }
            let n = count((l as f64 - s as f64) / d as f64)?;
            Tensor::from_i64([n], (0..n as i64).map(|i| s.saturating_add(i.saturating_mul(d))).collect())
        }
        (TensorData::F32(s), TensorData::F32(l), TensorData::F32(d)) => {
            let (s, l, d) = (s[0], l[0], d[0]);
            if d == 0.0 {
                return Err("Range's delta must not be 0".into());
            }
            let n = count(((l - s) / d) as f64)?;
            Tensor::from_f32([n], (0..n).map(|i| s + i as f32 * d).collect())
        }
        _ => Err("Range's inputs must all be int64 or all float".into()),
    }
}

/// NonZero: the indices of the non-zero elements, [rank, count] int64, in row-major order.
fn non_zero(consts: &[&Tensor], attrs: &Attrs, budget: &Budget) -> Result<Tensor, String> {
    no_attrs_but(attrs, "NonZero", &[])?;
    let [x] = consts else { return Err("NonZero takes 1 input".into()) };
    let nonzero: Vec<bool> = match x.data() {
        TensorData::F32(v) => v.iter().map(|&a| a != 0.0).collect(),
        TensorData::I64(v) => v.iter().map(|&a| a != 0).collect(),
        TensorData::Bool(v) => v.clone(),
    };
    let count = nonzero.iter().filter(|&&b| b).count();
    let rank = x.shape().len();
    if rank == 0 {
        return Err("NonZero of a scalar is not supported (numpy deprecates it; give a 1-D tensor)".into());
    }
    claim(budget, count.saturating_mul(rank.max(1)), DType::I64, "NonZero's indices")?;
    let strides = kiln_ir::tensor::strides(x.shape());
    let mut out = filled(0i64, rank * count)?;
    for (k, flat) in nonzero.iter().enumerate().filter(|(_, b)| **b).map(|(i, _)| i).enumerate() {
        for (axis, &stride) in strides.iter().enumerate() {
            out[axis * count + k] = ((flat / stride) % x.shape()[axis]) as i64;
        }
    }
    Tensor::from_i64([rank, count], out)
}

/// BatchNormalization with training_mode = 1 whose inputs are all constants (timm's weight
/// standardisation normalises a weight this way): the batch statistics over every axis but 1
/// (population variance, as ONNX's reference), Y = (X − μ)/√(σ² + ε)·scale + B, and the running
/// statistics input·momentum + batch·(1 − momentum). f64 accumulation. A non-constant input is
/// refused: kiln runs inference only.
pub(crate) fn batch_norm_training(ctx: &Ctx, node: &NodeProto, attrs: &Attrs) -> Result<Lowered, String> {
    no_attrs_but(attrs, "BatchNormalization", &["epsilon", "momentum", "training_mode", "spatial"])?;
    if matches!(attrs.get("spatial"), Some(a) if *a != Attr::Int(1)) {
        return Err("BatchNormalization in training mode with spatial = 0 is not supported".into());
    }
    let float = |key: &str, default: f32| match attrs.get(key) {
        None => Ok(default),
        Some(Attr::Float(v)) => Ok(*v),
        Some(other) => Err(format!("BatchNormalization's '{key}' must be a float, got {other}")),
    };
    let (epsilon, momentum) = (float("epsilon", 1e-5)?, float("momentum", 0.9)?);
    let mut consts = Vec::new();
    for i in 0..5 {
        let name = input(node, i).ok_or_else(|| format!("BatchNormalization needs input {i}"))?;
        let t = ctx.consts.get(name).ok_or_else(|| {
            format!(
                "BatchNormalization with training_mode = 1 computes batch statistics; kiln does so only when every \
                 input is a constant (input {i} '{name}' is not)"
            )
        })?;
        consts.push(t.as_f32().ok_or_else(|| format!("BatchNormalization's input {i} must be float"))?);
    }
    let x = ctx.consts.get(input(node, 0).unwrap_or_default()).ok_or("BatchNormalization needs input 0")?;
    let shape = x.shape();
    if shape.len() < 2 {
        return Err(format!("BatchNormalization's input must have a channel axis, got shape {shape:?}"));
    }
    let c = shape[1];
    let inner: usize = shape[2..].iter().product();
    if consts[1..].iter().any(|p| p.len() != c) {
        return Err(format!("BatchNormalization's scale, bias, mean and var must each have {c} values"));
    }
    claim(&ctx.budget, x.len() + 2 * c, DType::F32, "BatchNormalization's training-mode result")?;
    let xv = consts[0];
    let n = (x.len() / c.max(1)) as f64;
    let mut mean = vec![0f64; c];
    let mut var = vec![0f64; c];
    for (i, &v) in xv.iter().enumerate() {
        mean[(i / inner.max(1)) % c] += v as f64;
    }
    mean.iter_mut().for_each(|m| *m /= n);
    for (i, &v) in xv.iter().enumerate() {
        let ch = (i / inner.max(1)) % c;
        var[ch] += (v as f64 - mean[ch]).powi(2);
    }
    var.iter_mut().for_each(|v| *v /= n);
    let y: Vec<f32> = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / inner.max(1)) % c;
            ((v as f64 - mean[ch]) / (var[ch] + epsilon as f64).sqrt() * consts[1][ch] as f64 + consts[2][ch] as f64)
                as f32
        })
        .collect();
    let running = |input: &[f32], batch: &[f64]| -> Vec<f32> {
        input
            .iter()
            .zip(batch)
            .map(|(&r, &b)| (r as f64 * momentum as f64 + b * (1.0 - momentum as f64)) as f32)
            .collect()
    };
    let mut l = Lowered::default();
    let outs = super::import::trim_outputs(&node.output);
    if let Some(o) = outs.iter().skip(3).find(|o| !o.is_empty()) {
        return Err(format!("BatchNormalization's saved_mean/saved_var output '{o}' is not supported"));
    }
    if let Some(o) = outs.first().filter(|o| !o.is_empty()) {
        l.consts.push((o.clone(), Tensor::from_f32(shape, y)?));
    }
    if let Some(o) = outs.get(1).filter(|o| !o.is_empty()) {
        l.consts.push((o.clone(), Tensor::from_f32([c], running(consts[3], &mean))?));
    }
    if let Some(o) = outs.get(2).filter(|o| !o.is_empty()) {
        l.consts.push((o.clone(), Tensor::from_f32([c], running(consts[4], &var))?));
    }
    Ok(l)
}

/// The element type `CastLike` converts to: that of its second input.
pub(crate) fn cast_like_target(ctx: &Ctx, node: &NodeProto) -> Result<DType, String> {
    let like = input(node, 1).ok_or("CastLike needs 2 inputs")?;
    ctx.ty(like).map(|t| t.dtype).ok_or_else(|| format!("the type of '{like}' is not known at load time"))
}

/// Shape arithmetic that kiln's ops refuse but ONNX function bodies do on constant 1-D int64
/// tensors: Neg and Abs (kiln's unary ops are f32-only), and Slice and Concat whose result or parts
/// may be empty (kiln needs every dimension ≥ 1). Folded here; `Ok(None)` for anything else.
pub(crate) fn integer_unary(ctx: &Ctx, op_type: &str, node: &NodeProto) -> Result<Option<Lowered>, String> {
    if node.output.len() != 1 || node.input.iter().any(|i| !i.is_empty() && !ctx.consts.contains_key(i)) {
        return Ok(None);
    }
    let shape_vec = |name: &str| ctx.consts.get(name).filter(|t| t.shape().len() == 1).and_then(|t| t.as_i64());
    let out = node.output[0].clone();
    let done = |v: Vec<i64>| -> Result<Option<Lowered>, String> {
        let value = Tensor::from_i64([v.len()], v)?;
        Ok(Some(Lowered { nodes: Vec::new(), consts: vec![(out.clone(), value)] }))
    };
    if op_type == "Concat" && !node.input.is_empty() {
        let parts: Option<Vec<&[i64]>> = node.input.iter().map(|i| shape_vec(i)).collect();
        if let Some(parts) = parts
            && parts.iter().any(|p| p.is_empty())
        {
            return done(parts.concat());
        }
        return Ok(None);
    }
    if op_type == "Slice" && (3..=5).contains(&node.input.len()) {
        let get = |i: usize| node.input.get(i).filter(|n| !n.is_empty()).and_then(|n| shape_vec(n));
        let (Some(data), Some(starts), Some(ends)) = (get(0), get(1), get(2)) else { return Ok(None) };
        let step = match get(4) {
            Some([s]) => *s,
            None => 1,
            _ => return Ok(None),
        };
        if let Some(axes) = get(3)
            && !matches!(axes, [0] | [-1])
        {
            return Ok(None);
        }
        let ([start], [end]) = (starts, ends) else { return Ok(None) };
        if step == 0 {
            return Err("Slice's step must not be 0".into());
        }
        // ONNX Slice on one axis: negative bounds count from the end, then clamp.
        let n = data.len() as i64;
        let fix = |v: i64, lo: i64, hi: i64| (if v < 0 { v.saturating_add(n) } else { v }).clamp(lo, hi);
        let (mut i, end) = if step > 0 {
            (fix(*start, 0, n), fix(*end, 0, n))
        } else {
            (fix(*start, -1, n - 1), fix(*end, -1, n - 1))
        };
        let mut v = Vec::new();
        while (step > 0 && i < end) || (step < 0 && i > end) {
            v.push(data[i as usize]);
            i = i.saturating_add(step);
        }
        if !v.is_empty() {
            return Ok(None); // kiln's Slice handles non-empty results itself
        }
        return done(v);
    }
    if !matches!(op_type, "Neg" | "Abs") || node.input.len() != 1 {
        return Ok(None);
    }
    let Some(x) = ctx.consts.get(&node.input[0]) else { return Ok(None) };
    let Some(v) = x.as_i64() else { return Ok(None) };
    let f = if op_type == "Neg" { i64::wrapping_neg } else { i64::wrapping_abs };
    let value = Tensor::from_i64(x.shape(), v.iter().map(|&a| f(a)).collect())?;
    Ok(Some(Lowered { nodes: Vec::new(), consts: vec![(node.output[0].clone(), value)] }))
}
