//! Resize by interpolation: linear (N-linear: one linear interpolation per resized axis) and cubic
//! (cubic convolution with coefficient a, optionally excluding taps outside the input), under every
//! ONNX coordinate transformation including tf_crop_and_resize with its region of interest and
//! extrapolation value.
//!
//! [`resize_interp_axes`] is the one definition of the sampling (per axis, per output index: the
//! input indices read and their weights) that the interpreter and the JIT share; it follows ONNX
//! Runtime's f32 coordinate arithmetic. Linear clamps the source coordinate into the input; cubic
//! reads clamped (edge) indices, or with exclude_outside drops the outside taps and renormalises.

use super::{expect_f32, not_in_family};
use crate::dtype::{MAX_ELEMENTS, TensorType};
use crate::op::{CoordTransform, InterpMode, Op};
use crate::tensor::Tensor;

pub(crate) fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    expect_f32(op, inputs)?;
    let axes = resize_interp_axes(op, &inputs[0].shape)?;
    Ok(vec![TensorType::f32(axes.iter().map(|a| a.out).collect::<Vec<_>>())])
}

pub(crate) fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    let Op::ResizeInterp { extrapolation_value, .. } = op else {
        return Err(not_in_family(op));
    };
    let x = inputs[0];
    let axes = resize_interp_axes(op, x.shape())?;
    let mut cur: Vec<f64> = x.as_f32().ok_or("Resize needs f32 input")?.iter().map(|&v| v as f64).collect();
    let mut shape = x.shape().to_vec();
    // Separable: interpolate along one axis at a time, in f64.
    for (k, axis) in axes.iter().enumerate() {
        let outer: usize = shape[..k].iter().product();
        let inner: usize = shape[k + 1..].iter().product();
        let mut next = vec![0.0f64; outer * axis.out * inner];
        for o in 0..outer {
            for j in 0..axis.out {
                for t in 0..axis.taps {
                    let (src, w) = (axis.index[j * axis.taps + t], axis.weight[j * axis.taps + t] as f64);
                    for i in 0..inner {
                        next[(o * axis.out + j) * inner + i] += w * cur[(o * shape[k] + src) * inner + i];
                    }
                }
            }
        }
        cur = next;
        shape[k] = axis.out;
    }
    // tf_crop_and_resize: an output whose coordinate falls outside the input on any axis is the
    // extrapolation value.
    let mut out: Vec<f32> = cur.iter().map(|&v| v as f32).collect();
    if axes.iter().any(|a| a.outside.iter().any(|&o| o)) {
        let mut idx = vec![0usize; shape.len()];
        for v in out.iter_mut() {
            if idx.iter().zip(&axes).any(|(&i, a)| a.outside[i]) {
                *v = *extrapolation_value;
            }
            for k in (0..idx.len()).rev() {
                idx[k] += 1;
                if idx[k] < shape[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
    }
    Ok(vec![Tensor::from_f32(shape, out)?])
}

/// The sampling of one axis: output j reads input indices `index[j·taps..][..taps]` with
/// `weight[j·taps..][..taps]`; `outside[j]` marks outputs that are the extrapolation value.
#[derive(Debug, Clone, PartialEq)]
pub struct InterpAxis {
    pub input: usize,
    pub out: usize,
    pub taps: usize,
    pub index: Vec<usize>,
    pub weight: Vec<f32>,
    pub outside: Vec<bool>,
}

/// Per axis, the sampling of a [`Op::ResizeInterp`] of an input of `shape` (see the module doc).
/// An axis every output of which reads exactly one input element with weight 1 has one tap.
pub fn resize_interp_axes(op: &Op, shape: &[usize]) -> Result<Vec<InterpAxis>, String> {
    let Op::ResizeInterp { mode, scales, sizes, coordinate_transformation_mode: ctm, roi, .. } = op else {
        return Err(not_in_family(op));
    };
    let rank = shape.len();
    for (what, len) in [("scales", scales.as_ref().map(Vec::len)), ("sizes", sizes.as_ref().map(Vec::len))] {
        if let Some(len) = len
            && len != rank
        {
            return Err(format!("Resize has {len} {what} for a rank-{rank} input"));
        }
    }
    if let Some(roi) = roi
        && roi.len() != 2 * rank
    {
        return Err(format!("Resize's roi has {} values for a rank-{rank} input (want {})", roi.len(), 2 * rank));
    }
    if let InterpMode::Cubic { a, .. } = mode
        && !a.is_finite()
    {
        return Err(format!("Resize's cubic_coeff_a {a} must be finite"));
    }
    (0..rank)
        .map(|k| {
            let input = shape[k];
            if input == 0 {
                return Err(format!("Resize cannot interpolate axis {k} of size 0"));
            }
            let scale = scales.as_ref().map(|s| s[k]);
            if let Some(s) = scale
                && !(s.is_finite() && s > 0.0)
            {
                return Err(format!("Resize's scale {s} for axis {k} must be finite and > 0"));
            }
            let out = match (sizes, scale) {
                (Some(sizes), _) => sizes[k] as f64,
                (None, Some(s)) => (input as f64 * s as f64).floor(),
                (None, None) => return Err("Resize needs 'scales' or 'sizes'".into()),
            };
            if out < 1.0 || out > MAX_ELEMENTS as f64 {
                return Err(format!("Resize makes axis {k} of size {input} into {out}, outside 1..={MAX_ELEMENTS}"));
            }
            let out = out as usize;
            let scale = scale.unwrap_or(out as f32 / input as f32);
            let roi = roi.as_ref().map_or((0.0, 1.0), |r| (r[k], r[rank + k]));
            Ok(interp_axis(*mode, *ctm, input, out, scale, roi))
        })
        .collect()
}

/// ONNX's coordinate transformation: the input coordinate sampled by output `o`, in f32 as ONNX
/// Runtime computes it.
fn original(ctm: CoordTransform, o: usize, scale: f32, input: usize, out: usize, roi: (f32, f32)) -> f32 {
    let (x, len_in, len_out) = (o as f32, input as f32, out as f32);
    match ctm {
        CoordTransform::HalfPixel => (x + 0.5) / scale - 0.5,
        CoordTransform::PytorchHalfPixel if out > 1 => (x + 0.5) / scale - 0.5,
        CoordTransform::PytorchHalfPixel => 0.0,
        CoordTransform::Asymmetric => x / scale,
        CoordTransform::AlignCorners if out == 1 => 0.0,
        CoordTransform::AlignCorners => x * (len_in - 1.0) / (len_out - 1.0),
        CoordTransform::HalfPixelSymmetric => {
            let adjustment = len_out / (scale * len_in);
            len_in / 2.0 * (1.0 - adjustment) + (x + 0.5) / scale - 0.5
        }
        CoordTransform::TfCropAndResize if out > 1 => {
            roi.0 * (len_in - 1.0) + x * (roi.1 - roi.0) * (len_in - 1.0) / (len_out - 1.0)
        }
        CoordTransform::TfCropAndResize => 0.5 * (roi.0 + roi.1) * (len_in - 1.0),
    }
}

/// Keys's cubic convolution weights for the taps at distance 1 + t, t, 1 − t, 2 − t from the
/// source coordinate (t its fractional part).
fn cubic_weights(t: f64, a: f64) -> [f64; 4] {
    let near = |d: f64| ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0;
    let far = |d: f64| ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a;
    [far(1.0 + t), near(t), near(1.0 - t), far(2.0 - t)]
}

fn interp_axis(
    mode: InterpMode,
    ctm: CoordTransform,
    input: usize,
    out: usize,
    scale: f32,
    roi: (f32, f32),
) -> InterpAxis {
    let taps = match mode {
        InterpMode::Linear => 2,
        InterpMode::Cubic { .. } => 4,
    };
    let last = input as i64 - 1;
    let mut axis = InterpAxis {
        input,
        out,
        taps,
        index: Vec::with_capacity(out * taps),
        weight: Vec::with_capacity(out * taps),
        outside: vec![false; out],
    };
    for o in 0..out {
        let mut x = original(ctm, o, scale, input, out, roi);
        if ctm == CoordTransform::TfCropAndResize && !(0.0..=last as f32).contains(&x) {
            axis.outside[o] = true;
            x = 0.0;
        }
        match mode {
            InterpMode::Linear => {
                // NaN (a degenerate roi) clamps to 0 through `max`.
                let x = x.max(0.0).min(last as f32);
                let x0 = (x.floor() as i64).clamp(0, last);
                let t = x - x0 as f32;
                axis.index.extend([x0 as usize, (x0 + 1).min(last) as usize]);
                axis.weight.extend([1.0 - t, t]);
            }
            InterpMode::Cubic { a, exclude_outside } => {
                let xf = x.floor();
                let t = (x - xf) as f64;
                // Far outside coordinates (huge scales) saturate; every index is clamped below.
                let x0 = xf as i64;
                let mut w = cubic_weights(t, a as f64);
                let idx: Vec<i64> = (-1..3).map(|d| x0.saturating_add(d)).collect();
                if exclude_outside {
                    for (wk, &i) in w.iter_mut().zip(&idx) {
                        if i < 0 || i > last {
                            *wk = 0.0;
                        }
                    }
                    let sum: f64 = w.iter().sum();
                    if sum != 0.0 {
                        w.iter_mut().for_each(|wk| *wk /= sum);
                    }
                }
                axis.index.extend(idx.iter().map(|&i| i.clamp(0, last) as usize));
                axis.weight.extend(w.iter().map(|&wk| wk as f32));
            }
        }
    }
    // One tap where every output copies one input element.
    let copies = (0..out).all(|o| {
        let w = &axis.weight[o * taps..(o + 1) * taps];
        w.iter().filter(|&&v| v != 0.0).count() == 1 && w.contains(&1.0)
    });
    if copies {
        let (mut index, mut weight) = (Vec::with_capacity(out), Vec::with_capacity(out));
        for o in 0..out {
            let t = (0..taps).find(|&t| axis.weight[o * taps + t] == 1.0).unwrap_or(0);
            index.push(axis.index[o * taps + t]);
            weight.push(1.0);
        }
        (axis.taps, axis.index, axis.weight) = (1, index, weight);
    }
    axis
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::{infer_err, run, t};

    fn resize(mode: InterpMode, scales: Option<&[f32]>, sizes: Option<&[usize]>, ctm: CoordTransform) -> Op {
        Op::ResizeInterp {
            mode,
            scales: scales.map(<[f32]>::to_vec),
            sizes: sizes.map(<[usize]>::to_vec),
            coordinate_transformation_mode: ctm,
            roi: None,
            extrapolation_value: 0.0,
        }
    }

    #[test]
    fn linear_1d_modes() {
        let x = t(&[3], &[0.0, 10.0, 20.0]);
        // align_corners 3 → 5: coordinates 0, 0.5, 1, 1.5, 2.
        let op = resize(InterpMode::Linear, None, Some(&[5]), CoordTransform::AlignCorners);
        assert_eq!(run(&op, &[&x]).as_f32().unwrap(), &[0.0, 5.0, 10.0, 15.0, 20.0]);
        // half_pixel ×2: −0.25 (clamped to 0), 0.25, 0.75, 1.25, 1.75, 2.25 (clamped to 2).
        let op = resize(InterpMode::Linear, Some(&[2.0]), None, CoordTransform::HalfPixel);
        assert_eq!(run(&op, &[&x]).as_f32().unwrap(), &[0.0, 2.5, 7.5, 12.5, 17.5, 20.0]);
        // asymmetric ×2: 0, 0.5, 1, 1.5, 2, 2.5 (clamped).
        let op = resize(InterpMode::Linear, Some(&[2.0]), None, CoordTransform::Asymmetric);
        assert_eq!(run(&op, &[&x]).as_f32().unwrap(), &[0.0, 5.0, 10.0, 15.0, 20.0, 20.0]);
    }

    #[test]
    fn bilinear_nchw_is_separable_and_keeps_n_c() {
        let x = t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let op = resize(InterpMode::Linear, None, Some(&[1, 1, 3, 3]), CoordTransform::AlignCorners);
        let r = run(&op, &[&x]);
        assert_eq!(r.as_f32().unwrap(), &[1.0, 1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0]);
        // N and C are copied (one tap each).
        let axes = resize_interp_axes(&op, &[1, 1, 2, 2]).unwrap();
        assert_eq!(axes.iter().map(|a| a.taps).collect::<Vec<_>>(), [1, 1, 2, 2]);
    }

    #[test]
    fn cubic_weights_sum_to_one_and_interpolate() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            let w = cubic_weights(t, -0.75);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{w:?}");
        }
        assert_eq!(cubic_weights(0.0, -0.5), [0.0, 1.0, 0.0, 0.0]);
        // A cubic reproduces a linear ramp away from the edges (a = −0.5 is exact for quadratics).
        let x = t(&[6], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let op = resize(
            InterpMode::Cubic { a: -0.5, exclude_outside: false },
            None,
            Some(&[11]),
            CoordTransform::AlignCorners,
        );
        let r = run(&op, &[&x]);
        for (o, v) in r.as_f32().unwrap().iter().enumerate().skip(2).take(7) {
            assert!((v - o as f32 / 2.0).abs() < 1e-6, "{o}: {v}");
        }
    }

    #[test]
    fn exclude_outside_renormalises_at_the_edge() {
        // Coordinate 0 with t = 0.5 after asymmetric ×2 at o = 1: taps −1 (outside), 0, 1, 2.
        let x = t(&[4], &[1.0, 1.0, 1.0, 1.0]);
        let op = resize(
            InterpMode::Cubic { a: -0.75, exclude_outside: true },
            Some(&[2.0]),
            None,
            CoordTransform::Asymmetric,
        );
        let axes = resize_interp_axes(&op, &[4]).unwrap();
        assert_eq!(axes[0].weight[4], 0.0);
        // Constant input stays constant whatever the weights, since they are renormalised.
        assert!(run(&op, &[&x]).as_f32().unwrap().iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn tf_crop_and_resize_extrapolates() {
        // roi 0.5..1.5 on 3 elements: coordinates 1, 2, 3 (outside) for sizes 3.
        let x = t(&[3], &[0.0, 10.0, 20.0]);
        let op = Op::ResizeInterp {
            mode: InterpMode::Linear,
            scales: None,
            sizes: Some(vec![3]),
            coordinate_transformation_mode: CoordTransform::TfCropAndResize,
            roi: Some(vec![0.5, 1.5]),
            extrapolation_value: -7.0,
        };
        assert_eq!(run(&op, &[&x]).as_f32().unwrap(), &[10.0, 20.0, -7.0]);
    }

    #[test]
    fn resize_interp_errors() {
        let lin = |scales: &[f32]| resize(InterpMode::Linear, Some(scales), None, CoordTransform::HalfPixel);
        assert!(infer_err(&lin(&[2.0]), &[&[1, 2]]).contains("1 scales"));
        assert!(infer_err(&lin(&[f32::INFINITY]), &[&[4]]).contains("finite"));
        assert!(infer_err(&lin(&[1e30]), &[&[4]]).contains("outside"));
        assert!(infer_err(&lin(&[0.1]), &[&[4]]).contains("into 0"));
    }
}
