//! Graph-level import: opsets, graph inputs (with dynamic dimensions fixed), initializers, nodes in
//! file order, graph outputs. Each node is lowered by [`super::lower`] into kiln nodes; this module
//! keeps track of what is known at load time (types of tensors, values of constant tensors) so that
//! lowering can resolve static parameters, `auto_pad` and the like.

use super::lower::{Lowered, lower_node};
use super::proto::{self, ModelProto, NodeProto, attribute_proto::AttributeType, tensor_shape_proto::dimension};
use super::tensor::{RawInFile, dtype_from_onnx, tensor_from_proto, tensor_from_proto_in};
use super::{MAX_OPSET, MIN_OPSET};
use crate::files::{Budget, ReadLimits, limit_kind};
use kiln_ir::{Attr, Attrs, Error, ErrorKind, GraphBuilder, Model, Op, Tensor, TensorType, Weights};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Compute-heavy ops (MatMul, Gemm, Conv, Attention) over constants are folded at load time only up
/// to this many multiply-adds (about a second in the reference interpreter); above it they stay
/// run-time nodes, where the JIT computes them faster. Everything else folds whatever its size,
/// within the memory cap.
const FOLD_WORK_LIMIT: u64 = 1 << 28;

/// What [`Importer::fold`] made of a node.
enum Fold {
    /// Every input a constant: these are the outputs' values.
    Folded(Vec<Tensor>),
    /// A run-time node with these output types.
    RunTime(Vec<TensorType>),
    /// Its types are not known (an upstream failure, or an error the graph builder reports).
    Untyped,
}

/// Multiply-adds a compute-heavy op does (0 for the others, which are linear in their data).
fn fold_work(op: &Op, inputs: &[&TensorType], outputs: &[TensorType]) -> u64 {
    let out = outputs.iter().map(|t| t.num_elements() as u64).sum::<u64>();
    let reduced = match op {
        // Each output element reduces over a's last axis (or one input channel group's window).
        Op::MatMul | Op::Gemm { .. } => inputs.first().and_then(|t| t.shape.iter().max().copied()).unwrap_or(1),
        Op::Conv { .. } => inputs.get(1).map(|w| w.shape.iter().skip(1).product()).unwrap_or(1),
        Op::Attention { .. } => inputs.iter().flat_map(|t| t.shape.iter()).max().copied().unwrap_or(1) * 2,
        _ => return 0,
    };
    out.saturating_mul(reduced as u64)
}

/// What the importer knows while it walks the nodes.
pub(crate) struct Ctx {
    /// Default-domain opset version.
    pub opset: i64,
    pub types: HashMap<String, TensorType>,
    pub consts: HashMap<String, Tensor>,
    /// Graph inputs fed at run time.
    pub graph_inputs: HashSet<String>,
    /// Weight bytes so far against the memory cap (initializers, tensor attributes and every
    /// tensor folded at load time).
    pub budget: Budget,
}

impl Ctx {
    pub fn ty(&self, name: &str) -> Option<&TensorType> {
        self.types.get(name)
    }
}

struct Importer<'a> {
    ctx: Ctx,
    builder: GraphBuilder,
    /// Initializers, Constant outputs and folded results (by name, with where they were defined),
    /// declared as weights only if an emitted node reads them. Their values live in `ctx.consts`
    /// only: one copy of each weight while loading.
    pending: BTreeMap<String, String>,
    used: HashSet<String>,
    unsupported: BTreeMap<String, Vec<String>>,
    /// Outputs of unsupported nodes and of everything computed from them: never constants, so a
    /// load-time-only op (NonZero, Range, ConstantOfShape) reading one is unsupported too, and is
    /// listed with them rather than surfacing only once they are fixed.
    unsupported_values: HashSet<String>,
    node_names: HashSet<String>,
    base_dir: Option<&'a Path>,
    /// Initializer data left in the model file, read from there into each tensor.
    deferred: Option<super::Deferred>,
}

pub(crate) fn import_model(
    model: &ModelProto,
    base_dir: Option<&Path>,
    fixed_dims: &[(String, Vec<usize>)],
    values: &[(String, Tensor)],
    limits: &ReadLimits,
    deferred: Option<super::Deferred>,
) -> Result<Model, Error> {
    let budget = Budget::new(limits);
    let refused = budget.refused_flag();
    import_with_budget(model, base_dir, fixed_dims, values, budget, deferred).map_err(|e| limit_kind(e, &refused))
}

fn import_with_budget(
    model: &ModelProto,
    base_dir: Option<&Path>,
    fixed_dims: &[(String, Vec<usize>)],
    values: &[(String, Tensor)],
    budget: Budget,
    deferred: Option<super::Deferred>,
) -> Result<Model, Error> {
    let opset = default_opset(model)?;
    let graph = model.graph.as_ref().ok_or_else(|| Error::new("", "the model has no graph"))?;
    let mut imp = Importer {
        ctx: Ctx { opset, types: HashMap::new(), consts: HashMap::new(), graph_inputs: HashSet::new(), budget },
        builder: GraphBuilder::new(graph.name()),
        pending: BTreeMap::new(),
        used: HashSet::new(),
        unsupported: BTreeMap::new(),
        unsupported_values: HashSet::new(),
        node_names: HashSet::new(),
        base_dir,
        deferred,
    };
    if !graph.sparse_initializer.is_empty() {
        imp.builder.report("", "sparse initializers are not supported");
    }
    imp.initializers(graph);
    let static_names = static_input_names(graph, opset);
    imp.inputs(graph, fixed_dims, values, &static_names)?;
    for (index, node) in graph.node.iter().enumerate() {
        imp.node(index, node);
    }
    if !imp.unsupported.is_empty() {
        return Err(imp.unsupported_error());
    }
    for (i, out) in graph.output.iter().enumerate() {
        let name = out.name().to_string();
        imp.used.insert(name.clone());
        imp.builder.output(format!("graph output #{i} '{name}'"), name);
    }
    let mut weights = Weights::new();
    for (name, location) in std::mem::take(&mut imp.pending) {
        if imp.used.contains(&name)
            && let Some(tensor) = imp.ctx.consts.remove(&name)
        {
            imp.builder.weight(location, name.clone(), tensor.ty());
            weights.insert(name, tensor);
        }
    }
    let graph = imp.builder.finish()?;
    Ok(Model { graph, weights })
}

/// The default-domain opset, checked against the range kiln reads.
fn default_opset(model: &ModelProto) -> Result<i64, Error> {
    let mut opset = None;
    for o in &model.opset_import {
        if matches!(o.domain(), "" | "ai.onnx") {
            opset = Some(o.version());
        }
    }
    let opset =
        opset.ok_or_else(|| Error::new("opset_import", "the model imports no default-domain (ai.onnx) opset"))?;
    if opset < MIN_OPSET {
        return Err(Error::new(
            "opset_import",
            format!(
                "opset {opset} is older than {MIN_OPSET}, the oldest kiln reads; convert the model with onnx.version_converter"
            ),
        ));
    }
    if opset > MAX_OPSET {
        return Err(Error::new(
            "opset_import",
            format!("opset {opset} is newer than {MAX_OPSET}, the newest kiln knows"),
        ));
    }
    Ok(opset)
}

impl Importer<'_> {
    fn initializers(&mut self, graph: &proto::GraphProto) {
        for (i, init) in graph.initializer.iter().enumerate() {
            let name = init.name().to_string();
            let location = format!("initializer #{i} '{name}'");
            let raw = self.deferred.as_mut().and_then(|d| {
                let (offset, len) = d.ranges.get(i).copied().flatten()?;
                Some(RawInFile { file: &mut d.file, offset, len })
            });
            match tensor_from_proto_in(init, self.base_dir, raw, &self.ctx.budget) {
                Ok(tensor) => self.add_const(name, location, tensor),
                Err(e) => {
                    // Declared as a failed (untyped) node, so that its message is the only one: a
                    // reader of the name must not add "tensor … is not defined … did you mean".
                    if self.pending.contains_key(&name) {
                        self.builder.report(location, e);
                        continue;
                    }
                    self.pending.insert(name.clone(), location.clone());
                    let node_name = format!("{name}#initializer{i}");
                    self.node_names.insert(node_name.clone());
                    self.builder.node(location, node_name, Err(e), Vec::new(), vec![name]);
                }
            }
        }
    }

    fn add_const(&mut self, name: String, location: String, tensor: Tensor) {
        if let Some(first) = self.pending.get(&name) {
            self.builder.report(location, format!("tensor '{name}' is already defined at {first}"));
            return;
        }
        self.ctx.types.insert(name.clone(), tensor.ty());
        self.ctx.consts.insert(name.clone(), tensor);
        self.pending.insert(name, location);
    }

    /// Declares graph inputs (those that are not initializers), fixing dynamic dimensions from
    /// `fixed_dims`. Missing shapes are one error naming every input that needs one.
    fn inputs(
        &mut self,
        graph: &proto::GraphProto,
        fixed_dims: &[(String, Vec<usize>)],
        values: &[(String, Tensor)],
        static_names: &HashSet<String>,
    ) -> Result<(), Error> {
        let mut missing = Vec::new();
        let mut shape_errors = Vec::new();
        let mut declared = HashSet::new();
        for (i, input) in graph.input.iter().enumerate() {
            let name = input.name().to_string();
            if self.pending.contains_key(&name) {
                continue; // an initializer listed as input (IR < 4 style): a weight
            }
            let location = format!("graph input #{i} '{name}'");
            declared.insert(name.clone());
            let tensor_type = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(proto::type_proto::Value::TensorType(t)) => t,
                _ => {
                    self.builder.report(location, "is not a tensor (sequences, maps and optionals are not supported)");
                    continue;
                }
            };
            let dtype = match dtype_from_onnx(tensor_type.elem_type()) {
                Ok(d) => d,
                Err(e) => {
                    self.builder.report(location, e);
                    continue;
                }
            };
            // A negative dimension is not a dynamic one (ONNX spells those with dim_param or no
            // value): it is an error, not something --shape may fill in.
            let negative = tensor_type.shape.as_ref().and_then(|s| {
                s.dim.iter().enumerate().find_map(|(k, d)| match d.value {
                    Some(dimension::Value::DimValue(v)) if v < 0 => Some((k, v)),
                    _ => None,
                })
            });
            if let Some((k, v)) = negative {
                self.builder.report(
                    location,
                    format!(
                        "dimension {k} is {v}; a dimension is a number ≥ 0, or a name (dim_param) for a dynamic one"
                    ),
                );
                continue;
            }
            // Declared dimensions: Some(d) for a fixed one, None for a dynamic one.
            let declared_dims: Option<Vec<Option<usize>>> = tensor_type.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(dimension::Value::DimValue(v)) => usize::try_from(v).ok(),
                        _ => None,
                    })
                    .collect()
            });
            if static_names.contains(&name)
                && let Some((_, value)) = values.iter().find(|(n, _)| *n == name)
            {
                // A static parameter given at load time: a constant from now on.
                let fits = declared_dims.as_ref().is_none_or(|dims| {
                    dims.len() == value.shape().len()
                        && dims.iter().zip(value.shape()).all(|(d, v)| d.is_none_or(|d| d == *v))
                });
                if value.dtype() != dtype || !fits {
                    let declared = describe_dims(input, declared_dims.as_deref());
                    self.builder
                        .report(location, format!("is declared {dtype}{declared} but was given {}", value.ty()));
                } else {
                    self.add_const(name, format!("{location} (given at load time)"), value.clone());
                }
                continue;
            }
            self.ctx.graph_inputs.insert(name.clone());
            let fixed = fixed_dims.iter().find(|(n, _)| *n == name).map(|(_, s)| s);
            let shape = match (declared_dims, fixed) {
                (Some(dims), None) if dims.iter().all(Option::is_some) => dims.into_iter().flatten().collect(),
                (dims, None) => {
                    missing.push(format!("'{name}' {}", describe_dims(input, dims.as_deref())));
                    continue;
                }
                (dims, Some(fixed)) => {
                    if let Some(dims) = dims {
                        let agrees =
                            dims.len() == fixed.len() && dims.iter().zip(fixed).all(|(d, f)| d.is_none_or(|d| d == *f));
                        if !agrees {
                            shape_errors.push(kiln_ir::Diagnostic {
                                location,
                                message: format!(
                                    "the given shape {fixed:?} does not match the declared shape {}",
                                    describe_dims(input, Some(&dims))
                                ),
                            });
                            continue;
                        }
                    }
                    fixed.clone()
                }
            };
            let ty = TensorType::new(dtype, shape);
            self.ctx.types.insert(name.clone(), ty.clone());
            self.builder.input(location, name, ty);
        }
        let mut diags = shape_errors;
        if !missing.is_empty() {
            diags.push(kiln_ir::Diagnostic {
                location: String::new(),
                message: format!(
                    "dynamic dimensions must be fixed at load time; give the full shape of {} with --shape NAME=d0,d1,… \
                     (or an --input of that shape)",
                    missing.join(", ")
                ),
            });
        }
        for (name, _) in fixed_dims {
            if !declared.contains(name) {
                let mut known: Vec<&str> = declared.iter().map(String::as_str).collect();
                known.sort();
                diags.push(kiln_ir::Diagnostic {
                    location: format!("input '{name}'"),
                    message: format!(
                        "a shape or value was given for '{name}', which is not a graph input of the model (inputs: {})",
                        known.join(", ")
                    ),
                });
            }
        }
        match Error::from_diagnostics(diags) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn node(&mut self, index: usize, node: &NodeProto) {
        let op_type = node.op_type().to_string();
        let mut name = node.name().to_string();
        if name.is_empty() {
            name = format!("{op_type}_{index}");
        }
        if !self.node_names.insert(name.clone()) {
            // ONNX only recommends unique node names; kiln needs them.
            name = format!("{name}#{index}");
            self.node_names.insert(name.clone());
        }
        let location = format!("node '{name}' (#{index}, {op_type})");
        let outputs: Vec<String> = node.output.clone();
        let domain = node.domain();
        if node.input.iter().any(|i| self.unsupported_values.contains(i)) {
            self.unsupported_values.extend(outputs.iter().filter(|o| !o.is_empty()).cloned());
            if matches!(domain, "" | "ai.onnx") && VALUE_NEEDED_AT_LOAD.contains(&op_type.as_str()) {
                self.unsupported.entry(format!("{op_type} (of run-time values)")).or_default().push(name);
                return;
            }
        }
        let attrs = match convert_attrs(node, self.base_dir, &self.ctx.budget) {
            Ok(a) => a,
            Err(e) => {
                self.fail(&location, &name, e, node);
                return;
            }
        };
        let lowered = match domain {
            "" | "ai.onnx" => lower_node(&self.ctx, &name, &op_type, node, attrs),
            "kiln" => {
                let outs = trim_outputs(&outputs);
                Ok(Some(Lowered::single(&name, Op::from_parts(&op_type, &attrs), present(&node.input), outs)))
            }
            _ => Ok(None),
        };
        match lowered {
            Ok(Some(l)) => self.commit(&location, l),
            Ok(None) => {
                self.unsupported_values.extend(outputs.iter().filter(|o| !o.is_empty()).cloned());
                let key = if matches!(domain, "" | "ai.onnx") { op_type } else { format!("{domain}.{op_type}") };
                self.unsupported.entry(key).or_default().push(name);
            }
            Err(e) => self.fail(&location, &name, e, node),
        }
    }

    /// Declares a node that could not be lowered: its outputs exist (so readers are not reported
    /// again) but stay untyped, and the message is reported once.
    fn fail(&mut self, location: &str, name: &str, message: String, node: &NodeProto) {
        // Absent ("") outputs are dropped: the node is untyped anyway, so ports do not matter.
        let outputs = node.output.iter().filter(|o| !o.is_empty()).cloned().collect();
        // Its constant inputs are declared (as weights), so that only `message` is reported and not
        // also "tensor … is not defined" for a constant that only this node read.
        let inputs = present(&node.input);
        self.used.extend(inputs.iter().cloned());
        self.builder.node(location, name, Err(message), inputs, outputs);
    }

    fn commit(&mut self, location: &str, lowered: Lowered) {
        for (name, tensor) in lowered.consts {
            self.add_const(name, location.to_string(), tensor);
        }
        for n in lowered.nodes {
            if let Ok(op) = &n.op {
                match self.fold(op, &n.inputs, &n.outputs) {
                    Fold::Folded(values) => {
                        for (name, value) in n.outputs.iter().zip(values) {
                            self.add_const(name.clone(), format!("{location} (evaluated at load time)"), value);
                        }
                        continue;
                    }
                    Fold::RunTime(types) => {
                        for (name, ty) in n.outputs.iter().zip(types) {
                            self.ctx.types.insert(name.clone(), ty);
                        }
                    }
                    Fold::Untyped => {}
                }
            }
            for input in &n.inputs {
                self.used.insert(input.clone());
            }
            self.builder.node(location, n.name, n.op, n.inputs, n.outputs);
        }
    }

    /// Infers a node's output types and, when every input is a constant, evaluates it with the
    /// reference semantics (`Op::eval`) so that it never reaches run time: constant subgraphs of
    /// any size fold at load, bounded by the memory cap (each result's bytes are claimed before it
    /// is computed; a result that would exceed it is left to run time, where the op runs as
    /// written). Compute-heavy ops over large constants stay run-time nodes too (see
    /// [`FOLD_WORK_LIMIT`]).
    fn fold(&mut self, op: &Op, inputs: &[String], outputs: &[String]) -> Fold {
        let types: Option<Vec<&TensorType>> = inputs.iter().map(|i| self.ctx.types.get(i)).collect();
        let Some(types) = types else { return Fold::Untyped };
        let (min, max) = op.arity();
        if types.len() < min || types.len() > max {
            return Fold::Untyped;
        }
        let Ok(out_types) = op.infer(&types) else { return Fold::Untyped };
        // Zero-sized values are fine here (an empty shape slice is common in shape arithmetic); a
        // zero-sized tensor that reaches run time is reported by the graph builder.
        if out_types.len() != outputs.len() || out_types.iter().any(|t| t.num_elements() > kiln_ir::MAX_ELEMENTS) {
            return Fold::Untyped;
        }
        let consts: Option<Vec<&Tensor>> = inputs.iter().map(|i| self.ctx.consts.get(i)).collect();
        let Some(consts) = consts.filter(|c| !c.is_empty()) else { return Fold::RunTime(out_types) };
        if fold_work(op, &types, &out_types) > FOLD_WORK_LIMIT {
            return Fold::RunTime(out_types);
        }
        let bytes: u64 = out_types.iter().map(|t| (t.num_elements() * t.dtype.size_bytes()) as u64).sum();
        let what = format!("the constant result {} of {} (evaluated at load time)", outputs.join(", "), op.name());
        if self.ctx.budget.claim(bytes, &what).is_err() {
            // The op has a run-time form: it runs there instead (the compiler checks its arena
            // against the cap). Only load-time-only ops (fold.rs) are refused by the cap.
            return Fold::RunTime(out_types);
        }
        // The reference evaluation allocates infallibly: check first that the process can have the
        // result (under an address-space limit the cap alone does not ensure it).
        if crate::files::try_with_capacity::<u8>(bytes as usize, &what).is_err() {
            return Fold::RunTime(out_types);
        }
        match op.eval(&consts) {
            Ok(values) if values.len() == outputs.len() && values.iter().zip(&out_types).all(|(v, t)| v.ty() == *t) => {
                Fold::Folded(values)
            }
            // An evaluation error is left to run time, where it is reported as it would be
            // without folding.
            _ => Fold::RunTime(out_types),
        }
    }

    fn unsupported_error(&self) -> Error {
        let total: usize = self.unsupported.values().map(Vec::len).sum();
        let list: Vec<String> = self
            .unsupported
            .iter()
            .map(|(op, nodes)| {
                const SHOWN: usize = 5;
                let mut names: Vec<String> = nodes.iter().take(SHOWN).map(|n| format!("'{n}'")).collect();
                if nodes.len() > SHOWN {
                    names.push(format!("… {} more", nodes.len() - SHOWN));
                }
                format!("{op} ×{} (nodes {})", nodes.len(), names.join(", "))
            })
            .collect();
        Error::new(
            "",
            format!(
                "the model uses {} op type(s) kiln does not implement, in {total} node(s): {}",
                self.unsupported.len(),
                list.join("; ")
            ),
        )
        .with_kind(ErrorKind::UnsupportedOp)
    }
}

/// Load-time-only ops that need their inputs' values (Shape and Size need only types).
const VALUE_NEEDED_AT_LOAD: &[&str] = &["ConstantOfShape", "NonZero", "Range"];

/// Tensors that feed a static parameter of some node (and so must be known at load time).
fn static_input_names(graph: &proto::GraphProto, opset: i64) -> HashSet<String> {
    let mut names = HashSet::new();
    for node in &graph.node {
        if !matches!(node.domain(), "" | "ai.onnx") {
            continue;
        }
        for &i in super::lower::static_slots(node.op_type(), opset) {
            if let Some(n) = node.input.get(i).filter(|n| !n.is_empty()) {
                names.insert(n.clone());
            }
        }
    }
    names
}

/// Describes a declared input shape for error messages, e.g. `[batch,3,224,224]`.
fn describe_dims(input: &proto::ValueInfoProto, dims: Option<&[Option<usize>]>) -> String {
    let Some(dims) = dims else { return "(shape not declared)".into() };
    let params: Vec<String> = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(proto::type_proto::Value::TensorType(t)) => t
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(dimension::Value::DimValue(v)) => v.to_string(),
                        Some(dimension::Value::DimParam(p)) if !p.is_empty() => p.clone(),
                        _ => "?".into(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => dims.iter().map(|d| d.map_or("?".into(), |d| d.to_string())).collect(),
    };
    format!("[{}]", params.join(","))
}

/// The node's inputs with absent optional ones ("") dropped from the end; a gap in the middle is
/// kept so that the op's arity check reports it.
pub(crate) fn present(inputs: &[String]) -> Vec<String> {
    trim_outputs(inputs)
}

/// Drops absent ("") trailing names.
pub(crate) fn trim_outputs(names: &[String]) -> Vec<String> {
    let end = names.iter().rposition(|n| !n.is_empty()).map_or(0, |i| i + 1);
    names[..end].to_vec()
}

/// ONNX attributes → kiln's generic attributes. Graph, sparse-tensor and type attributes are
/// errors: kiln has no op that takes them.
fn convert_attrs(node: &NodeProto, base_dir: Option<&Path>, budget: &Budget) -> Result<Attrs, String> {
    let mut attrs = Attrs::new();
    for a in &node.attribute {
        let name = a.name().to_string();
        if a.ref_attr_name.is_some() {
            return Err(format!("attribute '{name}' refers to a function attribute, which kiln does not support"));
        }
        // Old writers leave `type` unset; the field that is set says what it is then.
        let ty = match a.r#type.map(AttributeType::try_from) {
            Some(Ok(t)) if t != AttributeType::Undefined => t,
            Some(Err(_)) => return Err(format!("attribute '{name}' has an unknown type {}", a.r#type.unwrap_or(0))),
            _ if a.f.is_some() => AttributeType::Float,
            _ if a.i.is_some() => AttributeType::Int,
            _ if a.s.is_some() => AttributeType::String,
            _ if a.t.is_some() => AttributeType::Tensor,
            _ if !a.floats.is_empty() => AttributeType::Floats,
            _ if !a.ints.is_empty() => AttributeType::Ints,
            _ => return Err(format!("attribute '{name}' has no type and no value")),
        };
        let value = match ty {
            AttributeType::Float => Attr::Float(a.f()),
            AttributeType::Int => Attr::Int(a.i()),
            AttributeType::String => Attr::Str(String::from_utf8_lossy(a.s()).into_owned()),
            AttributeType::Floats => Attr::Floats(a.floats.clone()),
            AttributeType::Ints => Attr::Ints(a.ints.clone()),
            AttributeType::Tensor => {
                let t = a.t.as_ref().ok_or_else(|| format!("tensor attribute '{name}' has no tensor"))?;
                Attr::Tensor(tensor_from_proto(t, base_dir, budget).map_err(|e| format!("attribute '{name}': {e}"))?)
            }
            other => {
                return Err(format!(
                    "attribute '{name}' is of type {}, which kiln does not support",
                    other.as_str_name()
                ));
            }
        };
        if attrs.insert(name.clone(), value).is_some() {
            return Err(format!("attribute '{name}' is given twice"));
        }
    }
    Ok(attrs)
}
