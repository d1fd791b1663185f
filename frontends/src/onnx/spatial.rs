//! Import of the spatial ops: pooling (with `auto_pad` resolved from the static shapes), the
//! global pools and LRN as reductions and pools, Conv and ConvTranspose 1-D through their 2-D forms,
//! ConvTranspose's `output_shape`, and DepthToSpace/SpaceToDepth as Reshape → Transpose → Reshape.
//! Every decomposition here is exact or within the f32 rounding of the op it replaces.

use super::import::{Ctx, present, trim_outputs};
use super::lower::{LNode, Lowered, input};
use super::proto::NodeProto;
use kiln_ir::{Attr, Attrs, BinaryOp, Op, ReduceKind, Tensor};

/// The ONNX op types this file imports.
pub const SPATIAL_OPS: &[&str] = &[
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
];

/// Lowers one spatial node (`op_type` in [`SPATIAL_OPS`], or a 1-D Conv).
pub(crate) fn lower(
    ctx: &Ctx,
    name: &str,
    op_type: &str,
    node: &NodeProto,
    mut attrs: Attrs,
) -> Result<Option<Lowered>, String> {
    let ins = present(&node.input);
    let outs = trim_outputs(&node.output);
    let x = ins.first().cloned().ok_or_else(|| format!("{op_type} needs an input"))?;
    let out = outs.first().cloned().filter(|o| !o.is_empty()).ok_or_else(|| format!("{op_type} needs an output"))?;
    let x_shape = shape_of(ctx, node, 0)?.to_vec();
    let single =
        |op: Result<Op, String>, inputs: Vec<String>| Ok(Some(Lowered::single(name, op, inputs, vec![out.clone()])));
    match op_type {
        "MaxPool" | "AveragePool" | "LpPool" => {
            if op_type == "MaxPool" && outs.len() > 1 {
                return Err("MaxPool's optional Indices output is not supported (only the values)".into());
            }
            if op_type == "LpPool" {
                // Opset 1 had a float p; later opsets an int.
                if let Some(Attr::Float(p)) = attrs.get("p").cloned() {
                    if p.fract() != 0.0 {
                        return Err(format!("LpPool's p = {p} is not an integer"));
                    }
                    attrs.insert("p".into(), Attr::Int(p as i64));
                }
            }
            resolve_pool_auto_pad(op_type, &x_shape, &mut attrs)?;
            single(Op::from_parts(op_type, &attrs), vec![x])
        }
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => {
            if x_shape.len() < 3 {
                return Err(format!(
                    "{op_type} needs an input of rank ≥ 3 (N, C, spatial…), got rank {}",
                    x_shape.len()
                ));
            }
            let kind = match op_type {
                "GlobalAveragePool" => ReduceKind::Mean,
                "GlobalMaxPool" => ReduceKind::Max,
                _ => {
                    let p = match attrs.remove("p") {
                        None => 2,
                        Some(Attr::Int(p)) => p,
                        Some(Attr::Float(2.0)) => 2,
                        Some(other) => return Err(format!("GlobalLpPool's p = {other} is not supported (only 2)")),
                    };
                    if p != 2 {
                        return Err(format!("GlobalLpPool's p = {p} is not supported (only 2, as ReduceL2)"));
                    }
                    ReduceKind::L2
                }
            };
            if let Some(a) = attrs.keys().next() {
                return Err(format!("{op_type} has no attribute '{a}'"));
            }
            // The global pools are exactly the keepdims reductions over the spatial axes.
            let axes = (2..x_shape.len() as i64).collect();
            single(Ok(Op::Reduce { kind, axes: Some(axes), keepdims: true, noop_with_empty_axes: false }), vec![x])
        }
        "LRN" => lrn(name, &x, &out, &x_shape, &attrs).map(Some),
        "Conv" => conv_1d(ctx, name, node, &ins, &out, &x_shape, attrs).map(Some),
        "ConvTranspose" => conv_transpose(ctx, name, node, &ins, &out, &x_shape, attrs).map(Some),
        "DepthToSpace" | "SpaceToDepth" => depth_space(name, op_type, &x, &out, &x_shape, &attrs).map(Some),
        _ => Ok(None),
    }
}

fn shape_of<'c>(ctx: &'c Ctx, node: &NodeProto, index: usize) -> Result<&'c [usize], String> {
    let name = input(node, index).ok_or_else(|| format!("input {index} is missing"))?;
    ctx.ty(name)
        .map(|t| t.shape.as_slice())
        .ok_or_else(|| format!("the shape of input {index} ('{name}') is not known at load time"))
}

fn ints_attr(attrs: &Attrs, op_type: &str, key: &str) -> Result<Option<Vec<i64>>, String> {
    match attrs.get(key) {
        None => Ok(None),
        Some(Attr::Ints(v)) => Ok(Some(v.clone())),
        Some(other) => Err(format!("{op_type}'s '{key}' must be a list of ints, got {other}")),
    }
}

/// Per-axis positive values of `key` (default 1) for `count` spatial axes.
fn per_axis(attrs: &Attrs, op_type: &str, key: &str, count: usize) -> Result<Vec<i64>, String> {
    match ints_attr(attrs, op_type, key)? {
        None => Ok(vec![1; count]),
        Some(v) if v.len() == count && v.iter().all(|&s| s >= 1) => Ok(v),
        Some(v) => Err(format!("{op_type}'s '{key}' must be {count} positive ints, got {v:?}")),
    }
}

/// `auto_pad` SAME_UPPER/SAME_LOWER/VALID → explicit begin…end pads for a window op whose
/// spatial input extents are `spatial` (ONNX: output ⌈in/stride⌉, the odd pad at the end for
/// SAME_UPPER, at the beginning for SAME_LOWER). `None`: NOTSET or absent, pads stay as given.
fn auto_pads(
    op_type: &str,
    attrs: &mut Attrs,
    spatial: &[usize],
    kernel: &[usize],
    strides: &[i64],
    dilations: &[i64],
) -> Result<Option<Vec<i64>>, String> {
    let mode = match attrs.remove("auto_pad") {
        None => return Ok(None),
        Some(Attr::Str(s)) => s,
        Some(other) => return Err(format!("{op_type}'s 'auto_pad' must be a string, got {other}")),
    };
    let rank = spatial.len();
    match mode.as_str() {
        "NOTSET" => Ok(None),
        "VALID" => Ok(Some(vec![0; 2 * rank])),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut pads = vec![0i64; 2 * rank];
            for i in 0..rank {
                // i128: attribute values come from the file and may be huge.
                let (n, k, s, d) = (spatial[i] as i128, kernel[i] as i128, strides[i] as i128, dilations[i] as i128);
                let out = (n + s - 1) / s;
                let total = ((out - 1) * s + (k - 1) * d + 1 - n).max(0);
                let total = i64::try_from(total).map_err(|_| format!("{op_type}'s SAME padding is out of range"))?;
                let small = total / 2;
                (pads[i], pads[rank + i]) =
                    if mode == "SAME_UPPER" { (small, total - small) } else { (total - small, small) };
            }
            Ok(Some(pads))
        }
        other => Err(format!("{op_type}'s auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER, got {other:?}")),
    }
}

fn resolve_pool_auto_pad(op_type: &str, x_shape: &[usize], attrs: &mut Attrs) -> Result<(), String> {
    let Some(kernel) = ints_attr(attrs, op_type, "kernel_shape")? else {
        attrs.remove("auto_pad");
        return Err(format!("{op_type} needs 'kernel_shape'"));
    };
    let rank = kernel.len();
    if x_shape.len() != rank + 2 {
        return Err(format!(
            "{op_type}'s kernel_shape has {rank} axes but the input has rank {} (want {})",
            x_shape.len(),
            rank + 2
        ));
    }
    if kernel.iter().any(|&k| k < 1) {
        return Err(format!("{op_type}'s kernel_shape must be positive, got {kernel:?}"));
    }
    let kernel: Vec<usize> = kernel.iter().map(|&k| k as usize).collect();
    let strides = per_axis(attrs, op_type, "strides", rank)?;
    let dilations = per_axis(attrs, op_type, "dilations", rank)?;
    if let Some(pads) = auto_pads(op_type, attrs, &x_shape[2..], &kernel, &strides, &dilations)? {
        attrs.insert("pads".into(), Attr::Ints(pads));
    }
    Ok(())
}

/// LRN as y = x / (bias + α·mean_window(x²))^β, the mean over `size` channels with zero padding
/// counted (α/size·Σ = α·mean): x² is viewed as [N, 1, C, rest] and averaged by a [size, 1]
/// AveragePool with count_include_pad, padded ⌊(size−1)/2⌋ before and ⌈(size−1)/2⌉ after as
/// ONNX's window. Exact up to f32 rounding of the mean.
fn lrn(name: &str, x: &str, out: &str, x_shape: &[usize], attrs: &Attrs) -> Result<Lowered, String> {
    let mut alpha = 1e-4f32;
    let mut beta = 0.75f32;
    let mut bias = 1.0f32;
    let mut size = None;
    for (key, value) in attrs {
        match (key.as_str(), value) {
            ("alpha", Attr::Float(v)) => alpha = *v,
            ("beta", Attr::Float(v)) => beta = *v,
            ("bias", Attr::Float(v)) => bias = *v,
            ("size", Attr::Int(v)) => size = Some(*v),
            (key, other) => return Err(format!("LRN's '{key}' ({other}) is not an LRN attribute of that type")),
        }
    }
    let size = size.ok_or("LRN needs 'size'")?;
    if !(1..=1 << 20).contains(&size) {
        return Err(format!("LRN's size must be in 1..=2^20, got {size}"));
    }
    if x_shape.len() < 2 {
        return Err(format!("LRN needs an input of rank ≥ 2 (N, C, …), got rank {}", x_shape.len()));
    }
    let (n, c) = (x_shape[0], x_shape[1]);
    let rest: usize = x_shape[2..].iter().product();
    let t = |what: &str| format!("{name}/{what}");
    let mut l = Lowered::default();
    l.push(t("square"), Op::Binary(BinaryOp::Mul), vec![x.into(), x.into()], vec![t("sq")]);
    let as_i64 = |v: &[usize]| v.iter().map(|&d| d as i64).collect::<Vec<_>>();
    l.push(
        t("to_channels_plane"),
        Op::Reshape { shape: as_i64(&[n, 1, c, rest]), allowzero: false },
        vec![t("sq")],
        vec![t("sq_plane")],
    );
    let size = size as usize;
    let window = kiln_ir::PoolWindow {
        kernel_shape: vec![size, 1],
        strides: vec![1, 1],
        pads: vec![(size - 1) / 2, 0, (size - 1).div_ceil(2), 0],
        dilations: vec![1, 1],
        ceil_mode: false,
    };
    l.push(
        t("window_mean"),
        Op::AveragePool { window, count_include_pad: true },
        vec![t("sq_plane")],
        vec![t("mean_plane")],
    );
    l.push(
        t("to_input_shape"),
        Op::Reshape { shape: as_i64(x_shape), allowzero: false },
        vec![t("mean_plane")],
        vec![t("mean")],
    );
    for (what, v) in [("alpha", alpha), ("bias", bias), ("beta", beta)] {
        l.consts.push((t(what), Tensor::scalar_f32(v)));
    }
    l.push(t("scale"), Op::Binary(BinaryOp::Mul), vec![t("mean"), t("alpha")], vec![t("scaled")]);
    l.push(t("add_bias"), Op::Binary(BinaryOp::Add), vec![t("scaled"), t("bias")], vec![t("base")]);
    l.push(t("pow"), Op::Binary(BinaryOp::Pow), vec![t("base"), t("beta")], vec![t("den")]);
    l.push(name.to_string(), Op::Binary(BinaryOp::Div), vec![x.into(), t("den")], vec![out.into()]);
    Ok(l)
}

/// Moves a 1-D window attribute to the W axis of its 2-D form: `[v]` → `[fill, v]` (`pads`
/// `[b, e]` → `[0, b, 0, e]`).
fn widen(attrs: &mut Attrs, op_type: &str, key: &str, fill: i64) -> Result<(), String> {
    if let Some(v) = ints_attr(attrs, op_type, key)? {
        let wide = match (key, v.as_slice()) {
            ("pads", [b, e]) => vec![0, *b, 0, *e],
            (_, [v]) => vec![fill, *v],
            _ => return Err(format!("{op_type}'s '{key}' has {} values for a 1-D input", v.len())),
        };
        attrs.insert(key.into(), Attr::Ints(wide));
    }
    Ok(())
}

/// Conv or ConvTranspose of rank-3 operands (NCW) through the 2-D op: x and w get a unit H axis
/// (Unsqueeze at axis 2, a free view), the window attributes a unit H entry, and the result loses
/// the H axis again. Exact: the H axis has extent 1, kernel 1, stride 1 and no padding.
fn via_2d(name: &str, op_type: &str, ins: &[String], out: &str, attrs: &Attrs) -> Result<Lowered, String> {
    let mut attrs = attrs.clone();
    for (key, fill) in [("strides", 1), ("dilations", 1), ("kernel_shape", 1), ("output_padding", 0), ("pads", 0)] {
        widen(&mut attrs, op_type, key, fill)?;
    }
    let t = |what: &str| format!("{name}/{what}");
    let mut l = Lowered::default();
    let mut inputs = Vec::new();
    for (i, v) in ins.iter().enumerate() {
        if i < 2 {
            let wide = t(if i == 0 { "x_2d" } else { "w_2d" });
            l.push(t(&format!("unsqueeze{i}")), Op::Unsqueeze { axes: vec![2] }, vec![v.clone()], vec![wide.clone()]);
            inputs.push(wide);
        } else {
            inputs.push(v.clone());
        }
    }
    l.nodes.push(LNode { name: t("2d"), op: Op::from_parts(op_type, &attrs), inputs, outputs: vec![t("y_2d")] });
    l.push(name.to_string(), Op::Squeeze { axes: Some(vec![2]) }, vec![t("y_2d")], vec![out.into()]);
    Ok(l)
}

fn conv_1d(
    ctx: &Ctx,
    name: &str,
    node: &NodeProto,
    ins: &[String],
    out: &str,
    x_shape: &[usize],
    mut attrs: Attrs,
) -> Result<Lowered, String> {
    let w_shape = shape_of(ctx, node, 1)?;
    if x_shape.len() != 3 || w_shape.len() != 3 {
        return Err(format!(
            "Conv is 1-D or 2-D in kiln: input and weight must both be rank 3 or rank 4, got {x_shape:?} and {w_shape:?}"
        ));
    }
    let strides = per_axis(&attrs, "Conv", "strides", 1)?;
    let dilations = per_axis(&attrs, "Conv", "dilations", 1)?;
    if let Some(pads) = auto_pads("Conv", &mut attrs, &x_shape[2..], &w_shape[2..], &strides, &dilations)? {
        attrs.insert("pads".into(), Attr::Ints(pads));
    }
    via_2d(name, "Conv", ins, out, &attrs)
}

/// ConvTranspose: `output_shape` and `auto_pad` become pads (and output_padding when the wanted
/// output is larger than the full extent), 1-D goes through 2-D.
fn conv_transpose(
    ctx: &Ctx,
    name: &str,
    node: &NodeProto,
    ins: &[String],
    out: &str,
    x_shape: &[usize],
    mut attrs: Attrs,
) -> Result<Lowered, String> {
    let w_shape = shape_of(ctx, node, 1)?;
    let rank = x_shape.len();
    if !(rank == 3 || rank == 4) || w_shape.len() != rank {
        return Err(format!(
            "ConvTranspose is 1-D or 2-D in kiln: input and weight must both be rank 3 or 4, got {x_shape:?} and {w_shape:?}"
        ));
    }
    let sp = rank - 2;
    let strides = per_axis(&attrs, "ConvTranspose", "strides", sp)?;
    let dilations = per_axis(&attrs, "ConvTranspose", "dilations", sp)?;
    let output_padding = match ints_attr(&attrs, "ConvTranspose", "output_padding")? {
        None => vec![0; sp],
        Some(v) if v.len() == sp && v.iter().all(|&p| p >= 0) => v,
        Some(v) => return Err(format!("ConvTranspose's 'output_padding' must be {sp} non-negative ints, got {v:?}")),
    };
    let auto_pad = match attrs.remove("auto_pad") {
        None => "NOTSET".to_string(),
        Some(Attr::Str(s)) => s,
        Some(other) => return Err(format!("ConvTranspose's 'auto_pad' must be a string, got {other}")),
    };
    // (target extents, whether they were given): SAME's implied target in·stride is only met
    // where the full extent reaches it (ONNX Runtime: its padding is never negative).
    let output_shape = match ints_attr(&attrs, "ConvTranspose", "output_shape")? {
        // output_shape may list only the spatial extents, or all of N, C, spatial.
        Some(v) if v.len() == sp => Some((v, true)),
        Some(v) if v.len() == rank => Some((v[2..].to_vec(), true)),
        Some(v) => return Err(format!("ConvTranspose's 'output_shape' must have {sp} spatial extents, got {v:?}")),
        None if auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER" => {
            Some(((0..sp).map(|i| x_shape[2 + i] as i64 * strides[i]).collect(), false))
        }
        None => None,
    };
    attrs.remove("output_shape");
    if auto_pad == "VALID" {
        attrs.insert("pads".into(), Attr::Ints(vec![0; 2 * sp]));
    } else if !matches!(auto_pad.as_str(), "NOTSET" | "SAME_UPPER" | "SAME_LOWER") {
        return Err(format!(
            "ConvTranspose's auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER, got {auto_pad:?}"
        ));
    }
    if let Some((target, given)) = output_shape {
        // total = stride·(in − 1) + output_padding + dilation·(k − 1) + 1 − target, split as
        // ONNX says: A negative total (a target larger
        // than the full extent) is met by extra output_padding at the end. The odd pad goes at the
        // end for SAME_UPPER, at the beginning otherwise (ONNX's formula, ONNX Runtime).
        let mut pads = vec![0i64; 2 * sp];
        let mut extra = output_padding.clone();
        for i in 0..sp {
            let full = strides[i] as i128 * (x_shape[2 + i] as i128 - 1)
                + output_padding[i] as i128
                + dilations[i] as i128 * (w_shape[2 + i] as i128 - 1)
                + 1;
            let total = full - target[i] as i128;
            let total = i64::try_from(total).map_err(|_| "ConvTranspose's output_shape is out of range".to_string())?;
            if total < 0 {
                if given {
                    extra[i] = output_padding[i] - total;
                }
                continue;
            }
            let small = total / 2;
            (pads[i], pads[sp + i]) =
                if auto_pad == "SAME_UPPER" { (small, total - small) } else { (total - small, small) };
        }
        attrs.insert("pads".into(), Attr::Ints(pads));
        attrs.insert("output_padding".into(), Attr::Ints(extra));
    }
    if rank == 3 {
        return via_2d(name, "ConvTranspose", ins, out, &attrs);
    }
    Ok(Lowered::single(name, Op::from_parts("ConvTranspose", &attrs), ins.to_vec(), vec![out.into()]))
}

/// DepthToSpace (DCR or CRD) and SpaceToDepth as Reshape → Transpose → Reshape (exact: a
/// permutation of elements).
fn depth_space(
    name: &str,
    op_type: &str,
    x: &str,
    out: &str,
    x_shape: &[usize],
    attrs: &Attrs,
) -> Result<Lowered, String> {
    let mut blocksize = None;
    let mut mode = "DCR".to_string();
    for (key, value) in attrs {
        match (key.as_str(), value) {
            ("blocksize", Attr::Int(b)) => blocksize = Some(*b),
            ("mode", Attr::Str(m)) => mode = m.clone(),
            (key, other) => return Err(format!("{op_type} has no attribute '{key}' of that type ({other})")),
        }
    }
    let b = blocksize.ok_or_else(|| format!("{op_type} needs 'blocksize'"))?;
    let &[n, c, h, w] = x_shape else {
        return Err(format!("{op_type} needs a rank-4 NCHW input, got {x_shape:?}"));
    };
    if !(1..=1 << 16).contains(&b) {
        return Err(format!("{op_type}'s blocksize must be in 1..=65536, got {b}"));
    }
    let b = b as usize;
    let (first, perm, last): (Vec<usize>, Vec<usize>, Vec<usize>) = match (op_type, mode.as_str()) {
        ("DepthToSpace", "DCR" | "CRD") => {
            if c % (b * b) != 0 {
                return Err(format!("DepthToSpace's channels {c} are not divisible by blocksize² = {}", b * b));
            }
            let cb = c / (b * b);
            let last = vec![n, cb, h * b, w * b];
            if mode == "DCR" {
                (vec![n, b, b, cb, h, w], vec![0, 3, 4, 1, 5, 2], last)
            } else {
                (vec![n, cb, b, b, h, w], vec![0, 1, 4, 2, 5, 3], last)
            }
        }
        ("DepthToSpace", other) => return Err(format!("DepthToSpace's mode must be DCR or CRD, got {other:?}")),
        (_, "DCR" | "CRD") => {
            if h % b != 0 || w % b != 0 {
                return Err(format!("SpaceToDepth's spatial extents {h}×{w} are not divisible by blocksize {b}"));
            }
            // DCR puts the block offsets before the channels, CRD after them (opset 25's mode).
            let perm = if mode == "DCR" { vec![0, 3, 5, 1, 2, 4] } else { vec![0, 1, 3, 5, 2, 4] };
            (vec![n, c, h / b, b, w / b, b], perm, vec![n, c * b * b, h / b, w / b])
        }
        (_, other) => return Err(format!("SpaceToDepth's mode must be DCR or CRD, got {other:?}")),
    };
    let as_i64 = |v: &[usize]| v.iter().map(|&d| d as i64).collect::<Vec<_>>();
    let t = |what: &str| format!("{name}/{what}");
    let mut l = Lowered::default();
    l.push(
        t("split_blocks"),
        Op::Reshape { shape: as_i64(&first), allowzero: false },
        vec![x.into()],
        vec![t("blocks")],
    );
    l.push(t("move_blocks"), Op::Transpose { perm: Some(perm) }, vec![t("blocks")], vec![t("moved")]);
    l.push(
        name.to_string(),
        Op::Reshape { shape: as_i64(&last), allowzero: false },
        vec![t("moved")],
        vec![out.into()],
    );
    Ok(l)
}
