//! Reading and writing `.npy` files (f32, i64 and bool arrays in C order).

use kiln_ir::{DType, MAX_ELEMENTS, Tensor, TensorData};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::Path;

/// Reads an `.npy` file into a tensor. The header's shape is checked against the file's size before
/// anything is allocated, so a corrupt header cannot ask for terabytes.
pub fn read_npy(path: &Path) -> Result<Tensor, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    let npy = npyz::NpyFile::new(BufReader::new(file))
        .map_err(|e| format!("{} is not a valid .npy file: {e}", path.display()))?;
    if npy.order() != npyz::Order::C {
        return Err(format!("{} is in Fortran order; kiln reads C-order arrays only", path.display()));
    }
    let descr = npy.dtype().descr();
    let dtype = match descr.as_str() {
        "'<f4'" => DType::F32,
        "'<i8'" => DType::I64,
        "'|b1'" => DType::Bool,
        other => {
            return Err(format!(
                "{} holds dtype {other}; kiln reads float32 ('<f4'), int64 ('<i8') and bool ('|b1')",
                path.display()
            ));
        }
    };
    let shape: Vec<usize> = npy.shape().iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect();
    let elements = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).unwrap_or(usize::MAX);
    if elements > MAX_ELEMENTS || (elements as u64).saturating_mul(dtype.size_bytes() as u64) > file_len {
        return Err(format!("{}: its header declares shape {shape:?}, more data than the file holds", path.display()));
    }
    let bad = |e: std::io::Error| format!("cannot read the data of {}: {e}", path.display());
    let data = match dtype {
        DType::F32 => TensorData::F32(npy.into_vec::<f32>().map_err(bad)?),
        DType::I64 => TensorData::I64(npy.into_vec::<i64>().map_err(bad)?),
        DType::Bool => TensorData::Bool(npy.into_vec::<bool>().map_err(bad)?),
    };
    Tensor::new(shape, data).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a tensor as an `.npy` file.
pub fn write_npy(path: &Path, tensor: &Tensor) -> Result<(), String> {
    let cannot = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
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
