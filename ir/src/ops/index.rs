//! Index-driven ops whose source or destination positions come from an i64 tensor at run time:
//! GatherElements, GatherND, ScatterND, ScatterElements. Shape inference and reference evaluation.
//!
//! Indices may be negative (counting from the end of their axis); an index outside
//! [−size, size) is an evaluation error naming the op, the index and the axis. Scatter with
//! `reduction = none` and a position written twice keeps the last update in row-major order of
//! the indices (ONNX leaves it undefined; ONNX Runtime's CPU kernel and kiln's JIT write in that
//! order). i64 `add`/`mul` reductions wrap on overflow, as ONNX Runtime does.

use super::{normalize_axis, not_in_family};
use crate::dtype::{DType, ShapeDisplay, TensorType};
use crate::op::{Op, ScatterReduction};
use crate::tensor::{Tensor, TensorData, strides};

pub(crate) fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    let name = op.name();
    for (i, t) in inputs.iter().enumerate() {
        if t.shape.contains(&0) {
            return Err(format!("{name} input {i} has a zero dimension; kiln needs every dimension ≥ 1"));
        }
    }
    let (data, indices) = (inputs[0], inputs[1]);
    if indices.dtype != DType::I64 {
        return Err(format!("{name}'s indices must be i64, got {}", indices.dtype));
    }
    let check_updates = |want: &[usize]| -> Result<(), String> {
        let updates = inputs[2];
        if updates.dtype != data.dtype {
            return Err(format!("{name}'s updates are {} but its data is {}", updates.dtype, data.dtype));
        }
        if updates.shape != want {
            return Err(format!(
                "{name}'s updates have shape {} but the indices call for {}",
                ShapeDisplay(&updates.shape),
                ShapeDisplay(want)
            ));
        }
        Ok(())
    };
    let check_reduction = |reduction: ScatterReduction| -> Result<(), String> {
        if reduction != ScatterReduction::None && data.dtype == DType::Bool {
            return Err(format!("{name} with reduction {:?} needs f32 or i64 data, got bool", reduction.name()));
        }
        Ok(())
    };
    match op {
        Op::GatherElements { axis } => {
            elements_axis(name, *axis, data, indices)?;
            Ok(vec![TensorType::new(data.dtype, indices.shape.clone())])
        }
        Op::ScatterElements { axis, reduction } => {
            elements_axis(name, *axis, data, indices)?;
            check_updates(&indices.shape)?;
            check_reduction(*reduction)?;
            Ok(vec![data.clone()])
        }
        Op::GatherND { batch_dims } => {
            let (b, last) = nd_plan(name, *batch_dims, data, indices)?;
            let mut shape = indices.shape[..indices.rank() - 1].to_vec();
            shape.extend_from_slice(&data.shape[b + last..]);
            Ok(vec![TensorType::new(data.dtype, shape)])
        }
        Op::ScatterND { reduction } => {
            let (_, last) = nd_plan(name, 0, data, indices)?;
            let mut want = indices.shape[..indices.rank() - 1].to_vec();
            want.extend_from_slice(&data.shape[last..]);
            check_updates(&want)?;
            check_reduction(*reduction)?;
            Ok(vec![data.clone()])
        }
        _ => Err(not_in_family(op)),
    }
}

/// GatherElements/ScatterElements: same rank, and off the axis the indices fit inside the data.
fn elements_axis(name: &str, axis: i64, data: &TensorType, indices: &TensorType) -> Result<usize, String> {
    let a = normalize_axis(axis, data.rank()).map_err(|e| format!("{name}: {e}"))?;
    if indices.rank() != data.rank() {
        return Err(format!("{name}'s indices have rank {} but its data has rank {}", indices.rank(), data.rank()));
    }
    if let Some(j) = (0..data.rank()).find(|&j| j != a && indices.shape[j] > data.shape[j]) {
        return Err(format!(
            "{name}'s indices {} are larger than the data {} along axis {j}",
            ShapeDisplay(&indices.shape),
            ShapeDisplay(&data.shape)
        ));
    }
    Ok(a)
}

/// GatherND/ScatterND: (batch_dims, length of an index tuple), validated against the shapes.
fn nd_plan(name: &str, b: usize, data: &TensorType, indices: &TensorType) -> Result<(usize, usize), String> {
    let (r, q) = (data.rank(), indices.rank());
    if r == 0 || q == 0 {
        return Err(format!("{name} needs data and indices of rank ≥ 1"));
    }
    if b >= q.min(r) {
        return Err(format!("{name}'s batch_dims {b} must be less than the ranks of data ({r}) and indices ({q})"));
    }
    if indices.shape[..b] != data.shape[..b] {
        return Err(format!(
            "{name}: the first {b} (batch) dimensions of indices {} and data {} differ",
            ShapeDisplay(&indices.shape),
            ShapeDisplay(&data.shape)
        ));
    }
    let last = indices.shape[q - 1];
    if last > r - b {
        return Err(format!(
            "{name}'s index tuples have {last} entries but the data has only {} axes after the batch axes",
            r - b
        ));
    }
    Ok((b, last))
}

/// An index resolved against an axis of `size`, or the error the op reports.
fn resolve(name: &str, i: i64, axis: usize, size: usize) -> Result<usize, String> {
    let n = size as i64;
    let j = if i < 0 { i.checked_add(n) } else { Some(i) };
    j.filter(|&j| j >= 0 && j < n)
        .map(|j| j as usize)
        .ok_or_else(|| format!("{name} index {i} is out of range for axis {axis} of size {size}"))
}

pub(crate) fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    let name = op.name();
    let data = inputs[0];
    let indices = inputs[1].as_i64().ok_or_else(|| format!("internal error: {name} indices are not i64"))?;
    let ishape = inputs[1].shape();
    let dshape = data.shape();
    let dstrides = strides(dshape);
    match op {
        Op::GatherElements { axis } | Op::ScatterElements { axis, .. } => {
            let a = normalize_axis(*axis, dshape.len())?;
            // For each index element (row-major over the indices' shape): the data position it
            // names, its own coordinates with the axis coordinate replaced by the index.
            let mut pos = Vec::with_capacity(indices.len());
            let mut coord = vec![0usize; ishape.len()];
            for &i in indices {
                let j = resolve(name, i, a, dshape[a])?;
                pos.push(
                    coord.iter().enumerate().map(|(k, &c)| if k == a { j } else { c } * dstrides[k]).sum::<usize>(),
                );
                for k in (0..coord.len()).rev() {
                    coord[k] += 1;
                    if coord[k] < ishape[k] {
                        break;
                    }
                    coord[k] = 0;
                }
            }
            if let Op::ScatterElements { reduction, .. } = op {
                return Ok(vec![scatter(data, inputs[2], &pos, *reduction)?]);
            }
            Ok(vec![Tensor::new(ishape.to_vec(), take(data.data(), &pos))?])
        }
        Op::GatherND { batch_dims } => {
            let b = *batch_dims;
            let (slices, slice_len) = nd_slices(name, b, dshape, &dstrides, ishape, indices)?;
            let mut src = Vec::with_capacity(slices.len() * slice_len);
            for s in slices {
                src.extend(s..s + slice_len);
            }
            let out = infer(op, &[&data.ty(), &inputs[1].ty()])?.remove(0);
            Ok(vec![Tensor::new(out.shape, take(data.data(), &src))?])
        }
        Op::ScatterND { reduction } => {
            let (slices, slice_len) = nd_slices(name, 0, dshape, &dstrides, ishape, indices)?;
            let mut dst = Vec::with_capacity(slices.len() * slice_len);
            for s in slices {
                dst.extend(s..s + slice_len);
            }
            Ok(vec![scatter(data, inputs[2], &dst, *reduction)?])
        }
        _ => Err(not_in_family(op)),
    }
}

/// For GatherND/ScatterND: the flat data offset of the slice each index tuple names (tuples in
/// row-major order), and the slice length.
fn nd_slices(
    name: &str,
    b: usize,
    dshape: &[usize],
    dstrides: &[usize],
    ishape: &[usize],
    indices: &[i64],
) -> Result<(Vec<usize>, usize), String> {
    let last = ishape[ishape.len() - 1];
    let slice_len: usize = dshape[b + last..].iter().product();
    let batch_stride = if b == 0 { 0 } else { dstrides[b - 1] };
    // Tuples per batch entry: the index dims between the batch dims and the tuple dim.
    let per_batch: usize = ishape[b..ishape.len() - 1].iter().product();
    // Every dimension is ≥ 1 (infer), so a tuple has at least one entry.
    let tuples = indices.len() / last;
    let mut out = Vec::with_capacity(tuples);
    for t in 0..tuples {
        let batch = t / per_batch;
        let mut off = batch * batch_stride;
        for k in 0..last {
            let axis = b + k;
            off += resolve(name, indices[t * last + k], axis, dshape[axis])? * dstrides[axis];
        }
        out.push(off);
    }
    Ok((out, slice_len))
}

fn take(data: &TensorData, idx: &[usize]) -> TensorData {
    match data {
        TensorData::F32(v) => TensorData::F32(idx.iter().map(|&i| v[i]).collect()),
        TensorData::I64(v) => TensorData::I64(idx.iter().map(|&i| v[i]).collect()),
        TensorData::Bool(v) => TensorData::Bool(idx.iter().map(|&i| v[i]).collect()),
    }
}

/// A copy of `data` with update `k` combined into position `dst[k]`, in order.
fn scatter(data: &Tensor, updates: &Tensor, dst: &[usize], reduction: ScatterReduction) -> Result<Tensor, String> {
    use ScatterReduction as R;
    let out = match (data.data(), updates.data()) {
        (TensorData::F32(d), TensorData::F32(u)) => {
            let mut o = d.clone();
            for (&p, &v) in dst.iter().zip(u) {
                let cur = o[p];
                o[p] = match reduction {
                    R::None => v,
                    R::Add => cur + v,
                    R::Mul => cur * v,
                    // NaN propagates, as numpy's maximum/minimum (the ONNX reference).
                    R::Max if cur.is_nan() || v.is_nan() => f32::NAN,
                    R::Min if cur.is_nan() || v.is_nan() => f32::NAN,
                    R::Max => cur.max(v),
                    R::Min => cur.min(v),
                };
            }
            TensorData::F32(o)
        }
        (TensorData::I64(d), TensorData::I64(u)) => {
            let mut o = d.clone();
            for (&p, &v) in dst.iter().zip(u) {
                let cur = o[p];
                o[p] = match reduction {
                    R::None => v,
                    R::Add => cur.wrapping_add(v),
                    R::Mul => cur.wrapping_mul(v),
                    R::Max => cur.max(v),
                    R::Min => cur.min(v),
                };
            }
            TensorData::I64(o)
        }
        (TensorData::Bool(d), TensorData::Bool(u)) if reduction == R::None => {
            let mut o = d.clone();
            for (&p, &v) in dst.iter().zip(u) {
                o[p] = v;
            }
            TensorData::Bool(o)
        }
        _ => return Err("internal error: scatter data and updates disagree".into()),
    };
    Tensor::new(data.shape().to_vec(), out)
}

#[cfg(test)]
mod tests {
    use crate::{DType, Op, ScatterReduction, Tensor, TensorType};

    fn run(op: &Op, inputs: &[&Tensor]) -> Tensor {
        super::super::test_support::run(op, inputs)
    }

    fn i(shape: &[usize], v: &[i64]) -> Tensor {
        Tensor::from_i64(shape, v.to_vec()).unwrap()
    }

    fn f(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape, v.to_vec()).unwrap()
    }

    #[test]
    fn gather_elements_onnx_examples() {
        // ONNX spec example 1: axis 1.
        let data = f(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let y = run(&Op::GatherElements { axis: 1 }, &[&data, &i(&[2, 2], &[0, 0, 1, 0])]);
        assert_eq!(y.as_f32().unwrap(), [1.0, 1.0, 4.0, 3.0]);
        // Example 2: axis 0, indices smaller than data, a negative index.
        let data = f(&[3, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        let y = run(&Op::GatherElements { axis: 0 }, &[&data, &i(&[2, 3], &[1, 2, 0, 2, 0, -3])]);
        assert_eq!(y.shape(), [2, 3]);
        assert_eq!(y.as_f32().unwrap(), [4.0, 8.0, 3.0, 7.0, 2.0, 3.0]);
        let err = Op::GatherElements { axis: 0 }.eval(&[&data, &i(&[1, 1], &[3])]).unwrap_err();
        assert_eq!(err, "GatherElements index 3 is out of range for axis 0 of size 3");
        let t = |s: &[usize], d| TensorType::new(d, s.to_vec());
        let err =
            Op::GatherElements { axis: 0 }.infer(&[&t(&[2, 2], DType::F32), &t(&[2, 3], DType::I64)]).unwrap_err();
        assert!(err.contains("larger than the data"), "{err}");
    }

    #[test]
    fn gather_nd_onnx_examples() {
        let g = |b| Op::GatherND { batch_dims: b };
        let data = i(&[2, 2], &[0, 1, 2, 3]);
        assert_eq!(run(&g(0), &[&data, &i(&[2, 2], &[0, 0, 1, 1])]).as_i64().unwrap(), [0, 3]);
        let y = run(&g(0), &[&data, &i(&[2, 1], &[1, 0])]);
        assert_eq!(y.shape(), [2, 2]);
        assert_eq!(y.as_i64().unwrap(), [2, 3, 0, 1]);
        let data = i(&[2, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7]);
        let y = run(&g(0), &[&data, &i(&[2, 1, 2], &[0, 1, 1, 0])]);
        assert_eq!(y.shape(), [2, 1, 2]);
        assert_eq!(y.as_i64().unwrap(), [2, 3, 4, 5]);
        // Example 5: batch_dims 1.
        let y = run(&g(1), &[&data, &i(&[2, 1], &[1, 0])]);
        assert_eq!(y.shape(), [2, 2]);
        assert_eq!(y.as_i64().unwrap(), [2, 3, 4, 5]);
        let err = g(0).eval(&[&data, &i(&[1, 1], &[-3])]).unwrap_err();
        assert!(err.contains("index -3 is out of range for axis 0 of size 2"), "{err}");
        let err = g(2).eval(&[&data, &i(&[2, 1], &[0, 0])]).unwrap_err();
        assert!(err.contains("batch_dims 2"), "{err}");
    }

    #[test]
    fn scatter_nd_reductions_and_duplicates() {
        let data = f(&[4], &[1.0, 2.0, 3.0, 4.0]);
        let idx = i(&[3, 1], &[1, 3, 1]);
        let upd = f(&[3], &[10.0, 20.0, 30.0]);
        let s = |reduction| Op::ScatterND { reduction };
        // Duplicate index 1 with reduction none: the last update wins, as ONNX Runtime.
        assert_eq!(run(&s(ScatterReduction::None), &[&data, &idx, &upd]).as_f32().unwrap(), [1.0, 30.0, 3.0, 20.0]);
        assert_eq!(run(&s(ScatterReduction::Add), &[&data, &idx, &upd]).as_f32().unwrap(), [1.0, 42.0, 3.0, 24.0]);
        assert_eq!(run(&s(ScatterReduction::Mul), &[&data, &idx, &upd]).as_f32().unwrap(), [1.0, 600.0, 3.0, 80.0]);
        assert_eq!(run(&s(ScatterReduction::Min), &[&data, &idx, &upd]).as_f32().unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(run(&s(ScatterReduction::Max), &[&data, &idx, &upd]).as_f32().unwrap(), [1.0, 30.0, 3.0, 20.0]);
        // Slices: rows of a [2, 2] matrix.
        let data = i(&[2, 2], &[1, 2, 3, 4]);
        let y = run(&s(ScatterReduction::None), &[&data, &i(&[1, 1], &[-1]), &i(&[1, 2], &[8, 9])]);
        assert_eq!(y.as_i64().unwrap(), [1, 2, 8, 9]);
        let err = s(ScatterReduction::None).eval(&[&data, &i(&[1, 1], &[2]), &i(&[1, 2], &[8, 9])]).unwrap_err();
        assert!(err.contains("ScatterND index 2 is out of range"), "{err}");
        let err = s(ScatterReduction::None).eval(&[&data, &i(&[1, 1], &[0]), &i(&[2], &[8, 9])]).unwrap_err();
        assert!(err.contains("updates have shape [2] but the indices call for [1,2]"), "{err}");
    }

    #[test]
    fn scatter_elements_onnx_examples() {
        let se = |axis, reduction| Op::ScatterElements { axis, reduction };
        // ONNX spec example 2.
        let data = f(&[1, 5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        let y = run(&se(1, ScatterReduction::None), &[&data, &i(&[1, 2], &[1, 3]), &f(&[1, 2], &[1.1, 2.1])]);
        assert_eq!(y.as_f32().unwrap(), [1.0, 1.1, 3.0, 2.1, 5.0]);
        // Duplicates with add (ONNX example "with_duplicate_indices").
        let y = run(&se(1, ScatterReduction::Add), &[&data, &i(&[1, 2], &[1, 1]), &f(&[1, 2], &[1.1, 2.1])]);
        assert_eq!(y.as_f32().unwrap(), [1.0, 5.2, 3.0, 4.0, 5.0]);
        // Negative index.
        let y = run(&se(-1, ScatterReduction::None), &[&data, &i(&[1, 1], &[-1]), &f(&[1, 1], &[9.0])]);
        assert_eq!(y.as_f32().unwrap(), [1.0, 2.0, 3.0, 4.0, 9.0]);
        let b = Tensor::from_bool([2], vec![false, false]).unwrap();
        let ub = Tensor::from_bool([1], vec![true]).unwrap();
        assert_eq!(run(&se(0, ScatterReduction::None), &[&b, &i(&[1], &[1]), &ub]).as_bool().unwrap(), [false, true]);
        let err = se(0, ScatterReduction::Add).eval(&[&b, &i(&[1], &[1]), &ub]).unwrap_err();
        assert!(err.contains("needs f32 or i64 data"), "{err}");
    }
}
