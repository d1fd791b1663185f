//! Spatial ops: Conv and ConvTranspose (2-D NCHW), Pad (constant/reflect/edge, negative pads crop) and nearest
//! Resize (ONNX coordinate transformations and rounding modes).

use super::{expect_f32, not_in_family};
use crate::dtype::{MAX_ELEMENTS, ShapeDisplay, TensorType};
use crate::op::{CoordTransform, NearestMode, Op, PadMode};
use crate::tensor::{Tensor, TensorData, strides};

pub(crate) fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    match op {
        Op::Conv { .. } => {
            expect_f32(op, inputs)?;
            let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape.as_slice()).collect();
            Ok(vec![TensorType::f32(conv_shape(op, &shapes)?.out)])
        }
        Op::ConvTranspose { .. } => {
            expect_f32(op, inputs)?;
            let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape.as_slice()).collect();
            Ok(vec![TensorType::f32(conv_transpose_shape(op, &shapes)?.out)])
        }
        Op::Pad { mode, pads, .. } => {
            let axes = pad_axes(*mode, pads, &inputs[0].shape)?;
            Ok(vec![TensorType::new(inputs[0].dtype, axes.iter().map(|a| a.out).collect::<Vec<_>>())])
        }
        Op::Resize { .. } => {
            let axes = resize_axes(op, &inputs[0].shape)?;
            Ok(vec![TensorType::new(inputs[0].dtype, axes.iter().map(|a| a.out).collect::<Vec<_>>())])
        }
        _ => Err(not_in_family(op)),
    }
}

pub(crate) fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    match op {
        Op::Conv { .. } => Ok(vec![eval_conv(op, inputs)?]),
        Op::ConvTranspose { .. } => Ok(vec![eval_conv_transpose(op, inputs)?]),
        Op::Pad { mode, pads, value } => {
            let x = inputs[0];
            let axes = pad_axes(*mode, pads, x.shape())?;
            let sources: Vec<Vec<Option<usize>>> = axes.iter().map(|a| a.sources(*mode)).collect();
            let fill = Fill { f32: *value, i64: *value as i64, bool: *value != 0.0 };
            Ok(vec![gather(x, &sources, fill)?])
        }
        Op::Resize { .. } => {
            let x = inputs[0];
            let axes = resize_axes(op, x.shape())?;
            let sources: Vec<Vec<Option<usize>>> =
                axes.iter().map(|a| a.sources(op).into_iter().map(Some).collect()).collect();
            Ok(vec![gather(x, &sources, Fill { f32: 0.0, i64: 0, bool: false })?])
        }
        _ => Err(not_in_family(op)),
    }
}

// ---------------------------------------------------------------------------------------------
// Conv

struct ConvShape {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    m: usize,
    kh: usize,
    kw: usize,
    out: Vec<usize>,
}

fn conv_shape(op: &Op, shapes: &[&[usize]]) -> Result<ConvShape, String> {
    let Op::Conv { strides, dilations, pads, group } = op else {
        return Err(not_in_family(op));
    };
    let (x, wt) = (shapes[0], shapes[1]);
    if x.len() != 4 {
        return Err(format!(
            "Conv supports 2-D convolution only (rank-4 NCHW input), got an input of rank {}",
            x.len()
        ));
    }
    if wt.len() != 4 {
        return Err(format!("Conv's weight must be rank 4 [M, C/group, kH, kW], got {}", ShapeDisplay(wt)));
    }
    let (n, c, h, w) = (x[0], x[1], x[2], x[3]);
    let (m, cg, kh, kw) = (wt[0], wt[1], wt[2], wt[3]);
    if c % group != 0 {
        return Err(format!("Conv's input channels {c} are not divisible by group {group}"));
    }
    if m % group != 0 {
        return Err(format!("Conv's output channels {m} are not divisible by group {group}"));
    }
    if cg != c / group {
        return Err(format!(
            "Conv's weight {} needs dimension 1 = C/group = {c}/{group} = {}, got {cg}",
            ShapeDisplay(wt),
            c / group
        ));
    }
    if let Some(b) = shapes.get(2)
        && *b != [m]
    {
        return Err(format!("Conv's bias must be [{m}] (one per output channel), got {}", ShapeDisplay(b)));
    }
    // Output extent along one axis: ⌊(in + pads − (d·(k−1) + 1)) / s⌋ + 1, in u128 so no attribute
    // value can overflow.
    let extent = |axis: &str, size: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize| {
        let padded = size as u128 + p0 as u128 + p1 as u128;
        // Bounding the padded extent keeps every index oy·s + ky·d (< padded) far inside usize in eval.
        if padded > 1 << 40 {
            return Err(format!("Conv's padded input {axis} of {padded} is too large"));
        }
        let span = d as u128 * (k as u128).saturating_sub(1) + 1;
        if k == 0 || padded < span {
            return Err(format!(
                "Conv's kernel spans {span} along {axis} (k={k}, dilation {d}) but the padded input is only {padded}"
            ));
        }
        let out = (padded - span) / s as u128 + 1;
        usize::try_from(out)
            .ok()
            .filter(|&o| o <= MAX_ELEMENTS)
            .ok_or_else(|| format!("Conv's output {axis} {out} is too large"))
    };
    let oh = extent("H", h, kh, strides[0], dilations[0], pads[0], pads[2])?;
    let ow = extent("W", w, kw, strides[1], dilations[1], pads[1], pads[3])?;
    Ok(ConvShape { n, c, h, w, m, kh, kw, out: vec![n, m, oh, ow] })
}

fn eval_conv(op: &Op, inputs: &[&Tensor]) -> Result<Tensor, String> {
    let Op::Conv { strides, dilations, pads, group } = op else {
        return Err(not_in_family(op));
    };
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    let s = conv_shape(op, &shapes)?;
    let data: Vec<&[f32]> =
        inputs.iter().map(|t| t.as_f32().ok_or("Conv needs f32 inputs")).collect::<Result<_, _>>()?;
    let (x, wt, bias) = (data[0], data[1], data.get(2));
    let (oh, ow) = (s.out[2], s.out[3]);
    let (cg, mg) = (s.c / group, s.m / group);
    let mut out = Vec::with_capacity(s.n * s.m * oh * ow);
    for b in 0..s.n {
        for oc in 0..s.m {
            let g = oc / mg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |bv| bv[oc] as f64);
                    for ic in 0..cg {
                        let c = g * cg + ic;
                        for ky in 0..s.kh {
                            // Input row = oy·s + ky·d − pad_top; outside the input is zero padding,
                            // which is multiplied like any input (0·∞ is NaN, as in ONNX Runtime).
                            let iy = (oy * strides[0] + ky * dilations[0]) as isize - pads[0] as isize;
                            let row_inside = iy >= 0 && (iy as usize) < s.h;
                            for kx in 0..s.kw {
                                let ix = (ox * strides[1] + kx * dilations[1]) as isize - pads[1] as isize;
                                let wv = wt[((oc * cg + ic) * s.kh + ky) * s.kw + kx];
                                let xv = if row_inside && ix >= 0 && (ix as usize) < s.w {
                                    x[((b * s.c + c) * s.h + iy as usize) * s.w + ix as usize]
                                } else {
                                    0.0
                                };
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out.push(acc as f32);
                }
            }
        }
    }
    Tensor::from_f32(s.out, out)
}

// ---------------------------------------------------------------------------------------------
// ConvTranspose

/// Shapes of a ConvTranspose: input [N, C, H, W], weight [C, M/group, kH, kW], output
/// [N, M, OH, OW].
pub struct ConvTransposeShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub m: usize,
    pub kh: usize,
    pub kw: usize,
    pub out: Vec<usize>,
}

/// Validates a ConvTranspose's operands and gives its shapes (shared with the JIT).
pub fn conv_transpose_shape(op: &Op, shapes: &[&[usize]]) -> Result<ConvTransposeShape, String> {
    let Op::ConvTranspose { strides, dilations, pads, output_padding, group } = op else {
        return Err(not_in_family(op));
    };
    let (x, wt) = (shapes[0], shapes[1]);
    if x.len() != 4 {
        return Err(format!(
            "ConvTranspose is 2-D here (rank-4 NCHW input; 1-D is imported through it), got an input of rank {}",
            x.len()
        ));
    }
    if wt.len() != 4 {
        return Err(format!("ConvTranspose's weight must be rank 4 [C, M/group, kH, kW], got {}", ShapeDisplay(wt)));
    }
    let (n, c, h, w) = (x[0], x[1], x[2], x[3]);
    let (wc, mg, kh, kw) = (wt[0], wt[1], wt[2], wt[3]);
    if *group == 0 || c % group != 0 {
        return Err(format!("ConvTranspose's input channels {c} are not divisible by group {group}"));
    }
    if wc != c {
        return Err(format!("ConvTranspose's weight {} needs dimension 0 = C = {c}, got {wc}", ShapeDisplay(wt)));
    }
    let m = mg * group;
    if let Some(b) = shapes.get(2)
        && *b != [m]
    {
        return Err(format!("ConvTranspose's bias must be [{m}] (one per output channel), got {}", ShapeDisplay(b)));
    }
    // Output extent: s·(in − 1) + output_padding + d·(k − 1) + 1 − pads, in i128 so no
    // attribute value overflows.
    let extent = |axis: &str, size: usize, k: usize, s: usize, d: usize, op: usize, p0: usize, p1: usize| {
        if k == 0 || size == 0 {
            return Err(format!("ConvTranspose has an empty input or kernel along {axis}"));
        }
        if op >= s.max(d) {
            return Err(format!(
                "ConvTranspose's output_padding {op} along {axis} must be smaller than the stride {s} or the dilation {d}"
            ));
        }
        let full = s as i128 * (size as i128 - 1) + op as i128 + d as i128 * (k as i128 - 1) + 1;
        let out = full - p0 as i128 - p1 as i128;
        if out < 1 {
            return Err(format!("ConvTranspose's pads {p0}, {p1} along {axis} leave no output (full extent {full})"));
        }
        if full > 1 << 40 || out > MAX_ELEMENTS as i128 {
            return Err(format!("ConvTranspose's output {axis} {out} is too large"));
        }
        Ok(out as usize)
    };
    let oh = extent("H", h, kh, strides[0], dilations[0], output_padding[0], pads[0], pads[2])?;
    let ow = extent("W", w, kw, strides[1], dilations[1], output_padding[1], pads[1], pads[3])?;
    Ok(ConvTransposeShape { n, c, h, w, m, kh, kw, out: vec![n, m, oh, ow] })
}

fn eval_conv_transpose(op: &Op, inputs: &[&Tensor]) -> Result<Tensor, String> {
    let Op::ConvTranspose { strides, dilations, pads, group, .. } = op else {
        return Err(not_in_family(op));
    };
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    let s = conv_transpose_shape(op, &shapes)?;
    let data: Vec<&[f32]> =
        inputs.iter().map(|t| t.as_f32().ok_or("ConvTranspose needs f32 inputs")).collect::<Result<_, _>>()?;
    let (x, wt, bias) = (data[0], data[1], data.get(2));
    let (oh, ow) = (s.out[2], s.out[3]);
    let (cg, mg) = (s.c / group, s.m / group);
    // The direct definition, scattered from each input element: y[b, g·mg + m, oy, ox] +=
    // x[b, g·cg + c, iy, ix]·w[g·cg + c, m, ky, kx] where oy = iy·s + ky·d − pad_top.
    let mut acc = vec![0.0f64; s.n * s.m * oh * ow];
    for b in 0..s.n {
        for ci in 0..s.c {
            let g = ci / cg;
            for om in 0..mg {
                let oc = g * mg + om;
                for iy in 0..s.h {
                    for ix in 0..s.w {
                        let xv = x[((b * s.c + ci) * s.h + iy) * s.w + ix] as f64;
                        for ky in 0..s.kh {
                            let oy = (iy * strides[0] + ky * dilations[0]) as i64 - pads[0] as i64;
                            if oy < 0 || oy >= oh as i64 {
                                continue;
                            }
                            for kx in 0..s.kw {
                                let ox = (ix * strides[1] + kx * dilations[1]) as i64 - pads[1] as i64;
                                if ox < 0 || ox >= ow as i64 {
                                    continue;
                                }
                                let wv = wt[((ci * mg + om) * s.kh + ky) * s.kw + kx] as f64;
                                acc[((b * s.m + oc) * oh + oy as usize) * ow + ox as usize] += xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    let out = acc
        .iter()
        .enumerate()
        .map(|(i, &v)| (v + bias.map_or(0.0, |bv| bv[(i / (oh * ow)) % s.m] as f64)) as f32)
        .collect();
    Tensor::from_f32(s.out, out)
}

// ---------------------------------------------------------------------------------------------
// Gathering by per-axis source index maps (Pad and Resize)

/// The value written where a source index is `None` (constant padding), per element type.
struct Fill {
    f32: f32,
    i64: i64,
    bool: bool,
}

/// Builds the output whose element at (o₀, o₁, …) is input[src₀[o₀], src₁[o₁], …], or the fill
/// where any source is `None`.
fn gather(x: &Tensor, sources: &[Vec<Option<usize>>], fill: Fill) -> Result<Tensor, String> {
    let out_shape: Vec<usize> = sources.iter().map(|s| s.len()).collect();
    let in_strides = strides(x.shape());
    let total: usize = out_shape.iter().product();
    let mut flat: Vec<Option<usize>> = Vec::with_capacity(total);
    let mut counter = vec![0usize; out_shape.len()];
    for _ in 0..total {
        let mut idx = Some(0usize);
        for (axis, &o) in counter.iter().enumerate() {
            idx = match (idx, sources[axis][o]) {
                (Some(acc), Some(i)) => Some(acc + i * in_strides[axis]),
                _ => None,
            };
        }
        flat.push(idx);
        for axis in (0..counter.len()).rev() {
            counter[axis] += 1;
            if counter[axis] < out_shape[axis] {
                break;
            }
            counter[axis] = 0;
        }
    }
    let data = match x.data() {
        TensorData::F32(v) => TensorData::F32(flat.iter().map(|i| i.map_or(fill.f32, |i| v[i])).collect()),
        TensorData::I64(v) => TensorData::I64(flat.iter().map(|i| i.map_or(fill.i64, |i| v[i])).collect()),
        TensorData::Bool(v) => TensorData::Bool(flat.iter().map(|i| i.map_or(fill.bool, |i| v[i])).collect()),
    };
    Tensor::new(out_shape, data)
}

// ---------------------------------------------------------------------------------------------
// Pad

/// One axis of a Pad, following the ONNX reference: negative pads crop first, then the cropped
/// axis is padded by the positive pads.
struct PadAxis {
    /// First kept input index after cropping.
    crop_begin: usize,
    /// Length after cropping (≥ 1).
    kept: usize,
    pad_begin: usize,
    out: usize,
}

impl PadAxis {
    fn sources(&self, mode: PadMode) -> Vec<Option<usize>> {
        let kept = self.kept as i64;
        (0..self.out)
            .map(|o| {
                let j = o as i64 - self.pad_begin as i64;
                let j = if (0..kept).contains(&j) {
                    j
                } else {
                    match mode {
                        PadMode::Constant => return None,
                        PadMode::Edge => j.clamp(0, kept - 1),
                        // Mirror without repeating the edge: −1 → 1, kept → kept − 2.
                        PadMode::Reflect if j < 0 => -j,
                        PadMode::Reflect => 2 * (kept - 1) - j,
                    }
                };
                Some(self.crop_begin + j as usize)
            })
            .collect()
    }
}

fn pad_axes(mode: PadMode, pads: &[i64], shape: &[usize]) -> Result<Vec<PadAxis>, String> {
    let rank = shape.len();
    if pads.len() != 2 * rank {
        return Err(format!(
            "Pad's pads must have 2·rank = {} values for a rank-{rank} input, got {}",
            2 * rank,
            pads.len()
        ));
    }
    let mut axes = Vec::with_capacity(rank);
    for (axis, &d) in shape.iter().enumerate() {
        let (begin, end) = (pads[axis], pads[axis + rank]);
        let crop = begin.min(0).unsigned_abs() as u128 + end.min(0).unsigned_abs() as u128;
        if crop >= d as u128 {
            return Err(format!("Pad's pads {begin}, {end} crop axis {axis} of size {d} to nothing"));
        }
        let kept = d - crop as usize;
        let (pb, pe) = (begin.max(0) as u128, end.max(0) as u128);
        if mode == PadMode::Reflect && (pb >= kept as u128 || pe >= kept as u128) {
            return Err(format!(
                "Pad's reflect mode needs pads smaller than the (cropped) dimension: axis {axis} has size {kept}, pads {begin}, {end}"
            ));
        }
        let out = kept as u128 + pb + pe;
        if out > MAX_ELEMENTS as u128 {
            return Err(format!("Pad's output axis {axis} would have {out} elements"));
        }
        let crop_begin = begin.min(0).unsigned_abs() as usize;
        axes.push(PadAxis { crop_begin, kept, pad_begin: pb as usize, out: out as usize });
    }
    Ok(axes)
}

// ---------------------------------------------------------------------------------------------
// Resize

struct ResizeAxis {
    input: usize,
    out: usize,
    /// The scale the coordinate transformation divides by: the given scale, or out/in for sizes.
    scale: f32,
}

/// The input index each output index reads, per axis, for a nearest-neighbour Resize of an input
/// of `shape`: the one definition both the interpreter and the JIT use.
///
/// ONNX Runtime's semantics, in its f32 arithmetic: the coordinate transformation of output
/// index x, rounded by `nearest_mode` (ties detected exactly), clamped to the input. align_corners
/// divides by the output length minus one, the rounded length even when `scales` are given (the
/// ONNX reference divides by the unrounded scale·input instead; ONNX Runtime and this agree with
/// it whenever scale·input is an integer). See docs/ops.md.
pub fn resize_nearest_sources(op: &Op, shape: &[usize]) -> Result<Vec<Vec<usize>>, String> {
    Ok(resize_axes(op, shape)?.iter().map(|a| a.sources(op)).collect())
}

impl ResizeAxis {
    /// The input index read by each output index (see [`resize_nearest_sources`]).
    fn sources(&self, op: &Op) -> Vec<usize> {
        let Op::Resize { coordinate_transformation_mode: ctm, nearest_mode, .. } = op else {
            return vec![0; self.out];
        };
        let len_in = self.input as f32;
        let len_out = self.out as f32;
        (0..self.out)
            .map(|o| {
                let x = o as f32;
                let orig = match ctm {
                    CoordTransform::HalfPixel => (x + 0.5) / self.scale - 0.5,
                    CoordTransform::PytorchHalfPixel if self.out > 1 => (x + 0.5) / self.scale - 0.5,
                    CoordTransform::PytorchHalfPixel => 0.0,
                    CoordTransform::Asymmetric => x / self.scale,
                    CoordTransform::AlignCorners if self.out == 1 => 0.0,
                    CoordTransform::AlignCorners => x * (len_in - 1.0) / (len_out - 1.0),
                    CoordTransform::HalfPixelSymmetric => {
                        let adjustment = len_out / (self.scale * len_in);
                        len_in / 2.0 * (1.0 - adjustment) + (x + 0.5) / self.scale - 0.5
                    }
                    // Refused for nearest by `resize_axes`.
                    CoordTransform::TfCropAndResize => 0.0,
                };
                let fl = orig.floor();
                let frac = orig - fl;
                let r = match nearest_mode {
                    NearestMode::RoundPreferFloor if frac <= 0.5 => fl,
                    NearestMode::RoundPreferFloor => fl + 1.0,
                    NearestMode::RoundPreferCeil if frac < 0.5 => fl,
                    NearestMode::RoundPreferCeil => fl + 1.0,
                    NearestMode::Floor => fl,
                    NearestMode::Ceil => orig.ceil(),
                };
                // Clamp to the input; `as` saturates and maps NaN to 0, and the integer min
                // catches len_in − 1 rounding up in f32 for axes longer than 2²⁴.
                (r.clamp(0.0, len_in - 1.0) as usize).min(self.input - 1)
            })
            .collect()
    }
}

fn resize_axes(op: &Op, shape: &[usize]) -> Result<Vec<ResizeAxis>, String> {
    let Op::Resize { scales, sizes, coordinate_transformation_mode: ctm, .. } = op else {
        return Err(not_in_family(op));
    };
    if *ctm == CoordTransform::TfCropAndResize {
        return Err("Resize's tf_crop_and_resize needs mode linear or cubic".into());
    }
    let rank = shape.len();
    match (scales, sizes) {
        (Some(scales), None) => {
            if scales.len() != rank {
                return Err(format!("Resize has {} scales for a rank-{rank} input", scales.len()));
            }
            shape
                .iter()
                .zip(scales)
                .enumerate()
                .map(|(axis, (&d, &s))| {
                    if !(s.is_finite() && s > 0.0) {
                        return Err(format!("Resize's scale {s} for axis {axis} must be finite and > 0"));
                    }
                    let out = (d as f64 * s as f64).floor();
                    if out < 1.0 || out > MAX_ELEMENTS as f64 {
                        return Err(format!("Resize's scale {s} makes axis {axis} of size {d} into {out}"));
                    }
                    Ok(ResizeAxis { input: d, out: out as usize, scale: s })
                })
                .collect()
        }
        (None, Some(sizes)) => {
            if sizes.len() != rank {
                return Err(format!("Resize has {} sizes for a rank-{rank} input", sizes.len()));
            }
            shape
                .iter()
                .zip(sizes)
                .enumerate()
                .map(|(axis, (&d, &o))| {
                    if o == 0 || o > MAX_ELEMENTS {
                        return Err(format!("Resize's size {o} for axis {axis} must be in 1..={MAX_ELEMENTS}"));
                    }
                    Ok(ResizeAxis { input: d, out: o, scale: o as f32 / d as f32 })
                })
                .collect()
        }
        // keep_aspect_ratio_policy: the sizes are the output, the common scale the coordinates'.
        (Some(scales), Some(sizes)) => {
            if scales.len() != rank || sizes.len() != rank {
                return Err(format!(
                    "Resize has {} scales and {} sizes for a rank-{rank} input",
                    scales.len(),
                    sizes.len()
                ));
            }
            (0..rank)
                .map(|axis| {
                    let (d, s, o) = (shape[axis], scales[axis], sizes[axis]);
                    if !(s.is_finite() && s > 0.0) {
                        return Err(format!("Resize's scale {s} for axis {axis} must be finite and > 0"));
                    }
                    if o == 0 || o > MAX_ELEMENTS {
                        return Err(format!("Resize's size {o} for axis {axis} must be in 1..={MAX_ELEMENTS}"));
                    }
                    Ok(ResizeAxis { input: d, out: o, scale: s })
                })
                .collect()
        }
        (None, None) => Err("Resize needs 'scales' or 'sizes'".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ops::test_support::{infer_err, run, t};

    fn conv(strides: [usize; 2], dilations: [usize; 2], pads: [usize; 4], group: usize) -> Op {
        Op::Conv { strides, dilations, pads, group }
    }

    /// Deterministic, non-symmetric test data: small integers so f32 sums are exact.
    fn ramp(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7 + seed * 3) % 11) as f32 - 5.0).collect()
    }

    /// Conv the other way round: zero-pad explicitly, unfold patches into an im2col matrix
    /// [C/g·kH·kW, OH·OW] per image and group, then multiply by the weight matrix.
    #[allow(clippy::too_many_arguments)]
    fn conv_im2col(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        ws: [usize; 4],
        bias: Option<&[f32]>,
        s: [usize; 2],
        d: [usize; 2],
        p: [usize; 4],
        g: usize,
    ) -> (Vec<usize>, Vec<f32>) {
        let [n, c, h, wd] = xs;
        let [m, cg, kh, kw] = ws;
        let (ph, pw) = (h + p[0] + p[2], wd + p[1] + p[3]);
        let mut padded = vec![0.0f32; n * c * ph * pw];
        for (i, &v) in x.iter().enumerate() {
            let (b, ch, y, xx) = (i / (c * h * wd), (i / (h * wd)) % c, (i / wd) % h, i % wd);
            padded[((b * c + ch) * ph + y + p[0]) * pw + xx + p[1]] = v;
        }
        let oh = (ph - (d[0] * (kh - 1) + 1)) / s[0] + 1;
        let ow = (pw - (d[1] * (kw - 1) + 1)) / s[1] + 1;
        let rows = cg * kh * kw;
        let mg = m / g;
        let mut out = vec![0.0f32; n * m * oh * ow];
        for b in 0..n {
            for gi in 0..g {
                let mut col = vec![0.0f32; rows * oh * ow];
                for r in 0..rows {
                    let (ic, ky, kx) = (r / (kh * kw), (r / kw) % kh, r % kw);
                    for q in 0..oh * ow {
                        let (oy, ox) = (q / ow, q % ow);
                        let ch = gi * cg + ic;
                        col[r * oh * ow + q] =
                            padded[((b * c + ch) * ph + oy * s[0] + ky * d[0]) * pw + ox * s[1] + kx * d[1]];
                    }
                }
                for mo in 0..mg {
                    let oc = gi * mg + mo;
                    for q in 0..oh * ow {
                        let mut acc = bias.map_or(0.0, |bv| bv[oc]);
                        for r in 0..rows {
                            acc += w[oc * rows + r] * col[r * oh * ow + q];
                        }
                        out[((b * m + oc) * oh) * ow + q] = acc;
                    }
                }
            }
        }
        (vec![n, m, oh, ow], out)
    }

    #[test]
    fn conv_hand_example() {
        // 3×3 input 1..9, 2×2 kernel of ones: each output is a 2×2 window sum.
        let x = t(&[1, 1, 3, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        let w = t(&[1, 1, 2, 2], &[1.0; 4]);
        let r = run(&conv([1, 1], [1, 1], [0; 4], 1), &[&x, &w]);
        assert_eq!(r.shape(), &[1, 1, 2, 2]);
        assert_eq!(r.as_f32().unwrap(), &[12.0, 16.0, 24.0, 28.0]);
        // Padding 1 on every side, stride 2, bias 0.5: windows at rows/cols −1 and 1 →
        // [1, 2+3, 4+7, 5+6+8+9] + 0.5.
        let b = t(&[1], &[0.5]);
        let r = run(&conv([2, 2], [1, 1], [1, 1, 1, 1], 1), &[&x, &w, &b]);
        assert_eq!(r.as_f32().unwrap(), &[1.5, 5.5, 11.5, 28.5]);
    }

    /// Input shape, weight shape, strides, dilations, pads, group.
    type ConvCase = ([usize; 4], [usize; 4], [usize; 2], [usize; 2], [usize; 4], usize);

    #[test]
    fn conv_matches_im2col() {
        let cases: &[ConvCase] = &[
            ([1, 2, 5, 5], [3, 2, 3, 3], [1, 1], [1, 1], [0, 0, 0, 0], 1),
            ([2, 4, 6, 7], [4, 2, 3, 2], [2, 1], [1, 2], [1, 0, 2, 1], 2),
            ([1, 3, 7, 6], [3, 1, 3, 3], [1, 2], [2, 1], [2, 1, 0, 3], 3),
            ([1, 4, 5, 5], [2, 4, 1, 1], [2, 2], [1, 1], [0, 0, 0, 0], 1),
        ];
        for (seed, &(xs, ws, s, d, p, g)) in cases.iter().enumerate() {
            let xv = ramp(xs.iter().product(), seed);
            let wv = ramp(ws.iter().product(), seed + 5);
            let bv = ramp(ws[0], seed + 9);
            let (shape, want) = conv_im2col(&xv, xs, &wv, ws, Some(&bv), s, d, p, g);
            let got = run(&conv(s, d, p, g), &[&t(&xs, &xv), &t(&ws, &wv), &t(&[ws[0]], &bv)]);
            assert_eq!(got.shape(), shape.as_slice(), "case {seed}");
            // Small integers: both sides are exact.
            assert_eq!(got.as_f32().unwrap(), want.as_slice(), "case {seed}");
        }
    }

    #[test]
    fn conv_errors() {
        let c = conv([1, 1], [1, 1], [0; 4], 1);
        let err = infer_err(&c, &[&[1, 1, 5], &[1, 1, 3]]);
        assert!(err.contains("rank 3"), "{err}");
        let err = infer_err(&conv([1, 1], [1, 1], [0; 4], 2), &[&[1, 3, 5, 5], &[2, 1, 3, 3]]);
        assert_eq!(err, "Conv's input channels 3 are not divisible by group 2");
        let err = infer_err(&conv([1, 1], [1, 1], [0; 4], 2), &[&[1, 4, 5, 5], &[3, 2, 3, 3]]);
        assert_eq!(err, "Conv's output channels 3 are not divisible by group 2");
        let err = infer_err(&c, &[&[1, 4, 5, 5], &[3, 2, 3, 3]]);
        assert!(err.contains("C/group"), "{err}");
        let err = infer_err(&c, &[&[1, 1, 5, 5], &[2, 1, 3, 3], &[3]]);
        assert!(err.contains("bias must be [2]"), "{err}");
        let err = infer_err(&conv([1, 1], [3, 1], [0; 4], 1), &[&[1, 1, 5, 5], &[1, 1, 3, 3]]);
        assert!(err.contains("kernel spans 7 along H"), "{err}");
        let err = infer_err(&conv([1, 1], [1, 1], [usize::MAX; 4], 1), &[&[1, 1, 5, 5], &[1, 1, 3, 3]]);
        assert!(err.contains("too large"), "{err}");
    }

    fn conv_t(strides: [usize; 2], pads: [usize; 4], output_padding: [usize; 2], group: usize) -> Op {
        Op::ConvTranspose { strides, dilations: [1, 1], pads, output_padding, group }
    }

    #[test]
    fn conv_transpose_onnx_doc_example() {
        // The ONNX operator doc's example: x = 0..9 as 3×3, W = ones [1, 2, 3, 3] → 5×5 per channel.
        let x = t(&[1, 1, 3, 3], &(0..9).map(|i| i as f32).collect::<Vec<_>>());
        let w = t(&[1, 2, 3, 3], &[1.0; 18]);
        let r = run(&conv_t([1, 1], [0; 4], [0, 0], 1), &[&x, &w]);
        assert_eq!(r.shape(), &[1, 2, 5, 5]);
        let plane = [
            0., 1., 3., 3., 2., 3., 8., 15., 12., 7., 9., 21., 36., 27., 15., 9., 20., 33., 24., 13., 6., 13., 21.,
            15., 8.,
        ];
        assert_eq!(&r.as_f32().unwrap()[..25], &plane);
        assert_eq!(&r.as_f32().unwrap()[25..], &plane);
        // Stride 2 with output_padding 1 and pads 1 (the usual ×2 upsampler): 3 → 2·2 + 1 + 3 − 2 = 6,
        // and a bias per output channel.
        let b = t(&[2], &[10.0, 20.0]);
        let r = run(&conv_t([2, 2], [1, 1, 1, 1], [1, 1], 1), &[&x, &w, &b]);
        assert_eq!(r.shape(), &[1, 2, 6, 6]);
        // Output (0, 0) ← input (0, 0)·w(1, 1) only (oy = iy·2 + ky − 1 = 0 → iy = 0, ky = 1).
        assert_eq!(r.as_f32().unwrap()[0], 10.0);
        // Output (1, 1) ← inputs (0..2, 0..2) with ky, kx ∈ {2, 0}: x(0,0) + x(0,1) + x(1,0) + x(1,1).
        assert_eq!(r.as_f32().unwrap()[7], 10.0 + 0.0 + 1.0 + 3.0 + 4.0);
    }

    #[test]
    fn conv_transpose_groups_split_channels() {
        // Two groups of one channel each: each output channel sees only its own input channel.
        let x = t(&[1, 2, 1, 1], &[2.0, 3.0]);
        let w = t(&[2, 1, 1, 1], &[5.0, 7.0]);
        let r = run(&conv_t([1, 1], [0; 4], [0, 0], 2), &[&x, &w]);
        assert_eq!(r.as_f32().unwrap(), &[10.0, 21.0]);
    }

    #[test]
    fn conv_transpose_errors() {
        let c = conv_t([1, 1], [0; 4], [0, 0], 1);
        assert!(infer_err(&c, &[&[1, 1, 5], &[1, 1, 3]]).contains("rank 3"));
        assert!(infer_err(&c, &[&[1, 2, 3, 3], &[1, 1, 3, 3]]).contains("dimension 0 = C = 2"));
        assert!(infer_err(&conv_t([1, 1], [0; 4], [0, 0], 2), &[&[1, 3, 3, 3], &[3, 1, 3, 3]]).contains("group 2"));
        assert!(infer_err(&c, &[&[1, 1, 3, 3], &[1, 2, 3, 3], &[1]]).contains("bias must be [2]"));
        assert!(
            infer_err(&conv_t([1, 1], [0; 4], [1, 0], 1), &[&[1, 1, 3, 3], &[1, 1, 3, 3]]).contains("output_padding")
        );
        assert!(
            infer_err(&conv_t([1, 1], [3, 0, 3, 0], [0, 0], 1), &[&[1, 1, 3, 3], &[1, 1, 3, 3]]).contains("no output")
        );
        let huge = conv_t([usize::MAX, 1], [0; 4], [0, 0], 1);
        assert!(infer_err(&huge, &[&[1, 1, 3, 3], &[1, 1, 3, 3]]).contains("too large"));
    }

    fn pad(mode: PadMode, pads: &[i64]) -> Op {
        Op::Pad { mode, pads: pads.to_vec(), value: 9.0 }
    }

    #[test]
    fn pad_modes() {
        let x = t(&[4], &[1.0, 2.0, 3.0, 4.0]);
        let r = run(&pad(PadMode::Constant, &[2, 1]), &[&x]);
        assert_eq!(r.as_f32().unwrap(), &[9.0, 9.0, 1.0, 2.0, 3.0, 4.0, 9.0]);
        // numpy reflect: [3,2 | 1,2,3,4 | 3].
        let r = run(&pad(PadMode::Reflect, &[2, 1]), &[&x]);
        assert_eq!(r.as_f32().unwrap(), &[3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0]);
        let r = run(&pad(PadMode::Edge, &[2, 1]), &[&x]);
        assert_eq!(r.as_f32().unwrap(), &[1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 4.0]);
        // Crop one at the front, then pad 2 at the end of the cropped [2,3,4]: reflect → 3,2; edge → 4,4.
        let r = run(&pad(PadMode::Reflect, &[-1, 2]), &[&x]);
        assert_eq!(r.as_f32().unwrap(), &[2.0, 3.0, 4.0, 3.0, 2.0]);
        let r = run(&pad(PadMode::Edge, &[-1, 2]), &[&x]);
        assert_eq!(r.as_f32().unwrap(), &[2.0, 3.0, 4.0, 4.0, 4.0]);
        // 2-D: [[1,2],[3,4]] padded one row on top and one column on the right.
        let x2 = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let r = run(&pad(PadMode::Constant, &[1, 0, 0, 1]), &[&x2]);
        assert_eq!(r.shape(), &[3, 3]);
        assert_eq!(r.as_f32().unwrap(), &[9.0, 9.0, 9.0, 1.0, 2.0, 9.0, 3.0, 4.0, 9.0]);
        let r = run(&pad(PadMode::Edge, &[1, 0, 0, 1]), &[&x2]);
        assert_eq!(r.as_f32().unwrap(), &[1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 3.0, 4.0, 4.0]);
        // i64 data with the value cast.
        let xi = Tensor::from_i64([2], vec![5, 6]).unwrap();
        let r = run(&pad(PadMode::Constant, &[1, 0]), &[&xi]);
        assert_eq!(r.as_i64().unwrap(), &[9, 5, 6]);
    }

    #[test]
    fn pad_errors() {
        assert!(infer_err(&pad(PadMode::Constant, &[1, 1]), &[&[2, 2]]).contains("2·rank = 4"));
        let err = infer_err(&pad(PadMode::Reflect, &[4, 0]), &[&[4]]);
        assert!(err.contains("reflect") && err.contains("size 4"), "{err}");
        let err = infer_err(&pad(PadMode::Constant, &[-2, -2]), &[&[4]]);
        assert!(err.contains("to nothing"), "{err}");
        assert!(infer_err(&pad(PadMode::Constant, &[i64::MAX, 0]), &[&[4]]).contains("would have"));
    }

    fn resize(scales: Option<&[f32]>, sizes: Option<&[usize]>, ctm: CoordTransform, nm: NearestMode) -> Op {
        Op::Resize {
            scales: scales.map(|s| s.to_vec()),
            sizes: sizes.map(|s| s.to_vec()),
            coordinate_transformation_mode: ctm,
            nearest_mode: nm,
        }
    }

    fn resize_1d(op: &Op, input: usize) -> Vec<f32> {
        let x = t(&[input], &(0..input).map(|i| i as f32).collect::<Vec<_>>());
        run(op, &[&x]).as_f32().unwrap().to_vec()
    }

    #[test]
    fn resize_coordinate_modes() {
        use CoordTransform::*;
        use NearestMode::*;
        // Input [0,1,2,3] values = indices, so the output lists the source index.
        // Scale 2, half_pixel: orig = (o+0.5)/2 − 0.5 = −0.25, 0.25, 0.75, 1.25, …, 3.25.
        // round_prefer_floor → 0,0,1,1,2,2,3,3 (−0.25 rounds to 0 after clamping).
        let op = resize(Some(&[2.0]), None, HalfPixel, RoundPreferFloor);
        assert_eq!(resize_1d(&op, 4), [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
        // floor → −1(→0),0,0,1,1,2,2,3; ceil → 0,1,1,2,2,3,3,4(→3).
        let op = resize(Some(&[2.0]), None, HalfPixel, Floor);
        assert_eq!(resize_1d(&op, 4), [0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0]);
        let op = resize(Some(&[2.0]), None, HalfPixel, Ceil);
        assert_eq!(resize_1d(&op, 4), [0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0]);
        // Asymmetric, scale 2: orig = o/2 = 0, 0.5, 1, 1.5, …; ties 0.5 → floor 0 / ceil 1.
        let op = resize(Some(&[2.0]), None, Asymmetric, RoundPreferFloor);
        assert_eq!(resize_1d(&op, 3), [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]);
        let op = resize(Some(&[2.0]), None, Asymmetric, RoundPreferCeil);
        assert_eq!(resize_1d(&op, 3), [0.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        // align_corners 3 → 5 (sizes): orig = o·2/4 = 0, 0.5, 1, 1.5, 2 → prefer ceil 0,1,1,2,2.
        let op = resize(None, Some(&[5]), AlignCorners, RoundPreferCeil);
        assert_eq!(resize_1d(&op, 3), [0.0, 1.0, 1.0, 2.0, 2.0]);
        // Downscale 4 → 2 (scale 0.5), half_pixel: orig = (o+0.5)·2 − 0.5 = 0.5, 2.5 → floor-pref 0, 2.
        let op = resize(Some(&[0.5]), None, HalfPixel, RoundPreferFloor);
        assert_eq!(resize_1d(&op, 4), [0.0, 2.0]);
        // pytorch_half_pixel to a single element reads index 0; half_pixel reads the middle:
        // 4 → 1 with scale 0.25: orig = 0.5·4 − 0.5 = 1.5 → prefer ceil 2.
        let op = resize(Some(&[0.25]), None, PytorchHalfPixel, RoundPreferCeil);
        assert_eq!(resize_1d(&op, 4), [0.0]);
        let op = resize(Some(&[0.25]), None, HalfPixel, RoundPreferCeil);
        assert_eq!(resize_1d(&op, 4), [2.0]);
        // Non-integral scale 1.5 on 3: out = ⌊4.5⌋ = 4; asymmetric orig = o/1.5 = 0, 0.667, 1.333, 2
        // → round 0, 1, 1, 2.
        let op = resize(Some(&[1.5]), None, Asymmetric, RoundPreferFloor);
        assert_eq!(resize_1d(&op, 3), [0.0, 1.0, 1.0, 2.0]);
    }

    /// Issue 11: align_corners with `scales` divides by the rounded output length minus one
    /// (ONNX Runtime), not by scale·input − 1. Input 3, scale 2.5 → 7 outputs (7.5 rounded down):
    /// orig = o·2/6 = 0, ⅓, ⅔, 1, 1⅓, 1⅔, 2 → floor 0, 0, 0, 1, 1, 1, 2. Dividing by 7.5 − 1 = 6.5
    /// instead gives o·2/6.5 = …, 0.92 (o = 3), …, 1.85 (o = 6) → 0 and 1 there.
    #[test]
    fn resize_align_corners_with_scales_divides_by_the_rounded_length() {
        let op = resize(Some(&[2.5]), None, CoordTransform::AlignCorners, NearestMode::Floor);
        assert_eq!(resize_1d(&op, 3), [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0]);
        assert_eq!(resize_nearest_sources(&op, &[3]).unwrap(), [vec![0, 0, 0, 1, 1, 1, 2]]);
    }

    #[test]
    fn resize_nchw() {
        // [1,1,2,2] → scales [1,1,2,2], asymmetric floor: each pixel becomes a 2×2 block.
        let x = t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let op = resize(Some(&[1.0, 1.0, 2.0, 2.0]), None, CoordTransform::Asymmetric, NearestMode::Floor);
        let r = run(&op, &[&x]);
        assert_eq!(r.shape(), &[1, 1, 4, 4]);
        assert_eq!(
            r.as_f32().unwrap(),
            &[1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0]
        );
    }

    #[test]
    fn resize_errors() {
        use CoordTransform::HalfPixel;
        use NearestMode::Floor;
        assert!(infer_err(&resize(Some(&[2.0]), None, HalfPixel, Floor), &[&[1, 2]]).contains("1 scales"));
        assert!(infer_err(&resize(Some(&[0.1]), None, HalfPixel, Floor), &[&[4]]).contains("into 0"));
        assert!(infer_err(&resize(Some(&[f32::NAN]), None, HalfPixel, Floor), &[&[4]]).contains("finite"));
        assert!(infer_err(&resize(Some(&[1e30]), None, HalfPixel, Floor), &[&[4]]).contains("into"));
        assert!(infer_err(&resize(None, Some(&[0]), HalfPixel, Floor), &[&[4]]).contains("must be in"));
    }
}
