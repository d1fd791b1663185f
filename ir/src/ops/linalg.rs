//! Matrix products: MatMul (numpy matmul semantics) and Gemm. f32 in, f64 accumulation, one rounding.

use super::broadcast::{broadcast_indices, broadcast_shapes};
use super::{expect_f32, not_in_family};
use crate::dtype::{ShapeDisplay, TensorType};
use crate::op::Op;
use crate::tensor::Tensor;

/// The shapes of a MatMul: batch shape, M, K, N, and the output shape (1-D promotions removed).
struct MatMulShape {
    batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    out: Vec<usize>,
}

fn matmul_shape(a: &[usize], b: &[usize]) -> Result<MatMulShape, String> {
    if a.is_empty() || b.is_empty() {
        return Err(format!("MatMul needs operands of rank ≥ 1, got {} · {}", ShapeDisplay(a), ShapeDisplay(b)));
    }
    // numpy: a 1-D left operand becomes [1,K], a 1-D right operand [K,1]; the added dims are dropped.
    let a2: Vec<usize> = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
    let b2: Vec<usize> = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(format!("inner dimensions differ: {} · {}", ShapeDisplay(a), ShapeDisplay(b)));
    }
    let batch = broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2])
        .map_err(|e| format!("MatMul batch dimensions: {e}"))?;
    let mut out = batch.clone();
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(MatMulShape { batch, m, k, n, out })
}

/// Gemm's M, K, N after the transposes, checking ranks, K and C's broadcast to [M, N].
fn gemm_shape(op: &Op, trans_a: bool, trans_b: bool, inputs: &[&[usize]]) -> Result<(usize, usize, usize), String> {
    let (a, b) = (inputs[0], inputs[1]);
    if a.len() != 2 || b.len() != 2 {
        return Err(format!("{} needs 2-D A and B, got {} and {}", op.name(), ShapeDisplay(a), ShapeDisplay(b)));
    }
    let (m, k) = if trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
    let (kb, n) = if trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
    if k != kb {
        return Err(format!(
            "inner dimensions differ: {}{} · {}{}",
            ShapeDisplay(a),
            if trans_a { "ᵀ" } else { "" },
            ShapeDisplay(b),
            if trans_b { "ᵀ" } else { "" }
        ));
    }
    if let Some(c) = inputs.get(2) {
        let mn = [m, n];
        let ok = c.len() <= 2 && broadcast_shapes(c, &mn).is_ok_and(|s| s == mn);
        if !ok {
            return Err(format!("Gemm's C {} does not broadcast to the result [{m},{n}]", ShapeDisplay(c)));
        }
    }
    Ok((m, k, n))
}

pub(crate) fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    expect_f32(op, inputs)?;
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape.as_slice()).collect();
    match op {
        Op::MatMul => Ok(vec![TensorType::f32(matmul_shape(shapes[0], shapes[1])?.out)]),
        Op::Gemm { trans_a, trans_b, .. } => {
            let (m, _, n) = gemm_shape(op, *trans_a, *trans_b, &shapes)?;
            Ok(vec![TensorType::f32([m, n])])
        }
        _ => Err(not_in_family(op)),
    }
}

pub(crate) fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    let data: Vec<&[f32]> = inputs
        .iter()
        .map(|t| t.as_f32().ok_or_else(|| format!("{} needs f32 inputs", op.name())))
        .collect::<Result<_, _>>()?;
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    match op {
        Op::MatMul => {
            let s = matmul_shape(shapes[0], shapes[1])?;
            let (a, b) = (data[0], data[1]);
            let a_batch = &shapes[0][..shapes[0].len().saturating_sub(2)];
            let b_batch = &shapes[1][..shapes[1].len().saturating_sub(2)];
            let ai = broadcast_indices(a_batch, &s.batch);
            let bi = broadcast_indices(b_batch, &s.batch);
            let (m, k, n) = (s.m, s.k, s.n);
            let mut out = Vec::with_capacity(ai.len() * m * n);
            for (&ab, &bb) in ai.iter().zip(&bi) {
                let a = &a[ab * m * k..(ab + 1) * m * k];
                let b = &b[bb * k * n..(bb + 1) * k * n];
                for i in 0..m {
                    for j in 0..n {
                        let acc: f64 = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
                        out.push(acc as f32);
                    }
                }
            }
            Ok(vec![Tensor::from_f32(s.out, out)?])
        }
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            let (m, k, n) = gemm_shape(op, *trans_a, *trans_b, &shapes)?;
            let (a, b) = (data[0], data[1]);
            // Element (i, p) of op(A) and (p, j) of op(B) in the stored row-major layout.
            let at = |i: usize, p: usize| if *trans_a { a[p * m + i] } else { a[i * k + p] };
            let bt = |p: usize, j: usize| if *trans_b { b[j * k + p] } else { b[p * n + j] };
            // beta = 0 means C is not read (BLAS's convention, and ONNX Runtime's): an infinite or
            // NaN C does not make 0·C NaN.
            let c = inputs.get(2).filter(|_| *beta != 0.0).map(|t| (broadcast_indices(t.shape(), &[m, n]), data[2]));
            let mut out = Vec::with_capacity(m * n);
            for i in 0..m {
                for j in 0..n {
                    let dot: f64 = (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum();
                    let mut y = *alpha as f64 * dot;
                    if let Some((ci, cd)) = &c {
                        y += *beta as f64 * cd[ci[i * n + j]] as f64;
                    }
                    out.push(y as f32);
                }
            }
            Ok(vec![Tensor::from_f32([m, n], out)?])
        }
        _ => Err(not_in_family(op)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ops::test_support::{infer_err, run, t};

    #[test]
    fn matmul_2d_and_1d() {
        // [[1,2],[3,4]] · [[5,6],[7,8]] = [[19,22],[43,50]].
        let a = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let b = t(&[2, 2], &[5.0, 6.0, 7.0, 8.0]);
        assert_eq!(run(&Op::MatMul, &[&a, &b]).as_f32().unwrap(), &[19.0, 22.0, 43.0, 50.0]);
        // Vector on the left: [1,1]·B = [12,14], shape [2].
        let v = t(&[2], &[1.0, 1.0]);
        let r = run(&Op::MatMul, &[&v, &b]);
        assert_eq!(r.shape(), &[2]);
        assert_eq!(r.as_f32().unwrap(), &[12.0, 14.0]);
        // Vector on the right: A·[1,1] = [3,7].
        let r = run(&Op::MatMul, &[&a, &v]);
        assert_eq!(r.shape(), &[2]);
        assert_eq!(r.as_f32().unwrap(), &[3.0, 7.0]);
        // Both vectors: a scalar dot product.
        let r = run(&Op::MatMul, &[&v, &v]);
        assert_eq!(r.shape(), &[] as &[usize]);
        assert_eq!(r.as_f32().unwrap(), &[2.0]);
    }

    #[test]
    fn matmul_batch_broadcast() {
        // A [2,1,2] (two 1×2 rows) · B [2,1] broadcast over the batch → [2,1,1].
        let a = t(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let b = t(&[2, 1], &[10.0, 1.0]);
        let r = run(&Op::MatMul, &[&a, &b]);
        assert_eq!(r.shape(), &[2, 1, 1]);
        assert_eq!(r.as_f32().unwrap(), &[12.0, 34.0]);
        // Batch [2,1] × [3] → [2,3]: A [2,1,1,1], B [3,1,1].
        let a = t(&[2, 1, 1, 1], &[1.0, 2.0]);
        let b = t(&[3, 1, 1], &[1.0, 10.0, 100.0]);
        let r = run(&Op::MatMul, &[&a, &b]);
        assert_eq!(r.shape(), &[2, 3, 1, 1]);
        assert_eq!(r.as_f32().unwrap(), &[1.0, 10.0, 100.0, 2.0, 20.0, 200.0]);
    }

    #[test]
    fn matmul_errors() {
        assert_eq!(infer_err(&Op::MatMul, &[&[3, 4], &[5, 6]]), "inner dimensions differ: [3,4] · [5,6]");
        assert!(infer_err(&Op::MatMul, &[&[], &[5]]).contains("rank ≥ 1"));
        let err = infer_err(&Op::MatMul, &[&[2, 3, 4], &[3, 4, 5]]);
        assert!(err.contains("batch dimensions") && err.contains("do not broadcast"), "{err}");
        let types = [TensorType::new(crate::DType::I64, [2, 2]), TensorType::f32([2, 2])];
        let err = Op::MatMul.infer(&[&types[0], &types[1]]).unwrap_err();
        assert_eq!(err, "MatMul input 0 must be f32, got i64");
    }

    /// Found by the differential tester: Gemm with beta = 0 and C = −∞ was NaN in the interpreter
    /// (0·−∞) and 0 in the JIT and ONNX Runtime, which do not read C when beta is 0.
    #[test]
    fn gemm_with_beta_zero_ignores_c() {
        let a = t(&[2, 2], &[1.0, 1.0, 1.0, 1.0]);
        let b = t(&[2, 1], &[0.0, 0.0]);
        let c = t(&[1], &[f32::NEG_INFINITY]);
        let gemm = Op::Gemm { alpha: 1.0, beta: 0.0, trans_a: false, trans_b: false };
        assert_eq!(run(&gemm, &[&a, &b, &c]).as_f32().unwrap(), &[0.0, 0.0]);
    }

    #[test]
    fn gemm_transposes_and_bias() {
        let gemm = |trans_a, trans_b| Op::Gemm { alpha: 2.0, beta: 0.5, trans_a, trans_b };
        // A = [[1,2],[3,4]], B = [[5,6],[7,8]]; C = [10,20] per column.
        // 2·A·B = [[38,44],[86,100]]; + 0.5·C = [[43,54],[91,110]].
        let a = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let b = t(&[2, 2], &[5.0, 6.0, 7.0, 8.0]);
        let c = t(&[2], &[10.0, 20.0]);
        assert_eq!(run(&gemm(false, false), &[&a, &b, &c]).as_f32().unwrap(), &[43.0, 54.0, 91.0, 110.0]);
        // Aᵀ = [[1,3],[2,4]]; Aᵀ·B = [[26,30],[38,44]]; ·2 + 5/10 → [[57,70],[81,98]].
        assert_eq!(run(&gemm(true, false), &[&a, &b, &c]).as_f32().unwrap(), &[57.0, 70.0, 81.0, 98.0]);
        // A·Bᵀ = [[17,23],[39,53]]; ·2 with C [2,1] = [[1],[2]]·0.5 → [[34.5,46.5],[79,107]].
        let c_col = t(&[2, 1], &[1.0, 2.0]);
        assert_eq!(run(&gemm(false, true), &[&a, &b, &c_col]).as_f32().unwrap(), &[34.5, 46.5, 79.0, 107.0]);
        // Rectangular without C: A [1,3]ᵀ stored as [3,1], B [3,2]: [1,2,3]·B.
        let a = t(&[3, 1], &[1.0, 2.0, 3.0]);
        let b = t(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let r = run(&Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: true, trans_b: false }, &[&a, &b]);
        assert_eq!(r.shape(), &[1, 2]);
        assert_eq!(r.as_f32().unwrap(), &[4.0, 5.0]);
    }

    #[test]
    fn gemm_errors() {
        let g = Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: false };
        assert_eq!(infer_err(&g, &[&[2, 3], &[2, 3]]), "inner dimensions differ: [2,3] · [2,3]");
        assert!(infer_err(&g, &[&[2, 3, 1], &[3, 2]]).contains("needs 2-D A and B"));
        let err = infer_err(&g, &[&[2, 3], &[3, 4], &[3]]);
        assert_eq!(err, "Gemm's C [3] does not broadcast to the result [2,4]");
        // C may not make the result larger (unidirectional).
        assert!(infer_err(&g, &[&[2, 3], &[3, 4], &[3, 2, 4]]).contains("does not broadcast"));
    }
}
