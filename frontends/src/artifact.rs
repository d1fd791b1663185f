//! Saved compiled models. A `.kiln` file is one safetensors file: the graph's `.kir` text form in
//! the header's metadata (key `kiln.kir`) and every weight as a tensor under its own name, so it
//! reloads without re-reading the source model or re-running the optimizer. A `.kir` file whose
//! weights are declared without data takes them from the safetensors file beside it with the same
//! stem (`model.kir` → `model.safetensors`), which is what `kiln compile -o model.kir` writes.

use crate::files::{ReadLimits, decode_le};
use kiln_ir::{DType, Error, Model, Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The metadata key holding the `.kir` text in a `.kiln` file.
pub const KIR_KEY: &str = "kiln.kir";
/// The metadata key naming the format, with value [`FORMAT`].
pub const FORMAT_KEY: &str = "format";
pub const FORMAT: &str = "kiln-artifact-1";

/// Writes `model` as one `.kiln` file.
pub fn write_kiln(path: &Path, model: &Model) -> Result<(), Error> {
    let mut metadata = HashMap::new();
    metadata.insert(FORMAT_KEY.to_string(), FORMAT.to_string());
    metadata.insert(KIR_KEY.to_string(), kiln_ir::text::print(&model.graph));
    write_safetensors(path, model, Some(metadata))
}

/// Writes `model`'s graph as `.kir` text to `path` and its weights to the safetensors file beside
/// it ([`weights_path`]), which [`load_kir`] reads back.
pub fn write_kir(path: &Path, model: &Model) -> Result<(), Error> {
    std::fs::write(path, kiln_ir::text::print(&model.graph))
        .map_err(|e| Error::new(path.display().to_string(), format!("cannot write: {e}")))?;
    write_safetensors(&weights_path(path), model, None)
}

/// The weights file of a `.kir` file: the same path with the extension `.safetensors`.
pub fn weights_path(kir: &Path) -> PathBuf {
    kir.with_extension("safetensors")
}

/// Reads a `.kiln` file written by [`write_kiln`].
pub fn load_kiln(path: &Path, limits: &ReadLimits) -> Result<Model, Error> {
    let shown = path.display().to_string();
    let bytes = read(path, limits)?;
    let tensors = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::new(&shown, format!("not a .kiln file (its safetensors layout is invalid: {e})")))?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::new(&shown, format!("not a .kiln file (its safetensors header is invalid: {e})")))?;
    let info = metadata.metadata().clone().unwrap_or_default();
    if info.get(FORMAT_KEY).map(String::as_str) != Some(FORMAT) {
        return Err(Error::new(
            &shown,
            format!(
                "not a .kiln file: its header's metadata has no \"{FORMAT_KEY}\": \"{FORMAT}\" (write one with kiln compile MODEL -o FILE.kiln)"
            ),
        ));
    }
    let text = info
        .get(KIR_KEY)
        .ok_or_else(|| Error::new(&shown, format!("the .kiln file has no graph (metadata key \"{KIR_KEY}\")")))?;
    let mut model = kiln_ir::text::parse(text).map_err(|e| e.within(&format!("{shown}: the graph")))?;
    fill_weights(&mut model, &tensors, &shown)?;
    Ok(model)
}

/// Reads a `.kir` file; weights declared without data are read from [`weights_path`] when that
/// file exists.
pub fn load_kir(path: &Path, limits: &ReadLimits) -> Result<Model, Error> {
    let shown = path.display().to_string();
    let bytes = read(path, limits)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::new(&shown, "cannot read: the file is not UTF-8 text").with_source(e))?;
    let mut model = kiln_ir::text::parse(&text).map_err(|e| e.within(&shown))?;
    let missing = model.graph.weights().iter().any(|&id| model.weights.get(&model.graph.node(id).name).is_none());
    let weights = weights_path(path);
    if missing && weights.exists() {
        let shown = weights.display().to_string();
        let bytes = read(&weights, limits)?;
        let tensors = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::new(&shown, format!("not a valid safetensors file: {e}")))?;
        fill_weights(&mut model, &tensors, &shown)?;
    }
    Ok(model)
}

fn read(path: &Path, limits: &ReadLimits) -> Result<Vec<u8>, Error> {
    crate::files::read_whole(path, limits.memory_cap, "cannot read")
}

/// Gives every weight the graph declares without data its tensor from `tensors`, checked against
/// the declared type; every problem is reported at once.
fn fill_weights(model: &mut Model, tensors: &SafeTensors<'_>, shown: &str) -> Result<(), Error> {
    let mut diags = Vec::new();
    let declared: Vec<(String, kiln_ir::TensorType)> = model
        .graph
        .weights()
        .iter()
        .flat_map(|&id| model.graph.node(id).outputs.iter().map(|info| (info.name.clone(), info.ty.clone())))
        .collect();
    for (name, ty) in declared {
        if model.weights.get(&name).is_some() {
            continue;
        }
        let what = format!("weight '{name}'");
        let mut problem = |message: String| diags.push(kiln_ir::Diagnostic { location: what.clone(), message });
        let view = match tensors.tensor(&name) {
            Ok(view) => view,
            Err(_) => {
                problem(format!("has no data in {shown}"));
                continue;
            }
        };
        let want = match ty.dtype {
            DType::F32 => Dtype::F32,
            DType::I64 => Dtype::I64,
            DType::Bool => Dtype::BOOL,
        };
        if view.dtype() != want || view.shape() != ty.shape.as_slice() {
            problem(format!(
                "is declared {ty} but {shown} holds {:?} data of shape {}",
                view.dtype(),
                kiln_ir::dtype::ShapeDisplay(view.shape())
            ));
            continue;
        }
        match decode_le(ty.dtype, view.data(), &what).and_then(|data| Tensor::new(ty.shape.clone(), data)) {
            Ok(tensor) => model.weights.insert(name, tensor),
            Err(e) => problem(e),
        }
    }
    match Error::from_diagnostics(diags) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A weight's bytes, little-endian, for the safetensors writer.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn write_safetensors(path: &Path, model: &Model, metadata: Option<HashMap<String, String>>) -> Result<(), Error> {
    let raws: Vec<(String, Raw)> = model
        .weights
        .iter()
        .map(|(name, tensor)| {
            let (dtype, bytes) = match tensor.data() {
                TensorData::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                TensorData::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                TensorData::Bool(v) => (Dtype::BOOL, v.iter().map(|&b| b as u8).collect()),
            };
            (name.to_string(), Raw { dtype, shape: tensor.shape().to_vec(), bytes })
        })
        .collect();
    safetensors::tensor::serialize_to_file(raws.iter().map(|(n, r)| (n.as_str(), r)), metadata, path)
        .map_err(|e| Error::new(path.display().to_string(), format!("cannot write: {e}")))
}
