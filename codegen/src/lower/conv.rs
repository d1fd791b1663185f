//! Convolution (a direct window kernel when each group has one input channel, else im2col +
//! GEMM), ConvTranspose (GEMM + col2im host kernel), Pad and nearest
//! Resize (table-driven copies), interpolating Resize (host kernel).

use super::*;

/// Conv, ConvTranspose, Pad and Resize.
pub(super) fn lower(cx: &mut Ctx, id: NodeId, op: &Op) -> Result<(), Error> {
    let graph = cx.graph;
    let node = graph.node(id);
    let name = node.name.clone();
    let ins = graph.node_inputs(id);
    let in_ty = |k: usize| graph.value_type(ins[k]).clone();
    let out_v = Value { node: id, port: 0 };
    let out_ty = graph.value_type(out_v).clone();
    match op {
        Op::Conv { strides, dilations, pads, group } => lower_conv(cx, id, *strides, *dilations, *pads, *group),
        Op::Pad { mode, pads, value } => {
            let copy = pad_copy(&in_ty(0), &out_ty, *mode, pads, *value).map_err(|e| internal(&name, e))?;
            copy_step(cx, id, vec![out_v], vec![copy], ins[0])
        }
        Op::Resize { .. } => {
            let copy = resize_copy(op, &in_ty(0), &out_ty).map_err(|e| internal(&name, e))?;
            copy_step(cx, id, vec![out_v], vec![copy], ins[0])
        }
        Op::ResizeInterp { .. } => {
            let spec = crate::spatial::ResizeSpec::new(op, &in_ty(0).shape).map_err(|e| internal(&name, e))?;
            let args = vec![cx.out_buf(out_v), cx.input(ins[0], &name)?];
            cx.steps.push(Step { label: name, kind: StepKind::Host(std::sync::Arc::new(spec)), args, n_writes: 1 });
            Ok(())
        }
        Op::ConvTranspose { .. } => {
            let shapes: Vec<Vec<usize>> = (0..ins.len()).map(|k| in_ty(k).shape).collect();
            let shapes: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
            let spec = crate::spatial::ConvTransposeSpec::new(op, &shapes).map_err(|e| internal(&name, e))?;
            if out_ty.shape != [spec.n, spec.m, spec.oh, spec.ow] {
                return Err(internal(&name, "ConvTranspose output shape mismatch"));
            }
            let cols = cx.new_buf(&TensorType::f32([spec.cols_len()]));
            let mut args = vec![cx.out_buf(out_v), cols];
            for v in &ins {
                args.push(cx.input(*v, &name)?);
            }
            cx.steps.push(Step { label: name, kind: StepKind::Host(std::sync::Arc::new(spec)), args, n_writes: 2 });
            Ok(())
        }
        _ => Err(internal(&name, format!("{} is not lowered by this family", op.name()))),
    }
}

pub(super) fn lower_conv(
    cx: &mut Ctx,
    id: NodeId,
    stride: [usize; 2],
    dil: [usize; 2],
    pads: [usize; 4],
    group: usize,
) -> Result<(), Error> {
    let graph = cx.graph;
    let name = graph.node(id).name.clone();
    let ins = graph.node_inputs(id);
    let x = graph.value_type(ins[0]).clone();
    let w = graph.value_type(ins[1]).clone();
    let out_v = Value { node: id, port: 0 };
    let out = graph.value_type(out_v).clone();
    if x.rank() != 4 || w.rank() != 4 {
        return Err(excluded("Conv", &name, "an input or weight that is not rank 4 (the IR's Conv is 2-D NCHW)"));
    }
    let (spec, out_shape) =
        conv_parts(&x.shape, &w.shape, stride, dil, pads, group, ins.len() == 3).map_err(|e| internal(&name, e))?;
    if out.shape != out_shape {
        return Err(internal(&name, "conv output shape mismatch"));
    }
    let ic = &spec.im2col;
    if ic.c == 1 && ic.oh * ic.ow > 0 {
        // One input channel per group (depthwise, any channel multiplier): a direct window
        // kernel, no im2col (whose copy was 65% of a depthwise model's time).
        let win = crate::window::Window {
            h: ic.h,
            w: ic.w,
            kh: ic.kh,
            kw: ic.kw,
            oh: ic.oh,
            ow: ic.ow,
            stride: ic.stride,
            dil: ic.dil,
            pad: ic.pad,
        };
        let dw = crate::window::DepthwiseSpec::new_for(spec.n, spec.groups, spec.m_per_group, win, spec.bias, cx.isa);
        let mut args = vec![cx.out_buf(out_v)];
        for v in &ins {
            args.push(cx.input(*v, &name)?);
        }
        let kind = StepKind::Depthwise { spec: std::sync::Arc::new(dw), epilogue: None };
        cx.steps.push(Step { label: name, kind, args, n_writes: 1 });
        return Ok(());
    }
    // A constant weight: an implicit GEMM on the weight packed now (crate::gemm::conv), no
    // im2col matrix, bias and epilogue fused. When the output plane is so small that most of its
    // 16-pixel panels would be idle columns (see panel_fill), the register tile runs along output
    // channels instead (PackedConv::by_channels), given at least one whole 16-channel panel and a
    // plane small enough for its per-thread scratch (the rest keep im2col + GEMM).
    if let Place::Weight(wi) = cx.input(ins[1], &name)?
        && let Some(data) = cx.weights[wi].f32()
        && (crate::gemm::conv::panel_fill(ic.oh, ic.ow) >= 0.9
            || (spec.m_per_group >= 16 && ic.oh * ic.ow <= crate::gemm::conv::BY_CHANNELS_MAX_PIXELS))
    {
        let packed = if crate::gemm::conv::panel_fill(ic.oh, ic.ow) >= 0.9 {
            crate::gemm::conv::PackedConv::new(
                spec.n,
                spec.groups,
                spec.m_per_group,
                ic.clone(),
                spec.bias,
                cx.isa,
                data,
            )
        } else {
            crate::gemm::conv::PackedConv::by_channels(
                spec.n,
                spec.groups,
                spec.m_per_group,
                ic.clone(),
                spec.bias,
                data,
            )
        }
        .map_err(|e| Error::new(format!("node '{name}'"), format!("cannot pack its weight: {e}")))?;
        let mut args = vec![cx.out_buf(out_v)];
        for v in &ins {
            args.push(cx.input(*v, &name)?);
        }
        let kind = StepKind::PackedConv { spec: std::sync::Arc::new(packed), epilogue: None };
        cx.steps.push(Step { label: name, kind, args, n_writes: 1 });
        return Ok(());
    }
    // The identity case never writes the column scratch: a one-float placeholder keeps the args.
    let col_len = if ic.is_identity() { 1 } else { ic.c * ic.kh * ic.kw * ic.oh * ic.ow };
    let col = cx.new_buf(&TensorType::f32([col_len]));
    let mut args = vec![cx.out_buf(out_v), col];
    for v in &ins {
        args.push(cx.input(*v, &name)?);
    }
    cx.steps.push(Step { label: name, kind: StepKind::Conv(spec), args, n_writes: 2 });
    Ok(())
}

/// 2-D NCHW convolution: the im2col + GEMM plan and the output shape.
pub(crate) fn conv_parts(
    x: &[usize],
    w: &[usize],
    stride: [usize; 2],
    dil: [usize; 2],
    pads: [usize; 4],
    group: usize,
    bias: bool,
) -> Result<(ConvSpec, Vec<usize>), String> {
    let (n, c, h, wd) = (x[0], x[1], x[2], x[3]);
    let (m, cg, kh, kw) = (w[0], w[1], w[2], w[3]);
    if group == 0 || c != cg * group || m % group != 0 || stride.contains(&0) || dil.contains(&0) {
        return Err("conv shapes are inconsistent".into());
    }
    let out_len = |inp: usize, pa: usize, pb: usize, k: usize, d: usize, s: usize| {
        let span = d * (k - 1) + 1;
        (inp + pa + pb).checked_sub(span).map(|r| r / s + 1)
    };
    let oh = out_len(h, pads[0], pads[2], kh, dil[0], stride[0]).ok_or("kernel larger than the padded input")?;
    let ow = out_len(wd, pads[1], pads[3], kw, dil[1], stride[1]).ok_or("kernel larger than the padded input")?;
    let spec = ConvSpec {
        n,
        groups: group,
        m_per_group: m / group,
        im2col: Im2Col { c: cg, h, w: wd, kh, kw, oh, ow, stride, dil, pad: [pads[0], pads[1]] },
        bias,
    };
    Ok((spec, vec![n, m, oh, ow]))
}

/// ONNX Pad (`pads` = begins then ends, negative crops) as a table-driven copy.
pub(crate) fn pad_copy(
    x: &TensorType,
    out: &TensorType,
    mode: PadMode,
    pads: &[i64],
    value: f32,
) -> Result<AxisCopy, String> {
    let r = x.rank();
    if pads.len() != 2 * r || out.rank() != r {
        return Err("pads length is not 2·rank".into());
    }
    for j in 0..r {
        if x.shape[j] as i64 + pads[j] + pads[j + r] != out.shape[j] as i64 {
            return Err(format!("padded axis {j} does not match the output shape"));
        }
    }
    let xs = strides(&x.shape);
    let mut tabs = Vec::new();
    for j in 0..r {
        let d = x.shape[j] as i64;
        let tab = (0..out.shape[j] as i64)
            .map(|i| {
                let c = i - pads[j];
                let c = match mode {
                    PadMode::Constant if !(0..d).contains(&c) => return PAD,
                    PadMode::Constant => c,
                    PadMode::Edge => c.clamp(0, d - 1),
                    PadMode::Reflect => reflect(c, d),
                };
                c * xs[j] as i64
            })
            .collect();
        tabs.push(tab);
    }
    let mut copy = copy_to_contiguous(out, tabs);
    // Bool data is f32 0/1 in the arena: any non-zero pad value is true.
    copy.pad = if out.dtype == DType::Bool { (value != 0.0) as u8 as f32 } else { value };
    Ok(copy)
}

/// Nearest-neighbour Resize as a table-driven copy; the source indices are the interpreter's
/// ([`kiln_ir::ops::resize_nearest_sources`]), so both backends agree by construction.
pub(crate) fn resize_copy(op: &Op, x: &TensorType, out: &TensorType) -> Result<AxisCopy, String> {
    let sources = kiln_ir::ops::resize_nearest_sources(op, &x.shape)?;
    if out.rank() != x.rank() || sources.iter().zip(&out.shape).any(|(s, &o)| s.len() != o) {
        return Err("resize sources do not match the output shape".into());
    }
    let xs = strides(&x.shape);
    let tabs = sources.iter().zip(&xs).map(|(src, &st)| src.iter().map(|&i| (i * st) as i64).collect()).collect();
    Ok(copy_to_contiguous(out, tabs))
}

/// Reflect mode index (ONNX/numpy "reflect": the edge is not repeated).
pub(super) fn reflect(c: i64, d: i64) -> i64 {
    if d == 1 {
        return 0;
    }
    let period = 2 * (d - 1);
    let m = c.rem_euclid(period);
    if m < d { m } else { period - m }
}

/// The depthwise conv `spec` with the activation `u` (SiLU, HardSwish: `window::DwAct`) applied
/// by its kernels as they store, in place of a generated epilogue pass over every plane; None for
/// another op, a conv with a clamp fused, or a CPU without AVX2 (whose portable path would apply
/// the activation element by element, slower than the generated epilogue).
pub(super) fn depthwise_with_act(
    spec: &crate::window::DepthwiseSpec,
    u: kiln_ir::UnaryOp,
    isa: crate::Isa,
) -> Option<crate::window::DepthwiseSpec> {
    if isa < crate::Isa::Avx2Fma {
        return None;
    }
    spec.clone().with_act(u)
}
