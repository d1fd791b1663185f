//! The ONNX reader: `ModelProto` (decoded with prost from the vendored `proto/onnx.proto`) → a kiln
//! [`Model`].
//!
//! - Opsets [`MIN_OPSET`] (7) through [`MAX_OPSET`] of the default domain, old forms upgraded at
//!   import (`upgrade.rs`); nodes of the `kiln` domain map onto
//!   kiln's own ops by name.
//! - Static parameters that recent opsets pass as inputs (Reshape's shape, Slice's starts, Pad's
//!   pads, Clip's bounds, Resize's scales, Reduce axes, …) are read at load time from initializers,
//!   `Constant` nodes or small constant sub-graphs, and become kiln attributes; a non-constant one is
//!   an error naming the node.
//! - Dynamic dimensions of graph inputs are fixed from `fixed_dims`; missing ones are one error
//!   listing every input that needs a shape.
//! - A model with ops kiln does not implement fails with one error listing every such op with its
//!   node names and count.
//! - Malformed bytes are an error, never a panic (see `fuzz/`).

mod attention;
mod data_ops;
mod einsum;
mod fold;
mod import;
mod lower;
mod spatial;
#[allow(clippy::all, missing_docs, rustdoc::all)]
pub(crate) mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
mod signature;
mod tensor;
#[cfg(test)]
mod tests;
mod upgrade;

pub use fold::LOAD_TIME_OPS;
pub use lower::ONNX_OPS;
pub use signature::{Dim, Port, Signature, read_signature};

use crate::files::{Budget, ReadLimits, open_regular};
use kiln_ir::{Error, Model, Tensor};
use prost::Message;
use std::path::Path;

/// The oldest default-domain opset kiln reads. Opsets 7–12 are upgraded at import (`upgrade.rs`);
/// older ones differ in ways no current exporter writes (`consumed_inputs`, Gemm's `broadcast`,
/// BatchNormalization's `is_test`), so they are refused.
pub const MIN_OPSET: i64 = 7;
/// The newest default-domain opset kiln knows (that of onnx 1.23); newer ones may have changed an
/// op's meaning, so they are refused rather than guessed at.
pub const MAX_OPSET: i64 = 28;

/// Reads an ONNX model file. External data files are looked up next to it. `fixed_dims` gives the
/// full shape of graph inputs whose declared shape has dynamic dimensions (by input name).
pub fn load_onnx(path: &Path, fixed_dims: &[(String, Vec<usize>)]) -> Result<Model, Error> {
    load_onnx_with_values(path, fixed_dims, &[])
}

/// [`load_onnx`], with values for graph inputs that kiln needs at load time: a graph input that
/// feeds a static parameter (Reshape's shape, Slice's starts, Unsqueeze's axes, …) and has a value
/// in `values` becomes a constant. Values of other inputs are ignored (they stay run-time inputs),
/// so a caller may pass every input it has and then run the model with those that are still among
/// its graph inputs.
pub fn load_onnx_with_values(
    path: &Path,
    fixed_dims: &[(String, Vec<usize>)],
    values: &[(String, Tensor)],
) -> Result<Model, Error> {
    load_onnx_with(path, fixed_dims, values, &ReadLimits::default())
}

/// [`load_onnx_with_values`] with explicit [`ReadLimits`].
pub fn load_onnx_with(
    path: &Path,
    fixed_dims: &[(String, Vec<usize>)],
    values: &[(String, Tensor)],
    limits: &ReadLimits,
) -> Result<Model, Error> {
    let shown = path.display().to_string();
    let base_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    // Protobuf messages are below 2 GiB; inline weights count against the cap as well.
    let (model, deferred) = decode_file(path, limits.memory_cap.min(MAX_PROTO_BYTES))?;
    import::import_model(&model, Some(&base_dir), fixed_dims, values, limits, deferred).map_err(|e| e.within(&shown))
}

/// Initializer data at least this large is read from the model file straight into its tensor,
/// rather than into a buffer first ([`decode_file`]).
const DEFER_MIN_BYTES: usize = 4096;

/// Where the initializers' `raw_data` were left in the model file ([`decode_file`]): by index in
/// the graph's `initializer` list.
pub(crate) struct Deferred {
    pub file: crate::files::OpenFile,
    pub ranges: Vec<Option<(u64, usize)>>,
}

/// Decodes the ONNX file at `path` (at most `limit` bytes) without holding the file in memory,
/// and without a second copy of the weights (issue 15: a model's weights were held as the file's
/// bytes, then as decoded `raw_data`, then as tensors). A first pass over the file records where
/// each graph initializer's `raw_data` lies (prost over a skeleton of the three messages on the
/// way to it, reading little but headers); the second decodes the model with those fields left in
/// the file, for the importer to read each straight into its tensor ([`Deferred`]).
fn decode_file(path: &Path, limit: u64) -> Result<(proto::ModelProto, Option<Deferred>), Error> {
    use crate::files::FileBuf;
    let shown = path.display().to_string();
    let io = |e: String| Error::new(&shown, format!("cannot read: {e}")).with_kind(kiln_ir::ErrorKind::Io);
    let file = open_regular(path).map_err(io)?;
    let too_large = file.len > limit;
    let buf = FileBuf::new(file, limit).map_err(|e| {
        let kind = if too_large { kiln_ir::ErrorKind::ResourceLimit } else { kiln_ir::ErrorKind::Io };
        Error::new(&shown, format!("cannot read: {e}")).with_kind(kind)
    })?;

    // Pass 1: the initializers' raw_data ranges. A file the skeleton cannot decode defers nothing
    // (the full decode below then reports what is wrong).
    let mut buf = buf.recording();
    let skeleton = skeleton::Model::decode(&mut buf).ok().filter(|_| buf.error().is_none());
    let (file, recorded, _) = buf.finish();
    let ranges: Vec<Option<(u64, usize)>> = skeleton
        .and_then(|m| m.graph)
        .map(|g| {
            g.initializer
                .iter()
                .map(|t| {
                    let token = t.raw_data.as_deref()?;
                    let index = u64::from_le_bytes(token.try_into().ok()?);
                    let &(offset, len) = recorded.get(usize::try_from(index).ok()?)?;
                    (len >= DEFER_MIN_BYTES).then_some((offset, len))
                })
                .collect()
        })
        .unwrap_or_default();

    // Pass 2: the model, those ranges left in the file.
    let mut buf = FileBuf::new(file, limit).map_err(io)?.deferring(ranges.iter().flatten().copied().collect());
    let model = decode_model(&mut buf).map_err(|e| e.within(&shown));
    if let Some(e) = buf.error() {
        return Err(io(e.to_string()));
    }
    let model = model?;
    let (file, _, met) = buf.finish();
    // A range is the initializer's data only if the decode met it there and left it empty.
    let initializers = model.graph.as_ref().map_or(&[][..], |g| &g.initializer[..]);
    let ranges: Vec<Option<(u64, usize)>> = initializers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let range = ranges.get(i).copied().flatten()?;
            (met.binary_search(&range).is_ok() && t.raw_data.as_ref().is_some_and(|d| d.is_empty())).then_some(range)
        })
        .collect();
    let deferred = ranges.iter().any(Option::is_some).then_some(Deferred { file, ranges });
    Ok((model, deferred))
}

/// The messages on the way from a `ModelProto` to its graph's initializers' `raw_data`, with the
/// same field numbers as `onnx.proto` (every other field is skipped): what [`decode_file`]'s
/// first pass decodes.
mod skeleton {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Model {
        #[prost(message, optional, tag = "7")]
        pub graph: Option<Graph>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Graph {
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<Tensor>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        #[prost(bytes = "bytes", optional, tag = "9")]
        pub raw_data: Option<prost::bytes::Bytes>,
    }
}

/// Reads an ONNX model from bytes. `base_dir` is where external data files live; `None` refuses
/// external data.
pub fn parse_onnx(bytes: &[u8], base_dir: Option<&Path>, fixed_dims: &[(String, Vec<usize>)]) -> Result<Model, Error> {
    parse_onnx_with_values(bytes, base_dir, fixed_dims, &[])
}

/// [`parse_onnx`] with load-time values for graph inputs, as in [`load_onnx_with_values`].
pub fn parse_onnx_with_values(
    bytes: &[u8],
    base_dir: Option<&Path>,
    fixed_dims: &[(String, Vec<usize>)],
    values: &[(String, Tensor)],
) -> Result<Model, Error> {
    parse_onnx_with(bytes, base_dir, fixed_dims, values, &ReadLimits::default())
}

/// [`parse_onnx_with_values`] with explicit [`ReadLimits`].
pub fn parse_onnx_with(
    bytes: &[u8],
    base_dir: Option<&Path>,
    fixed_dims: &[(String, Vec<usize>)],
    values: &[(String, Tensor)],
    limits: &ReadLimits,
) -> Result<Model, Error> {
    let model = decode_model(bytes)?;
    import::import_model(&model, base_dir, fixed_dims, values, limits, None)
}

fn decode_model(bytes: impl prost::bytes::Buf) -> Result<proto::ModelProto, Error> {
    proto::ModelProto::decode(bytes)
        .map_err(|e| Error::new("", format!("not a valid ONNX model (protobuf decoding failed: {})", short(&e))))
}

/// The largest protobuf message: 2 GiB (protobuf's own limit).
const MAX_PROTO_BYTES: u64 = 2 << 30;

/// Reads a `.pb` file holding one `TensorProto` (as in the ONNX test data sets). Returns the
/// tensor's name (possibly empty) and the tensor. Only a regular file is read, and its external
/// data (if any) must lie in the file's folder.
pub fn read_tensor_pb(path: &Path) -> Result<(String, Tensor), Error> {
    let at = path.display().to_string();
    let limits = ReadLimits::default();
    let bytes = open_regular(path)
        .and_then(|mut file| file.read_all(limits.memory_cap.min(MAX_PROTO_BYTES)))
        .map_err(|e| Error::new(&at, format!("cannot read: {e}")).with_kind(kiln_ir::ErrorKind::Io))?;
    let t = proto::TensorProto::decode(bytes.as_slice())
        .map_err(|e| Error::new(&at, format!("not a TensorProto (protobuf decoding failed: {})", short(&e))))?;
    let base_dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tensor =
        tensor::tensor_from_proto(&t, Some(base_dir), &Budget::new(&limits)).map_err(|e| Error::new(&at, e))?;
    Ok((t.name().to_string(), tensor))
}

/// A decoding error without prost's full field path, which is as deep as the (possibly hostile)
/// nesting: the outermost and innermost parts are what help.
fn short(e: &prost::DecodeError) -> String {
    let text = e.to_string();
    let parts: Vec<&str> = text.split(": ").collect();
    if parts.len() <= 6 {
        return text;
    }
    format!("{}: {}: …: {}", parts[0], parts[parts.len() - 2], parts[parts.len() - 1])
}
