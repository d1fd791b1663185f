//! ONNX `TensorProto` → kiln [`Tensor`]: typed fields (`float_data`, `int64_data`, `int32_data`,
//! `uint64_data`), little-endian `raw_data`, and external data files next to the model.
//!
//! kiln computes in f32, i64 and bool. Other ONNX element types are widened at load time where
//! that is exact or what the user wants ([`Elem`]): float16 and bfloat16 → f32 (every value is
//! exactly representable; kiln then computes in f32, which is at least as precise), int8, int16,
//! int32, uint8, uint16, uint32 → i64 (exact). Anything else (double, uint64, complex, string,
//! float8, int4, …) is refused naming the tensor.
//!
//! Every size is checked before anything is allocated: a declared shape is refused above
//! [`MAX_ELEMENTS`], and data lengths must match the shape exactly.

use super::proto::{TensorProto, tensor_proto};
use crate::files::{Budget, OpenFile, decode_le, open_contained, try_with_capacity};
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

/// How an ONNX element type is stored in a file and which kiln type holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Elem {
    F32,
    I64,
    Bool,
    /// IEEE half precision, widened to f32.
    F16,
    /// bfloat16 (the top half of an f32), widened to f32.
    BF16,
    /// Signed integers of this many bytes, widened to i64.
    Signed(usize),
    /// Unsigned integers of this many bytes, widened to i64.
    Unsigned(usize),
}

impl Elem {
    pub(crate) fn of(code: i32) -> Result<Elem, String> {
        use tensor_proto::DataType as D;
        Ok(match D::try_from(code) {
            Ok(D::Float) => Elem::F32,
            Ok(D::Int64) => Elem::I64,
            Ok(D::Bool) => Elem::Bool,
            Ok(D::Float16) => Elem::F16,
            Ok(D::Bfloat16) => Elem::BF16,
            Ok(D::Int32) => Elem::Signed(4),
            Ok(D::Int16) => Elem::Signed(2),
            Ok(D::Int8) => Elem::Signed(1),
            Ok(D::Uint32) => Elem::Unsigned(4),
            Ok(D::Uint16) => Elem::Unsigned(2),
            Ok(D::Uint8) => Elem::Unsigned(1),
            _ => {
                return Err(format!(
                    "element type {} is not supported (kiln computes in float, int64 and bool; it reads \
                     float16/bfloat16 as float and int8/16/32, uint8/16/32 as int64)",
                    onnx_dtype_name(code)
                ));
            }
        })
    }

    /// The kiln type that holds values of this element type.
    pub(crate) fn dtype(self) -> DType {
        match self {
            Elem::F32 | Elem::F16 | Elem::BF16 => DType::F32,
            Elem::I64 | Elem::Signed(_) | Elem::Unsigned(_) => DType::I64,
            Elem::Bool => DType::Bool,
        }
    }

    /// Bytes per element in `raw_data` and external data.
    fn width(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::I64 => 8,
            Elem::Bool => 1,
            Elem::F16 | Elem::BF16 => 2,
            Elem::Signed(n) | Elem::Unsigned(n) => n,
        }
    }
}

/// kiln's element type for an ONNX element type number (widened as [`Elem`] says), or why there
/// is none.
pub(crate) fn dtype_from_onnx(code: i32) -> Result<DType, String> {
    Elem::of(code).map(Elem::dtype)
}

/// IEEE binary16 → f32 (exact: every half is an f32).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        // Subnormal: man·2^-24.
        (0, m) => return if sign != 0 { -(m as f32) * 2f32.powi(-24) } else { m as f32 * 2f32.powi(-24) },
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Decodes little-endian elements of a widened type (see [`Elem`]).
fn decode_widened(elem: Elem, bytes: &[u8], what: &str) -> Result<TensorData, String> {
    let n = elem.width();
    let word = |c: &[u8]| -> u64 { c.iter().rev().fold(0u64, |acc, &b| (acc << 8) | b as u64) };
    Ok(match elem {
        Elem::F32 | Elem::I64 | Elem::Bool => decode_le(elem.dtype(), bytes, what)?,
        Elem::F16 | Elem::BF16 => {
            let mut values = try_with_capacity(bytes.len() / 2, what)?;
            values.extend(bytes.chunks_exact(2).map(|c| widen_half(elem, u16::from_le_bytes([c[0], c[1]]))));
            TensorData::F32(values)
        }
        Elem::Signed(_) => {
            let mut values = try_with_capacity(bytes.len() / n, what)?;
            let shift = 64 - 8 * n as u32;
            values.extend(bytes.chunks_exact(n).map(|c| ((word(c) << shift) as i64) >> shift));
            TensorData::I64(values)
        }
        Elem::Unsigned(_) => {
            let mut values = try_with_capacity(bytes.len() / n, what)?;
            values.extend(bytes.chunks_exact(n).map(|c| word(c) as i64));
            TensorData::I64(values)
        }
    })
}

fn widen_half(elem: Elem, bits: u16) -> f32 {
    if elem == Elem::BF16 { f32::from_bits((bits as u32) << 16) } else { f16_to_f32(bits) }
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
    tensor_from_proto_in(t, base_dir, None, budget)
}

/// A tensor's `raw_data` as left in the model file (`super::decode_file`).
pub(crate) struct RawInFile<'a> {
    pub file: &'a mut OpenFile,
    pub offset: u64,
    pub len: usize,
}

/// [`tensor_from_proto`], with the tensor's `raw_data` read from `raw` when given: f32 data
/// straight into the tensor, a window at a time, so that it is never held twice.
pub(crate) fn tensor_from_proto_in(
    t: &TensorProto,
    base_dir: Option<&Path>,
    raw: Option<RawInFile<'_>>,
    budget: &Budget,
) -> Result<Tensor, String> {
    let elem = Elem::of(t.data_type()).map_err(|e| format!("tensor '{}': {e}", t.name()))?;
    let dtype = elem.dtype();
    if t.segment.is_some() {
        return Err("segmented tensors are not supported".into());
    }
    let (shape, count) = checked_shape(&t.dims)?;
    // count ≤ MAX_ELEMENTS (2^31) and an element is at most 8 bytes: no overflow.
    let want = count * dtype.size_bytes();
    budget.claim(want as u64, &format!("tensor '{}' ({dtype}{})", t.name(), ShapeDisplay(&shape)))?;
    let what = format!("tensor '{}'", t.name());
    let external = t.data_location() == tensor_proto::DataLocation::External;
    // Bytes in the file (a widened type is narrower there than in memory).
    let stored = count * elem.width();
    let data = if external {
        decode_widened(elem, &read_external(t, base_dir, stored)?, &what)?
    } else if let Some(raw) = raw {
        if raw.len != stored {
            return Err(format!(
                "raw_data has {} bytes but the shape needs {stored} ({count} × {})",
                raw.len,
                onnx_dtype_name(t.data_type())
            ));
        }
        if elem == Elem::F32 {
            TensorData::F32(read_f32_le(raw.file, raw.offset, count, &what)?)
        } else {
            decode_widened(elem, &raw.file.read_range(raw.offset, raw.len)?, &what)?
        }
    } else if let Some(bytes) = &t.raw_data {
        if bytes.len() != stored {
            return Err(format!(
                "raw_data has {} bytes but the shape needs {stored} ({count} × {})",
                bytes.len(),
                onnx_dtype_name(t.data_type())
            ));
        }
        decode_widened(elem, bytes, &what)?
    } else {
        from_typed_fields(t, elem, count)?
    };
    Tensor::new(shape, data)
}

/// `count` little-endian f32 at `offset` in `file`, read a window at a time into the result.
fn read_f32_le(file: &mut OpenFile, offset: u64, count: usize, what: &str) -> Result<Vec<f32>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let bytes = count as u64 * 4;
    if offset.checked_add(bytes).is_none_or(|end| end > file.len) {
        return Err(format!("{} has {} bytes, too few for {bytes} bytes at offset {offset}", file.shown, file.len));
    }
    let mut values = try_with_capacity(count, what)?;
    file.file.seek(SeekFrom::Start(offset)).map_err(|e| format!("cannot seek in {}: {e}", file.shown))?;
    let mut window = vec![0u8; 1 << 16];
    while values.len() < count {
        let n = (count - values.len()).min(window.len() / 4) * 4;
        file.file.read_exact(&mut window[..n]).map_err(|e| format!("cannot read {}: {e}", file.shown))?;
        values.extend(window[..n].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
    }
    Ok(values)
}

fn from_typed_fields(t: &TensorProto, elem: Elem, count: usize) -> Result<TensorData, String> {
    let (field, len) = match elem {
        Elem::F32 => ("float_data", t.float_data.len()),
        Elem::I64 => ("int64_data", t.int64_data.len()),
        Elem::Unsigned(4) => ("uint64_data", t.uint64_data.len()),
        // bool, the narrow integers and the halves' bit patterns (ONNX's TensorProto says so).
        _ => ("int32_data", t.int32_data.len()),
    };
    if len != count {
        return Err(format!("{field} has {len} values but the shape needs {count}"));
    }
    let what = format!("tensor '{}'", t.name());
    Ok(match elem {
        Elem::F16 | Elem::BF16 => {
            let mut values = try_with_capacity(count, &what)?;
            values.extend(t.int32_data.iter().map(|&v| widen_half(elem, v as u16)));
            TensorData::F32(values)
        }
        Elem::Unsigned(4) => {
            let mut values = try_with_capacity(count, &what)?;
            values.extend(t.uint64_data.iter().map(|&v| (v & 0xffff_ffff) as i64));
            TensorData::I64(values)
        }
        Elem::Signed(_) | Elem::Unsigned(_) => {
            let mut values = try_with_capacity(count, &what)?;
            values.extend(t.int32_data.iter().map(|&v| v as i64));
            TensorData::I64(values)
        }
        Elem::F32 => {
            let mut values = try_with_capacity(count, &what)?;
            values.extend_from_slice(&t.float_data);
            TensorData::F32(values)
        }
        Elem::I64 => {
            let mut values = try_with_capacity(count, &what)?;
            values.extend_from_slice(&t.int64_data);
            TensorData::I64(values)
        }
        Elem::Bool => {
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
        t.raw_data = Some([1.0f32.to_le_bytes(), (-3.0f32).to_le_bytes()].concat().into());
        assert_eq!(
            tensor_from_proto(&t, None, &Budget::default()).unwrap(),
            Tensor::from_f32([2], vec![1.0, -3.0]).unwrap()
        );
        t.raw_data = Some(vec![0; 7].into());
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
    fn narrow_types_are_widened_exactly() {
        use tensor_proto::DataType as D;
        let raw = |dtype, dims: &[i64], bytes: Vec<u8>| {
            let mut t = proto(dtype, dims);
            t.raw_data = Some(bytes.into());
            tensor_from_proto(&t, None, &Budget::default()).unwrap()
        };
        // float16: 1, -2, 65504 (largest), 2^-24 (smallest subnormal), inf, NaN.
        let halves: [u16; 6] = [0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x7e00];
        let t = raw(D::Float16, &[6], halves.iter().flat_map(|h| h.to_le_bytes()).collect());
        let v = t.as_f32().unwrap();
        assert_eq!(&v[..4], &[1.0, -2.0, 65504.0, 2f32.powi(-24)]);
        assert!(v[4] == f32::INFINITY && v[5].is_nan());
        // bfloat16 is the top half of an f32.
        let t = raw(D::Bfloat16, &[2], [0x3fc0u16, 0xc080].iter().flat_map(|h| h.to_le_bytes()).collect());
        assert_eq!(t.as_f32().unwrap(), &[1.5, -4.0]);
        let t = raw(D::Int32, &[2], [-7i32, 1 << 30].iter().flat_map(|v| v.to_le_bytes()).collect());
        assert_eq!(t.as_i64().unwrap(), &[-7, 1 << 30]);
        assert_eq!(raw(D::Int8, &[2], vec![0xff, 0x7f]).as_i64().unwrap(), &[-1, 127]);
        assert_eq!(raw(D::Uint8, &[2], vec![0xff, 0x7f]).as_i64().unwrap(), &[255, 127]);
        assert_eq!(raw(D::Uint32, &[1], vec![0xff; 4]).as_i64().unwrap(), &[0xffff_ffff]);
        assert_eq!(raw(D::Int16, &[1], vec![0x00, 0x80]).as_i64().unwrap(), &[-32768]);
        // Typed fields: halves' bit patterns and narrow integers live in int32_data.
        let mut t = proto(D::Float16, &[1]);
        t.int32_data = vec![0x3800];
        assert_eq!(tensor_from_proto(&t, None, &Budget::default()).unwrap().as_f32().unwrap(), &[0.5]);
        let mut t = proto(D::Uint8, &[1]);
        t.int32_data = vec![200];
        assert_eq!(tensor_from_proto(&t, None, &Budget::default()).unwrap().as_i64().unwrap(), &[200]);
        // The byte count is that of the stored type.
        let mut t = proto(D::Float16, &[2]);
        t.raw_data = Some(vec![0; 8].into());
        assert!(tensor_from_proto(&t, None, &Budget::default()).unwrap_err().contains("needs 4"));
        // What is left is refused, naming the tensor.
        let mut t = proto(D::Complex64, &[1]);
        t.name = Some("z".into());
        let err = tensor_from_proto(&t, None, &Budget::default()).unwrap_err();
        assert!(err.contains("tensor 'z'") && err.contains("complex64"), "{err}");
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
