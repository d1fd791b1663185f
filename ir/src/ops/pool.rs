//! Pooling: MaxPool, AveragePool and LpPool over the spatial axes (1-D, 2-D, 3-D, any rank ≥ 3
//! input NC…), with ONNX's strides, pads, dilations and ceil_mode.
//!
//! Window geometry follows ONNX Runtime (and PyTorch): the window of output o along an axis reads
//! input positions o·stride + j·dilation − pad_begin for j < kernel. With ceil_mode the output
//! extent is rounded up, but a last window that would start inside the end padding is dropped. A
//! tap inside the input counts; a tap in the explicit padding counts only in AveragePool's divisor
//! with `count_include_pad`; a tap past the end padding (the ceil_mode overhang) never counts.

use super::{expect_f32, not_in_family};
use crate::dtype::{MAX_ELEMENTS, ShapeDisplay, TensorType};
use crate::op::{Op, PoolWindow};
use crate::tensor::Tensor;

pub(crate) fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    expect_f32(op, inputs)?;
    let axes = pool_axes(op, &inputs[0].shape)?;
    let mut out = inputs[0].shape[..2].to_vec();
    out.extend(axes.iter().map(|a| a.out));
    Ok(vec![TensorType::f32(out)])
}

pub(crate) fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    let x = inputs[0];
    let data = x.as_f32().ok_or_else(|| format!("{} needs an f32 input", op.name()))?;
    let axes = pool_axes(op, x.shape())?;
    let planes = x.shape()[0] * x.shape()[1];
    let in_plane: usize = axes.iter().map(|a| a.input).product();
    let out_plane: usize = axes.iter().map(|a| a.out).product();
    // Per axis and output index, the window's taps.
    let taps: Vec<Vec<Vec<Tap>>> = axes.iter().map(|a| (0..a.out).map(|o| a.taps(o)).collect()).collect();
    let in_strides: Vec<usize> = (0..axes.len()).map(|k| axes[k + 1..].iter().map(|a| a.input).product()).collect();
    let mut out = Vec::with_capacity(planes * out_plane);
    for plane in 0..planes {
        let src = &data[plane * in_plane..(plane + 1) * in_plane];
        let mut o = vec![0usize; axes.len()];
        for _ in 0..out_plane {
            let window: Vec<&[Tap]> = o.iter().enumerate().map(|(k, &i)| taps[k][i].as_slice()).collect();
            out.push(reduce_window(op, src, &window, &in_strides));
            advance(&mut o, &axes.iter().map(|a| a.out).collect::<Vec<_>>());
        }
    }
    let mut shape = x.shape()[..2].to_vec();
    shape.extend(axes.iter().map(|a| a.out));
    Ok(vec![Tensor::from_f32(shape, out)?])
}

/// One tap of a window along one axis.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tap {
    Inside(usize),
    /// In the explicit padding: counted by AveragePool with count_include_pad.
    Pad,
    /// Past the end padding (ceil_mode): never counted.
    Beyond,
}

/// The row-major successor of multi-index `i` within `dims` (wrapping to zeros).
fn advance(i: &mut [usize], dims: &[usize]) {
    for k in (0..i.len()).rev() {
        i[k] += 1;
        if i[k] < dims[k] {
            return;
        }
        i[k] = 0;
    }
}

/// The op's value over one window, the cartesian product of the per-axis taps.
fn reduce_window(op: &Op, src: &[f32], window: &[&[Tap]], in_strides: &[usize]) -> f32 {
    let dims: Vec<usize> = window.iter().map(|t| t.len()).collect();
    let total: usize = dims.iter().product();
    let mut j = vec![0usize; window.len()];
    let (mut max, mut sum, mut inside, mut counted) = (f32::NEG_INFINITY, 0.0f64, 0usize, 0usize);
    let mut nan = false;
    for _ in 0..total {
        let mut offset = Some(0usize);
        let mut beyond = false;
        for (k, &jk) in j.iter().enumerate() {
            match window[k][jk] {
                Tap::Inside(i) => offset = offset.map(|o| o + i * in_strides[k]),
                Tap::Pad => offset = None,
                Tap::Beyond => {
                    offset = None;
                    beyond = true;
                }
            }
        }
        if !beyond {
            counted += 1;
        }
        if let Some(off) = offset {
            let v = src[off];
            inside += 1;
            nan |= v.is_nan();
            max = max.max(v);
            sum += match op {
                Op::LpPool { p, .. } => (v.abs() as f64).powi(*p as i32),
                _ => v as f64,
            };
        }
        advance(&mut j, &dims);
    }
    match op {
        // NaN propagates (numpy's max, the ONNX reference); a window of padding only is −∞.
        Op::MaxPool(_) if nan => f32::NAN,
        Op::MaxPool(_) => max,
        Op::AveragePool { count_include_pad, .. } => {
            let divisor = if *count_include_pad { counted } else { inside };
            // A window with nothing to average (only padding, count_include_pad off) is 0, as in
            // ONNX Runtime.
            if divisor == 0 { 0.0 } else { (sum / divisor as f64) as f32 }
        }
        Op::LpPool { p, .. } => sum.powf(1.0 / *p as f64) as f32,
        _ => f32::NAN,
    }
}

/// One spatial axis of a pooling op: extents and window placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolAxis {
    pub input: usize,
    pub out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_begin: usize,
    pub pad_end: usize,
}

impl PoolAxis {
    /// Input position of tap j of output o's window, relative to the unpadded input (may be
    /// negative or ≥ input).
    pub fn position(&self, o: usize, j: usize) -> i64 {
        (o * self.stride + j * self.dilation) as i64 - self.pad_begin as i64
    }

    fn taps(&self, o: usize) -> Vec<Tap> {
        (0..self.kernel)
            .map(|j| {
                let t = self.position(o, j);
                if t >= 0 && t < self.input as i64 {
                    Tap::Inside(t as usize)
                } else if t < (self.input + self.pad_end) as i64 {
                    Tap::Pad
                } else {
                    Tap::Beyond
                }
            })
            .collect()
    }
}

/// The window of a pooling op, or an error for any other op.
pub fn pool_window(op: &Op) -> Result<&PoolWindow, String> {
    match op {
        Op::MaxPool(w) | Op::AveragePool { window: w, .. } | Op::LpPool { window: w, .. } => Ok(w),
        _ => Err(not_in_family(op)),
    }
}

/// The spatial axes of a pooling op applied to an input of `shape` (N, C, spatial…), validated:
/// the one definition of output extents the interpreter and the JIT share.
pub fn pool_axes(op: &Op, shape: &[usize]) -> Result<Vec<PoolAxis>, String> {
    let w = pool_window(op)?;
    let name = op.name();
    let rank = w.kernel_shape.len();
    if shape.len() != rank + 2 {
        return Err(format!(
            "{name}'s kernel_shape has {rank} axes, so the input must be rank {} (N, C, spatial), got {}",
            rank + 2,
            ShapeDisplay(shape)
        ));
    }
    let consistent = w.strides.len() == rank && w.dilations.len() == rank && w.pads.len() == 2 * rank;
    if !consistent || w.strides.contains(&0) || w.dilations.contains(&0) || w.kernel_shape.contains(&0) {
        return Err(format!("{name}'s window attributes are inconsistent: {w:?}"));
    }
    (0..rank)
        .map(|k| {
            let (input, kernel, stride, dilation) = (shape[k + 2], w.kernel_shape[k], w.strides[k], w.dilations[k]);
            let (pad_begin, pad_end) = (w.pads[k], w.pads[rank + k]);
            // u128: no attribute value can overflow.
            let padded = input as u128 + pad_begin as u128 + pad_end as u128;
            // Bounding the padded extent keeps every tap position far inside i64.
            if padded > 1 << 40 {
                return Err(format!("{name}'s padded input along spatial axis {k} ({padded}) is too large"));
            }
            let span = dilation as u128 * (kernel as u128 - 1) + 1;
            if padded < span {
                return Err(format!(
                    "{name}'s kernel spans {span} along spatial axis {k} (kernel {kernel}, dilation {dilation}) \
                     but the padded input is only {padded}"
                ));
            }
            let room = padded - span;
            let s = stride as u128;
            let mut out = if w.ceil_mode { room.div_ceil(s) + 1 } else { room / s + 1 };
            // ceil_mode: a last window that starts past the input and the begin padding is dropped.
            if w.ceil_mode && (out - 1) * s >= input as u128 + pad_begin as u128 {
                out -= 1;
            }
            let out = usize::try_from(out)
                .ok()
                .filter(|&o| o <= MAX_ELEMENTS)
                .ok_or_else(|| format!("{name}'s output along spatial axis {k} ({out}) is too large"))?;
            Ok(PoolAxis { input, out, kernel, stride, dilation, pad_begin, pad_end })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::{infer_err, run, t};

    fn window(k: &[usize], s: &[usize], p: &[usize], d: &[usize], ceil_mode: bool) -> PoolWindow {
        PoolWindow { kernel_shape: k.to_vec(), strides: s.to_vec(), pads: p.to_vec(), dilations: d.to_vec(), ceil_mode }
    }

    fn avg(w: PoolWindow, count_include_pad: bool) -> Op {
        Op::AveragePool { window: w, count_include_pad }
    }

    #[test]
    fn max_pool_2d_with_padding_and_stride() {
        // 4×4 ramp 0..16, kernel 3, stride 2, pads 1: windows centred on rows/cols 0 and 2.
        let x = t(&[1, 1, 4, 4], &(0..16).map(|i| i as f32).collect::<Vec<_>>());
        let op = Op::MaxPool(window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1], false));
        let r = run(&op, &[&x]);
        assert_eq!(r.shape(), &[1, 1, 2, 2]);
        assert_eq!(r.as_f32().unwrap(), &[5.0, 7.0, 13.0, 15.0]);
        // Negative values: padding never wins.
        let xn = t(&[1, 1, 2], &[-3.0, -1.0]);
        let op = Op::MaxPool(window(&[3], &[1], &[1, 1], &[1], false));
        let r = run(&op, &[&xn]);
        assert_eq!(r.as_f32().unwrap(), &[-1.0, -1.0]);
    }

    #[test]
    fn average_pool_counts_padding_only_when_asked() {
        // 1-D [1,2,3], kernel 2, pads 1 each side: windows {pad,1}, {1,2}, {2,3}, {3,pad}.
        let x = t(&[1, 1, 3], &[1.0, 2.0, 3.0]);
        let w = window(&[2], &[1], &[1, 1], &[1], false);
        assert_eq!(run(&avg(w.clone(), false), &[&x]).as_f32().unwrap(), &[1.0, 1.5, 2.5, 3.0]);
        assert_eq!(run(&avg(w, true), &[&x]).as_f32().unwrap(), &[0.5, 1.5, 2.5, 1.5]);
    }

    #[test]
    fn ceil_mode_overhang_is_never_counted() {
        // 1-D of 5, kernel 2, stride 2: floor → 2 outputs, ceil → 3 (the last window [4, 5) has
        // one tap past the input, not padding, so it averages 1 element even with count_include_pad).
        let x = t(&[1, 1, 5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        let floor = window(&[2], &[2], &[0, 0], &[1], false);
        assert_eq!(run(&avg(floor, true), &[&x]).as_f32().unwrap(), &[1.5, 3.5]);
        let ceil = window(&[2], &[2], &[0, 0], &[1], true);
        assert_eq!(run(&avg(ceil.clone(), true), &[&x]).as_f32().unwrap(), &[1.5, 3.5, 5.0]);
        assert_eq!(run(&Op::MaxPool(ceil), &[&x]).as_f32().unwrap(), &[2.0, 4.0, 5.0]);
        // A window that would start inside the end padding is dropped: 4 + pad 1, kernel 2,
        // stride 2, ceil: (5 − 2)/2 rounds up to 2 → 3 windows, but the third starts at 4 ≥ 4 + 0.
        let x4 = t(&[1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
        let w = window(&[2], &[2], &[0, 1], &[1], true);
        assert_eq!(run(&Op::MaxPool(w), &[&x4]).as_f32().unwrap(), &[2.0, 4.0]);
    }

    #[test]
    fn dilation_and_lp() {
        // Kernel 2 with dilation 2 reads x[o], x[o+2].
        let x = t(&[1, 1, 5], &[3.0, -4.0, 4.0, 0.0, 1.0]);
        let w = window(&[2], &[1], &[0, 0], &[2], false);
        assert_eq!(run(&Op::MaxPool(w.clone()), &[&x]).as_f32().unwrap(), &[4.0, 0.0, 4.0]);
        // L2: √(3² + 4²) = 5, √(16 + 0) = 4, √(16 + 1).
        let r = run(&Op::LpPool { window: w.clone(), p: 2 }, &[&x]);
        assert_eq!(r.as_f32().unwrap(), &[5.0, 4.0, 17f32.sqrt()]);
        // L1 is the sum of magnitudes.
        let r = run(&Op::LpPool { window: w, p: 1 }, &[&x]);
        assert_eq!(r.as_f32().unwrap(), &[7.0, 4.0, 5.0]);
    }

    #[test]
    fn three_d_and_nan() {
        let x = t(&[1, 2, 2, 2, 2], &(0..16).map(|i| i as f32).collect::<Vec<_>>());
        let op = Op::MaxPool(window(&[2, 2, 2], &[1, 1, 1], &[0; 6], &[1, 1, 1], false));
        assert_eq!(run(&op, &[&x]).as_f32().unwrap(), &[7.0, 15.0]);
        let op = avg(window(&[2, 2, 2], &[1, 1, 1], &[0; 6], &[1, 1, 1], false), false);
        assert_eq!(run(&op, &[&x]).as_f32().unwrap(), &[3.5, 11.5]);
        let xn = t(&[1, 1, 3], &[1.0, f32::NAN, 2.0]);
        let op = Op::MaxPool(window(&[2], &[1], &[0, 0], &[1], false));
        assert!(run(&op, &[&xn]).as_f32().unwrap().iter().all(|v| v.is_nan()));
    }

    #[test]
    fn pool_errors() {
        let op = Op::MaxPool(window(&[3, 3], &[1, 1], &[0; 4], &[1, 1], false));
        assert!(infer_err(&op, &[&[1, 1, 5]]).contains("must be rank 4"));
        let err = infer_err(&op, &[&[1, 1, 2, 5]]);
        assert!(err.contains("kernel spans 3 along spatial axis 0") && err.contains("only 2"), "{err}");
        let huge = Op::MaxPool(window(&[3], &[1], &[usize::MAX, 0], &[1], false));
        assert!(infer_err(&huge, &[&[1, 1, 5]]).contains("too large"));
        let bad = Op::MaxPool(window(&[3], &[0], &[0, 0], &[1], false));
        assert!(infer_err(&bad, &[&[1, 1, 5]]).contains("inconsistent"));
    }
}
