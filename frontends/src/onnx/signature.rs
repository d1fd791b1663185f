//! A model's inputs and outputs as the file declares them, dynamic dimensions by name, read
//! without importing the graph: for `kiln inspect` and for fixing a named dimension (`--shape
//! N=4`) in every input that uses it.

use super::proto::{self, tensor_shape_proto::dimension};
use super::tensor::dtype_from_onnx;
use crate::files::ReadLimits;
use kiln_ir::{DType, Error};
use prost::Message;
use std::collections::HashSet;
use std::fmt;
use std::path::Path;

/// One dimension as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    /// A dynamic dimension with a name (`dim_param`), such as `N` or `batch`.
    Named(String),
    /// A dynamic dimension without a name.
    Unknown,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Named(name) => f.write_str(name),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// An input or output of the file: its name, element type (`None` when kiln has no such type) and
/// shape (`None` when the file declares none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub dtype: Result<DType, String>,
    pub dims: Option<Vec<Dim>>,
}

impl fmt::Display for Port {
    /// `NAME f32[N,3,224,224]`, as `kiln inspect` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dtype {
            Ok(dtype) => write!(f, "{} {dtype}", self.name)?,
            Err(_) => write!(f, "{} (unsupported type)", self.name)?,
        }
        match &self.dims {
            Some(dims) => {
                let dims: Vec<String> = dims.iter().map(Dim::to_string).collect();
                write!(f, "[{}]", dims.join(","))
            }
            None => f.write_str("[shape not declared]"),
        }
    }
}

/// The declared graph inputs (initializers excluded) and outputs of an ONNX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
}

impl Signature {
    /// Full input shapes for the given named dimensions: every input whose declared shape is fixed
    /// once those names are replaced by their values. Inputs still dynamic are left out (the reader
    /// then names them). A name no input uses is an error naming the ones that exist.
    pub fn shapes_for(&self, named: &[(String, usize)]) -> Result<Vec<(String, Vec<usize>)>, String> {
        let known: Vec<&str> = self.dim_names();
        for (name, _) in named {
            if !known.contains(&name.as_str()) {
                let list = if known.is_empty() { "none".to_string() } else { known.join(", ") };
                return Err(format!(
                    "'{name}' is neither an input nor a named dimension of the model (named dimensions: {list})"
                ));
            }
        }
        let mut shapes = Vec::new();
        for port in &self.inputs {
            let Some(dims) = &port.dims else { continue };
            if !dims.iter().any(|d| matches!(d, Dim::Named(n) if named.iter().any(|(m, _)| m == n))) {
                continue;
            }
            let fixed: Option<Vec<usize>> = dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => Some(*n),
                    Dim::Named(n) => named.iter().find(|(m, _)| m == n).map(|&(_, v)| v),
                    Dim::Unknown => None,
                })
                .collect();
            if let Some(shape) = fixed {
                shapes.push((port.name.clone(), shape));
            }
        }
        Ok(shapes)
    }

    /// The names of the dynamic dimensions of the inputs, in order of first use.
    pub fn dim_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for port in &self.inputs {
            for d in port.dims.iter().flatten() {
                if let Dim::Named(n) = d
                    && !names.contains(&n.as_str())
                {
                    names.push(n);
                }
            }
        }
        names
    }
}

/// Reads the declared inputs and outputs of an ONNX file.
pub fn read_signature(path: &Path, limits: &ReadLimits) -> Result<Signature, Error> {
    let shown = path.display().to_string();
    let bytes = crate::files::read_whole(path, limits.memory_cap.min(super::MAX_PROTO_BYTES), "cannot read")?;
    let model = proto::ModelProto::decode(bytes.as_slice()).map_err(|e| {
        Error::new(&shown, format!("not a valid ONNX model (protobuf decoding failed: {})", super::short(&e)))
    })?;
    let graph = model.graph.as_ref().ok_or_else(|| Error::new(&shown, "the model has no graph"))?;
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    let inputs = graph.input.iter().filter(|v| !initializers.contains(v.name())).map(port).collect();
    let outputs = graph.output.iter().map(port).collect();
    Ok(Signature { inputs, outputs })
}

fn port(value: &proto::ValueInfoProto) -> Port {
    let (dtype, dims) = match value.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(proto::type_proto::Value::TensorType(t)) => {
            let dims = t.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(dimension::Value::DimValue(v)) => usize::try_from(*v).map_or(Dim::Unknown, Dim::Fixed),
                        Some(dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Named(p.clone()),
                        _ => Dim::Unknown,
                    })
                    .collect()
            });
            (dtype_from_onnx(t.elem_type()), dims)
        }
        _ => (Err("not a tensor".to_string()), None),
    };
    Port { name: value.name().to_string(), dtype, dims }
}
