//! Old opsets (7–12) and inference-only ops: each old form is rewritten at import into what the
//! opset-13+ lowering in [`super::lower`] (or kiln's IR directly) means by it.
//!
//! - Attribute forms that later became inputs: Unsqueeze/Squeeze `axes` (< 13), Slice
//!   `starts`/`ends`/`axes` (< 10), Pad `pads`/`value` (< 11), Split `split` (< 13), Reduce `axes`
//!   (< 13/18), Clip `min`/`max` (< 11). kiln's IR takes these as attributes, so the old form is
//!   passed straight to [`Op::from_parts`].
//! - Softmax/LogSoftmax before 13 "coerce the input to 2-D": [N, D] = [∏d[..axis], ∏d[axis..]],
//!   normalised over the whole second axis, reshaped back. That is not axis = −1 unless
//!   axis is the last axis; it is written as Reshape → Softmax(−1) → Reshape.
//! - BatchNormalization-7's `spatial` = 0 (statistics per activation, parameters [C, D1, …]) is
//!   written out elementwise. Before 14, more than one output means training mode (batch
//!   statistics, as ONNX Runtime computes them): folded on constants, refused otherwise.
//! - Upsample (7: `scales` attribute; 9: input) and Resize-10 (scales input, no coordinate mode)
//!   become kiln's Resize with ONNX Runtime's opset-10 semantics: asymmetric coordinates, nearest
//!   index rounded down when upsampling and up when downsampling.
//! - Dropout (every opset): the identity at inference; its mask output, if used, is all kept.

use super::import::Ctx;
use super::lower::{LNode, Lowered, input, static_floats, static_tensor};
use super::proto::NodeProto;
use kiln_ir::{Attr, Attrs, BinaryOp, DType, Op, Tensor, TensorData, UnaryOp};

/// Lowers `node` if it is an old form (or Dropout/Upsample); `Ok(None)` leaves it to
/// [`super::lower::lower_node`]'s main table.
pub(crate) fn lower(
    ctx: &Ctx,
    name: &str,
    op_type: &str,
    node: &NodeProto,
    attrs: &mut Attrs,
) -> Result<Option<Lowered>, String> {
    let old = ctx.opset;
    let ins = super::import::present(&node.input);
    let outs = super::import::trim_outputs(&node.output);
    let first = |n: usize| -> Vec<String> { ins.iter().take(n).cloned().collect() };
    let single = |op_name: &str, attrs: &Attrs, inputs: Vec<String>| {
        Ok(Some(Lowered::single(name, Op::from_parts(op_name, attrs), inputs, outs.clone())))
    };
    match op_type {
        "Dropout" => dropout(ctx, name, node, attrs, &outs).map(Some),
        "Upsample" => {
            if old >= 10 {
                // Deprecated in 10: ONNX Runtime refuses it there too.
                return Err(format!("Upsample is deprecated in opset {old} (use Resize)"));
            }
            let scales = if old >= 9 {
                static_floats(ctx, node, 1, "scales")?.ok_or("Upsample needs its 'scales' input")?
            } else {
                match attrs.remove("scales") {
                    Some(Attr::Floats(s)) => s,
                    Some(other) => return Err(format!("Upsample's 'scales' must be a list of floats, got {other}")),
                    None => return Err("Upsample needs its 'scales' attribute".into()),
                }
            };
            if scales.iter().any(|&s| s.is_nan() || s < 1.0) {
                return Err(format!("Upsample's scales must all be ≥ 1, got {scales:?}"));
            }
            let resize = resize_10(name, attrs, scales)?;
            Ok(Some(Lowered::single(name, Ok(resize), first(1), outs.clone())))
        }
        "Resize" if old < 11 => {
            let scales = static_floats(ctx, node, 1, "scales")?.ok_or("Resize-10 needs its 'scales' input")?;
            let resize = resize_10(name, attrs, scales)?;
            Ok(Some(Lowered::single(name, Ok(resize), first(1), outs.clone())))
        }
        "Softmax" | "LogSoftmax" if old < 13 => coerced_softmax(ctx, name, op_type, node, attrs, &outs).map(Some),
        "Unsqueeze" if old < 13 => single("Unsqueeze", attrs, first(1)),
        "Squeeze" if old < 13 => single("Squeeze", attrs, first(1)),
        "Slice" if old < 10 => single("Slice", attrs, first(1)),
        "Pad" if old < 11 => single("Pad", attrs, first(1)),
        // Training mode: the attribute (14+), or more than one output before 14 (the schema's
        // "output case #1: Y, mean, var, saved_mean, saved_var (training mode)"; ONNX Runtime
        // computes batch statistics then).
        "BatchNormalization"
            if matches!(attrs.get("training_mode"), Some(Attr::Int(t)) if *t != 0) || (old < 14 && outs.len() > 1) =>
        {
            super::fold::batch_norm_training(ctx, node, attrs).map(Some)
        }
        "BatchNormalization" if attrs.contains_key("spatial") => {
            batch_norm_old(ctx, name, node, attrs, &outs).map(Some)
        }
        _ => Ok(None),
    }
}

/// Resize with opset-10 semantics (also Upsample's): `mode` nearest or linear over `scales`.
fn resize_10(name: &str, attrs: &mut Attrs, scales: Vec<f32>) -> Result<Op, String> {
    let mode = match attrs.remove("mode") {
        None => "nearest".to_string(),
        Some(Attr::Str(m)) => m,
        Some(other) => return Err(format!("'mode' must be a string, got {other}")),
    };
    if let Some(extra) = attrs.keys().next() {
        return Err(format!("'{extra}' is not an attribute of this op in its opset (node '{name}')"));
    }
    if !matches!(mode.as_str(), "nearest" | "linear") {
        return Err(format!("'mode' must be \"nearest\" or \"linear\", got {mode:?}"));
    }
    // ONNX Runtime (UpsampleBase, opset < 11): floor of the asymmetric source coordinate when
    // upsampling, ceil when downsampling; kiln's nearest_mode is one for all axes.
    let nearest_mode = if scales.iter().all(|&s| s >= 1.0) {
        "floor"
    } else if scales.iter().all(|&s| s <= 1.0) {
        "ceil"
    } else {
        return Err(format!(
            "nearest Resize-10 that upsamples some axes and downsamples others is not supported (scales {scales:?})"
        ));
    };
    let mut a = Attrs::new();
    a.insert("mode".into(), Attr::Str(mode.clone()));
    a.insert("coordinate_transformation_mode".into(), Attr::Str("asymmetric".into()));
    if mode == "nearest" {
        a.insert("nearest_mode".into(), Attr::Str(nearest_mode.into()));
    }
    a.insert("scales".into(), Attr::Floats(scales));
    Op::from_parts("Resize", &a)
}

/// Softmax/LogSoftmax before opset 13 (default axis 1): flatten to 2-D at `axis`, normalise each
/// row, reshape back.
fn coerced_softmax(
    ctx: &Ctx,
    name: &str,
    op_type: &str,
    node: &NodeProto,
    attrs: &Attrs,
    outs: &[String],
) -> Result<Lowered, String> {
    let axis = match attrs.get("axis") {
        None => 1,
        Some(Attr::Int(a)) => *a,
        Some(other) => return Err(format!("{op_type}'s 'axis' must be an int, got {other}")),
    };
    if let Some(extra) = attrs.keys().find(|k| *k != "axis") {
        return Err(format!("{op_type} has no attribute '{extra}'"));
    }
    let x = input(node, 0).ok_or_else(|| format!("{op_type} needs an input"))?;
    let shape = ctx.ty(x).map(|t| t.shape.clone()).ok_or_else(|| format!("the shape of '{x}' is not known"))?;
    let rank = shape.len();
    let axis = kiln_ir::ops::normalize_axis(axis, rank.max(1))?;
    let out = outs.first().cloned().ok_or_else(|| format!("{op_type} needs an output"))?;
    let make = |axis: i64| if op_type == "Softmax" { Op::Softmax { axis } } else { Op::LogSoftmax { axis } };
    let mut l = Lowered::default();
    if axis + 1 >= rank {
        // Over the last axis (or a scalar / 1-D input): the 2-D view changes nothing.
        l.push(name.to_string(), make(-1), vec![x.to_string()], vec![out]);
        return Ok(l);
    }
    let rows: usize = shape[..axis].iter().product();
    let cols: usize = shape[axis..].iter().product();
    let flat = format!("{name}/2d");
    let normed = format!("{name}/2d_out");
    l.push(
        format!("{name}/flatten"),
        Op::Reshape { shape: vec![rows as i64, cols as i64], allowzero: false },
        vec![x.to_string()],
        vec![flat.clone()],
    );
    l.push(name.to_string(), make(-1), vec![flat], vec![normed.clone()]);
    l.push(
        format!("{name}/unflatten"),
        Op::Reshape { shape: shape.iter().map(|&d| d as i64).collect(), allowzero: false },
        vec![normed],
        vec![out],
    );
    Ok(l)
}

/// Dropout at inference: Y = X; the mask (if asked for) keeps everything. Opsets 7–9 type the mask
/// like X (ones), 10+ as bool (true).
fn dropout(ctx: &Ctx, name: &str, node: &NodeProto, attrs: &Attrs, outs: &[String]) -> Result<Lowered, String> {
    for (key, value) in attrs {
        match (key.as_str(), value) {
            ("ratio", Attr::Float(r)) if ctx.opset < 12 => {
                if !(0.0..1.0).contains(r) {
                    return Err(format!("Dropout's ratio must be in [0, 1), got {r}"));
                }
            }
            ("seed", Attr::Int(_)) if ctx.opset >= 12 => {} // only draws in training mode
            (key, value) => {
                return Err(format!(
                    "Dropout (opset {}) has no attribute '{key}' of type {}",
                    ctx.opset,
                    value.kind_name()
                ));
            }
        }
    }
    let x = input(node, 0).ok_or("Dropout needs an input")?;
    // Opset 12+: ratio (input 1) and training_mode (input 2) are inputs; training mode drops at
    // random, which kiln does not do (unless the ratio is 0, where it keeps everything as well).
    let ratio = match static_floats(ctx, node, 1, "ratio")? {
        None => 0.5,
        Some(v) if v.len() == 1 => v[0],
        Some(v) => return Err(format!("Dropout's ratio must be a scalar, got {} values", v.len())),
    };
    if let Some(t) = static_tensor(ctx, node, 2, "training_mode")? {
        match t.as_bool() {
            Some([false]) => {}
            Some([true]) if ratio == 0.0 => {}
            Some([true]) => {
                return Err(format!(
                    "Dropout in training mode (ratio {ratio}) drops at random; kiln runs inference only"
                ));
            }
            _ => return Err("Dropout's training_mode must be a bool scalar".into()),
        }
    }
    let mut l = Lowered::default();
    if let Some(y) = outs.first().filter(|o| !o.is_empty()) {
        l.push(name.to_string(), Op::Identity, vec![x.to_string()], vec![y.clone()]);
    }
    if let Some(mask) = outs.get(1).filter(|o| !o.is_empty()) {
        let ty = ctx.ty(x).ok_or_else(|| format!("the type of '{x}' is not known"))?;
        let count = ty.num_elements();
        ctx.budget.claim((count * if ctx.opset < 10 { 4 } else { 1 }) as u64, &format!("Dropout mask '{mask}'"))?;
        let data = if ctx.opset < 10 {
            match ty.dtype {
                DType::F32 => TensorData::F32(vec![1.0; count]),
                other => return Err(format!("Dropout's input must be float, got {other}")),
            }
        } else {
            TensorData::Bool(vec![true; count])
        };
        l.consts.push((mask.clone(), Tensor::new(ty.shape.clone(), data)?));
    }
    if outs.len() > 2 {
        return Err(format!("Dropout has at most 2 outputs, got {}", outs.len()));
    }
    Ok(l)
}

/// BatchNormalization with opset-7's `spatial` attribute (inference, one output).
fn batch_norm_old(
    ctx: &Ctx,
    name: &str,
    node: &NodeProto,
    attrs: &mut Attrs,
    outs: &[String],
) -> Result<Lowered, String> {
    let spatial = match attrs.remove("spatial") {
        None => true,
        Some(_) if ctx.opset >= 9 => {
            return Err(format!("BatchNormalization has no 'spatial' attribute in opset {}", ctx.opset));
        }
        Some(Attr::Int(s)) => s != 0,
        Some(other) => return Err(format!("BatchNormalization's 'spatial' must be an int, got {other}")),
    };
    let op = Op::from_parts("BatchNormalization", attrs)?;
    let Op::BatchNormalization { epsilon } = op else {
        return Err("internal error: BatchNormalization did not build a BatchNormalization".into());
    };
    let ins = super::import::present(&node.input);
    if ins.len() != 5 {
        return Err(format!("BatchNormalization needs 5 inputs, got {}", ins.len()));
    }
    let y = outs.first().cloned().ok_or("BatchNormalization needs an output")?;
    let mut l = Lowered::default();
    if spatial {
        l.nodes.push(LNode { name: name.to_string(), op: Ok(op), inputs: ins.clone(), outputs: vec![y] });
        return Ok(l);
    }
    // spatial = 0: scale, B, mean and var are [C, D1, …], one per activation; numpy broadcasting
    // against X [N, C, D1, …] lines them up. y = (x − mean)/√(var + ε)·scale + B.
    let rank = ctx.ty(&ins[0]).map(|t| t.rank()).ok_or("the shape of BatchNormalization's input is not known")?;
    for (i, param) in ins.iter().enumerate().skip(1) {
        let r = ctx.ty(param).map(|t| t.rank());
        if r != Some(rank - 1) {
            return Err(format!("with spatial = 0, BatchNormalization's input {i} must have rank {}", rank - 1));
        }
    }
    let t = |s: &str| format!("{name}/{s}");
    l.consts.push((t("epsilon"), Tensor::scalar_f32(epsilon)));
    l.push(t("centre"), Op::Binary(BinaryOp::Sub), vec![ins[0].clone(), ins[3].clone()], vec![t("centred")]);
    l.push(t("add_epsilon"), Op::Binary(BinaryOp::Add), vec![ins[4].clone(), t("epsilon")], vec![t("var_eps")]);
    l.push(t("sqrt"), Op::Unary(UnaryOp::Sqrt), vec![t("var_eps")], vec![t("std")]);
    l.push(t("normalise"), Op::Binary(BinaryOp::Div), vec![t("centred"), t("std")], vec![t("normed")]);
    l.push(t("scale"), Op::Binary(BinaryOp::Mul), vec![t("normed"), ins[1].clone()], vec![t("scaled")]);
    l.push(name.to_string(), Op::Binary(BinaryOp::Add), vec![t("scaled"), ins[2].clone()], vec![y]);
    Ok(l)
}
