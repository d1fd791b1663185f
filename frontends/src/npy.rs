//! Reading and writing `.npy` files (f32, i64 and bool arrays; int8/16/32 and uint8/16/32 arrays
//! are read widened to i64; Fortran-order arrays, which numpy writes for a transposed array, are
//! read into C order).

use kiln_ir::{DType, MAX_ELEMENTS, Tensor, TensorData};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom};
use std::path::Path;

/// The largest `.npy` header kiln reads. numpy writes a few hundred bytes (its own reader refuses
/// more than 10,000 by default); a header that claims more is corrupt or hostile.
const MAX_HEADER_LEN: u64 = 1 << 20;

/// Reads an `.npy` file into a tensor. Only a regular file is read. The header's declared length
/// and then its shape are checked against the file's size before anything is allocated, so that a
/// corrupt header can ask for neither a huge header nor terabytes of data.
/// Its errors are [`crate::ErrorKind::Input`] errors.
pub fn read_npy(path: &Path) -> Result<Tensor, crate::Error> {
    read_npy_or_say_why(path).map_err(|e| crate::Error::new("", e).with_kind(crate::ErrorKind::Input))
}

fn read_npy_or_say_why(path: &Path) -> Result<Tensor, String> {
    let opened = kiln_frontends::files::open_regular(path)?;
    let file_len = opened.len;
    let mut file = opened.file;
    let (preamble, header_len) =
        header_bounds(&mut file, file_len).map_err(|e| format!("{} is not a valid .npy file: {e}", path.display()))?;
    let data_len = file_len - preamble - header_len;
    // npyz multiplies the declared dimensions unchecked (an overflow panics in debug builds), so the
    // shape is checked here first: at least one byte per element must be in the file.
    // header_len ≤ MAX_HEADER_LEN (1 MiB), checked by header_bounds.
    let mut header = vec![0u8; header_len as usize];
    file.seek(SeekFrom::Start(preamble))
        .and_then(|_| file.read_exact(&mut header))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if let Some(dims) = declared_shape(&String::from_utf8_lossy(&header)) {
        let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        if elements.is_none_or(|n| n > MAX_ELEMENTS as u64 || n > data_len) {
            return Err(format!(
                "{}: its header declares shape {dims:?}, more data than the file's {data_len} bytes after the header",
                path.display()
            ));
        }
    }
    file.seek(SeekFrom::Start(0)).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::new(file))
        .map_err(|e| format!("{} is not a valid .npy file: {e}", path.display()))?;
    let fortran = npy.order() == npyz::Order::Fortran;
    let descr = npy.dtype().descr();
    // Narrow integers are widened to int64 (exact), as the ONNX reader widens int8..uint32 tensors:
    // kiln computes in f32, i64 and bool. `width` is the bytes per element in the file.
    let (dtype, width) = match descr.as_str() {
        "'<f4'" => (DType::F32, 4),
        "'<i8'" => (DType::I64, 8),
        "'|b1'" => (DType::Bool, 1),
        "'<i4'" | "'<u4'" => (DType::I64, 4),
        "'<i2'" | "'<u2'" => (DType::I64, 2),
        "'|i1'" | "'|u1'" => (DType::I64, 1),
        other => {
            return Err(format!(
                "{} holds dtype {other}; kiln reads float32 ('<f4'), int64 ('<i8'), bool ('|b1') and, widened to \
                 int64, int8/16/32 and uint8/16/32",
                path.display()
            ));
        }
    };
    let shape: Vec<usize> = npy.shape().iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect();
    let elements = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).unwrap_or(usize::MAX);
    if elements > MAX_ELEMENTS || (elements as u64).saturating_mul(width) > data_len {
        return Err(format!(
            "{}: its header declares shape {shape:?}, more data than the file's {data_len} bytes after the header",
            path.display()
        ));
    }
    let bad = |e: std::io::Error| format!("cannot read the data of {}: {e}", path.display());
    fn widen<T: Into<i64>>(v: Vec<T>) -> TensorData {
        TensorData::I64(v.into_iter().map(Into::into).collect())
    }
    let data = match descr.as_str() {
        "'<f4'" => TensorData::F32(npy.into_vec::<f32>().map_err(bad)?),
        "'<i8'" => TensorData::I64(npy.into_vec::<i64>().map_err(bad)?),
        "'|b1'" => TensorData::Bool(npy.into_vec::<bool>().map_err(bad)?),
        "'<i4'" => widen(npy.into_vec::<i32>().map_err(bad)?),
        "'<u4'" => widen(npy.into_vec::<u32>().map_err(bad)?),
        "'<i2'" => widen(npy.into_vec::<i16>().map_err(bad)?),
        "'<u2'" => widen(npy.into_vec::<u16>().map_err(bad)?),
        "'|i1'" => widen(npy.into_vec::<i8>().map_err(bad)?),
        _ => widen(npy.into_vec::<u8>().map_err(bad)?),
    };
    debug_assert_eq!(data.dtype(), dtype);
    let data = if fortran { fortran_to_c(&shape, data) } else { data };
    Tensor::new(shape, data).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reorders column-major (Fortran) data of `shape` into row-major (C) order.
fn fortran_to_c(shape: &[usize], data: TensorData) -> TensorData {
    if shape.len() < 2 {
        return data;
    }
    // Position in the file of each element in C order: the file's stride of axis k is the
    // product of the dimensions before it.
    let n: usize = shape.iter().product();
    let mut fstride = vec![1usize; shape.len()];
    for k in 1..shape.len() {
        fstride[k] = fstride[k - 1] * shape[k - 1];
    }
    let mut index = vec![0usize; shape.len()];
    let mut source = Vec::with_capacity(n);
    for _ in 0..n {
        source.push(index.iter().zip(&fstride).map(|(i, s)| i * s).sum::<usize>());
        for k in (0..shape.len()).rev() {
            index[k] += 1;
            if index[k] < shape[k] {
                break;
            }
            index[k] = 0;
        }
    }
    fn gather<T: Copy>(v: Vec<T>, source: &[usize]) -> Vec<T> {
        source.iter().map(|&i| v[i]).collect()
    }
    match data {
        TensorData::F32(v) => TensorData::F32(gather(v, &source)),
        TensorData::I64(v) => TensorData::I64(gather(v, &source)),
        TensorData::Bool(v) => TensorData::Bool(gather(v, &source)),
    }
}

/// Checks the fixed part of an `.npy` file (magic, version, header length) and returns the
/// preamble's and the header's lengths. npyz reads a header of whatever length the file declares,
/// up to 4 GiB: the length is checked here first.
fn header_bounds(file: &mut File, file_len: u64) -> Result<(u64, u64), String> {
    let mut start = [0u8; 12];
    let got = file.read(&mut start).map_err(|e| e.to_string())?;
    // A short read of a regular file is its end; what follows checks `got`.
    let start = &start[..got];
    if !start.starts_with(b"\x93NUMPY") {
        return Err("it does not start with the .npy magic bytes".into());
    }
    let (preamble, header_len) = match (start.get(6), start.get(8..10), start.get(8..12)) {
        (Some(1), Some(len), _) => (10, u64::from(u16::from_le_bytes([len[0], len[1]]))),
        (Some(2 | 3), _, Some(len)) => (12, u64::from(u32::from_le_bytes([len[0], len[1], len[2], len[3]]))),
        (Some(&major), _, _) if !(1..=3).contains(&major) => {
            return Err(format!("format version {major} is not one kiln reads (1, 2 or 3)"));
        }
        _ => return Err(format!("the file ends within its preamble ({file_len} bytes)")),
    };
    if header_len > MAX_HEADER_LEN || preamble + header_len > file_len {
        return Err(format!(
            "its header declares {header_len} bytes, but the file has {file_len} in all (and kiln reads headers \
             of at most {MAX_HEADER_LEN} bytes)"
        ));
    }
    Ok((preamble, header_len))
}

/// The dimensions of the header's `'shape': (d0, d1, …)` entry, if it has one of that form; a
/// header that does not is left to npyz to refuse.
fn declared_shape(header: &str) -> Option<Vec<u64>> {
    let after_key = &header[header.find("'shape'").or_else(|| header.find("\"shape\""))? + 7..];
    let tuple = after_key.trim_start().strip_prefix(':')?.trim_start().strip_prefix('(')?;
    let inside = &tuple[..tuple.find(')')?];
    inside.split(',').map(str::trim).filter(|d| !d.is_empty()).map(|d| d.parse::<u64>().ok()).collect()
}

/// Writes a tensor as an `.npy` file. Refuses to write through anything but a new or regular
/// file: a FIFO in the output folder would block `create` until someone reads it, and a link would
/// write wherever it points.
/// Its errors are [`crate::ErrorKind::Io`] errors.
pub fn write_npy(path: &Path, tensor: &Tensor) -> Result<(), crate::Error> {
    write_npy_or_say_why(path, tensor).map_err(|e| crate::Error::new("", e).with_kind(crate::ErrorKind::Io))
}

fn write_npy_or_say_why(path: &Path, tensor: &Tensor) -> Result<(), String> {
    let cannot = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.is_file()
    {
        return Err(format!(
            "cannot write {}: it exists and is not a regular file (kiln replaces only regular files)",
            path.display()
        ));
    }
    let file = File::create(path).map_err(cannot)?;
    let shape: Vec<u64> = tensor.shape().iter().map(|&d| d as u64).collect();
    let mut out = BufWriter::new(file);
    macro_rules! write_all {
        ($ty:ty, $values:expr) => {{
            let mut writer = npyz::WriteOptions::<$ty>::new()
                .default_dtype()
                .shape(&shape)
                .writer(&mut out)
                .begin_nd()
                .map_err(cannot)?;
            writer.extend($values.iter().copied()).map_err(cannot)?;
            writer.finish().map_err(cannot)?;
        }};
    }
    use npyz::WriterBuilder;
    match tensor.data() {
        TensorData::F32(v) => write_all!(f32, v),
        TensorData::I64(v) => write_all!(i64, v),
        TensorData::Bool(v) => write_all!(bool, v),
    }
    Ok(())
}

/// Reads a whole small file, for tests that look at raw bytes.
#[doc(hidden)]
pub fn read_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("kiln-npy-{}-{name}.npy", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Issue 11: a 20-byte file declaring a 4 GiB header made npyz allocate 4 GiB.
    #[test]
    fn header_length_is_checked_against_the_file() {
        let path = file_with("hdr", &[&b"\x93NUMPY\x02\x00"[..], &u32::MAX.to_le_bytes(), b"{'descr'"].concat());
        let err = read_npy(&path).unwrap_err().to_string();
        assert!(err.contains("header declares 4294967295 bytes, but the file has 20"), "{err}");
    }

    /// A shape whose product overflows made npyz panic ("attempt to multiply with overflow").
    #[test]
    fn shape_is_checked_before_npyz_multiplies_it() {
        assert_eq!(declared_shape("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"), Some(vec![2, 3]));
        assert_eq!(declared_shape("{'shape': (), 'descr': '<f4'}"), Some(vec![]));
        assert_eq!(declared_shape("{'shape': (7,)}"), Some(vec![7]));
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }\n";
        let bytes =
            [&b"\x93NUMPY\x01\x00"[..], &(header.len() as u16).to_le_bytes(), header.as_bytes(), &[0; 8]].concat();
        let err = read_npy(&file_with("shape", &bytes)).unwrap_err().to_string();
        assert!(err.contains("more data than the file's 8 bytes"), "{err}");
    }

    #[test]
    fn written_files_read_back() {
        let path = std::env::temp_dir().join(format!("kiln-npy-{}-rt.npy", std::process::id()));
        let t = Tensor::from_f32([2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        write_npy(&path, &t).unwrap();
        assert_eq!(read_npy(&path).unwrap(), t);
    }

    /// numpy writes a transposed (or `order="F"`) array in Fortran order; it reads back in C order
    /// with the same values (file written by `np.save(f, np.arange(6, dtype="<f4").reshape(2, 3).T)`).
    #[test]
    fn fortran_order_arrays_are_read_in_c_order() {
        let header = "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 2), }\n";
        // Column-major [[0, 3], [1, 4], [2, 5]]: the file holds 0 1 2 3 4 5.
        let data: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let bytes =
            [&b"\x93NUMPY\x01\x00"[..], &(header.len() as u16).to_le_bytes(), header.as_bytes(), &data].concat();
        let t = read_npy(&file_with("fortran", &bytes)).unwrap();
        assert_eq!(t.shape(), [3, 2]);
        assert_eq!(t.as_f32().unwrap(), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let i64_header = "{'descr': '<i8', 'fortran_order': True, 'shape': (2, 2, 2), }\n";
        let data: Vec<u8> = (0..8i64).flat_map(|v| v.to_le_bytes()).collect();
        let bytes = [&b"\x93NUMPY\x01\x00"[..], &(i64_header.len() as u16).to_le_bytes(), i64_header.as_bytes(), &data]
            .concat();
        let t = read_npy(&file_with("fortran3", &bytes)).unwrap();
        // C index (i, j, k) is file element i + 2j + 4k.
        assert_eq!(t.as_i64().unwrap(), [0, 4, 2, 6, 1, 5, 3, 7]);
    }

    /// Narrow integer arrays are widened to int64 exactly (sign- or zero-extended).
    #[test]
    fn narrow_integers_are_widened() {
        let npy = |descr: &str, data: &[u8]| {
            let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2,), }}\n");
            [&b"\x93NUMPY\x01\x00"[..], &(header.len() as u16).to_le_bytes(), header.as_bytes(), data].concat()
        };
        let cases: [(&str, Vec<u8>, [i64; 2]); 6] = [
            ("<i4", [-3i32, 1 << 30].iter().flat_map(|v| v.to_le_bytes()).collect(), [-3, 1 << 30]),
            ("<u4", [u32::MAX, 7].iter().flat_map(|v| v.to_le_bytes()).collect(), [u32::MAX as i64, 7]),
            ("<i2", [-2i16, 300].iter().flat_map(|v| v.to_le_bytes()).collect(), [-2, 300]),
            ("<u2", [65535u16, 1].iter().flat_map(|v| v.to_le_bytes()).collect(), [65535, 1]),
            ("|i1", vec![0xff, 0x7f], [-1, 127]),
            ("|u1", vec![0xff, 0x7f], [255, 127]),
        ];
        for (descr, data, want) in cases {
            let t = read_npy(&file_with(&format!("w{}", descr.replace(['<', '|'], "")), &npy(descr, &data)))
                .unwrap_or_else(|e| panic!("{descr}: {e}"));
            assert_eq!(t, Tensor::from_i64([2], want.to_vec()).unwrap(), "{descr}");
        }
        let err = read_npy(&file_with("f8", &npy("<f8", &[0; 16]))).unwrap_err().to_string();
        assert!(err.contains("'<f8'"), "{err}");
    }
}
