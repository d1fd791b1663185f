//! Constant folding: evaluates the compile-time terms ([`FoldOp`]) that rewrites leave on weights.
//! IR ops over constants are evaluated with the reference `Op::eval` by the caller; this module
//! only knows the fold terms. Arithmetic in f64, rounded once to f32, so a folded weight is as
//! close to exact as f32 allows.

use crate::lang::FoldOp;
use kiln_ir::{Tensor, TensorType};

fn f32s<'a>(t: &'a Tensor, what: &str) -> Result<&'a [f32], String> {
    t.as_f32().ok_or_else(|| format!("{what}: expected f32 data, got {}", t.dtype()))
}

fn tensor(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, String> {
    Tensor::from_f32(shape, data)
}

/// Evaluates one fold term on constant inputs; `out` is the type the analysis inferred.
pub fn eval_fold(op: FoldOp, args: &[&Tensor], out: &TensorType) -> Result<Tensor, String> {
    let name = format!("{op:?}");
    let arg = |i: usize| -> Result<&[f32], String> {
        let t = args.get(i).ok_or_else(|| format!("{name}: missing input {i}"))?;
        f32s(t, &name)
    };
    let check_len = |v: &[f32], n: usize| -> Result<(), String> {
        if v.len() == n { Ok(()) } else { Err(format!("{name}: expected {n} elements, got {}", v.len())) }
    };
    match op {
        FoldOp::ScaleRows | FoldOp::ScaleCols => {
            let (w, s) = (arg(0)?, arg(1)?);
            let shape = args[0].shape().to_vec();
            let axis = if op == FoldOp::ScaleRows { 0 } else { 1 };
            let dim = *shape.get(axis).ok_or_else(|| format!("{name}: weight of rank {}", shape.len()))?;
            check_len(s, dim)?;
            let inner: usize = shape[axis + 1..].iter().product();
            let data = w.iter().enumerate().map(|(i, &x)| x * s[(i / inner) % dim]).collect();
            tensor(shape, data)
        }
        FoldOp::CenterLast => {
            let w = arg(0)?;
            let shape = args[0].shape().to_vec();
            let d = *shape.last().ok_or_else(|| format!("{name}: scalar input"))?;
            let mut data = Vec::with_capacity(w.len());
            for row in w.chunks(d) {
                let mean = row.iter().map(|&x| x as f64).sum::<f64>() / d as f64;
                data.extend(row.iter().map(|&x| (x as f64 - mean) as f32));
            }
            tensor(shape, data)
        }
        FoldOp::CenterRows => {
            let w = arg(0)?;
            let shape = args[0].shape().to_vec();
            let n = *shape.first().ok_or_else(|| format!("{name}: scalar input"))?;
            let inner = w.len() / n;
            let mut data = w.to_vec();
            for j in 0..inner {
                let mean = (0..n).map(|i| w[i * inner + j] as f64).sum::<f64>() / n as f64;
                for i in 0..n {
                    data[i * inner + j] = (w[i * inner + j] as f64 - mean) as f32;
                }
            }
            tensor(shape, data)
        }
        FoldOp::BnScale(eps) => {
            let (g, v) = (arg(0)?, arg(1)?);
            check_len(v, g.len())?;
            let e = eps.get() as f64;
            let data = g.iter().zip(v).map(|(&g, &v)| (g as f64 / (v as f64 + e).sqrt()) as f32).collect();
            tensor(vec![g.len()], data)
        }
        FoldOp::BnShift(eps) => {
            let (g, b, m, v) = (arg(0)?, arg(1)?, arg(2)?, arg(3)?);
            for x in [b, m, v] {
                check_len(x, g.len())?;
            }
            let e = eps.get() as f64;
            let data = (0..g.len())
                .map(|i| (b[i] as f64 - m[i] as f64 * g[i] as f64 / (v[i] as f64 + e).sqrt()) as f32)
                .collect();
            tensor(vec![g.len()], data)
        }
        FoldOp::VecMat => {
            let (c, w) = (arg(0)?, arg(1)?);
            let [n_in, n_out] = *args[1].shape() else { return Err(format!("{name}: weight must be 2-D")) };
            check_len(c, n_in)?;
            let data = (0..n_out)
                .map(|j| (0..n_in).map(|i| c[i] as f64 * w[i * n_out + j] as f64).sum::<f64>() as f32)
                .collect();
            tensor(vec![n_out], data)
        }
        FoldOp::MatVec => {
            let (w, c) = (arg(0)?, arg(1)?);
            let [n_out, n_in] = *args[0].shape() else { return Err(format!("{name}: weight must be 2-D")) };
            check_len(c, n_in)?;
            let data = (0..n_out)
                .map(|i| (0..n_in).map(|j| w[i * n_in + j] as f64 * c[j] as f64).sum::<f64>() as f32)
                .collect();
            tensor(vec![n_out], data)
        }
        FoldOp::ConvSum => {
            let (w, c) = (arg(0)?, arg(1)?);
            let [m, ch, kh, kw] = *args[0].shape() else { return Err(format!("{name}: weight must be 4-D")) };
            check_len(c, ch)?;
            let k = kh * kw;
            let data = (0..m)
                .map(|o| {
                    (0..ch)
                        .map(|i| {
                            let base = (o * ch + i) * k;
                            w[base..base + k].iter().map(|&x| x as f64).sum::<f64>() * c[i] as f64
                        })
                        .sum::<f64>() as f32
                })
                .collect();
            tensor(vec![m], data)
        }
        FoldOp::Fill(v) => tensor(out.shape.clone(), vec![v.get(); out.num_elements()]),
        FoldOp::Flat => {
            let x = arg(0)?;
            tensor(vec![x.len()], x.to_vec())
        }
        FoldOp::Fma => {
            let (a, b, c) = (arg(0)?, arg(1)?, arg(2)?);
            check_len(b, a.len())?;
            check_len(c, a.len())?;
            let data = (0..a.len()).map(|i| (a[i] as f64 * b[i] as f64 + c[i] as f64) as f32).collect();
            tensor(vec![a.len()], data)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::F32Bits;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn folds_compute_what_their_names_say() {
        let w = t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let ty = TensorType::f32([2, 3]);
        let rows = eval_fold(FoldOp::ScaleRows, &[&w, &t(&[2], &[10., 100.])], &ty).unwrap();
        assert_eq!(rows.as_f32().unwrap(), &[10., 20., 30., 400., 500., 600.]);
        let cols = eval_fold(FoldOp::ScaleCols, &[&w, &t(&[3], &[1., 0., -1.])], &ty).unwrap();
        assert_eq!(cols.as_f32().unwrap(), &[1., 0., -3., 4., 0., -6.]);
        let c = eval_fold(FoldOp::CenterLast, &[&w], &ty).unwrap();
        assert_eq!(c.as_f32().unwrap(), &[-1., 0., 1., -1., 0., 1.]);
        let r = eval_fold(FoldOp::CenterRows, &[&w], &ty).unwrap();
        assert_eq!(r.as_f32().unwrap(), &[-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]);
        let vm = eval_fold(FoldOp::VecMat, &[&t(&[2], &[1., -1.]), &w], &ty).unwrap();
        assert_eq!(vm.as_f32().unwrap(), &[-3., -3., -3.]);
        let mv = eval_fold(FoldOp::MatVec, &[&w, &t(&[3], &[1., 1., 1.])], &ty).unwrap();
        assert_eq!(mv.as_f32().unwrap(), &[6., 15.]);
        // γ/√(v+ε) with v + ε = 4 → γ/2; β − m·γ/2.
        let eps = F32Bits::new(0.0);
        let (g, b, m, v) = (t(&[2], &[2., 4.]), t(&[2], &[1., 1.]), t(&[2], &[1., 2.]), t(&[2], &[4., 4.]));
        let s = eval_fold(FoldOp::BnScale(eps), &[&g, &v], &ty).unwrap();
        assert_eq!(s.as_f32().unwrap(), &[1., 2.]);
        let sh = eval_fold(FoldOp::BnShift(eps), &[&g, &b, &m, &v], &ty).unwrap();
        assert_eq!(sh.as_f32().unwrap(), &[0., -3.]);
        let cw = t(&[1, 2, 1, 2], &[1., 2., 3., 4.]);
        let cs = eval_fold(FoldOp::ConvSum, &[&cw, &t(&[2], &[1., 10.])], &ty).unwrap();
        assert_eq!(cs.as_f32().unwrap(), &[73.]);
    }

    #[test]
    fn mismatched_lengths_are_errors_not_panics() {
        let w = t(&[2, 3], &[0.; 6]);
        let ty = TensorType::f32([2, 3]);
        assert!(eval_fold(FoldOp::ScaleRows, &[&w, &t(&[3], &[1.; 3])], &ty).is_err());
        assert!(eval_fold(FoldOp::VecMat, &[&t(&[3], &[1.; 3]), &w], &ty).is_err());
    }
}
