//! Reading and writing `.npy` files (f32, i64 and bool arrays; int8/16/32 and uint8/16/32 arrays
//! are read widened to i64; Fortran-order arrays, which numpy writes for a transposed array, are
//! read into C order). kiln's own reader: the format is a magic, a length and a Python dict literal
//! with three keys, and parsing it here (against the file's size, before anything is allocated)
//! costs less than a dependency that brought a parser generator and big integers to do the same.

use kiln_ir::{DType, Error, ErrorKind, MAX_ELEMENTS, Tensor, TensorData};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The largest `.npy` header kiln reads. numpy writes a few hundred bytes (its own reader refuses
/// more than 10,000 by default); a header that claims more is corrupt or hostile.
const MAX_HEADER_LEN: u64 = 1 << 20;

/// Reads an `.npy` file into a tensor. Only a regular file is read. The header's declared length
/// and then its shape are checked against the file's size before anything is allocated, so that a
/// corrupt header can ask for neither a huge header nor terabytes of data.
/// Its errors are [`ErrorKind::Input`] errors.
pub fn read_npy(path: &Path) -> Result<Tensor, Error> {
    read_npy_or_say_why(path).map_err(|e| Error::new("", e).with_kind(ErrorKind::Input))
}

/// What the header says.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

fn read_npy_or_say_why(path: &Path) -> Result<Tensor, String> {
    let opened = crate::files::open_regular(path)?;
    let file_len = opened.len;
    let mut file = opened.file;
    let invalid = |e: String| format!("{} is not a valid .npy file: {e}", path.display());
    let (preamble, header_len) = header_bounds(&mut file, file_len).map_err(invalid)?;
    let data_len = file_len - preamble - header_len;
    // header_len ≤ MAX_HEADER_LEN (1 MiB), checked by header_bounds.
    let mut header = vec![0u8; header_len as usize];
    file.seek(SeekFrom::Start(preamble))
        .and_then(|_| file.read_exact(&mut header))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let header = std::str::from_utf8(&header).map_err(|_| invalid("its header is not text".to_string()))?;
    let Header { descr, fortran_order, shape } = parse_header(header).map_err(invalid)?;
    // Narrow integers are widened to int64 (exact), as the ONNX reader widens int8..uint32 tensors:
    // kiln computes in f32, i64 and bool. `width` is the bytes per element in the file.
    let (dtype, width) = match descr.as_str() {
        "<f4" => (DType::F32, 4),
        "<i8" => (DType::I64, 8),
        "|b1" => (DType::Bool, 1),
        "<i4" | "<u4" => (DType::I64, 4),
        "<i2" | "<u2" => (DType::I64, 2),
        "|i1" | "|u1" => (DType::I64, 1),
        other => {
            return Err(format!(
                "{} holds dtype '{other}'; kiln reads float32 ('<f4'), int64 ('<i8'), bool ('|b1') and, widened \
                 to int64, int8/16/32 and uint8/16/32",
                path.display()
            ));
        }
    };
    let elements = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    let bytes = elements.and_then(|n| n.checked_mul(width));
    let (Some(elements), Some(bytes)) = (elements, bytes) else {
        return Err(too_much(path, &shape, data_len));
    };
    if elements > MAX_ELEMENTS as u64 || bytes > data_len {
        return Err(too_much(path, &shape, data_len));
    }
    // Both fit: bytes ≤ data_len, the file's length.
    let mut raw = vec![0u8; bytes as usize];
    file.read_exact(&mut raw).map_err(|e| format!("cannot read the data of {}: {e}", path.display()))?;
    fn widen<const N: usize>(raw: &[u8], f: impl Fn([u8; N]) -> i64) -> TensorData {
        TensorData::I64(raw.chunks_exact(N).map(|c| f(c.try_into().unwrap_or([0; N]))).collect())
    }
    let data = match descr.as_str() {
        "<f4" => TensorData::F32(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        "<i8" => widen::<8>(&raw, i64::from_le_bytes),
        "|b1" => {
            if let Some(i) = raw.iter().position(|&b| b > 1) {
                return Err(format!("{}: bool element {i} is the byte {}, not 0 or 1", path.display(), raw[i]));
            }
            TensorData::Bool(raw.iter().map(|&b| b == 1).collect())
        }
        "<i4" => widen::<4>(&raw, |b| i32::from_le_bytes(b).into()),
        "<u4" => widen::<4>(&raw, |b| u32::from_le_bytes(b).into()),
        "<i2" => widen::<2>(&raw, |b| i16::from_le_bytes(b).into()),
        "<u2" => widen::<2>(&raw, |b| u16::from_le_bytes(b).into()),
        "|i1" => widen::<1>(&raw, |b| i8::from_le_bytes(b).into()),
        _ => widen::<1>(&raw, |b| b[0].into()),
    };
    debug_assert_eq!(data.dtype(), dtype);
    // Each dimension ≤ elements ≤ MAX_ELEMENTS: they fit a usize.
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let data = if fortran_order { fortran_to_c(&shape, data) } else { data };
    Tensor::new(shape, data).map_err(|e| format!("{}: {e}", path.display()))
}

fn too_much(path: &Path, shape: &[u64], data_len: u64) -> String {
    format!(
        "{}: its header declares shape {shape:?}, more data than the file's {data_len} bytes after the header",
        path.display()
    )
}

/// Parses the header's Python dict literal: `{'descr': '<f4', 'fortran_order': False,
/// 'shape': (2, 3), }`, keys in any order, single or double quotes, trailing commas.
fn parse_header(text: &str) -> Result<Header, String> {
    let body = text.trim().strip_prefix('{').and_then(|t| t.trim_end().strip_suffix('}'));
    let body = body.ok_or("its header is not a dict literal")?;
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let (key, after) = quoted(rest).ok_or_else(|| format!("expected a quoted key at {:?}", excerpt(rest)))?;
        let after = after.trim_start().strip_prefix(':').ok_or_else(|| format!("expected ':' after '{key}'"))?;
        let after = after.trim_start();
        let after = match key {
            "descr" => {
                let (value, after) = quoted(after).ok_or("'descr' is not a quoted string")?;
                descr = Some(value.to_string());
                after
            }
            "fortran_order" => {
                let (value, after) = if let Some(a) = after.strip_prefix("True") {
                    (true, a)
                } else if let Some(a) = after.strip_prefix("False") {
                    (false, a)
                } else {
                    return Err("'fortran_order' is neither True nor False".into());
                };
                fortran_order = Some(value);
                after
            }
            "shape" => {
                let inside = after.strip_prefix('(').ok_or("'shape' is not a tuple")?;
                let end = inside.find(')').ok_or("'shape' is not a closed tuple")?;
                let dims = inside[..end]
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    // Python 2's numpy wrote long integers as `3L`.
                    .map(|d| d.trim_end_matches('L').parse::<u64>().map_err(|_| format!("'shape' holds {d:?}")))
                    .collect::<Result<Vec<u64>, String>>()?;
                shape = Some(dims);
                &inside[end + 1..]
            }
            other => return Err(format!("unknown key '{other}'")),
        };
        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(next) => next.trim_start(),
            None if after.is_empty() => after,
            None => return Err(format!("expected ',' at {:?}", excerpt(after))),
        };
    }
    match (descr, fortran_order, shape) {
        (Some(descr), Some(fortran_order), Some(shape)) => Ok(Header { descr, fortran_order, shape }),
        _ => Err("its header lacks 'descr', 'fortran_order' or 'shape'".into()),
    }
}

/// A string in single or double quotes at the start of `s`, and what follows it.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = &s[1..];
    let end = inner.find(quote)?;
    Some((&inner[..end], &inner[end + 1..]))
}

fn excerpt(s: &str) -> String {
    s.chars().take(20).collect()
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
/// preamble's and the header's lengths, the header's checked against the file and
/// [`MAX_HEADER_LEN`] before it is read.
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

/// Writes a tensor as an `.npy` file. Refuses to write through anything but a new or regular
/// file: a FIFO in the output folder would block `create` until someone reads it, and a link would
/// write wherever it points.
/// Its errors are [`ErrorKind::Io`] errors.
pub fn write_npy(path: &Path, tensor: &Tensor) -> Result<(), Error> {
    write_npy_or_say_why(path, tensor).map_err(|e| Error::new("", e).with_kind(ErrorKind::Io))
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
    let mut out = BufWriter::new(File::create(path).map_err(cannot)?);
    out.write_all(&npy_header(tensor)).map_err(cannot)?;
    match tensor.data() {
        TensorData::F32(v) => v.iter().try_for_each(|x| out.write_all(&x.to_le_bytes())),
        TensorData::I64(v) => v.iter().try_for_each(|x| out.write_all(&x.to_le_bytes())),
        TensorData::Bool(v) => v.iter().try_for_each(|&x| out.write_all(&[x as u8])),
    }
    .and_then(|_| out.flush())
    .map_err(cannot)
}

/// The magic, version 1.0, and the header padded with spaces and a newline so that the data starts
/// at a multiple of 64 bytes, as numpy writes it.
fn npy_header(tensor: &Tensor) -> Vec<u8> {
    let descr = match tensor.dtype() {
        DType::F32 => "<f4",
        DType::I64 => "<i8",
        DType::Bool => "|b1",
    };
    let dims: Vec<String> = tensor.shape().iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut text = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let unpadded = 10 + text.len() + 1;
    text.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    text.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    // A shape of at most 8 dimensions of 20 digits each: far below a u16.
    bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes
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

    /// A shape whose product overflows is refused before anything is allocated (npyz, the reader
    /// kiln used before, panicked: "attempt to multiply with overflow").
    #[test]
    fn shape_is_checked_against_the_file() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }\n";
        let bytes =
            [&b"\x93NUMPY\x01\x00"[..], &(header.len() as u16).to_le_bytes(), header.as_bytes(), &[0; 8]].concat();
        let err = read_npy(&file_with("shape", &bytes)).unwrap_err().to_string();
        assert!(err.contains("more data than the file's 8 bytes"), "{err}");
    }

    #[test]
    fn headers_as_numpy_and_python_2_write_them() {
        let h = |text: &str| parse_header(text);
        let want = Header { descr: "<f4".into(), fortran_order: false, shape: vec![2, 3] };
        assert_eq!(h("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }").as_ref(), Ok(&want));
        assert_eq!(h("{\"shape\": (2L, 3L), \"fortran_order\": False, \"descr\": \"<f4\"}").as_ref(), Ok(&want));
        assert_eq!(h("{'descr': '|b1', 'fortran_order': True, 'shape': (), }").map(|x| x.shape), Ok(vec![]));
        assert_eq!(h("{'descr': '<i8', 'fortran_order': False, 'shape': (7,), }").map(|x| x.shape), Ok(vec![7]));
        for bad in [
            "this is not a dict",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
            "{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}",
            "{'descr: '<f4', 'fortran_order': False, 'shape': (1,)}",
        ] {
            assert!(h(bad).is_err(), "{bad}");
        }
    }

    /// What kiln writes, numpy's layout: version 1.0, data aligned to 64 bytes, the header numpy
    /// itself writes for these shapes.
    #[test]
    fn written_header_is_numpys() {
        let t = Tensor::from_f32([2, 3], vec![0.0; 6]).unwrap();
        let h = npy_header(&t);
        assert_eq!(h.len() % 64, 0);
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"), "{text}");
        assert!(text.ends_with(" \n"), "{text:?}");
        let v = Tensor::from_bool([5], vec![true; 5]).unwrap();
        let text = String::from_utf8(npy_header(&v)[10..].to_vec()).unwrap();
        assert!(text.contains("'descr': '|b1'") && text.contains("'shape': (5,)"), "{text}");
    }

    #[test]
    fn bool_bytes_other_than_0_and_1_are_refused() {
        let header = "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }\n";
        let bytes =
            [&b"\x93NUMPY\x01\x00"[..], &(header.len() as u16).to_le_bytes(), header.as_bytes(), &[1, 0, 7]].concat();
        let err = read_npy(&file_with("bool", &bytes)).unwrap_err().to_string();
        assert!(err.contains("bool element 2 is the byte 7"), "{err}");
    }

    #[test]
    fn written_files_read_back() {
        let path = std::env::temp_dir().join(format!("kiln-npy-{}-rt.npy", std::process::id()));
        let tensors = [
            Tensor::from_f32([2, 3], vec![1.0, -2.5, 3.0, f32::MAX, 5.0, f32::MIN_POSITIVE]).unwrap(),
            Tensor::from_i64([3], vec![i64::MIN, 0, i64::MAX]).unwrap(),
            Tensor::from_bool([2, 1, 2], vec![true, false, false, true]).unwrap(),
            Tensor::from_f32(Vec::<usize>::new(), vec![7.0]).unwrap(),
        ];
        for t in tensors {
            write_npy(&path, &t).unwrap();
            assert_eq!(read_npy(&path).unwrap(), t);
        }
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
