//! Normalisation ops and (Log)Softmax: shape inference and reference evaluation.
//!
//! Every statistic is computed in f64 — the mean first, then the variance as the mean of squared
//! deviations from it (two passes, population variance, as ONNX and PyTorch's `unbiased=False`) —
//! and each output element is rounded to f32 once, at the end. The kiln-domain norms follow the
//! official code of each paper (see the doc comment of each [`Op`] variant).

use super::broadcast::broadcast_indices;
use super::{expect_f32, normalize_axis, not_in_family};
use crate::dtype::{ShapeDisplay, TensorType};
use crate::op::Op;
use crate::tensor::Tensor;

pub(crate) fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    expect_f32(op, inputs)?;
    let x = inputs[0];
    if x.shape.contains(&0) {
        return Err(format!("{} needs every dimension of x to be ≥ 1", op.name()));
    }
    match op {
        Op::BatchNormalization { .. } => {
            let c = channels(op, x, 2)?;
            for (i, name) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")] {
                expect_vector(op, inputs[i], name, c, "the channel count")?;
            }
        }
        Op::InstanceNormalization { .. } => {
            let c = channels(op, x, 3)?;
            expect_vector(op, inputs[1], "scale", c, "the channel count")?;
            expect_vector(op, inputs[2], "bias", c, "the channel count")?;
        }
        Op::GroupNormalization { num_groups, .. } => {
            let c = channels(op, x, 2)?;
            if !c.is_multiple_of(*num_groups) {
                return Err(format!(
                    "GroupNormalization needs the channel count {c} to be a multiple of num_groups {num_groups}"
                ));
            }
            expect_vector(op, inputs[1], "scale", c, "the channel count")?;
            expect_vector(op, inputs[2], "bias", c, "the channel count")?;
        }
        Op::LayerNormalization { axis, .. } | Op::RmsNormalization { axis, .. } => {
            let a = normalize_axis(*axis, x.rank())?;
            let normalized = &x.shape[a..];
            expect_broadcastable(op, inputs[1], "scale", normalized)?;
            if let Some(bias) = inputs.get(2) {
                expect_broadcastable(op, bias, "bias", normalized)?;
            }
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            normalize_axis(*axis, x.rank())?;
        }
        Op::CrmsNormalization { d, .. } => {
            let last = x.shape.last().copied().unwrap_or(0);
            if x.rank() == 0 || *d < 2 || last + 1 != *d {
                return Err(format!(
                    "CRMSNormalization stores d − 1 = {} components of each row (d = {d}), but x has shape {}",
                    d.saturating_sub(1),
                    ShapeDisplay(&x.shape)
                ));
            }
        }
        Op::UnifiedNorm { axis, .. } => {
            let a = normalize_axis(*axis, x.rank())?;
            let c = x.shape[a];
            for (i, name) in [(1, "scale"), (2, "bias"), (3, "running_var")] {
                expect_vector(op, inputs[i], name, c, "x's size along the axis")?;
            }
        }
        Op::PowerNorm { groups, .. } => {
            let Some(&d) = x.shape.last() else {
                return Err("PowerNorm needs an input of rank ≥ 1".into());
            };
            if !d.is_multiple_of(*groups) {
                return Err(format!("PowerNorm needs the last dimension {d} to be a multiple of groups {groups}"));
            }
            for (i, name) in [(1, "scale"), (2, "bias"), (3, "running_phi")] {
                expect_vector(op, inputs[i], name, d, "the last dimension")?;
            }
        }
        Op::EvoNormS0 { groups, .. } => {
            let c = channels_4d(op, x)?;
            if !c.is_multiple_of(*groups) {
                return Err(format!("EvoNormS0 needs the channel count {c} to be a multiple of groups {groups}"));
            }
            for (i, name) in [(1, "v"), (2, "gamma"), (3, "beta")] {
                expect_vector(op, inputs[i], name, c, "the channel count")?;
            }
        }
        Op::EvoNormB0 { .. } => {
            let c = channels_4d(op, x)?;
            for (i, name) in [(1, "v"), (2, "gamma"), (3, "beta"), (4, "running_var")] {
                expect_vector(op, inputs[i], name, c, "the channel count")?;
            }
        }
        Op::RegionNorm { .. } => {
            let c = channels_4d(op, x)?;
            let want = [x.shape[0], 1, x.shape[2], x.shape[3]];
            if inputs[1].shape != want {
                return Err(format!(
                    "RegionNorm's mask must have shape {} (x's batch and spatial size, one channel), got {}",
                    ShapeDisplay(&want),
                    ShapeDisplay(&inputs[1].shape)
                ));
            }
            for (i, name) in [(2, "gamma_fg"), (3, "beta_fg"), (4, "gamma_bg"), (5, "beta_bg")] {
                expect_vector(op, inputs[i], name, c, "the channel count")?;
            }
        }
        _ => return Err(not_in_family(op)),
    }
    Ok(vec![x.clone()])
}

pub(crate) fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    // Re-validate: eval must never index out of bounds, even when called without the builder.
    let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
    let type_refs: Vec<&TensorType> = types.iter().collect();
    let out_ty = op.infer(&type_refs)?.remove(0);
    let data: Vec<&[f32]> = inputs
        .iter()
        .map(|t| t.as_f32().ok_or_else(|| format!("internal error: {} input is not f32", op.name())))
        .collect::<Result<_, _>>()?;
    let shape = inputs[0].shape();
    let y = match op {
        Op::BatchNormalization { epsilon } => batch_norm(shape, &data, f64::from(*epsilon)),
        Op::InstanceNormalization { epsilon } => group_norm(shape, &data, shape[1], f64::from(*epsilon)),
        Op::GroupNormalization { num_groups, epsilon } => group_norm(shape, &data, *num_groups, f64::from(*epsilon)),
        Op::LayerNormalization { axis, epsilon } => {
            let a = normalize_axis(*axis, shape.len())?;
            layer_norm(shape, &types, &data, a, f64::from(*epsilon), false)
        }
        Op::RmsNormalization { axis, epsilon } => {
            let a = normalize_axis(*axis, shape.len())?;
            layer_norm(shape, &types, &data, a, f64::from(*epsilon), true)
        }
        Op::Softmax { axis } => softmax(shape, data[0], normalize_axis(*axis, shape.len())?, false),
        Op::LogSoftmax { axis } => softmax(shape, data[0], normalize_axis(*axis, shape.len())?, true),
        Op::UnifiedNorm { axis, epsilon } => {
            let a = normalize_axis(*axis, shape.len())?;
            unified_norm(shape, &data, a, f64::from(*epsilon))
        }
        Op::PowerNorm { groups, epsilon, group_epsilon } => {
            power_norm(shape, &data, *groups, f64::from(*epsilon), f64::from(*group_epsilon))
        }
        Op::EvoNormS0 { groups, epsilon } => evo_norm_s0(shape, &data, *groups, f64::from(*epsilon)),
        Op::EvoNormB0 { epsilon } => evo_norm_b0(shape, &data, f64::from(*epsilon)),
        Op::RegionNorm { epsilon } => region_norm(shape, &data, f64::from(*epsilon))?,
        Op::CrmsNormalization { epsilon, d } => crms_norm(data[0], *d, f64::from(*epsilon)),
        _ => return Err(not_in_family(op)),
    };
    Ok(vec![Tensor::from_f32(out_ty.shape, y)?])
}

/// CRMSNorm, computed the obvious way in f64: the implied last component x_d = −Σx′ joins the sum
/// of squares, ‖x‖² = Σx′² + (Σx′)², and each stored component is divided by √(‖x‖²/d + ε).
fn crms_norm(x: &[f32], d: usize, epsilon: f64) -> Vec<f32> {
    let n = d - 1;
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks_exact(n) {
        let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
        let squares: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let inv = 1.0 / ((squares + sum * sum) / d as f64 + epsilon).sqrt();
        y.extend(row.iter().map(|&v| (f64::from(v) * inv) as f32));
    }
    y
}

// ---- validation helpers ----

/// The channel count (axis 1) of an input that must have rank ≥ `min_rank`.
fn channels(op: &Op, x: &TensorType, min_rank: usize) -> Result<usize, String> {
    if x.rank() < min_rank {
        return Err(format!("{} needs an input of rank ≥ {min_rank} ([N,C,…]), got rank {}", op.name(), x.rank()));
    }
    Ok(x.shape[1])
}

/// The channel count of an NCHW input.
fn channels_4d(op: &Op, x: &TensorType) -> Result<usize, String> {
    if x.rank() != 4 {
        return Err(format!("{} needs an NCHW input of rank 4, got rank {}", op.name(), x.rank()));
    }
    Ok(x.shape[1])
}

fn expect_vector(op: &Op, t: &TensorType, name: &str, len: usize, what: &str) -> Result<(), String> {
    if t.shape != [len] {
        return Err(format!("{}'s {name} must have shape [{len}] ({what}), got {}", op.name(), ShapeDisplay(&t.shape)));
    }
    Ok(())
}

/// Checks that `t` broadcasts (unidirectionally) to `target`.
fn expect_broadcastable(op: &Op, t: &TensorType, name: &str, target: &[usize]) -> Result<(), String> {
    let ok = t.rank() <= target.len()
        && t.shape.iter().zip(&target[target.len() - t.rank()..]).all(|(&p, &d)| p == d || p == 1);
    if !ok {
        return Err(format!(
            "{}'s {name} of shape {} does not broadcast to the normalized shape {}",
            op.name(),
            ShapeDisplay(&t.shape),
            ShapeDisplay(target)
        ));
    }
    Ok(())
}

// ---- numerics ----

/// Mean and population variance in f64, two passes.
fn mean_var(xs: &[f32]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = xs.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

/// Mean of squares in f64.
fn mean_square(xs: &[f32]) -> f64 {
    xs.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / xs.len() as f64
}

/// Product of a run of dimensions (1 for none).
fn prod(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// NaN-propagating maximum (as torch.max of two tensors).
fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

fn batch_norm(shape: &[usize], d: &[&[f32]], eps: f64) -> Vec<f32> {
    let (x, scale, bias, mean, var) = (d[0], d[1], d[2], d[3], d[4]);
    let (c, s) = (shape[1], prod(&shape[2..]));
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / s) % c;
            let norm = (f64::from(v) - f64::from(mean[ch])) / (f64::from(var[ch]) + eps).sqrt();
            (norm * f64::from(scale[ch]) + f64::from(bias[ch])) as f32
        })
        .collect()
}

/// GroupNormalization (ONNX 21: per-channel scale and bias); InstanceNormalization is the case
/// `groups == C`.
fn group_norm(shape: &[usize], d: &[&[f32]], groups: usize, eps: f64) -> Vec<f32> {
    let (x, scale, bias) = (d[0], d[1], d[2]);
    let (c, s) = (shape[1], prod(&shape[2..]));
    let group_len = c / groups * s;
    let mut y = Vec::with_capacity(x.len());
    for (gi, chunk) in x.chunks(group_len).enumerate() {
        let (mean, var) = mean_var(chunk);
        let inv = 1.0 / (var + eps).sqrt();
        for (j, &v) in chunk.iter().enumerate() {
            let ch = (gi % groups) * (c / groups) + j / s;
            y.push(((f64::from(v) - mean) * inv * f64::from(scale[ch]) + f64::from(bias[ch])) as f32);
        }
    }
    y
}

/// LayerNormalization, or RMSNormalization when `rms`: statistics over the axes from `axis` on,
/// scale (and LayerNormalization's optional bias) broadcast to that normalized shape.
fn layer_norm(shape: &[usize], types: &[TensorType], d: &[&[f32]], axis: usize, eps: f64, rms: bool) -> Vec<f32> {
    let normalized = &shape[axis..];
    let row = prod(normalized);
    let scale_idx = broadcast_indices(&types[1].shape, normalized);
    let bias_idx = types.get(2).map(|t| broadcast_indices(&t.shape, normalized));
    let mut y = Vec::with_capacity(d[0].len());
    for chunk in d[0].chunks(row) {
        let (center, inv) = if rms {
            (0.0, 1.0 / (mean_square(chunk) + eps).sqrt())
        } else {
            let (mean, var) = mean_var(chunk);
            (mean, 1.0 / (var + eps).sqrt())
        };
        for (k, &v) in chunk.iter().enumerate() {
            let mut out = (f64::from(v) - center) * inv * f64::from(d[1][scale_idx[k]]);
            if let Some(bi) = &bias_idx {
                out += f64::from(d[2][bi[k]]);
            }
            y.push(out as f32);
        }
    }
    y
}

/// Softmax / LogSoftmax along one axis (opset 13): max-subtracted, exponentials summed in f64.
fn softmax(shape: &[usize], x: &[f32], axis: usize, log: bool) -> Vec<f32> {
    let (n, inner) = (shape[axis], prod(&shape[axis + 1..]));
    let mut y = vec![0.0f32; x.len()];
    for outer in 0..prod(&shape[..axis]) {
        for i in 0..inner {
            let at = |k: usize| outer * n * inner + k * inner + i;
            let max = (0..n).map(|k| f64::from(x[at(k)])).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..n).map(|k| (f64::from(x[at(k)]) - max).exp()).sum();
            for k in 0..n {
                let shifted = f64::from(x[at(k)]) - max;
                y[at(k)] = if log { (shifted - sum.ln()) as f32 } else { (shifted.exp() / sum) as f32 };
            }
        }
    }
    y
}

fn unified_norm(shape: &[usize], d: &[&[f32]], axis: usize, eps: f64) -> Vec<f32> {
    let (x, scale, bias, rv) = (d[0], d[1], d[2], d[3]);
    let (c, inner) = (shape[axis], prod(&shape[axis + 1..]));
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / inner) % c;
            (f64::from(scale[ch]) * f64::from(v) / (f64::from(rv[ch]) + eps).sqrt() + f64::from(bias[ch])) as f32
        })
        .collect()
}

fn power_norm(shape: &[usize], d: &[&[f32]], groups: usize, eps: f64, group_eps: f64) -> Vec<f32> {
    let (x, scale, bias, phi) = (d[0], d[1], d[2], d[3]);
    let last = shape[shape.len() - 1];
    let group_len = last / groups;
    let mut y = Vec::with_capacity(x.len());
    for (gi, chunk) in x.chunks(group_len).enumerate() {
        let inv = 1.0 / (mean_square(chunk) + group_eps).sqrt();
        for (j, &v) in chunk.iter().enumerate() {
            let ch = (gi % groups) * group_len + j;
            let scaled = f64::from(v) * inv / (f64::from(phi[ch]) + eps).sqrt();
            y.push((f64::from(scale[ch]) * scaled + f64::from(bias[ch])) as f32);
        }
    }
    y
}

fn evo_norm_s0(shape: &[usize], d: &[&[f32]], groups: usize, eps: f64) -> Vec<f32> {
    let (x, v, gamma, beta) = (d[0], d[1], d[2], d[3]);
    let (c, s) = (shape[1], shape[2] * shape[3]);
    let group_len = c / groups * s;
    let mut y = Vec::with_capacity(x.len());
    for (gi, chunk) in x.chunks(group_len).enumerate() {
        let (_, var) = mean_var(chunk);
        let std = (var + eps).sqrt();
        for (j, &xv) in chunk.iter().enumerate() {
            let ch = (gi % groups) * (c / groups) + j / s;
            let xv = f64::from(xv);
            let sig = 1.0 / (1.0 + (-(f64::from(v[ch]) * xv)).exp());
            y.push((xv * sig / std * f64::from(gamma[ch]) + f64::from(beta[ch])) as f32);
        }
    }
    y
}

fn evo_norm_b0(shape: &[usize], d: &[&[f32]], eps: f64) -> Vec<f32> {
    let (x, v, gamma, beta, rv) = (d[0], d[1], d[2], d[3], d[4]);
    let (c, s) = (shape[1], shape[2] * shape[3]);
    let mut y = Vec::with_capacity(x.len());
    for (ci, chunk) in x.chunks(s).enumerate() {
        let ch = ci % c;
        let (_, var) = mean_var(chunk);
        let instance_std = (var + eps).sqrt();
        let left = (f64::from(rv[ch]) + eps).sqrt();
        for &xv in chunk {
            let xv = f64::from(xv);
            let right = f64::from(v[ch]) * xv + instance_std;
            y.push((xv / max_nan(left, right) * f64::from(gamma[ch]) + f64::from(beta[ch])) as f32);
        }
    }
    y
}

/// RN-B. Per channel and region r ∈ {fg, bg} (statistics over N, H and W together, as the official
/// code's BatchNorm2d over the whole batch): rn = (x − μ_r)/√(σ²_r + ε·NHW/|r|) inside r, 0 outside;
/// y = rn_fg·(1 + γ_fg) + rn_bg·(1 + γ_bg) + β_fg + β_bg.
fn region_norm(shape: &[usize], d: &[&[f32]], eps: f64) -> Result<Vec<f32>, String> {
    let (x, mask) = (d[0], d[1]);
    if let Some(i) = mask.iter().position(|&m| m != 0.0 && m != 1.0) {
        return Err(format!("RegionNorm's mask must be 0 or 1, got {} at element {i}", mask[i]));
    }
    let (n, c, hw) = (shape[0], shape[1], shape[2] * shape[3]);
    let total = (n * hw) as f64;
    let mut y = vec![0.0f32; x.len()];
    let params = d[2].iter().zip(d[3]).zip(d[4]).zip(d[5]);
    for (ch, (((&gamma_fg, &beta_fg), &gamma_bg), &beta_bg)) in params.enumerate() {
        // Flat indices of this channel's elements, with whether each is foreground.
        let elems: Vec<(usize, bool)> =
            (0..n).flat_map(|b| (0..hw).map(move |p| ((b * c + ch) * hw + p, mask[b * hw + p] == 1.0))).collect();
        let beta = f64::from(beta_fg) + f64::from(beta_bg);
        for &i in elems.iter().map(|(i, _)| i) {
            y[i] = beta as f32;
        }
        for (fg, gamma) in [(true, gamma_fg), (false, gamma_bg)] {
            let region: Vec<f32> = elems.iter().filter(|e| e.1 == fg).map(|e| x[e.0]).collect();
            if region.is_empty() {
                continue;
            }
            let (mean, var) = mean_var(&region);
            let denom = (var + eps * total / region.len() as f64).sqrt();
            for &(i, _) in elems.iter().filter(|e| e.1 == fg) {
                y[i] = ((f64::from(x[i]) - mean) / denom * (1.0 + f64::from(gamma)) + beta) as f32;
            }
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape, v.to_vec()).unwrap()
    }

    /// Evaluates, checking that eval's output type is what infer promised.
    fn run(op: &Op, inputs: &[&Tensor]) -> Vec<f32> {
        let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let inferred = infer(op, &refs).unwrap();
        let out = eval(op, inputs).unwrap().remove(0);
        assert_eq!(out.ty(), inferred[0], "eval and infer disagree");
        out.as_f32().unwrap().to_vec()
    }

    fn infer_err(op: &Op, shapes: &[&[usize]]) -> String {
        let types: Vec<TensorType> = shapes.iter().map(|s| TensorType::f32(*s)).collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        infer(op, &refs).unwrap_err()
    }

    /// Relative tolerance 1e-6 (floor 1e-6 absolute): the implementation rounds an f64 result
    /// once, the expectations are f64 formulas rounded once, so they agree to an ulp or two.
    fn close(got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let tol = 1e-6 * w.abs().max(1.0);
            assert!((f64::from(g) - w).abs() <= tol, "element {i}: got {g}, want {w}\n got {got:?}\nwant {want:?}");
        }
    }

    /// Deterministic pseudo-random values in [-3, 3) (a 64-bit LCG), for formula cross-checks.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f64 / (1u64 << 24) as f64 * 6.0 - 3.0) as f32
            })
            .collect()
    }

    #[test]
    fn batch_norm_by_hand() {
        // Channel 0: (x − 1)/√(3 + 1)·2 + 0 = x − 1; channel 1: (x − 3)/√(0 + 1)·1 + 1 = x − 2.
        let x = t(&[1, 2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let (scale, bias, mean, var) =
            (t(&[2], &[2.0, 1.0]), t(&[2], &[0.0, 1.0]), t(&[2], &[1.0, 3.0]), t(&[2], &[3.0, 0.0]));
        let y = run(&Op::BatchNormalization { epsilon: 1.0 }, &[&x, &scale, &bias, &mean, &var]);
        assert_eq!(y, [0.0, 1.0, 1.0, 2.0]);
        let err = infer_err(&Op::BatchNormalization { epsilon: 1.0 }, &[&[1, 2, 2], &[2], &[3], &[2], &[2]]);
        assert!(err.contains("bias must have shape [2]"), "{err}");
        let err = infer_err(&Op::BatchNormalization { epsilon: 1.0 }, &[&[2], &[2], &[2], &[2], &[2]]);
        assert!(err.contains("rank ≥ 2"), "{err}");
    }

    /// x [1,4,2]: channels [0,2], [4,6], [1,3], [1,3]; scale [1,1,2,2], bias [0,0,0,1]; ε = 0.
    fn group_case() -> (Tensor, Tensor, Tensor) {
        (
            t(&[1, 4, 2], &[0.0, 2.0, 4.0, 6.0, 1.0, 3.0, 1.0, 3.0]),
            t(&[4], &[1.0, 1.0, 2.0, 2.0]),
            t(&[4], &[0.0, 0.0, 0.0, 1.0]),
        )
    }

    #[test]
    fn group_norm_by_hand() {
        let (x, scale, bias) = group_case();
        // G = 2: group {0,2,4,6} has mean 3, variance 5; group {1,3,1,3} mean 2, variance 1.
        let y = run(&Op::GroupNormalization { num_groups: 2, epsilon: 0.0 }, &[&x, &scale, &bias]);
        let r5 = 5f64.sqrt();
        close(&y, &[-3.0 / r5, -1.0 / r5, 1.0 / r5, 3.0 / r5, -2.0, 2.0, -1.0, 3.0]);
        // G = C: every channel alone has variance 1 → ±1 before the affine; equals InstanceNorm.
        let y = run(&Op::GroupNormalization { num_groups: 4, epsilon: 0.0 }, &[&x, &scale, &bias]);
        assert_eq!(y, [-1.0, 1.0, -1.0, 1.0, -2.0, 2.0, -1.0, 3.0]);
        let inst = run(&Op::InstanceNormalization { epsilon: 0.0 }, &[&x, &scale, &bias]);
        assert_eq!(inst, y);
        // G = 1: one group of all 8 values: mean 20/8 = 2.5, variance (Σx² = 76)/8 − 2.5² = 3.25.
        let y = run(&Op::GroupNormalization { num_groups: 1, epsilon: 0.0 }, &[&x, &scale, &bias]);
        let xs = [0.0, 2.0, 4.0, 6.0, 1.0, 3.0, 1.0, 3.0];
        let want: Vec<f64> = xs
            .iter()
            .enumerate()
            .map(|(i, &v)| (v - 2.5) / 3.25f64.sqrt() * [1.0, 1.0, 2.0, 2.0][i / 2] + [0.0, 0.0, 0.0, 1.0][i / 2])
            .collect();
        close(&y, &want);
        let err = infer_err(&Op::GroupNormalization { num_groups: 3, epsilon: 0.0 }, &[&[1, 4, 2], &[4], &[4]]);
        assert!(err.contains("multiple of num_groups 3"), "{err}");
        let err = infer_err(&Op::InstanceNormalization { epsilon: 0.0 }, &[&[1, 4], &[4], &[4]]);
        assert!(err.contains("rank ≥ 3"), "{err}");
    }

    #[test]
    fn crms_norm_is_the_first_components_of_rms_norm() {
        // Rows of x ∈ ℝ⁴ with zero mean, stored without their last component: CRMSNorm of the
        // first three equals the first three of RMSNorm of all four.
        let full = [1.0, -2.0, 4.0, -3.0, 0.5, 0.25, -1.0, 0.25];
        let stored: Vec<f32> = full.chunks(4).flat_map(|r| r[..3].to_vec()).collect();
        for eps in [0.0, 0.5] {
            let rms = run(&Op::RmsNormalization { axis: -1, epsilon: eps }, &[&t(&[2, 4], &full), &t(&[1], &[1.0])]);
            let want: Vec<f64> = rms.chunks(4).flat_map(|r| r[..3].iter().map(|&v| f64::from(v))).collect();
            let y = run(&Op::CrmsNormalization { epsilon: eps, d: 4 }, &[&t(&[2, 3], &stored)]);
            close(&y, &want);
        }
        // The formula itself, in f64, on rows of d − 1 = 11 stored values (not a multiple of 8)
        // whose implied last component −Σx′ is as large as any stored one.
        let x = values(3 * 11, 41);
        let want: Vec<f64> = x
            .chunks(11)
            .flat_map(|r| {
                let r: Vec<f64> = r.iter().map(|&v| f64::from(v)).collect();
                let last = -r.iter().sum::<f64>();
                let ms = (r.iter().map(|v| v * v).sum::<f64>() + last * last) / 12.0;
                r.into_iter().map(move |v| v / (ms + 1e-5).sqrt())
            })
            .collect();
        close(&run(&Op::CrmsNormalization { epsilon: 1e-5, d: 12 }, &[&t(&[3, 11], &x)]), &want);
        let err = infer_err(&Op::CrmsNormalization { epsilon: 0.0, d: 4 }, &[&[2, 4]]);
        assert!(err.contains("d − 1 = 3") && err.contains("[2,4]"), "{err}");
        assert!(Op::from_parts("CRMSNormalization", &Default::default()).unwrap_err().contains("'d'"));
    }

    #[test]
    fn layer_and_rms_norm_by_hand() {
        // Rows [1,3] (mean 2, var 1) and [0,4] (mean 2, var 4) both normalize to [-1, 1].
        let x = t(&[2, 2], &[1.0, 3.0, 0.0, 4.0]);
        let (scale, bias) = (t(&[2], &[2.0, 3.0]), t(&[2], &[1.0, 0.0]));
        let y = run(&Op::LayerNormalization { axis: -1, epsilon: 0.0 }, &[&x, &scale, &bias]);
        assert_eq!(y, [-1.0, 3.0, -1.0, 3.0]);
        let y = run(&Op::LayerNormalization { axis: 1, epsilon: 0.0 }, &[&x, &scale]);
        assert_eq!(y, [-2.0, 3.0, -2.0, 3.0]);
        // axis 0: all four values, mean 2, var (1+1+4+4)/4 = 2.5; a [1] scale broadcasts.
        let y = run(&Op::LayerNormalization { axis: 0, epsilon: 0.0 }, &[&x, &t(&[1], &[1.0])]);
        let s = 2.5f64.sqrt();
        close(&y, &[-1.0 / s, 1.0 / s, -2.0 / s, 2.0 / s]);
        let err = infer_err(&Op::LayerNormalization { axis: -1, epsilon: 0.0 }, &[&[2, 2], &[3]]);
        assert!(err.contains("does not broadcast to the normalized shape [2]"), "{err}");
        let err = infer_err(&Op::LayerNormalization { axis: 2, epsilon: 0.0 }, &[&[2, 2], &[2]]);
        assert!(err.contains("out of range"), "{err}");
        // RMS: mean of squares of [2,-2,2,-2] is 4 → x/2, times scale [1,2,3,4].
        let x = t(&[1, 4], &[2.0, -2.0, 2.0, -2.0]);
        let y = run(&Op::RmsNormalization { axis: -1, epsilon: 0.0 }, &[&x, &t(&[4], &[1.0, 2.0, 3.0, 4.0])]);
        assert_eq!(y, [1.0, -2.0, 3.0, -4.0]);
        // With ε: [3,4] → mean square 12.5, /√(12.5 + 0.5) = /√13.
        let y = run(&Op::RmsNormalization { axis: 1, epsilon: 0.5 }, &[&t(&[1, 2], &[3.0, 4.0]), &t(&[1], &[1.0])]);
        close(&y, &[3.0 / 13f64.sqrt(), 4.0 / 13f64.sqrt()]);
    }

    #[test]
    fn two_pass_f64_statistics_survive_a_large_offset() {
        // 10000 ± 1 (exact in f32): mean 10000, variance 1, so LN gives exactly ±1. A one-pass f32
        // E[x²] − E[x]² would lose the variance entirely (1e8 has an ulp of 8).
        let x = t(&[1, 4], &[10001.0, 9999.0, 10001.0, 9999.0]);
        let y = run(&Op::LayerNormalization { axis: -1, epsilon: 0.0 }, &[&x, &t(&[1], &[1.0])]);
        assert_eq!(y, [1.0, -1.0, 1.0, -1.0]);
        let y = run(
            &Op::InstanceNormalization { epsilon: 0.0 },
            &[&t(&[1, 1, 4], &[10001.0, 9999.0, 10001.0, 9999.0]), &t(&[1], &[1.0]), &t(&[1], &[0.0])],
        );
        assert_eq!(y, [1.0, -1.0, 1.0, -1.0]);
    }

    #[test]
    fn softmax_by_formula() {
        let x = t(&[1, 3], &[1.0, 2.0, 3.0]);
        let e = [1f64.exp(), 2f64.exp(), 3f64.exp()];
        let sum: f64 = e.iter().sum();
        close(&run(&Op::Softmax { axis: -1 }, &[&x]), &[e[0] / sum, e[1] / sum, e[2] / sum]);
        close(&run(&Op::LogSoftmax { axis: 1 }, &[&x]), &[1.0 - sum.ln(), 2.0 - sum.ln(), 3.0 - sum.ln()]);
        // axis 0 of [[1,2],[3,4]]: each column [a, a+2] → [1/(1+e²), e²/(1+e²)].
        let x = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let e2 = 2f64.exp();
        let (lo, hi) = (1.0 / (1.0 + e2), e2 / (1.0 + e2));
        close(&run(&Op::Softmax { axis: 0 }, &[&x]), &[lo, lo, hi, hi]);
        let err = infer(&Op::Softmax { axis: 0 }, &[&TensorType::new(DType::I64, [2])]).unwrap_err();
        assert!(err.contains("must be f32"), "{err}");
    }

    #[test]
    fn softmax_of_large_magnitudes_stays_finite() {
        // Without max-subtraction exp(1e30) is inf and the result NaN.
        let x = t(&[2, 3], &[1e30, -1e30, 1e30, 3e38, -3e38, 0.0]);
        let y = run(&Op::Softmax { axis: -1 }, &[&x]);
        for row in y.chunks(3) {
            assert!(row.iter().all(|v| v.is_finite()), "{row:?}");
            let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
            assert!((sum - 1.0).abs() <= 1e-6, "{sum}");
        }
        assert_eq!(y, [0.5, 0.0, 0.5, 1.0, 0.0, 0.0]);
        let y = run(&Op::LogSoftmax { axis: -1 }, &[&t(&[2], &[1000.0, 1000.0])]);
        close(&y, &[-(2f64.ln()), -(2f64.ln())]);
        // A long row of near-equal values: f64 accumulation keeps the sum at 1.
        let row: Vec<f32> = (0..100_000).map(|i| (i % 7) as f32 * 1e-3).collect();
        let y = run(&Op::Softmax { axis: 0 }, &[&t(&[100_000], &row)]);
        let sum: f64 = y.iter().map(|&v| f64::from(v)).sum();
        assert!((sum - 1.0).abs() <= 1e-6, "{sum}");
    }

    #[test]
    fn unified_and_power_norm_by_hand() {
        // γ·x/√(rv + ε) + β, ε = 1: column 0 → 2x/2 = x; column 1 → x/1 + 1.
        let x = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let p = [t(&[2], &[2.0, 1.0]), t(&[2], &[0.0, 1.0]), t(&[2], &[3.0, 0.0])];
        let y = run(&Op::UnifiedNorm { axis: -1, epsilon: 1.0 }, &[&x, &p[0], &p[1], &p[2]]);
        assert_eq!(y, [1.0, 3.0, 3.0, 5.0]);
        // Along axis 0 the same parameters apply per row.
        let y = run(&Op::UnifiedNorm { axis: 0, epsilon: 1.0 }, &[&x, &p[0], &p[1], &p[2]]);
        assert_eq!(y, [1.0, 2.0, 4.0, 5.0]);
        // PowerNorm, 2 groups of 2: [2,-2] has mean square 4 → [1,-1]; [1,1] → [1,1]; then
        // γ·/√(φ + 0) + β with φ = [1,1,4,4], γ = [1,3,1,1], β = [0,0,0,1].
        let x = t(&[1, 4], &[2.0, -2.0, 1.0, 1.0]);
        let (g, b, phi) =
            (t(&[4], &[1.0, 3.0, 1.0, 1.0]), t(&[4], &[0.0, 0.0, 0.0, 1.0]), t(&[4], &[1.0, 1.0, 4.0, 4.0]));
        let op = Op::PowerNorm { groups: 2, epsilon: 0.0, group_epsilon: 0.0 };
        assert_eq!(run(&op, &[&x, &g, &b, &phi]), [1.0, -3.0, 0.5, 1.5]);
        let err =
            infer_err(&Op::PowerNorm { groups: 3, epsilon: 0.0, group_epsilon: 0.0 }, &[&[1, 4], &[4], &[4], &[4]]);
        assert!(err.contains("multiple of groups 3"), "{err}");
    }

    #[test]
    fn power_norm_matches_formula_per_token() {
        let (tokens, d, groups) = (3, 6, 3);
        let xv = values(tokens * d, 1);
        let (g, b, phi) = (values(d, 2), values(d, 3), values(d, 4).iter().map(|v| v.abs() + 0.1).collect::<Vec<_>>());
        let op = Op::PowerNorm { groups, epsilon: 1e-5, group_epsilon: 1e-5 };
        let y = run(&op, &[&t(&[tokens, d], &xv), &t(&[d], &g), &t(&[d], &b), &t(&[d], &phi)]);
        let mut want = Vec::new();
        for tok in 0..tokens {
            for c in 0..d {
                let group = c / (d / groups);
                let members: Vec<f64> =
                    (0..d).filter(|k| k / (d / groups) == group).map(|k| f64::from(xv[tok * d + k])).collect();
                let ms = members.iter().map(|v| v * v).sum::<f64>() / members.len() as f64;
                let gs = f64::from(xv[tok * d + c]) / (ms + 1e-5f32 as f64).sqrt();
                want.push(f64::from(g[c]) * gs / (f64::from(phi[c]) + 1e-5f32 as f64).sqrt() + f64::from(b[c]));
            }
        }
        close(&y, &want);
    }

    /// EvoNorm-S0 written directly from timm's definition: group_std over (C/G, H, W) with
    /// unbiased=False, x·σ(v·x)/std·γ + β.
    fn evo_s0_reference(
        shape: [usize; 4],
        x: &[f32],
        v: &[f32],
        g: &[f32],
        b: &[f32],
        groups: usize,
        eps: f64,
    ) -> Vec<f64> {
        let [n, c, h, w] = shape;
        let at = |ni: usize, ci: usize, hi: usize, wi: usize| f64::from(x[((ni * c + ci) * h + hi) * w + wi]);
        let mut out = vec![0.0; x.len()];
        let cg = c / groups;
        for ni in 0..n {
            for gi in 0..groups {
                let members: Vec<f64> = (gi * cg..(gi + 1) * cg)
                    .flat_map(|ci| (0..h).flat_map(move |hi| (0..w).map(move |wi| (ci, hi, wi))))
                    .map(|(ci, hi, wi)| at(ni, ci, hi, wi))
                    .collect();
                let mean = members.iter().sum::<f64>() / members.len() as f64;
                let var = members.iter().map(|m| (m - mean) * (m - mean)).sum::<f64>() / members.len() as f64;
                for ci in gi * cg..(gi + 1) * cg {
                    for hi in 0..h {
                        for wi in 0..w {
                            let xv = at(ni, ci, hi, wi);
                            let sig = 1.0 / (1.0 + (-f64::from(v[ci]) * xv).exp());
                            out[((ni * c + ci) * h + hi) * w + wi] =
                                xv * sig / (var + eps).sqrt() * f64::from(g[ci]) + f64::from(b[ci]);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn evo_norm_s0() {
        // By hand: v = 0 gives σ = 1/2; one group of [1,3,1,3] has variance 1 → y = x/2.
        let x = t(&[1, 2, 1, 2], &[1.0, 3.0, 1.0, 3.0]);
        let (v, g, b) = (t(&[2], &[0.0, 0.0]), t(&[2], &[1.0, 1.0]), t(&[2], &[0.0, 0.0]));
        let y = run(&Op::EvoNormS0 { groups: 1, epsilon: 0.0 }, &[&x, &v, &g, &b]);
        assert_eq!(y, [0.5, 1.5, 0.5, 1.5]);
        let shape = [2, 4, 2, 3];
        let xv = values(48, 7);
        let (v, g, b) = (values(4, 8), values(4, 9), values(4, 10));
        for groups in [1, 2, 4] {
            let op = Op::EvoNormS0 { groups, epsilon: 1e-5 };
            let y = run(&op, &[&t(&shape, &xv), &t(&[4], &v), &t(&[4], &g), &t(&[4], &b)]);
            close(&y, &evo_s0_reference(shape, &xv, &v, &g, &b, groups, f64::from(1e-5f32)));
        }
        let err = infer_err(&Op::EvoNormS0 { groups: 3, epsilon: 0.0 }, &[&[1, 4, 2, 2], &[4], &[4], &[4]]);
        assert!(err.contains("multiple of groups 3"), "{err}");
        let err = infer_err(&Op::EvoNormS0 { groups: 1, epsilon: 0.0 }, &[&[1, 4, 2], &[4], &[4], &[4]]);
        assert!(err.contains("rank 4"), "{err}");
    }

    #[test]
    fn evo_norm_b0() {
        // By hand, ε = 0: [1,3] has instance std 1; right = v·x + 1 = [2,4]; left = √9 = 3;
        // x / max(left, right) = [1/3, 3/4]; ·2 + 1.
        let x = t(&[1, 1, 1, 2], &[1.0, 3.0]);
        let p: Vec<Tensor> = [1.0, 2.0, 1.0, 9.0].iter().map(|&v| t(&[1], &[v])).collect();
        let y = run(&Op::EvoNormB0 { epsilon: 0.0 }, &[&x, &p[0], &p[1], &p[2], &p[3]]);
        close(&y, &[1.0 + 2.0 / 3.0, 2.5]);
        // Against timm's formula: instance variance over (H, W), unbiased=False; ε in both roots.
        let (n, c, h, w) = (2, 3, 2, 2);
        let xv = values(n * c * h * w, 11);
        let (v, g, b) = (values(c, 12), values(c, 13), values(c, 14));
        let rv: Vec<f32> = values(c, 15).iter().map(|r| r.abs()).collect();
        let eps = 1e-3f32;
        let y = run(
            &Op::EvoNormB0 { epsilon: eps },
            &[&t(&[n, c, h, w], &xv), &t(&[c], &v), &t(&[c], &g), &t(&[c], &b), &t(&[c], &rv)],
        );
        let eps = f64::from(eps);
        let mut want = Vec::new();
        for plane in 0..n * c {
            let ci = plane % c;
            let vals: Vec<f64> = xv[plane * h * w..(plane + 1) * h * w].iter().map(|&q| f64::from(q)).collect();
            let mean = vals.iter().sum::<f64>() / 4.0;
            let var = vals.iter().map(|q| (q - mean).powi(2)).sum::<f64>() / 4.0;
            for &q in &vals {
                let left = (f64::from(rv[ci]) + eps).sqrt();
                let right = f64::from(v[ci]) * q + (var + eps).sqrt();
                want.push(q / left.max(right) * f64::from(g[ci]) + f64::from(b[ci]));
            }
        }
        close(&y, &want);
    }

    /// RN-B as the official code computes it: per region, μ = Σ(x·m)/Σm; BatchNorm (batch
    /// statistics over N, H, W, ε) of x·m + (1 − m)·μ; times √(Σm / NHW); then the affine.
    fn region_reference(shape: [usize; 4], x: &[f32], mask: &[f32], p: [&[f32]; 4], eps: f64) -> Vec<f64> {
        let [n, c, h, w] = shape;
        let hw = h * w;
        let total = (n * hw) as f64;
        let mut out = vec![0.0; x.len()];
        for ci in 0..c {
            let idx: Vec<(usize, usize)> =
                (0..n).flat_map(|ni| (0..hw).map(move |k| ((ni * c + ci) * hw + k, ni * hw + k))).collect();
            let mut rn = vec![0.0; idx.len()];
            for fg in [true, false] {
                let m = |j: usize| if fg { f64::from(mask[j]) } else { 1.0 - f64::from(mask[j]) };
                let mut sr: f64 = idx.iter().map(|&(_, j)| m(j)).sum();
                if sr == 0.0 {
                    sr = 1.0;
                }
                let mu = idx.iter().map(|&(i, j)| f64::from(x[i]) * m(j)).sum::<f64>() / sr;
                let z: Vec<f64> = idx.iter().map(|&(i, j)| f64::from(x[i]) * m(j) + (1.0 - m(j)) * mu).collect();
                let zm = z.iter().sum::<f64>() / total;
                let zv = z.iter().map(|q| (q - zm).powi(2)).sum::<f64>() / total;
                for (k, zq) in z.iter().enumerate() {
                    rn[k] += (zq - zm) / (zv + eps).sqrt() * (sr / total).sqrt();
                }
            }
            let [gf, bf, gb, bb] = p;
            for (k, &(i, j)) in idx.iter().enumerate() {
                let m = f64::from(mask[j]);
                out[i] = rn[k] * m * (1.0 + f64::from(gf[ci]))
                    + f64::from(bf[ci])
                    + rn[k] * (1.0 - m) * (1.0 + f64::from(gb[ci]))
                    + f64::from(bb[ci]);
            }
        }
        out
    }

    #[test]
    fn region_norm() {
        // By hand: fg {1,3}: μ 2, σ² 1, ε·NHW/|r| = 0.5·4/2 = 1 → ±1/√2, ·(1+1); bg {10,20}: μ 15,
        // σ² 25, + 1 → ±5/√26, ·(1+0); β_fg + β_bg = 0.75 everywhere.
        let x = t(&[1, 1, 1, 4], &[1.0, 3.0, 10.0, 20.0]);
        let mask = t(&[1, 1, 1, 4], &[1.0, 1.0, 0.0, 0.0]);
        let p: Vec<Tensor> = [1.0, 0.5, 0.0, 0.25].iter().map(|&v| t(&[1], &[v])).collect();
        let y = run(&Op::RegionNorm { epsilon: 0.5 }, &[&x, &mask, &p[0], &p[1], &p[2], &p[3]]);
        let (a, b) = (2f64.sqrt(), 5.0 / 26f64.sqrt());
        close(&y, &[0.75 - a, 0.75 + a, 0.75 - b, 0.75 + b]);
        // Against the official computation, batch of 2, including an image that is all foreground.
        let shape = [2, 3, 2, 3];
        let xv = values(36, 21);
        let mv: Vec<f32> = [1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1].iter().map(|&m| m as f32).collect();
        let pv: Vec<Vec<f32>> = (0..4).map(|s| values(3, 22 + s)).collect();
        let ps: Vec<Tensor> = pv.iter().map(|v| t(&[3], v)).collect();
        let y = run(
            &Op::RegionNorm { epsilon: 1e-5 },
            &[&t(&shape, &xv), &t(&[2, 1, 2, 3], &mv), &ps[0], &ps[1], &ps[2], &ps[3]],
        );
        let want = region_reference(shape, &xv, &mv, [&pv[0], &pv[1], &pv[2], &pv[3]], f64::from(1e-5f32));
        close(&y, &want);
        // An empty background region contributes nothing (the official code's Sr = 0 → 1 case).
        let ones = vec![1.0f32; 12];
        let y = run(
            &Op::RegionNorm { epsilon: 1e-5 },
            &[&t(&shape, &xv), &t(&[2, 1, 2, 3], &ones), &ps[0], &ps[1], &ps[2], &ps[3]],
        );
        close(&y, &region_reference(shape, &xv, &ones, [&pv[0], &pv[1], &pv[2], &pv[3]], f64::from(1e-5f32)));
        let half = t(&[1, 1, 1, 4], &[1.0, 0.5, 0.0, 0.0]);
        let err = eval(&Op::RegionNorm { epsilon: 0.5 }, &[&x, &half, &p[0], &p[1], &p[2], &p[3]]).unwrap_err();
        assert!(err.contains("mask must be 0 or 1"), "{err}");
        let err = infer_err(&Op::RegionNorm { epsilon: 0.5 }, &[&[1, 2, 2, 2], &[1, 2, 2, 2], &[2], &[2], &[2], &[2]]);
        assert!(err.contains("mask must have shape [1,1,2,2]"), "{err}");
    }

    #[test]
    fn eval_revalidates_instead_of_panicking() {
        let x = t(&[1, 4, 2], &[0.0; 8]);
        let err = eval(&Op::GroupNormalization { num_groups: 3, epsilon: 0.0 }, &[&x, &x, &x]).unwrap_err();
        assert!(err.contains("multiple of num_groups"), "{err}");
        let err = eval(&Op::Softmax { axis: 0 }, &[]).unwrap_err();
        assert!(err.contains("takes 1 input(s), got 0"), "{err}");
    }
}
