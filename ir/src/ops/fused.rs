//! kiln-domain fused ops that the optimizer introduces: MaskedSoftmax and Attention. Their
//! reference semantics are compositions of the ops they replace, so the interpreter checks a fused
//! graph against exactly what was fused.

use super::broadcast::{broadcast_indices, broadcast_shapes};
use super::{expect_f32, not_in_family};
use crate::dtype::TensorType;
use crate::op::{BinaryOp, Op};
use crate::tensor::Tensor;

pub(crate) fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    expect_f32(op, inputs)?;
    match op {
        Op::MaskedSoftmax => {
            let (x, m) = (inputs[0], inputs[1]);
            if x.rank() == 0 {
                return Err("MaskedSoftmax needs an input of rank ≥ 1".into());
            }
            let out = broadcast_shapes(&x.shape, &m.shape)?;
            if out != x.shape {
                return Err(format!("the mask {m} must broadcast to the input {x} without enlarging it"));
            }
            Ok(vec![x.clone()])
        }
        Op::Attention { .. } => {
            let scores = Op::MatMul.infer(&[inputs[0], inputs[1]]).map_err(|e| format!("Q·Kt: {e}"))?;
            let scores = &scores[0];
            if scores.rank() < 2 {
                return Err(format!("scores {scores} must have rank ≥ 2"));
            }
            if let Some(bias) = inputs.get(3) {
                let with_bias = broadcast_shapes(&scores.shape, &bias.shape)?;
                if with_bias != scores.shape {
                    return Err(format!(
                        "the bias {bias} must broadcast to the scores {scores} without enlarging them"
                    ));
                }
            }
            Op::MatMul.infer(&[scores, inputs[2]]).map_err(|e| format!("softmax(scores)·V: {e}"))
        }
        _ => Err(not_in_family(op)),
    }
}

pub(crate) fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    match op {
        Op::MaskedSoftmax => {
            let (x, m) = (inputs[0], inputs[1]);
            let xs = x.as_f32().ok_or("MaskedSoftmax input must be f32")?;
            let ms = m.as_f32().ok_or("MaskedSoftmax mask must be f32")?;
            let mask_index = broadcast_indices(m.shape(), x.shape());
            let d = *x.shape().last().ok_or("MaskedSoftmax needs rank ≥ 1")?;
            let mut out = vec![0.0f32; xs.len()];
            // The maximum is taken over the kept elements (mask ≠ 0) and masked elements weigh
            // exactly 0: a masked-out maximum far above the kept values would otherwise make every
            // kept exp(x − max) underflow (found by the differential tester). The weights stay in
            // f64 until divided.
            let mut e = vec![0.0f64; d];
            for (r, row) in xs.chunks(d).enumerate() {
                let kept = |j: usize| ms[mask_index[r * d + j]] != 0.0;
                let max = (0..d).filter(|&j| kept(j)).fold(f32::NEG_INFINITY, |a, j| a.max(row[j]));
                let mut sum = 0.0f64;
                for (j, &v) in row.iter().enumerate() {
                    e[j] = if kept(j) {
                        (f64::from(v) - f64::from(max)).exp() * f64::from(ms[mask_index[r * d + j]])
                    } else {
                        0.0
                    };
                    sum += e[j];
                }
                for (o, &w) in out[r * d..(r + 1) * d].iter_mut().zip(&e) {
                    *o = (w / sum) as f32;
                }
            }
            Ok(vec![Tensor::from_f32(x.shape().to_vec(), out)?])
        }
        Op::Attention { scale, nan_to_zero } => {
            let scores = Op::MatMul.eval(&[inputs[0], inputs[1]])?.remove(0);
            let scale = Tensor::scalar_f32(*scale);
            let mut scores = Op::Binary(BinaryOp::Mul).eval(&[&scores, &scale])?.remove(0);
            if let Some(bias) = inputs.get(3) {
                scores = Op::Binary(BinaryOp::Add).eval(&[&scores, bias])?.remove(0);
            }
            let mut probs = Op::Softmax { axis: -1 }.eval(&[&scores])?.remove(0);
            if *nan_to_zero {
                let shape = probs.shape().to_vec();
                let p = probs.as_f32().map(|p| p.iter().map(|&x| if x.is_nan() { 0.0 } else { x }).collect());
                probs = Tensor::from_f32(shape, p.unwrap_or_default())?;
            }
            Op::MatMul.eval(&[&probs, inputs[2]])
        }
        _ => Err(not_in_family(op)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
    }

    /// Found by the differential tester: with the row maximum masked out and far above the kept
    /// values, the kept weights underflowed (the interpreter gave [0, 0, 0], the JIT NaN); the
    /// maximum is now over the kept elements only. 2000 is beyond even f64's exponent range.
    #[test]
    fn masked_softmax_keeps_weights_that_underflow_f32() {
        let x = t(&[1, 3], &[2000.0, 0.0, 1.0]);
        let m = t(&[3], &[0.0, 1.0, 1.0]);
        let y = Op::MaskedSoftmax.eval(&[&x, &m]).unwrap().remove(0);
        let e = 1f64.exp();
        let want = [0.0, 1.0 / (1.0 + e), e / (1.0 + e)];
        for (g, w) in y.as_f32().unwrap().iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn masked_softmax_weights_by_the_mask() {
        // Row [0, ln 3, 5] with mask [1, 1, 0]: exp → [1, 3, ·], masked sum 4.
        let x = t(&[1, 3], &[0.0, 3f32.ln(), 5.0]);
        let m = t(&[3], &[1.0, 1.0, 0.0]);
        let y = Op::MaskedSoftmax.eval(&[&x, &m]).unwrap().remove(0);
        let y = y.as_f32().unwrap();
        assert!((y[0] - 0.25).abs() < 1e-6 && (y[1] - 0.75).abs() < 1e-6 && y[2] == 0.0, "{y:?}");
        let bad = TensorType::f32([2, 3]);
        assert!(Op::MaskedSoftmax.infer(&[&TensorType::f32([3]), &bad]).is_err());
    }

    #[test]
    fn attention_shapes() {
        let q = TensorType::f32([2, 4, 8]);
        let kt = TensorType::f32([2, 8, 6]);
        let v = TensorType::f32([2, 6, 5]);
        let out = Op::Attention { scale: 0.5, nan_to_zero: false }.infer(&[&q, &kt, &v]).unwrap();
        assert_eq!(out, vec![TensorType::f32([2, 4, 5])]);
        let too_big_bias = TensorType::f32([3, 4, 6]);
        assert!(Op::Attention { scale: 0.5, nan_to_zero: false }.infer(&[&q, &kt, &v, &too_big_bias]).is_err());
    }
}
