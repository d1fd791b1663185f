//! Numpy (multidirectional) broadcasting.

use crate::dtype::ShapeDisplay;

/// The broadcast shape of two shapes, or why they do not broadcast.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(format!(
                    "shapes {} and {} do not broadcast (dimension {i} of the result: {da} vs {db})",
                    ShapeDisplay(a),
                    ShapeDisplay(b)
                ));
            }
        };
    }
    Ok(out)
}

/// For each element of `out_shape` (row-major), the flat index of the element of `in_shape` it
/// reads under broadcasting. `in_shape` must broadcast to `out_shape`.
pub fn broadcast_indices(in_shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let rank = out_shape.len();
    let offset = rank - in_shape.len();
    // Stride of each output axis in the input, 0 where the input is broadcast.
    let mut in_strides = vec![0; rank];
    let mut stride = 1;
    for i in (0..in_shape.len()).rev() {
        if in_shape[i] != 1 {
            in_strides[i + offset] = stride;
        }
        stride *= in_shape[i];
    }
    let total: usize = out_shape.iter().product();
    let mut indices = Vec::with_capacity(total);
    let mut counter = vec![0; rank];
    let mut flat = 0;
    for _ in 0..total {
        indices.push(flat);
        for axis in (0..rank).rev() {
            counter[axis] += 1;
            flat += in_strides[axis];
            if counter[axis] < out_shape[axis] {
                break;
            }
            flat -= in_strides[axis] * counter[axis];
            counter[axis] = 0;
        }
    }
    indices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(broadcast_shapes(&[2, 3], &[3]).unwrap(), vec![2, 3]);
        assert_eq!(broadcast_shapes(&[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        assert_eq!(broadcast_shapes(&[], &[5]).unwrap(), vec![5]);
        let err = broadcast_shapes(&[2, 3], &[4]).unwrap_err();
        assert_eq!(err, "shapes [2,3] and [4] do not broadcast (dimension 1 of the result: 3 vs 4)");
    }

    #[test]
    fn indices() {
        assert_eq!(broadcast_indices(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_indices(&[2, 1], &[2, 3]), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(broadcast_indices(&[], &[2]), vec![0, 0]);
        assert_eq!(broadcast_indices(&[2, 2], &[2, 2]), vec![0, 1, 2, 3]);
    }
}
