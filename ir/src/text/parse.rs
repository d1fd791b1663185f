//! The parser: reads `.kir` text a line at a time, then hands every declaration to
//! [`GraphBuilder`] with its `line L, column C` location, so that name resolution, validation,
//! type inference and cycle detection are shared with the other frontends.
//!
//! Syntax errors are collected (one per line) and, if there are any, returned without building the
//! graph: a line that did not parse would only cause a cascade of "not defined" errors downstream.
//! Output types written in the text are checked against the inferred ones.

use super::VERSION;
use super::lexer::{Tok, Token, tokenize};
use crate::attr::{Attr, Attrs};
use crate::builder::GraphBuilder;
use crate::dtype::{DType, TensorType};
use crate::error::{Diagnostic, Error};
use crate::op::Op;
use crate::tensor::{Tensor, TensorData};
use crate::weights::{Model, Weights};
use std::collections::HashMap;

const ITEMS: [&str; 5] = ["graph", "input", "weight", "node", "output"];

/// Parses `.kir` text into a graph and the weights whose data is written inline. Weights declared
/// without data are absent from [`Model::weights`]. Never panics; every problem is reported with its
/// line and column.
pub fn parse(text: &str) -> Result<Model, Error> {
    let mut diags = Vec::new();
    let mut header_seen = false;
    let mut graph_name: Option<(String, String)> = None;
    let mut items = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let tokens = match tokenize(raw) {
            Ok(tokens) => tokens,
            // A broken header means this is not a kir file: stop there.
            Err((col, message)) if !header_seen => return Err(Error::new(location(line_no, col), message)),
            Err((col, message)) => {
                diags.push(Diagnostic { location: location(line_no, col), message });
                continue;
            }
        };
        if tokens.is_empty() {
            continue;
        }
        let mut line = Line::new(&tokens);
        if !header_seen {
            header(&mut line).map_err(|(col, message)| Error::new(location(line_no, col), message))?;
            header_seen = true;
            continue;
        }
        match item(&mut line, line_no) {
            Ok(Item::Graph { loc, name }) => match &graph_name {
                Some((_, first)) => diags
                    .push(Diagnostic { location: loc, message: format!("the graph name is already given at {first}") }),
                None => graph_name = Some((name, loc)),
            },
            Ok(item) => items.push(item),
            Err((col, message)) => diags.push(Diagnostic { location: location(line_no, col), message }),
        }
    }
    if !header_seen {
        return Err(Error::new(location(1, 1), format!("expected the header 'kir {VERSION}', found end of file")));
    }
    if let Some(error) = Error::from_diagnostics(diags) {
        return Err(error);
    }
    build(graph_name.map(|(name, _)| name).unwrap_or_default(), items)
}

fn location(line: usize, col: usize) -> String {
    format!("line {line}, column {col}")
}

/// One parsed line.
enum Item {
    Graph { loc: String, name: String },
    Input { loc: String, name: String, ty: TensorType },
    Weight { loc: String, name: String, ty: TensorType, data: Option<Tensor> },
    Node { loc: String, name: String, op: Result<Op, String>, inputs: Vec<String>, outputs: Vec<Output> },
    Output { loc: String, name: String },
}

/// A node output with the type written for it, if any, and where that type is.
struct Output {
    name: String,
    ty: Option<(TensorType, String)>,
}

fn build(name: String, items: Vec<Item>) -> Result<Model, Error> {
    let mut builder = GraphBuilder::new(name);
    let mut weights = Weights::new();
    // (node, output, written type, where it is written)
    let mut written: Vec<(String, String, TensorType, String)> = Vec::new();
    for item in items {
        match item {
            Item::Graph { .. } => {}
            Item::Input { loc, name, ty } => builder.input(loc, name, ty),
            Item::Weight { loc, name, ty, data } => {
                if let Some(tensor) = data {
                    weights.insert(name.clone(), tensor);
                }
                builder.weight(loc, name, ty);
            }
            Item::Node { loc, name, op, inputs, outputs } => {
                let mut names = Vec::with_capacity(outputs.len());
                for out in outputs {
                    if let Some((ty, at)) = out.ty {
                        written.push((name.clone(), out.name.clone(), ty, at));
                    }
                    names.push(out.name);
                }
                builder.node(loc, name, op, inputs, names);
            }
            Item::Output { loc, name } => builder.output(loc, name),
        }
    }
    let graph = builder.finish()?;
    let mut inferred: HashMap<&str, &TensorType> = HashMap::new();
    for id in graph.dag().node_indices() {
        for info in &graph.node(id).outputs {
            inferred.insert(&info.name, &info.ty);
        }
    }
    let mut diags = Vec::new();
    for (node, output, ty, at) in &written {
        if let Some(&actual) = inferred.get(output.as_str())
            && actual != ty
        {
            diags.push(Diagnostic {
                location: at.clone(),
                message: format!("node '{node}': output '{output}' is written {ty} but its inferred type is {actual}"),
            });
        }
    }
    match Error::from_diagnostics(diags) {
        Some(error) => Err(error),
        None => Ok(Model { graph, weights }),
    }
}

/// A syntax error: the column and the message (the caller knows the line).
type Fail = (usize, String);

/// The tokens of one line and a cursor.
struct Line<'a> {
    tokens: &'a [Token],
    pos: usize,
    /// The column after the last token, where "end of line" is.
    end_col: usize,
}

impl<'a> Line<'a> {
    fn new(tokens: &'a [Token]) -> Line<'a> {
        Line { tokens, pos: 0, end_col: tokens.last().map_or(1, |t| t.end) }
    }

    fn peek(&self) -> Option<&'a Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    /// The column of the next token, or of the end of the line.
    fn col(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end_col, |t| t.col)
    }

    fn expected(&self, what: &str) -> Fail {
        let found = self.peek().map_or_else(|| "end of line".to_string(), |t| t.to_string());
        (self.col(), format!("expected {what}, found {found}"))
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == Some(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn punct(&mut self, c: char, what: &str) -> Result<(), Fail> {
        if self.eat(&Tok::Punct(c)) { Ok(()) } else { Err(self.expected(what)) }
    }

    /// A bare or quoted name, and its column.
    fn name(&mut self, what: &str) -> Result<(String, usize), Fail> {
        let col = self.col();
        match self.peek() {
            Some(Tok::Name(s) | Tok::Str(s)) => {
                self.pos += 1;
                Ok((s.clone(), col))
            }
            _ => Err(self.expected(what)),
        }
    }

    fn end(&self) -> Result<(), Fail> {
        if self.peek().is_none() { Ok(()) } else { Err(self.expected("end of line")) }
    }

    /// Items separated by commas up to `close` (the opening bracket is already read).
    fn list<T>(&mut self, close: char, mut item: impl FnMut(&mut Self) -> Result<T, Fail>) -> Result<Vec<T>, Fail> {
        let mut items = Vec::new();
        if self.eat(&Tok::Punct(close)) {
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            if self.eat(&Tok::Punct(close)) {
                return Ok(items);
            }
            if !self.eat(&Tok::Punct(',')) {
                return Err(self.expected(&format!("',' or '{close}'")));
            }
        }
    }

    /// `f32[2,3]`; `f32[]` is a scalar.
    fn ty(&mut self) -> Result<TensorType, Fail> {
        let col = self.col();
        let dtype = match self.peek() {
            Some(Tok::Name(name)) => DType::from_name(name)
                .ok_or_else(|| (col, format!("unknown element type '{name}' (expected f32, i64 or bool)")))?,
            _ => return Err(self.expected("a tensor type such as f32[2,3]")),
        };
        self.pos += 1;
        self.punct('[', "'[' and the shape")?;
        let shape = self.list(']', |line| line.dim())?;
        Ok(TensorType::new(dtype, shape))
    }

    fn dim(&mut self) -> Result<usize, Fail> {
        let col = self.col();
        match self.peek() {
            Some(Tok::Num(text)) if text.bytes().all(|b| b.is_ascii_digit()) => {
                self.pos += 1;
                text.parse().map_err(|_| (col, format!("dimension {text} is too large")))
            }
            _ => Err(self.expected("a dimension (a whole number)")),
        }
    }

    /// A number, `nan`, `inf` or `-inf`.
    fn number(&mut self, what: &str) -> Result<Number, Fail> {
        let col = self.col();
        let number = match self.peek() {
            Some(Tok::Num(text)) => parse_number(text).map_err(|message| (col, message))?,
            Some(Tok::Name(name)) if name == "nan" => Number::Float(f32::NAN),
            Some(Tok::Name(name)) if name == "inf" => Number::Float(f32::INFINITY),
            _ => return Err(self.expected(what)),
        };
        self.pos += 1;
        Ok(number)
    }

    fn attr_value(&mut self) -> Result<Attr, Fail> {
        match self.peek() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Attr::Str(s.clone()))
            }
            Some(Tok::Punct('[')) => {
                self.pos += 1;
                let items = self.list(']', |line| line.number("a number"))?;
                // A list with any float is a list of floats; `[]` is read as ints, which every
                // float-list attribute also accepts.
                if items.iter().any(|n| matches!(n, Number::Float(_))) {
                    Ok(Attr::Floats(items.into_iter().map(Number::to_f32).collect()))
                } else {
                    Ok(Attr::Ints(items.into_iter().filter_map(|n| n.as_int()).collect()))
                }
            }
            Some(Tok::Punct('<')) => {
                Err((self.col(), "tensor attributes cannot be written in the text form".to_string()))
            }
            _ => match self.number("an attribute value (a number, a string or a list)")? {
                Number::Int(v) => Ok(Attr::Int(v)),
                Number::Float(v) => Ok(Attr::Float(v)),
            },
        }
    }

    /// `[v, v, …]` for a weight of this element type.
    fn data(&mut self, dtype: DType) -> Result<TensorData, Fail> {
        self.punct('[', "'[' and the weight's values")?;
        Ok(match dtype {
            DType::F32 => TensorData::F32(self.list(']', |line| line.number("an f32 value").map(Number::to_f32))?),
            DType::I64 => TensorData::I64(self.list(']', |line| {
                let col = line.col();
                match line.number("an i64 value")? {
                    Number::Int(v) => Ok(v),
                    Number::Float(v) => {
                        Err((col, format!("expected an i64 value, found number {}", crate::attr::fmt_f32(v))))
                    }
                }
            })?),
            DType::Bool => TensorData::Bool(self.list(']', |line| match line.peek() {
                Some(Tok::Name(word)) if word == "true" || word == "false" => {
                    line.pos += 1;
                    Ok(word == "true")
                }
                _ => Err(line.expected("true or false")),
            })?),
        })
    }
}

#[derive(Clone, Copy)]
enum Number {
    Int(i64),
    Float(f32),
}

impl Number {
    fn to_f32(self) -> f32 {
        match self {
            Number::Int(v) => v as f32,
            Number::Float(v) => v,
        }
    }

    fn as_int(self) -> Option<i64> {
        match self {
            Number::Int(v) => Some(v),
            Number::Float(_) => None,
        }
    }
}

/// A number token: an integer unless it has a fraction or an exponent.
fn parse_number(text: &str) -> Result<Number, String> {
    if text == "-inf" {
        return Ok(Number::Float(f32::NEG_INFINITY));
    }
    if text.contains(['.', 'e', 'E']) {
        match text.parse::<f32>() {
            Ok(v) if v.is_finite() => Ok(Number::Float(v)),
            _ => Err(format!("{text} is out of range for f32")),
        }
    } else {
        text.parse::<i64>().map(Number::Int).map_err(|_| format!("{text} is out of range for i64"))
    }
}

/// `kir 1`.
fn header(line: &mut Line) -> Result<(), Fail> {
    if line.peek() != Some(&Tok::Name("kir".into())) {
        return Err(line.expected(&format!("the header 'kir {VERSION}'")));
    }
    line.pos += 1;
    let col = line.col();
    match line.peek() {
        Some(Tok::Num(v)) if *v == VERSION.to_string() => line.pos += 1,
        Some(Tok::Num(v)) => {
            return Err((col, format!("unsupported kir version {v}; this kiln reads version {VERSION}")));
        }
        _ => return Err(line.expected("the format version after 'kir'")),
    }
    line.end()
}

fn item(line: &mut Line, line_no: usize) -> Result<Item, Fail> {
    let col = line.col();
    let loc = location(line_no, col);
    let keyword = match line.peek() {
        Some(Tok::Name(word)) if ITEMS.contains(&word.as_str()) => word.as_str(),
        Some(Tok::Name(word)) => {
            let hint =
                crate::suggest::nearest(word, ITEMS).map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default();
            return Err((col, format!("unknown item '{word}'{hint}; expected graph, input, weight, node or output")));
        }
        _ => return Err(line.expected("an item (graph, input, weight, node or output)")),
    };
    line.pos += 1;
    let item = match keyword {
        "graph" => Item::Graph { loc, name: line.name("the graph's name")?.0 },
        "input" => {
            let (name, _) = line.name("the input's name")?;
            line.punct(':', "':' and the input's type")?;
            Item::Input { loc, name, ty: line.ty()? }
        }
        "weight" => {
            let (name, _) = line.name("the weight's name")?;
            line.punct(':', "':' and the weight's type")?;
            let ty = line.ty()?;
            let mut data = None;
            if line.eat(&Tok::Punct('=')) {
                let col = line.col();
                let values = line.data(ty.dtype)?;
                let count = values.len();
                let tensor = Tensor::new(ty.shape.clone(), values)
                    .map_err(|_| (col, format!("weight '{name}' is declared {ty} but {count} value(s) are written")))?;
                data = Some(tensor);
            }
            Item::Weight { loc, name, ty, data }
        }
        "node" => node(line, line_no, loc)?,
        _ => Item::Output { loc, name: line.name("the output tensor's name")?.0 },
    };
    line.end()?;
    Ok(item)
}

/// `KEY=VALUE, …}` (the opening brace is already read).
fn attributes(line: &mut Line) -> Result<Attrs, Fail> {
    let parsed = line.list('}', |line| {
        let (key, col) = line.name("an attribute name")?;
        line.punct('=', "'=' after the attribute name")?;
        Ok((key, col, line.attr_value()?))
    })?;
    let mut attrs = Attrs::new();
    for (key, col, value) in parsed {
        if attrs.insert(key.clone(), value).is_some() {
            return Err((col, format!("attribute '{key}' is given twice")));
        }
    }
    Ok(attrs)
}

/// `node NAME = Op(inputs) {attrs} -> out: type, …` (the keyword is already read).
fn node(line: &mut Line, line_no: usize, loc: String) -> Result<Item, Fail> {
    let (name, _) = line.name("the node's name")?;
    line.punct('=', "'=' after the node's name")?;
    let op_col = line.col();
    let op_name = match line.peek() {
        Some(Tok::Name(op)) => op.clone(),
        _ => return Err(line.expected("an op name")),
    };
    line.pos += 1;
    line.punct('(', "'(' and the node's inputs")?;
    let inputs = line.list(')', |line| line.name("an input tensor name").map(|(name, _)| name))?;
    let attrs = if line.eat(&Tok::Punct('{')) { attributes(line)? } else { Attrs::new() };
    if !line.eat(&Tok::Arrow) {
        return Err(line.expected("'->' and the node's outputs"));
    }
    let mut outputs = Vec::new();
    loop {
        let (out, _) = line.name("an output tensor name")?;
        let mut ty = None;
        if line.eat(&Tok::Punct(':')) {
            let at = location(line_no, line.col());
            ty = Some((line.ty()?, at));
        }
        outputs.push(Output { name: out, ty });
        if line.peek().is_none() {
            break;
        }
        if !line.eat(&Tok::Punct(',')) {
            return Err(line.expected("',' or end of line"));
        }
    }
    // An op that cannot be built is reported at its name, by the builder, which still defines the
    // node's outputs so that their users are not reported again.
    let op = Op::from_parts(&op_name, &attrs);
    let loc = if op.is_err() { location(line_no, op_col) } else { loc };
    Ok(Item::Node { loc, name, op, inputs, outputs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::OP_NAMES;

    /// Prints an op's attributes and reads them back, as a node line would.
    fn attrs_round_trip(op: &Op) -> Op {
        let (name, attrs) = op.to_parts();
        let mut text = String::from("{");
        super::super::print::attributes(&mut text, &attrs);
        text.push('}');
        let tokens = tokenize(&text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        let mut line = Line::new(&tokens);
        assert!(line.eat(&Tok::Punct('{')));
        let parsed = attributes(&mut line).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        line.end().unwrap();
        Op::from_parts(name, &parsed).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn text_every_op_attributes_round_trip() {
        let a = |pairs: &[(&str, Attr)]| -> Attrs { pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() };
        let mut with_attrs = 0;
        for &name in OP_NAMES {
            // Non-default values where an op has attributes, so that they are printed.
            let attrs = match name {
                "Cast" => a(&[("to", Attr::Str("bool".into()))]),
                "LeakyRelu" => a(&[("alpha", Attr::Float(0.2))]),
                "Selu" => a(&[("alpha", Attr::Float(1.5)), ("gamma", Attr::Float(-2.0))]),
                "Gelu" => a(&[("approximate", Attr::Str("tanh".into()))]),
                "Clip" => a(&[("min", Attr::Float(f32::NEG_INFINITY)), ("max", Attr::Float(6.0))]),
                "Gemm" => a(&[("alpha", Attr::Float(0.5)), ("beta", Attr::Float(2.0)), ("transA", Attr::Int(1))]),
                "Conv" => a(&[("dilations", Attr::Ints(vec![2, 1])), ("group", Attr::Int(2))]),
                "ConvTranspose" => {
                    a(&[("output_padding", Attr::Ints(vec![1, 0])), ("strides", Attr::Ints(vec![2, 2]))])
                }
                "MaxPool" | "AveragePool" | "LpPool" => a(&[
                    ("kernel_shape", Attr::Ints(vec![3])),
                    ("pads", Attr::Ints(vec![1, 0])),
                    ("dilations", Attr::Ints(vec![2])),
                ]),
                "Pad" => a(&[("pads", Attr::Ints(vec![0, -1, 0, 1])), ("mode", Attr::Str("edge".into()))]),
                "GroupNormalization" => a(&[("num_groups", Attr::Int(2)), ("epsilon", Attr::Float(1e-6))]),
                "LayerNormalization" | "RMSNormalization" | "UnifiedNorm" => {
                    a(&[("axis", Attr::Int(-2)), ("epsilon", Attr::Float(1e-12))])
                }
                "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceL2" | "ReduceMin" | "ReduceProd" => {
                    a(&[("axes", Attr::Ints(vec![])), ("noop_with_empty_axes", Attr::Int(1))])
                }
                "Reshape" => a(&[("shape", Attr::Ints(vec![0, -1])), ("allowzero", Attr::Int(1))]),
                "Expand" => a(&[("shape", Attr::Ints(vec![2, -1]))]),
                "Concat" => a(&[("axis", Attr::Int(1))]),
                "Split" => a(&[("num_outputs", Attr::Int(3))]),
                "Slice" => a(&[
                    ("starts", Attr::Ints(vec![i64::MIN])),
                    ("ends", Attr::Ints(vec![i64::MAX])),
                    ("steps", Attr::Ints(vec![-1])),
                ]),
                "Unsqueeze" | "Squeeze" => a(&[("axes", Attr::Ints(vec![0, -1]))]),
                "Transpose" => a(&[("perm", Attr::Ints(vec![1, 0]))]),
                "Resize" => a(&[("sizes", Attr::Ints(vec![1, 3, 8, 8])), ("nearest_mode", Attr::Str("ceil".into()))]),
                "PowerNorm" => a(&[("groups", Attr::Int(4)), ("group_epsilon", Attr::Float(3.5e-7))]),
                "EvoNormS0" => a(&[("groups", Attr::Int(8))]),
                "EvoNormB0" | "RegionNorm" | "BatchNormalization" | "InstanceNormalization" => {
                    a(&[("epsilon", Attr::Float(1.0507009))])
                }
                "Softmax" | "LogSoftmax" | "Gather" | "Flatten" => a(&[("axis", Attr::Int(-3))]),
                "Attention" => a(&[("scale", Attr::Float(0.125)), ("nan_to_zero", Attr::Int(1))]),
                "CRMSNormalization" => a(&[("d", Attr::Int(256)), ("epsilon", Attr::Float(1e-6))]),
                "ArgMax" | "ArgMin" => a(&[("axis", Attr::Int(-1)), ("select_last_index", Attr::Int(1))]),
                "CumSum" => a(&[("axis", Attr::Int(1)), ("exclusive", Attr::Int(1)), ("reverse", Attr::Int(1))]),
                "TopK" => a(&[("k", Attr::Int(3)), ("largest", Attr::Int(0)), ("sorted", Attr::Int(0))]),
                "Tile" => a(&[("repeats", Attr::Ints(vec![2, 1]))]),
                "GatherElements" => a(&[("axis", Attr::Int(-1))]),
                "GatherND" => a(&[("batch_dims", Attr::Int(1))]),
                "ScatterND" => a(&[("reduction", Attr::Str("mul".into()))]),
                "ScatterElements" => a(&[("axis", Attr::Int(1)), ("reduction", Attr::Str("max".into()))]),
                // Elementwise ops of issue 12.
                "Mod" => a(&[("fmod", Attr::Int(1))]),
                "HardSigmoid" => a(&[("alpha", Attr::Float(0.5)), ("beta", Attr::Float(0.25))]),
                "Elu" | "Celu" | "ThresholdedRelu" => a(&[("alpha", Attr::Float(2.5))]),
                "Shrink" => a(&[("bias", Attr::Float(0.5)), ("lambd", Attr::Float(1.5))]),
                "IsInf" => a(&[("detect_positive", Attr::Int(0))]),
                _ => Attrs::new(),
            };
            let op = Op::from_parts(name, &attrs).unwrap_or_else(|e| panic!("{name}: {e}"));
            with_attrs += usize::from(!op.to_parts().1.is_empty());
            assert_eq!(attrs_round_trip(&op), op, "{name}");
        }
        // Every op that has attributes printed some; 24 ops (binary, most unary, Where, Identity, MatMul,
        // MaskedSoftmax) have none.
        // Issue 12's elementwise ops without attributes: 28 of its 35.
        let elementwise_issue12 = 28;
        assert_eq!(with_attrs, OP_NAMES.len() - 24 - elementwise_issue12);
    }
}
