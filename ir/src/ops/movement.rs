//! Data-movement ops (Reshape, Transpose, Concat, Split, Slice, Gather, Unsqueeze, Squeeze,
//! Expand, Flatten, Tile): shape inference and reference evaluation, for every element type.
//!
//! Each `eval` computes, for every output element, the flat index of the input element it copies,
//! then gathers; the index arithmetic is validated by `infer`, which `eval` re-runs first so that a
//! bad call is an error, never a panic. kiln needs every dimension ≥ 1, so an op whose result would
//! be empty (a Slice that selects nothing, a Split with an empty part) is an error.

use super::broadcast::{broadcast_indices, broadcast_shapes};
use super::{normalize_axis, not_in_family};
use crate::dtype::{DType, ShapeDisplay, TensorType};
use crate::op::Op;
use crate::tensor::{Tensor, TensorData, strides};

pub(crate) fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    for (i, t) in inputs.iter().enumerate() {
        if t.shape.contains(&0) {
            return Err(format!("{} input {i} has a zero dimension; kiln needs every dimension ≥ 1", op.name()));
        }
    }
    let x = inputs[0];
    let one = |shape: Vec<usize>| Ok(vec![TensorType::new(x.dtype, shape)]);
    match op {
        Op::Reshape { shape, allowzero } => one(reshape_shape(&x.shape, shape, *allowzero)?),
        Op::Transpose { perm } => {
            let perm = permutation(perm.as_deref(), x.rank())?;
            one(perm.iter().map(|&p| x.shape[p]).collect())
        }
        Op::Concat { axis } => {
            let a = concat_plan(inputs, *axis)?;
            let mut shape = x.shape.clone();
            shape[a] = inputs.iter().map(|t| t.shape[a]).sum();
            one(shape)
        }
        Op::Split { axis, split, num_outputs } => {
            let a = normalize_axis(*axis, x.rank())?;
            let sizes = split_sizes(x.shape[a], split.as_deref(), *num_outputs)?;
            Ok(sizes
                .iter()
                .map(|&s| {
                    let mut shape = x.shape.clone();
                    shape[a] = s;
                    TensorType::new(x.dtype, shape)
                })
                .collect())
        }
        Op::Slice { .. } => one(slice_plan(op, &x.shape)?.iter().map(|r| r.count).collect()),
        Op::Gather { axis } => {
            let indices = inputs[1];
            if indices.dtype != DType::I64 {
                return Err(format!("Gather's indices must be i64, got {}", indices.dtype));
            }
            let a = normalize_axis(*axis, x.rank())?;
            let mut shape = x.shape[..a].to_vec();
            shape.extend_from_slice(&indices.shape);
            shape.extend_from_slice(&x.shape[a + 1..]);
            one(shape)
        }
        Op::Unsqueeze { axes } => {
            let out_rank = x.rank() + axes.len();
            let axes = unique_axes(axes, out_rank)?;
            let mut dims = x.shape.iter();
            one((0..out_rank).map(|i| if axes.contains(&i) { 1 } else { dims.next().copied().unwrap_or(1) }).collect())
        }
        Op::Squeeze { axes } => {
            let squeezed = match axes.as_deref() {
                None | Some([]) => (0..x.rank()).filter(|&i| x.shape[i] == 1).collect(),
                Some(axes) => {
                    let axes = unique_axes(axes, x.rank())?;
                    if let Some(&a) = axes.iter().find(|&&a| x.shape[a] != 1) {
                        return Err(format!(
                            "Squeeze cannot remove axis {a} of size {} (only size-1 axes)",
                            x.shape[a]
                        ));
                    }
                    axes
                }
            };
            one((0..x.rank()).filter(|i| !squeezed.contains(i)).map(|i| x.shape[i]).collect())
        }
        Op::Expand { shape } => {
            let target = shape
                .iter()
                .map(|&d| usize::try_from(d).ok().filter(|&d| d >= 1))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| format!("Expand's shape {shape:?} must have every dimension ≥ 1"))?;
            one(broadcast_shapes(&x.shape, &target)?)
        }
        Op::Flatten { axis } => {
            let r = x.rank() as i64;
            if *axis < -r || *axis > r {
                return Err(format!("Flatten's axis {axis} is out of range for rank {r} (−{r} ≤ axis ≤ {r})"));
            }
            let a = if *axis < 0 { (axis + r) as usize } else { *axis as usize };
            one(vec![x.shape[..a].iter().product(), x.shape[a..].iter().product()])
        }
        Op::Tile { repeats } => {
            if repeats.len() != x.rank() {
                return Err(format!("Tile has {} repeats for an input of rank {}", repeats.len(), x.rank()));
            }
            let shape = x
                .shape
                .iter()
                .zip(repeats)
                .map(|(&d, &r)| d.checked_mul(r).filter(|_| r >= 1))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| format!("Tile's repeats {repeats:?} must be ≥ 1 and keep the shape in range"))?;
            one(shape)
        }
        _ => Err(not_in_family(op)),
    }
}

pub(crate) fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
    let type_refs: Vec<&TensorType> = types.iter().collect();
    let out_types = op.infer(&type_refs)?;
    // The builder refuses oversized outputs; a direct call must not allocate them either.
    for ty in &out_types {
        ty.check_size()?;
    }
    let x = inputs[0];
    let shape = x.shape();
    let in_strides: Vec<isize> = strides(shape).iter().map(|&s| s as isize).collect();
    let single =
        |data: TensorData| -> Result<Vec<Tensor>, String> { Ok(vec![Tensor::new(out_types[0].shape.clone(), data)?]) };
    match op {
        Op::Reshape { .. } | Op::Unsqueeze { .. } | Op::Squeeze { .. } | Op::Flatten { .. } => single(x.data().clone()),
        Op::Transpose { perm } => {
            let perm = permutation(perm.as_deref(), shape.len())?;
            let src: Vec<isize> = perm.iter().map(|&p| in_strides[p]).collect();
            single(take(x.data(), &strided_indices(&out_types[0].shape, &src, 0)))
        }
        Op::Concat { axis } => {
            let a = concat_plan(&type_refs, *axis)?;
            let inner: usize = shape[a + 1..].iter().product();
            let outer: usize = shape[..a].iter().product();
            let mut offsets = Vec::with_capacity(inputs.len());
            let mut at = 0;
            for t in inputs {
                offsets.push(at);
                at += t.len();
            }
            let mut idx = Vec::with_capacity(at);
            for o in 0..outer {
                for (t, &off) in inputs.iter().zip(&offsets) {
                    let block = t.shape()[a] * inner;
                    idx.extend((0..block).map(|j| off + o * block + j));
                }
            }
            single(take(&concat_data(inputs), &idx))
        }
        Op::Split { axis, .. } => {
            let a = normalize_axis(*axis, shape.len())?;
            let mut offset = 0;
            let mut outs = Vec::with_capacity(out_types.len());
            for ty in &out_types {
                let idx = strided_indices(&ty.shape, &in_strides, offset as isize * in_strides[a]);
                outs.push(Tensor::new(ty.shape.clone(), take(x.data(), &idx))?);
                offset += ty.shape[a];
            }
            Ok(outs)
        }
        Op::Slice { .. } => {
            let plan = slice_plan(op, shape)?;
            let base: isize = plan.iter().zip(&in_strides).map(|(r, &s)| r.start as isize * s).sum();
            let steps: Vec<isize> = plan.iter().zip(&in_strides).map(|(r, &s)| r.step as isize * s).collect();
            single(take(x.data(), &strided_indices(&out_types[0].shape, &steps, base)))
        }
        Op::Gather { axis } => {
            let a = normalize_axis(*axis, shape.len())?;
            let indices = inputs[1].as_i64().ok_or("internal error: Gather indices are not i64")?;
            let n = shape[a];
            let inner: usize = shape[a + 1..].iter().product();
            let outer: usize = shape[..a].iter().product();
            let wrapped = indices
                .iter()
                .map(|&i| {
                    let w = if i < 0 { i.checked_add(n as i64) } else { Some(i) };
                    w.filter(|&w| w >= 0 && (w as usize) < n)
                        .map(|w| w as usize)
                        .ok_or_else(|| format!("Gather index {i} is out of range for axis {a} of size {n}"))
                })
                .collect::<Result<Vec<usize>, String>>()?;
            let mut idx = Vec::with_capacity(outer * wrapped.len() * inner);
            for o in 0..outer {
                for &w in &wrapped {
                    idx.extend((0..inner).map(|k| (o * n + w) * inner + k));
                }
            }
            single(take(x.data(), &idx))
        }
        Op::Expand { .. } => single(take(x.data(), &broadcast_indices(shape, &out_types[0].shape))),
        Op::Tile { .. } => {
            // Output coordinate c along an axis of size d reads input coordinate c mod d.
            let out_shape = &out_types[0].shape;
            let total: usize = out_shape.iter().product();
            let mut idx = Vec::with_capacity(total);
            let mut coord = vec![0usize; out_shape.len()];
            for _ in 0..total {
                idx.push(coord.iter().zip(shape).zip(&in_strides).map(|((&c, &d), &s)| (c % d) * s as usize).sum());
                for j in (0..coord.len()).rev() {
                    coord[j] += 1;
                    if coord[j] < out_shape[j] {
                        break;
                    }
                    coord[j] = 0;
                }
            }
            single(take(x.data(), &idx))
        }
        _ => Err(not_in_family(op)),
    }
}

// ---- shape helpers ----

fn shape_i64(shape: &[i64]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(","))
}

fn reshape_shape(input: &[usize], target: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let total: u128 = input.iter().map(|&d| d as u128).product();
    let fail = |why: String| {
        format!("cannot reshape {} ({total} elements) to {}: {why}", ShapeDisplay(input), shape_i64(target))
    };
    let mut out = Vec::with_capacity(target.len());
    let mut inferred = None;
    for (i, &d) in target.iter().enumerate() {
        let dim = match d {
            -1 if inferred.is_some() => return Err(fail("more than one -1".into())),
            -1 => {
                inferred = Some(i);
                1
            }
            0 if allowzero => {
                return Err(fail(format!("dimension {i} is 0 (allowzero); kiln needs every dimension ≥ 1")));
            }
            0 => *input.get(i).ok_or_else(|| {
                fail(format!("0 at position {i} copies an input dimension, but the input has rank {}", input.len()))
            })?,
            d if d < 0 => return Err(fail(format!("dimension {i} is {d}; only -1 and 0 are special"))),
            d => usize::try_from(d).map_err(|_| fail(format!("dimension {i} is too large")))?,
        };
        out.push(dim);
    }
    let known = out.iter().fold(1u128, |acc, &d| acc.saturating_mul(d as u128));
    match inferred {
        Some(i) => {
            if known == 0 || !total.is_multiple_of(known) {
                return Err(fail(format!("{total} elements do not divide into the other dimensions' {known}")));
            }
            out[i] = usize::try_from(total / known).map_err(|_| fail("dimension too large".into()))?;
        }
        None if known != total => return Err(fail(format!("the target has {known} elements"))),
        None => {}
    }
    Ok(out)
}

/// The permutation Transpose applies: the given one after validation, or the reversed axes.
fn permutation(perm: Option<&[usize]>, rank: usize) -> Result<Vec<usize>, String> {
    let Some(perm) = perm else {
        return Ok((0..rank).rev().collect());
    };
    let mut seen = vec![false; rank];
    let valid = perm.len() == rank && perm.iter().all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
    if !valid {
        return Err(format!("Transpose's perm {perm:?} is not a permutation of 0..{rank}"));
    }
    Ok(perm.to_vec())
}

/// The normalised concat axis, after checking that every input agrees on dtype, rank and the
/// dimensions off the axis.
fn concat_plan(inputs: &[&TensorType], axis: i64) -> Result<usize, String> {
    let first = inputs[0];
    let a = normalize_axis(axis, first.rank()).map_err(|e| format!("Concat: {e}"))?;
    for (i, t) in inputs.iter().enumerate().skip(1) {
        if t.dtype != first.dtype {
            return Err(format!("Concat input {i} is {} but input 0 is {}", t.dtype, first.dtype));
        }
        let same = t.rank() == first.rank() && (0..t.rank()).all(|k| k == a || t.shape[k] == first.shape[k]);
        if !same {
            return Err(format!(
                "Concat input {i} has shape {} but input 0 has {}; all dimensions but axis {a} must match",
                ShapeDisplay(&t.shape),
                ShapeDisplay(&first.shape)
            ));
        }
    }
    Ok(a)
}

fn split_sizes(dim: usize, split: Option<&[usize]>, num_outputs: usize) -> Result<Vec<usize>, String> {
    match split {
        Some(sizes) => {
            if sizes.len() != num_outputs {
                return Err(format!("Split has {} sizes but {num_outputs} outputs", sizes.len()));
            }
            if sizes.contains(&0) {
                return Err(format!("Split sizes {sizes:?} contain 0; kiln needs every dimension ≥ 1"));
            }
            let sum = sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s));
            if sum != Some(dim) {
                return Err(format!("Split sizes {sizes:?} do not sum to the axis size {dim}"));
            }
            Ok(sizes.to_vec())
        }
        None => {
            if num_outputs == 0 {
                return Err("Split needs at least one output".into());
            }
            // ONNX 18: ceil(dim / n) per part, the last one smaller.
            let chunk = dim.div_ceil(num_outputs);
            let before_last = chunk.checked_mul(num_outputs - 1).filter(|&b| b < dim).ok_or_else(|| {
                format!(
                    "Split of an axis of size {dim} into {num_outputs} parts of ceil({dim}/{num_outputs}) = {chunk} leaves the last part empty"
                )
            })?;
            let mut sizes = vec![chunk; num_outputs];
            sizes[num_outputs - 1] = dim - before_last;
            Ok(sizes)
        }
    }
}

/// Axes normalised against `rank`, with duplicates an error.
fn unique_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = normalize_axis(a, rank)?;
        if out.contains(&n) {
            return Err(format!("axis {n} is listed twice in {axes:?}"));
        }
        out.push(n);
    }
    Ok(out)
}

/// What Slice takes along one axis: `count` elements from `start` in steps of `step`.
struct AxisRange {
    start: i64,
    step: i64,
    count: usize,
}

fn slice_plan(op: &Op, shape: &[usize]) -> Result<Vec<AxisRange>, String> {
    let Op::Slice { starts, ends, axes, steps } = op else {
        return Err(not_in_family(op));
    };
    let n = starts.len();
    if ends.len() != n {
        return Err(format!("Slice has {n} starts but {} ends", ends.len()));
    }
    let axes = match axes {
        Some(a) if a.len() != n => return Err(format!("Slice has {n} starts but {} axes", a.len())),
        Some(a) => unique_axes(a, shape.len()).map_err(|e| format!("Slice: {e}"))?,
        None if n > shape.len() => return Err(format!("Slice has {n} starts for an input of rank {}", shape.len())),
        None => (0..n).collect(),
    };
    if let Some(s) = steps
        && s.len() != n
    {
        return Err(format!("Slice has {n} starts but {} steps", s.len()));
    }
    let mut plan: Vec<AxisRange> = shape.iter().map(|&d| AxisRange { start: 0, step: 1, count: d }).collect();
    for (i, &a) in axes.iter().enumerate() {
        let step = steps.as_ref().map_or(1, |s| s[i]);
        if step == 0 {
            return Err(format!("Slice step for axis {a} is 0"));
        }
        // i128 so that INT64_MIN/MAX sentinels plus the dimension cannot overflow.
        let d = shape[a] as i128;
        let (mut start, mut end) = (i128::from(starts[i]), i128::from(ends[i]));
        if start < 0 {
            start += d;
        }
        if end < 0 {
            end += d;
        }
        let count = if step > 0 {
            start = start.clamp(0, d);
            end = end.clamp(0, d);
            ((end - start).max(0) as u128).div_ceil(step as u128)
        } else {
            start = start.clamp(0, d - 1);
            end = end.clamp(-1, d - 1);
            ((start - end).max(0) as u128).div_ceil(step.unsigned_abs() as u128)
        };
        if count == 0 {
            return Err(format!(
                "Slice selects nothing along axis {a} of size {d} (start {}, end {}, step {step}); kiln needs every dimension ≥ 1",
                starts[i], ends[i]
            ));
        }
        // count ≤ d and 0 ≤ start < d here, so the narrowing casts are exact.
        plan[a] = AxisRange { start: start as i64, step, count: count as usize };
    }
    Ok(plan)
}

// ---- data helpers ----

/// For each element of `out_shape` (row-major), `base + Σ counter[k]·strides[k]`.
fn strided_indices(out_shape: &[usize], strides: &[isize], base: isize) -> Vec<usize> {
    let total: usize = out_shape.iter().product();
    let mut indices = Vec::with_capacity(total);
    let mut counter = vec![0usize; out_shape.len()];
    let mut flat = base;
    for _ in 0..total {
        indices.push(flat as usize);
        for axis in (0..out_shape.len()).rev() {
            counter[axis] += 1;
            flat += strides[axis];
            if counter[axis] < out_shape[axis] {
                break;
            }
            flat -= strides[axis] * counter[axis] as isize;
            counter[axis] = 0;
        }
    }
    indices
}

fn take(data: &TensorData, idx: &[usize]) -> TensorData {
    match data {
        TensorData::F32(v) => TensorData::F32(idx.iter().map(|&i| v[i]).collect()),
        TensorData::I64(v) => TensorData::I64(idx.iter().map(|&i| v[i]).collect()),
        TensorData::Bool(v) => TensorData::Bool(idx.iter().map(|&i| v[i]).collect()),
    }
}

/// The inputs' elements one after another (all inputs share the first one's dtype; infer checked).
fn concat_data(inputs: &[&Tensor]) -> TensorData {
    let mut out = match inputs[0].data() {
        TensorData::F32(_) => TensorData::F32(Vec::new()),
        TensorData::I64(_) => TensorData::I64(Vec::new()),
        TensorData::Bool(_) => TensorData::Bool(Vec::new()),
    };
    for t in inputs {
        match (&mut out, t.data()) {
            (TensorData::F32(o), TensorData::F32(v)) => o.extend_from_slice(v),
            (TensorData::I64(o), TensorData::I64(v)) => o.extend_from_slice(v),
            (TensorData::Bool(o), TensorData::Bool(v)) => o.extend_from_slice(v),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Evaluates and checks that eval's output types are what infer promised.
    fn run(op: &Op, inputs: &[&Tensor]) -> Vec<Tensor> {
        let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let inferred = infer(op, &refs).unwrap();
        let out = eval(op, inputs).unwrap();
        assert_eq!(out.iter().map(|t| t.ty()).collect::<Vec<_>>(), inferred, "eval and infer disagree");
        out
    }

    fn run1(op: &Op, x: &Tensor) -> Tensor {
        run(op, &[x]).remove(0)
    }

    fn infer_err(op: &Op, types: &[TensorType]) -> String {
        let refs: Vec<&TensorType> = types.iter().collect();
        infer(op, &refs).unwrap_err()
    }

    /// 0, 1, 2, … as f32 in the given shape.
    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_f32(shape, (0..n).map(|i| i as f32).collect()).unwrap()
    }

    fn f(t: &Tensor) -> &[f32] {
        t.as_f32().unwrap()
    }

    #[test]
    fn reshape() {
        let x = iota(&[2, 3]);
        let y = run1(&Op::Reshape { shape: vec![3, -1], allowzero: false }, &x);
        assert_eq!(y.shape(), [3, 2]);
        assert_eq!(f(&y), f(&x));
        let y = run1(&Op::Reshape { shape: vec![0, -1, 1], allowzero: false }, &x);
        assert_eq!(y.shape(), [2, 3, 1]);
        let t = [TensorType::f32([2, 3])];
        let err = infer_err(&Op::Reshape { shape: vec![4, 2], allowzero: false }, &t);
        assert!(err.contains("[2,3]") && err.contains("[4,2]"), "{err}");
        let err = infer_err(&Op::Reshape { shape: vec![4, -1], allowzero: false }, &t);
        assert!(err.contains("do not divide"), "{err}");
        let err = infer_err(&Op::Reshape { shape: vec![-1, -1], allowzero: false }, &t);
        assert!(err.contains("more than one -1"), "{err}");
        let err = infer_err(&Op::Reshape { shape: vec![6, 0], allowzero: true }, &t);
        assert!(err.contains("allowzero"), "{err}");
        let err = infer_err(&Op::Reshape { shape: vec![1, 1, 0], allowzero: false }, &t);
        assert!(err.contains("input has rank 2"), "{err}");
        let err = infer_err(&Op::Reshape { shape: vec![-2, -3], allowzero: false }, &t);
        assert!(err.contains("only -1 and 0"), "{err}");
    }

    #[test]
    fn transpose() {
        let x = iota(&[2, 3]); // [[0,1,2],[3,4,5]]
        let y = run1(&Op::Transpose { perm: None }, &x);
        assert_eq!(y.shape(), [3, 2]);
        assert_eq!(f(&y), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        // out[j,k,i] = x[i,j,k] = 12i + 4j + k for perm [1,2,0] on [2,3,4].
        let x = iota(&[2, 3, 4]);
        let y = run1(&Op::Transpose { perm: Some(vec![1, 2, 0]) }, &x);
        assert_eq!(y.shape(), [3, 4, 2]);
        for j in 0..3 {
            for k in 0..4 {
                for i in 0..2 {
                    assert_eq!(f(&y)[j * 8 + k * 2 + i], (12 * i + 4 * j + k) as f32);
                }
            }
        }
        let t = [TensorType::f32([2, 3])];
        assert!(infer_err(&Op::Transpose { perm: Some(vec![0, 0]) }, &t).contains("not a permutation"));
        assert!(infer_err(&Op::Transpose { perm: Some(vec![0, 1, 2]) }, &t).contains("not a permutation"));
    }

    #[test]
    fn concat() {
        let a = Tensor::from_f32([2, 1], vec![1.0, 2.0]).unwrap();
        let b = Tensor::from_f32([2, 2], vec![3.0, 4.0, 5.0, 6.0]).unwrap();
        let y = run(&Op::Concat { axis: -1 }, &[&a, &b]).remove(0);
        assert_eq!(y.shape(), [2, 3]);
        assert_eq!(f(&y), [1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
        let p = Tensor::from_i64([1, 2], vec![7, 8]).unwrap();
        let q = Tensor::from_i64([2, 2], vec![1, 2, 3, 4]).unwrap();
        let y = run(&Op::Concat { axis: 0 }, &[&p, &q, &p]).remove(0);
        assert_eq!(y.shape(), [4, 2]);
        assert_eq!(y.as_i64().unwrap(), [7, 8, 1, 2, 3, 4, 7, 8]);
        let err = infer_err(&Op::Concat { axis: 0 }, &[TensorType::f32([1, 2]), TensorType::new(DType::I64, [1, 2])]);
        assert!(err.contains("is i64 but input 0 is f32"), "{err}");
        let err = infer_err(&Op::Concat { axis: 0 }, &[TensorType::f32([1, 2]), TensorType::f32([1, 3])]);
        assert!(err.contains("all dimensions but axis 0"), "{err}");
        let err = infer_err(&Op::Concat { axis: 2 }, &[TensorType::f32([1, 2])]);
        assert!(err.contains("out of range"), "{err}");
    }

    #[test]
    fn split() {
        let x = iota(&[5]);
        let parts = run(&Op::Split { axis: 0, split: None, num_outputs: 3 }, &[&x]);
        // ceil(5/3) = 2: sizes 2, 2, 1.
        assert_eq!(
            parts.iter().map(|t| f(t).to_vec()).collect::<Vec<_>>(),
            [vec![0.0, 1.0], vec![2.0, 3.0], vec![4.0]]
        );
        let parts = run(&Op::Split { axis: -1, split: Some(vec![1, 4]), num_outputs: 2 }, &[&x]);
        assert_eq!(f(&parts[1]), [1.0, 2.0, 3.0, 4.0]);
        let x = iota(&[2, 4]);
        let parts = run(&Op::Split { axis: 1, split: None, num_outputs: 2 }, &[&x]);
        assert_eq!(parts[0].shape(), [2, 2]);
        assert_eq!(f(&parts[0]), [0.0, 1.0, 4.0, 5.0]);
        assert_eq!(f(&parts[1]), [2.0, 3.0, 6.0, 7.0]);
        let t = [TensorType::f32([5])];
        // ceil(5/4) = 2, and 3·2 = 6 > 5 leaves nothing for the fourth part.
        let err = infer_err(&Op::Split { axis: 0, split: None, num_outputs: 4 }, &t);
        assert!(err.contains("leaves the last part empty"), "{err}");
        let err = infer_err(&Op::Split { axis: 0, split: Some(vec![2, 2]), num_outputs: 2 }, &t);
        assert!(err.contains("do not sum"), "{err}");
        let err = infer_err(&Op::Split { axis: 0, split: Some(vec![5, 0]), num_outputs: 2 }, &t);
        assert!(err.contains("contain 0"), "{err}");
    }

    fn slice(starts: Vec<i64>, ends: Vec<i64>, axes: Option<Vec<i64>>, steps: Option<Vec<i64>>) -> Op {
        Op::Slice { starts, ends, axes, steps }
    }

    #[test]
    fn slice_onnx_semantics() {
        let x = iota(&[10]);
        let y = run1(&slice(vec![1], vec![i64::MAX], None, Some(vec![3])), &x);
        assert_eq!(f(&y), [1.0, 4.0, 7.0]);
        // Reverse the whole axis: start -1 → 9, end INT64_MIN clamps to -1 (before the first).
        let y = run1(&slice(vec![-1], vec![i64::MIN], None, Some(vec![-1])), &x);
        assert_eq!(f(&y), [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]);
        let y = run1(&slice(vec![8], vec![1], None, Some(vec![-3])), &x);
        assert_eq!(f(&y), [8.0, 5.0, 2.0]);
        let y = run1(&slice(vec![-3], vec![-1], None, None), &x);
        assert_eq!(f(&y), [7.0, 8.0]);
        let y = run1(&slice(vec![-100], vec![100], None, None), &x);
        assert_eq!(y.len(), 10);
        // 2-D, negative axis: columns 1..3 of [[0,1,2,3],[4,5,6,7],[8,9,10,11]].
        let x = iota(&[3, 4]);
        let y = run1(&slice(vec![1], vec![3], Some(vec![-1]), None), &x);
        assert_eq!(y.shape(), [3, 2]);
        assert_eq!(f(&y), [1.0, 2.0, 5.0, 6.0, 9.0, 10.0]);
        let y = run1(&slice(vec![2, 3], vec![0, 0], None, Some(vec![-2, -2])), &x);
        assert_eq!(y.shape(), [1, 2]);
        assert_eq!(f(&y), [11.0, 9.0]);
        let t = [TensorType::f32([3, 4])];
        assert!(infer_err(&slice(vec![2], vec![2], None, None), &t).contains("selects nothing"));
        assert!(infer_err(&slice(vec![0], vec![2], None, Some(vec![0])), &t).contains("step for axis 0 is 0"));
        assert!(infer_err(&slice(vec![0, 0], vec![1, 1], Some(vec![1, -1]), None), &t).contains("twice"));
        assert!(infer_err(&slice(vec![0], vec![1, 2], None, None), &t).contains("ends"));
    }

    #[test]
    fn gather() {
        let x = iota(&[3, 2]); // [[0,1],[2,3],[4,5]]
        let idx = Tensor::from_i64([2], vec![2, -3]).unwrap();
        let y = run(&Op::Gather { axis: 0 }, &[&x, &idx]).remove(0);
        assert_eq!(y.shape(), [2, 2]);
        assert_eq!(f(&y), [4.0, 5.0, 0.0, 1.0]);
        // Scalar index along axis 1 drops the axis: column 1.
        let idx = Tensor::from_i64([], vec![-1]).unwrap();
        let y = run(&Op::Gather { axis: 1 }, &[&x, &idx]).remove(0);
        assert_eq!(y.shape(), [3]);
        assert_eq!(f(&y), [1.0, 3.0, 5.0]);
        // Rank-2 indices on bool data.
        let b = Tensor::from_bool([3], vec![true, false, false]).unwrap();
        let idx = Tensor::from_i64([2, 2], vec![0, 1, 2, 0]).unwrap();
        let y = run(&Op::Gather { axis: 0 }, &[&b, &idx]).remove(0);
        assert_eq!(y.shape(), [2, 2]);
        assert_eq!(y.as_bool().unwrap(), [true, false, false, true]);
        for bad in [3, -4, i64::MIN] {
            let idx = Tensor::from_i64([1], vec![bad]).unwrap();
            let err = eval(&Op::Gather { axis: 0 }, &[&x, &idx]).unwrap_err();
            assert!(err.contains("out of range"), "{err}");
        }
        let err = infer_err(&Op::Gather { axis: 0 }, &[TensorType::f32([3]), TensorType::f32([1])]);
        assert!(err.contains("must be i64"), "{err}");
    }

    #[test]
    fn unsqueeze_squeeze() {
        let x = iota(&[2, 3]);
        let y = run1(&Op::Unsqueeze { axes: vec![0, -1] }, &x);
        assert_eq!(y.shape(), [1, 2, 3, 1]);
        assert_eq!(f(&y), f(&x));
        let y = run1(&Op::Unsqueeze { axes: vec![1] }, &x);
        assert_eq!(y.shape(), [2, 1, 3]);
        assert!(infer_err(&Op::Unsqueeze { axes: vec![0, -4] }, &[x.ty()]).contains("twice"));
        let x = iota(&[1, 2, 1, 3]);
        assert_eq!(run1(&Op::Squeeze { axes: None }, &x).shape(), [2, 3]);
        assert_eq!(run1(&Op::Squeeze { axes: Some(vec![-2]) }, &x).shape(), [1, 2, 3]);
        let err = infer_err(&Op::Squeeze { axes: Some(vec![1]) }, &[x.ty()]);
        assert!(err.contains("axis 1 of size 2"), "{err}");
    }

    #[test]
    fn expand_and_flatten() {
        let x = Tensor::from_f32([3, 1], vec![1.0, 2.0, 3.0]).unwrap();
        let y = run1(&Op::Expand { shape: vec![2, 1, 2] }, &x);
        assert_eq!(y.shape(), [2, 3, 2]);
        assert_eq!(f(&y), [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
        // Bidirectional: a 1 in the target keeps the input's dimension.
        let y = run1(&Op::Expand { shape: vec![1, 4] }, &x);
        assert_eq!(y.shape(), [3, 4]);
        assert!(infer_err(&Op::Expand { shape: vec![2, 2] }, &[x.ty()]).contains("do not broadcast"));
        assert!(infer_err(&Op::Expand { shape: vec![-1] }, &[x.ty()]).contains("≥ 1"));
        let x = iota(&[2, 3, 4]);
        assert_eq!(run1(&Op::Flatten { axis: 0 }, &x).shape(), [1, 24]);
        assert_eq!(run1(&Op::Flatten { axis: -1 }, &x).shape(), [6, 4]);
        assert_eq!(run1(&Op::Flatten { axis: 3 }, &x).shape(), [24, 1]);
        assert!(infer_err(&Op::Flatten { axis: 4 }, &[x.ty()]).contains("out of range"));
    }

    #[test]
    fn tile() {
        let x = iota(&[2, 2]); // [[0,1],[2,3]]
        let y = run1(&Op::Tile { repeats: vec![2, 3] }, &x);
        assert_eq!(y.shape(), [4, 6]);
        assert_eq!(&f(&y)[..6], [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
        assert_eq!(&f(&y)[18..], [2.0, 3.0, 2.0, 3.0, 2.0, 3.0]);
        let b = Tensor::from_i64([2], vec![7, 8]).unwrap();
        assert_eq!(run1(&Op::Tile { repeats: vec![2] }, &b).as_i64().unwrap(), [7, 8, 7, 8]);
        assert!(infer_err(&Op::Tile { repeats: vec![2] }, &[x.ty()]).contains("1 repeats for an input of rank 2"));
    }

    #[test]
    fn eval_revalidates_instead_of_panicking() {
        let x = iota(&[2, 3]);
        let err = eval(&Op::Transpose { perm: Some(vec![2, 0]) }, &[&x]).unwrap_err();
        assert!(err.contains("not a permutation"), "{err}");
        let err = eval(&Op::Gather { axis: 0 }, &[&x]).unwrap_err();
        assert!(err.contains("takes 2 input(s), got 1"), "{err}");
        let err = eval(&Op::Expand { shape: vec![1 << 20, 1 << 20, 2, 3] }, &[&x]).unwrap_err();
        assert!(err.contains("more than the limit"), "{err}");
    }
}
