//! ONNX `TensorProto` → kiln [`Tensor`]: typed fields (`float_data`, `int64_data`, `int32_data` for
//! bool), little-endian `raw_data`, and external data files next to the model.
//!
//! Every size is checked before anything is allocated: a declared shape is refused above
//! [`MAX_ELEMENTS`], and data lengths must match the shape exactly.

use super::proto::{TensorProto, tensor_proto};
use crate::files::{Budget, decode_le, open_contained, try_with_capacity};
use kiln_ir::dtype::ShapeDisplay;
use kiln_ir::{DType, MAX_ELEMENTS, Tensor, TensorData};
use std::path::Path;

/// The ONNX name of an element type number, for error messages.
pub(crate) fn onnx_dtype_name(code: i32) -> String {
    match tensor_proto::DataType::try_from(code) {
        Ok(t) => t.as_str_name().to_ascii_lowercase(),
        Err(_) => format!("unknown type {code}"),
    }
}

/// kiln's element type for an ONNX element type number, or why there is none.
pub(crate) fn dtype_from_onnx(code: i32) -> Result<DType, String> {
    use tensor_proto::DataType as D;
    match D::try_from(code) {
        Ok(D::Float) => Ok(DType::F32),
        Ok(D::Int64) => Ok(DType::I64),
        Ok(D::Bool) => Ok(DType::Bool),
        _ => Err(format!("element type {} is not supported (kiln has float, int64 and bool)", onnx_dtype_name(code))),
    }
}

/// The ONNX element type number of a kiln element type.
pub(crate) fn onnx_code(dtype: DType) -> i64 {
    use tensor_proto::DataType as D;
    match dtype {
        DType::F32 => D::Float as i64,
        DType::I64 => D::Int64 as i64,
        DType::Bool => D::Bool as i64,
    }
}

/// Checks declared dimensions: none negative, the product within [`MAX_ELEMENTS`].
/// Zero-sized dimensions are allowed here (an empty tensor is how ONNX spells an absent static
/// parameter); a zero-sized weight is refused later by the graph builder.
pub(crate) fn checked_shape(dims: &[i64]) -> Result<(Vec<usize>, usize), String> {
    let mut shape = Vec::with_capacity(dims.len().min(64));
    let mut count: usize = 1;
    for &d in dims {
        let d = usize::try_from(d).map_err(|_| format!("dimension {d} is negative"))?;
        count = count
            .checked_mul(d)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| format!("shape {dims:?} has more than {MAX_ELEMENTS} elements, the most kiln accepts"))?;
        shape.push(d);
    }
    Ok((shape, count))
}

/// Converts one tensor. `base_dir` is the model's folder, for external data; `None` refuses
/// external data (e.g. a model given as bytes). The tensor's bytes are claimed from `budget` before
/// anything is read or converted.
pub(crate) fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>, budget: &Budget) -> Result<Tensor, String> {
    let dtype = dtype_from_onnx(t.data_type())?;
    if t.segment.is_some() {
        return Err("segmented tensors are not supported".into());
    }
    let (shape, count) = checked_shape(&t.dims)?;
    // count ≤ MAX_ELEMENTS (2^31) and an element is at most 8 bytes: no overflow.
    let want = count * dtype.size_bytes();
    budget.claim(want as u64, &format!("tensor '{}' ({dtype}{})", t.name(), ShapeDisplay(&shape)))?;
    let what = format!("tensor '{}'", t.name());
    let external = t.data_location() == tensor_proto::DataLocation::External;
    let data = if external {
        decode_le(dtype, &read_external(t, base_dir, want)?, &what)?
    } else if let Some(bytes) = &t.raw_data {
        if bytes.len() != want {
            return Err(format!("raw_data has {} bytes but the shape needs {want} ({count} × {dtype})", bytes.len()));
        }
        decode_le(dtype, bytes, &what)?
    } else {
        from_typed_fields(t, dtype, count)?
    };
    Tensor::new(shape, data)
}

fn from_typed_fields(t: &TensorProto, dtype: DType, count: usize) -> Result<TensorData, String> {
    let (field, len) = match dtype {
        DType::F32 => ("float_data", t.float_data.len()),
        DType::I64 => ("int64_data", t.int64_data.len()),
        DType::Bool => ("int32_data", t.int32_data.len()),
    };
    if len != count {
        return Err(format!("{field} has {len} values but the shape needs {count}"));
    }
    let what = format!("tensor '{}'", t.name());
    Ok(match dtype {
        DType::F32 => {
            let mut values = try_with_capacity(count, &what)?;
            values.extend_from_slice(&t.float_data);
            TensorData::F32(values)
        }
        DType::I64 => {
            let mut values = try_with_capacity(count, &what)?;
            values.extend_from_slice(&t.int64_data);
            TensorData::I64(values)
        }
        DType::Bool => {
            let mut values = try_with_capacity(count, &what)?;
            values.extend(t.int32_data.iter().map(|&v| v != 0));
            TensorData::Bool(values)
        }
    })
}

/// Reads `want` bytes of external data from a regular file inside `base_dir` (see
/// [`open_contained`]), its length checked against the range before anything is read.
fn read_external(t: &TensorProto, base_dir: Option<&Path>, want: usize) -> Result<Vec<u8>, String> {
    let mut location = None;
    let mut offset: u64 = 0;
    let mut length: Option<u64> = None;
    for entry in &t.external_data {
        let value = entry.value();
        match entry.key() {
            "location" => location = Some(value.to_string()),
            "offset" => {
                offset = value.parse().map_err(|_| format!("external data offset {value:?} is not a number"))?
            }
            "length" => {
                length = Some(value.parse().map_err(|_| format!("external data length {value:?} is not a number"))?)
            }
            _ => {} // checksum and future keys do not change what is read
        }
    }
    let location = location.ok_or("external data has no 'location'")?;
    let Some(base_dir) = base_dir else {
        return Err(format!("external data file {location:?} cannot be read: the model was not loaded from a file"));
    };
    if let Some(length) = length
        && length != want as u64
    {
        return Err(format!("external data length {length} does not match the {want} bytes the shape needs"));
    }
    open_contained(base_dir, &location, "external data file")?.read_range(offset, want)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dtype: tensor_proto::DataType, dims: &[i64]) -> TensorProto {
        TensorProto { data_type: Some(dtype as i32), dims: dims.to_vec(), ..TensorProto::default() }
    }

    #[test]
    fn typed_and_raw_fields() {
        let mut t = proto(tensor_proto::DataType::Float, &[2]);
        t.float_data = vec![1.0, 2.5];
        assert_eq!(
            tensor_from_proto(&t, None, &Budget::default()).unwrap(),
            Tensor::from_f32([2], vec![1.0, 2.5]).unwrap()
        );
        t.float_data.clear();
        t.raw_data = Some([1.0f32.to_le_bytes(), (-3.0f32).to_le_bytes()].concat());
        assert_eq!(
            tensor_from_proto(&t, None, &Budget::default()).unwrap(),
            Tensor::from_f32([2], vec![1.0, -3.0]).unwrap()
        );
        t.raw_data = Some(vec![0; 7]);
        assert!(tensor_from_proto(&t, None, &Budget::default()).unwrap_err().contains("raw_data has 7 bytes"));

        let mut t = proto(tensor_proto::DataType::Int64, &[]);
        t.int64_data = vec![-4];
        assert_eq!(
            tensor_from_proto(&t, None, &Budget::default()).unwrap(),
            Tensor::from_i64(vec![], vec![-4]).unwrap()
        );
        let mut t = proto(tensor_proto::DataType::Bool, &[3]);
        t.int32_data = vec![1, 0, 1];
        assert_eq!(
            tensor_from_proto(&t, None, &Budget::default()).unwrap(),
            Tensor::from_bool([3], vec![true, false, true]).unwrap()
        );
    }

    #[test]
    fn refuses_bad_sizes_and_types() {
        let t = proto(tensor_proto::DataType::Float, &[1 << 40, 1 << 40]);
        assert!(tensor_from_proto(&t, None, &Budget::default()).unwrap_err().contains("more than"));
        let t = proto(tensor_proto::DataType::Float, &[-1]);
        assert!(tensor_from_proto(&t, None, &Budget::default()).unwrap_err().contains("negative"));
        let t = proto(tensor_proto::DataType::Double, &[1]);
        assert!(tensor_from_proto(&t, None, &Budget::default()).unwrap_err().contains("double"));
        let mut t = proto(tensor_proto::DataType::Float, &[2]);
        t.float_data = vec![1.0];
        assert!(tensor_from_proto(&t, None, &Budget::default()).unwrap_err().contains("float_data has 1 values"));
    }
}
