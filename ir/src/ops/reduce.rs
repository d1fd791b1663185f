//! ReduceMean / ReduceSum / ReduceMax / ReduceL2: shape inference and reference evaluation.
//!
//! ONNX semantics: `axes: None` (or an empty list) reduces every axis unless `noop_with_empty_axes`,
//! in which case the op is the identity; negative axes count from the end; a repeated axis is an
//! error. f32 inputs accumulate in f64 and round once; ReduceSum and ReduceMax also take i64 (a sum
//! that overflows i64 is an evaluation error).

use super::broadcast::broadcast_indices;
use super::{normalize_axis, not_in_family};
use crate::dtype::{DType, TensorType};
use crate::op::{Op, ReduceKind};
use crate::tensor::{Tensor, TensorData};

/// The reduced axes (sorted, deduplicated) and the output shape with those axes kept as 1.
struct Plan {
    /// `None`: the op is the identity (empty axes with `noop_with_empty_axes`).
    axes: Option<Vec<usize>>,
    kept_shape: Vec<usize>,
    out_shape: Vec<usize>,
}

fn plan(op: &Op, x: &TensorType) -> Result<Plan, String> {
    let Op::Reduce { kind, axes, keepdims, noop_with_empty_axes } = op else {
        return Err(not_in_family(op));
    };
    let allowed = match kind {
        ReduceKind::Sum | ReduceKind::Max => x.dtype == DType::F32 || x.dtype == DType::I64,
        ReduceKind::Mean | ReduceKind::L2 => x.dtype == DType::F32,
    };
    if !allowed {
        let want = if matches!(kind, ReduceKind::Sum | ReduceKind::Max) { "f32 or i64" } else { "f32" };
        return Err(format!("{} needs {want} input, got {}", op.name(), x.dtype));
    }
    if x.shape.contains(&0) {
        return Err(format!("{} needs every input dimension to be ≥ 1", op.name()));
    }
    let given = axes.as_deref().unwrap_or(&[]);
    if given.is_empty() && *noop_with_empty_axes {
        return Ok(Plan { axes: None, kept_shape: x.shape.clone(), out_shape: x.shape.clone() });
    }
    let mut reduced: Vec<usize> = if given.is_empty() {
        (0..x.rank()).collect()
    } else {
        let mut out = Vec::with_capacity(given.len());
        for &a in given {
            let n = normalize_axis(a, x.rank()).map_err(|e| format!("{}: {e}", op.name()))?;
            if out.contains(&n) {
                return Err(format!("{} lists axis {n} twice (axes {given:?})", op.name()));
            }
            out.push(n);
        }
        out
    };
    reduced.sort_unstable();
    let kept_shape: Vec<usize> =
        x.shape.iter().enumerate().map(|(i, &d)| if reduced.contains(&i) { 1 } else { d }).collect();
    let out_shape = if *keepdims {
        kept_shape.clone()
    } else {
        x.shape.iter().enumerate().filter(|(i, _)| !reduced.contains(i)).map(|(_, &d)| d).collect()
    };
    Ok(Plan { axes: Some(reduced), kept_shape, out_shape })
}

pub(crate) fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    let [x] = inputs else {
        return Err(format!("{} takes 1 input, got {}", op.name(), inputs.len()));
    };
    let p = plan(op, x)?;
    Ok(vec![TensorType::new(x.dtype, p.out_shape)])
}

pub(crate) fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    let [x] = inputs else {
        return Err(format!("{} takes 1 input, got {}", op.name(), inputs.len()));
    };
    let Op::Reduce { kind, .. } = op else {
        return Err(not_in_family(op));
    };
    let p = plan(op, &x.ty())?;
    if p.axes.is_none() {
        // Nothing is reduced, but each element still goes through the reduction's map and
        // finish: ReduceL2 of one element is √(x²) = |x| (as the spec and the JIT give), the
        // other kinds are the identity.
        if *kind == ReduceKind::L2
            && let TensorData::F32(v) = x.data()
        {
            return Ok(vec![Tensor::new(x.shape().to_vec(), TensorData::F32(v.iter().map(|a| a.abs()).collect()))?]);
        }
        return Ok(vec![(*x).clone()]);
    }
    // For each input element, the flat index of the output element it folds into: the kept shape
    // (reduced axes set to 1) broadcast back to the input shape.
    let target = broadcast_indices(&p.kept_shape, x.shape());
    let out_len: usize = p.kept_shape.iter().product();
    let count = (x.len() / out_len) as f64;
    let data = match x.data() {
        TensorData::F32(v) => {
            let mut acc = vec![if *kind == ReduceKind::Max { f64::NEG_INFINITY } else { 0.0 }; out_len];
            for (&t, &xv) in target.iter().zip(v) {
                let xv = f64::from(xv);
                match kind {
                    ReduceKind::Sum | ReduceKind::Mean => acc[t] += xv,
                    ReduceKind::L2 => acc[t] += xv * xv,
                    // NaN propagates, as numpy's max does.
                    ReduceKind::Max => {
                        if !acc[t].is_nan() && (xv.is_nan() || xv > acc[t]) {
                            acc[t] = xv;
                        }
                    }
                }
            }
            let finish = |a: f64| match kind {
                ReduceKind::Mean => a / count,
                ReduceKind::L2 => a.sqrt(),
                ReduceKind::Sum | ReduceKind::Max => a,
            };
            TensorData::F32(acc.into_iter().map(|a| finish(a) as f32).collect())
        }
        TensorData::I64(v) => {
            let mut acc = vec![if *kind == ReduceKind::Max { i64::MIN } else { 0 }; out_len];
            for (&t, &xv) in target.iter().zip(v) {
                acc[t] = match kind {
                    ReduceKind::Max => acc[t].max(xv),
                    _ => acc[t].checked_add(xv).ok_or_else(|| format!("{} overflows i64", op.name()))?,
                };
            }
            TensorData::I64(acc)
        }
        TensorData::Bool(_) => return Err(format!("internal error: {} reached with bool input", op.name())),
    };
    Ok(vec![Tensor::new(p.out_shape, data)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reduce(kind: ReduceKind, axes: Option<Vec<i64>>, keepdims: bool) -> Op {
        Op::Reduce { kind, axes, keepdims, noop_with_empty_axes: false }
    }

    fn run(op: &Op, x: &Tensor) -> Tensor {
        let ty = x.ty();
        let inferred = infer(op, &[&ty]).unwrap();
        let out = eval(op, &[x]).unwrap().remove(0);
        assert_eq!(out.ty(), inferred[0], "eval and infer disagree");
        out
    }

    fn x23() -> Tensor {
        // [[1, 2, 3], [4, 5, 6]]
        Tensor::from_f32([2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap()
    }

    #[test]
    fn sums_and_means_by_hand() {
        let x = x23();
        let s = run(&reduce(ReduceKind::Sum, Some(vec![1]), true), &x);
        assert_eq!(s.shape(), [2, 1]);
        assert_eq!(s.as_f32().unwrap(), [6.0, 15.0]);
        let s = run(&reduce(ReduceKind::Sum, Some(vec![0]), false), &x);
        assert_eq!(s.shape(), [3]);
        assert_eq!(s.as_f32().unwrap(), [5.0, 7.0, 9.0]);
        let m = run(&reduce(ReduceKind::Mean, Some(vec![-1]), false), &x);
        assert_eq!(m.as_f32().unwrap(), [2.0, 5.0]);
        // axes None reduces everything: 21 / 6 = 3.5.
        let m = run(&reduce(ReduceKind::Mean, None, true), &x);
        assert_eq!(m.shape(), [1, 1]);
        assert_eq!(m.as_f32().unwrap(), [3.5]);
        let m = run(&reduce(ReduceKind::Mean, Some(vec![]), false), &x);
        assert_eq!(m.shape(), [] as [usize; 0]);
        assert_eq!(m.as_f32().unwrap(), [3.5]);
    }

    #[test]
    fn max_and_l2_by_hand() {
        let x = Tensor::from_f32([2, 2], vec![3.0, -4.0, -1.0, -7.0]).unwrap();
        let m = run(&reduce(ReduceKind::Max, Some(vec![1]), false), &x);
        assert_eq!(m.as_f32().unwrap(), [3.0, -1.0]);
        // √(3² + 4²) = 5; √(1 + 49) = √50.
        let l2 = run(&reduce(ReduceKind::L2, Some(vec![1]), false), &x);
        assert_eq!(l2.as_f32().unwrap(), [5.0, 50f32.sqrt()]);
        let nan = Tensor::from_f32([3], vec![1.0, f32::NAN, 2.0]).unwrap();
        assert!(run(&reduce(ReduceKind::Max, None, false), &nan).as_f32().unwrap()[0].is_nan());
    }

    #[test]
    fn three_d_middle_axes() {
        // x[i,j,k] = i*100 + j*10 + k, shape [2,3,2]; reduce axes {0,2} → per j: Σ_i Σ_k.
        let v: Vec<f32> =
            (0..2).flat_map(|i| (0..3).flat_map(move |j| (0..2).map(move |k| (i * 100 + j * 10 + k) as f32))).collect();
        let x = Tensor::from_f32([2, 3, 2], v).unwrap();
        let s = run(&reduce(ReduceKind::Sum, Some(vec![2, 0]), true), &x);
        assert_eq!(s.shape(), [1, 3, 1]);
        // Σ over i∈{0,1}, k∈{0,1} of (100i + 10j + k) = 200 + 40j + 2.
        assert_eq!(s.as_f32().unwrap(), [202.0, 242.0, 282.0]);
    }

    #[test]
    fn f64_accumulation() {
        // 1e8 followed by a hundred thousand ones: an f32 accumulator would lose every one of them.
        let mut v = vec![1.0e8f32];
        v.extend(std::iter::repeat_n(1.0f32, 100_000));
        let x = Tensor::from_f32([v.len()], v).unwrap();
        let s = run(&reduce(ReduceKind::Sum, None, false), &x);
        assert_eq!(s.as_f32().unwrap(), [100_100_000.0]);
    }

    #[test]
    fn i64_sum_max_and_overflow() {
        let x = Tensor::from_i64([2, 2], vec![5, -3, 7, 10]).unwrap();
        assert_eq!(run(&reduce(ReduceKind::Sum, Some(vec![0]), false), &x).as_i64().unwrap(), [12, 7]);
        assert_eq!(run(&reduce(ReduceKind::Max, Some(vec![1]), false), &x).as_i64().unwrap(), [5, 10]);
        let big = Tensor::from_i64([2], vec![i64::MAX, 1]).unwrap();
        let err = eval(&reduce(ReduceKind::Sum, None, false), &[&big]).unwrap_err();
        assert!(err.contains("overflows"), "{err}");
        let ty = TensorType::new(DType::I64, [2]);
        let err = infer(&reduce(ReduceKind::Mean, None, false), &[&ty]).unwrap_err();
        assert!(err.contains("needs f32"), "{err}");
    }

    #[test]
    fn noop_with_empty_axes_is_identity() {
        let op = Op::Reduce { kind: ReduceKind::Sum, axes: None, keepdims: false, noop_with_empty_axes: true };
        let x = x23();
        assert_eq!(run(&op, &x), x);
    }

    /// Issue 11: ReduceL2 with noop_with_empty_axes returned x; one element's L2 norm is |x|.
    #[test]
    fn noop_with_empty_axes_l2_is_abs() {
        let x = Tensor::from_f32([2, 2], vec![-3.0, 0.5, -0.0, f32::NEG_INFINITY]).unwrap();
        for axes in [None, Some(vec![])] {
            let op = Op::Reduce { kind: ReduceKind::L2, axes, keepdims: true, noop_with_empty_axes: true };
            let y = run(&op, &x);
            assert_eq!(y.shape(), &[2, 2]);
            let v = y.as_f32().unwrap();
            assert_eq!(v, [3.0, 0.5, 0.0, f32::INFINITY]);
            assert!(v[2].is_sign_positive());
        }
    }

    #[test]
    fn axis_errors() {
        let ty = TensorType::f32([2, 3]);
        let err = infer(&reduce(ReduceKind::Sum, Some(vec![1, -1]), true), &[&ty]).unwrap_err();
        assert!(err.contains("axis 1 twice"), "{err}");
        let err = infer(&reduce(ReduceKind::Sum, Some(vec![2]), true), &[&ty]).unwrap_err();
        assert!(err.contains("out of range for rank 2"), "{err}");
        let err = infer(&reduce(ReduceKind::Sum, None, true), &[&TensorType::new(DType::Bool, [2])]).unwrap_err();
        assert!(err.contains("f32 or i64"), "{err}");
    }
}
