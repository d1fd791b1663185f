//! The kiln JSON model reader (docs/model-format.md is the specification; keep the two in step).
//!
//! The file is parsed into a `serde_json::Value` first (syntax errors name the line and column), then
//! walked by hand so that every problem names its JSON path (`$.nodes[3].attributes.axis`) and, where
//! known, the node, weight or input it belongs to. Nothing stops at the first problem: every
//! declaration goes to [`GraphBuilder`], which adds the graph-level problems (undefined tensors,
//! cycles, shape inference), so `kiln check` prints them all at once.
//!
//! Model files are untrusted: no panics on any input, and a declared shape is checked against
//! [`kiln_ir::MAX_ELEMENTS`] before a byte of weight data is allocated for it.

use crate::files::{Budget, OpenFile, ReadLimits, decode_le, open_contained};
use kiln_ir::init::{INIT_KINDS, Init, generate};
use kiln_ir::{Attr, Attrs, DType, Error, GraphBuilder, Model, Op, Tensor, TensorData, TensorType, Weights};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

const TOP_KEYS: &[&str] = &["format", "version", "name", "inputs", "outputs", "weights", "safetensors", "nodes"];
const INPUT_KEYS: &[&str] = &["name", "dtype", "shape"];
const WEIGHT_KEYS: &[&str] = &["name", "dtype", "shape", "data", "safetensors", "init"];
const SOURCES: &[&str] = &["data", "safetensors", "init"];
const NODE_KEYS: &[&str] = &["name", "op", "inputs", "outputs", "attributes"];
const CONSTANT_VALUE_KEYS: &[&str] = &["dtype", "shape", "data"];
const CONSTANT_ATTRS: &[&str] = &["value", "value_float", "value_floats", "value_int", "value_ints"];

/// Reads a kiln JSON model and the safetensors file it names (relative to the model's folder).
/// Every problem's location starts with the file's path.
pub fn load_json(path: &Path) -> Result<Model, Error> {
    load_json_with(path, &ReadLimits::default())
}

/// [`load_json`] with explicit [`ReadLimits`].
pub fn load_json_with(path: &Path, limits: &ReadLimits) -> Result<Model, Error> {
    let shown = path.display().to_string();
    // The text of a model holds at least its inline weights, so the cap bounds it too.
    let bytes = crate::files::read_whole(path, limits.memory_cap, "cannot read the model file")?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::new(
            &shown,
            format!("the file is not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
        )
    })?;
    let default_name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    // A bare file name has an empty parent: the folder is then the current one.
    let base_dir = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
    parse_json_with(&text, base_dir, &default_name, limits).map_err(|e| e.within(&shown))
}

/// Parses a kiln JSON model from text. `base_dir` is the folder a `safetensors` file name is relative
/// to (`None`: the model may not name one); `default_name` names the graph when the file does not.
pub fn parse_json(text: &str, base_dir: Option<&Path>, default_name: &str) -> Result<Model, Error> {
    parse_json_with(text, base_dir, default_name, &ReadLimits::default())
}

/// [`parse_json`] with explicit [`ReadLimits`].
pub fn parse_json_with(
    text: &str,
    base_dir: Option<&Path>,
    default_name: &str,
    limits: &ReadLimits,
) -> Result<Model, Error> {
    // A byte-order mark, as some editors write, is not JSON but means nothing; skip it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: Value = serde_json::from_str(text).map_err(|e| syntax_error(text, &e))?;
    let budget = Budget::new(limits);
    let refused = budget.refused_flag();
    Reader { diags: duplicate_keys(text), base_dir, hints_left: 20, budget }
        .model(&value, default_name)
        .map_err(in_document_order)
        .map_err(|e| crate::files::limit_kind(e, &refused))
}

/// Sorts problems into the order of the file (graph-level problems come from the builder after the
/// reader's own), so that `kiln check` reads top to bottom. The sort is stable.
fn in_document_order(error: Error) -> Error {
    const SECTIONS: &[&str] = &["format", "version", "name", "safetensors", "inputs", "weights", "nodes", "outputs"];
    let key = |location: &str| -> (usize, usize, usize) {
        let number = |s: &str| s.trim().parse::<usize>().unwrap_or(0);
        if let Some(rest) = location.strip_prefix("line ") {
            let (line, column) = rest.split_once(", column ").unwrap_or((rest, "0"));
            return (0, number(line), number(column));
        }
        let Some(path) = location.strip_prefix("$.") else {
            return if location.starts_with('$') { (1, 0, 0) } else { (SECTIONS.len() + 2, 0, 0) };
        };
        let end = path.find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(path.len());
        let rank = SECTIONS.iter().position(|&s| s == &path[..end]).map_or(1, |r| r + 2);
        let index = path[end..].strip_prefix('[').and_then(|r| r.split_once(']')).map_or(0, |(i, _)| number(i));
        (rank, index, 0)
    };
    let mut diagnostics = error.into_diagnostics();
    diagnostics.sort_by_key(|d| key(&d.location));
    Error::from_diagnostics(diagnostics).unwrap_or_else(|| Error::new("", "internal error: no problem recorded"))
}

/// Keys that appear twice in one object. serde_json keeps the last silently, which would let a
/// pasted-over `"shape"` or `"data"` pass unnoticed. `text` is valid JSON (serde_json accepted it),
/// so a byte scan suffices; lines and columns count as serde_json's do (bytes, from 1).
fn duplicate_keys(text: &str) -> Vec<(String, String)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    // One entry per open container: the keys seen so far for an object, None for a list.
    let mut stack: Vec<Option<HashMap<&str, (usize, usize)>>> = Vec::new();
    let mut expect_key = false;
    let (mut line, mut column) = (1, 0);
    let mut i = 0;
    while i < bytes.len() {
        column += 1;
        match bytes[i] {
            b'{' => {
                stack.push(Some(HashMap::new()));
                expect_key = true;
            }
            b'[' => {
                stack.push(None);
                expect_key = false;
            }
            b'}' | b']' => {
                stack.pop();
                expect_key = false;
            }
            b',' => expect_key = matches!(stack.last(), Some(Some(_))),
            b'\n' => {
                line += 1;
                column = 0;
            }
            b'"' => {
                let (start, at) = (i + 1, (line, column));
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    // An escape's second byte is ASCII; UTF-8 continuation bytes are never '"' or '\\'.
                    let step = if bytes[i] == b'\\' { 2 } else { 1 };
                    i += step;
                    column += step;
                }
                column += 1;
                if expect_key
                    && let Some(Some(keys)) = stack.last_mut()
                    && let Some(key) = text.get(start..i.min(bytes.len()))
                {
                    match keys.get(key) {
                        Some(&(l, c)) => found.push((
                            format!("line {}, column {}", at.0, at.1),
                            format!(
                                "duplicate key \"{key}\" (first at line {l}, column {c}); JSON would keep only the last"
                            ),
                        )),
                        None => {
                            keys.insert(key, at);
                        }
                    }
                }
                expect_key = false;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

fn syntax_error(text: &str, e: &serde_json::Error) -> Error {
    if text.trim().is_empty() {
        return Error::new("", "the file is empty; a kiln model is a JSON object (see docs/model-format.md)");
    }
    // serde_json appends " at line L column C"; the location carries that instead.
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    // Python's json.dumps writes NaN and Infinity bare, which JSON does not allow.
    let at = |back: usize| {
        let line = text.lines().nth(e.line().saturating_sub(1)).unwrap_or("");
        e.column().checked_sub(1 + back).and_then(|i| line.get(i..)).unwrap_or("")
    };
    let non_finite = at(0).starts_with("NaN") || at(0).starts_with("Infinity") || at(1).starts_with("-Infinity");
    let hint = if e.is_eof() {
        " (the file ends early: is it truncated?)"
    } else if non_finite {
        " (JSON has no NaN or Infinity; write \"nan\", \"inf\" or \"-inf\" as strings)"
    } else {
        ""
    };
    Error::new(format!("line {}, column {}", e.line(), e.column()), format!("invalid JSON: {message}{hint}"))
}

/// A JSON path with an optional label naming the node, weight or input it is inside.
#[derive(Clone)]
struct Loc {
    path: String,
    label: Option<String>,
}

impl Loc {
    fn root() -> Loc {
        Loc { path: "$".into(), label: None }
    }

    fn key(&self, key: &str) -> Loc {
        let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let path = if plain { format!("{}.{key}", self.path) } else { format!("{}[{key:?}]", self.path) };
        Loc { path, label: self.label.clone() }
    }

    fn index(&self, i: usize) -> Loc {
        Loc { path: format!("{}[{i}]", self.path), label: self.label.clone() }
    }

    fn labelled(&self, label: String) -> Loc {
        Loc { path: self.path.clone(), label: Some(label) }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            Some(label) => write!(f, "{} ({label})", self.path),
            None => f.write_str(&self.path),
        }
    }
}

/// What kind of JSON value `v` is, with a short preview, for "must be X, got Y" messages.
fn describe(v: &Value) -> String {
    let kind = match v {
        Value::Null => return "null".into(),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => return "a list".into(),
        Value::Object(_) => return "an object".into(),
    };
    let mut text = v.to_string();
    if text.chars().count() > 40 {
        text = text.chars().take(37).collect::<String>() + "...";
    }
    format!("{kind} ({text})")
}

fn hint(name: &str, candidates: &[&str]) -> String {
    kiln_ir::suggest_nearest(name, candidates.iter().copied())
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default()
}

fn quoted_list(names: &[&str]) -> String {
    names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
}

/// A graph input or weight as declared. `ty: None` means the type could not be read; such a leaf is
/// declared to the builder as a failed node so that its users are not reported again.
struct Leaf {
    loc: Loc,
    name: String,
    ty: Option<TensorType>,
    /// The problem that made `ty` unreadable: (location, message).
    problem: Option<(String, String)>,
    is_input: bool,
    data: Option<Tensor>,
}

/// A weight waiting for its data from the safetensors file.
struct PendingTensor {
    leaf: usize,
    key: String,
    loc: Loc,
}

/// A node as declared, before its op is built.
struct RawNode {
    loc: Loc,
    name: String,
    op: Option<String>,
    inputs: Vec<String>,
    /// Where each input is in the file.
    input_locs: Vec<Loc>,
    outputs: Vec<String>,
    attrs: Attrs,
    attr_locs: HashMap<String, Loc>,
    /// The first problem that keeps the node from being built: (location, message).
    problem: Option<(String, String)>,
}

/// How a static parameter given as an input becomes an attribute.
#[derive(Clone, Copy, PartialEq)]
enum StaticKind {
    Ints,
    Floats,
    Float,
    /// Read and dropped (Resize's roi, meaningful only for a mode kiln does not have).
    Ignored,
}

/// The static parameters that recent ONNX opsets pass as inputs: (input position, attribute, kind).
fn static_inputs(op: &str) -> &'static [(usize, &'static str, StaticKind)] {
    use StaticKind::*;
    match op {
        "Reshape" | "Expand" => &[(1, "shape", Ints)],
        "Unsqueeze" | "Squeeze" | "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceL2" => &[(1, "axes", Ints)],
        "Slice" => &[(1, "starts", Ints), (2, "ends", Ints), (3, "axes", Ints), (4, "steps", Ints)],
        "Split" => &[(1, "split", Ints)],
        "Pad" => &[(1, "pads", Ints), (2, "value", Float)],
        "Clip" => &[(1, "min", Float), (2, "max", Float)],
        "Resize" => &[(1, "roi", Ignored), (2, "scales", Floats), (3, "sizes", Ints)],
        _ => &[],
    }
}

struct Reader<'a> {
    /// Problems found so far: (location, message).
    diags: Vec<(String, String)>,
    base_dir: Option<&'a Path>,
    /// Suggestions against a file's own names (weights, safetensors keys) cost a comparison with
    /// each; only this many are made, so that a hostile file cannot make them quadratic.
    hints_left: usize,
    /// The model's weight bytes so far, against the memory cap: claimed before each weight's
    /// data is read, parsed or generated.
    budget: Budget,
}

impl Reader<'_> {
    /// [`hint`] against a file's own names, within the budget.
    fn costly_hint(&mut self, name: &str, candidates: &[&str]) -> String {
        if self.hints_left == 0 {
            return String::new();
        }
        self.hints_left -= 1;
        hint(name, candidates)
    }

    fn error(&mut self, loc: &Loc, message: impl Into<String>) {
        self.diags.push((loc.to_string(), message.into()));
    }

    /// Removes and returns the first problem reported since `mark`, to become a leaf's or node's
    /// own failure (reported once by the builder) rather than a separate diagnostic.
    fn take_problem(&mut self, mark: usize, loc: &Loc, fallback: &str) -> (String, String) {
        if self.diags.len() > mark { self.diags.remove(mark) } else { (loc.to_string(), fallback.to_string()) }
    }

    fn object<'v>(&mut self, v: &'v Value, loc: &Loc, what: &str) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(map) => Some(map),
            other => {
                self.error(loc, format!("{what} must be a JSON object, got {}", describe(other)));
                None
            }
        }
    }

    fn array<'v>(&mut self, v: &'v Value, loc: &Loc, what: &str) -> Option<&'v [Value]> {
        match v {
            Value::Array(items) => Some(items),
            other => {
                self.error(loc, format!("{what} must be a list, got {}", describe(other)));
                None
            }
        }
    }

    fn string<'v>(&mut self, v: &'v Value, loc: &Loc, what: &str) -> Option<&'v str> {
        match v {
            Value::String(s) => Some(s),
            other => {
                self.error(loc, format!("{what} must be a string, got {}", describe(other)));
                None
            }
        }
    }

    fn required<'v>(&mut self, obj: &'v Map<String, Value>, key: &str, loc: &Loc, what: &str) -> Option<&'v Value> {
        let v = obj.get(key);
        if v.is_none() {
            self.error(loc, format!("{what} has no '{key}'"));
        }
        v
    }

    /// Reports every key not in `known`, with the nearest known key as a suggestion.
    fn check_keys(&mut self, obj: &Map<String, Value>, loc: &Loc, known: &[&str], what: &str) {
        for key in obj.keys() {
            if !known.contains(&key.as_str()) {
                let message =
                    format!("unknown key '{key}' in {what}{}; known keys: {}", hint(key, known), known.join(", "));
                self.error(&loc.key(key), message);
            }
        }
    }

    /// A list of strings (tensor names) with their locations. Bad elements are reported and skipped.
    fn names(&mut self, v: &Value, loc: &Loc, what: &str) -> Vec<(String, Loc)> {
        let Some(items) = self.array(v, loc, what) else { return Vec::new() };
        let mut names = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some(s) = self.string(item, &loc.index(i), "a tensor name") {
                names.push((s.to_string(), loc.index(i)));
            }
        }
        names
    }

    fn model(mut self, v: &Value, default_name: &str) -> Result<Model, Error> {
        let root = Loc::root();
        let Some(top) = self.object(v, &root, "a kiln model") else { return Err(self.into_error()) };
        self.check_keys(top, &root, TOP_KEYS, "the model");
        if !self.header(top, &root) {
            // A wrong format or version makes everything else meaningless; say only that.
            return Err(self.into_error());
        }
        let name = match top.get("name") {
            None => default_name.to_string(),
            Some(v) => self.string(v, &root.key("name"), "'name'").unwrap_or(default_name).to_string(),
        };

        let mut leaves = Vec::new();
        if let Some(v) = self.required(top, "inputs", &root, "the model") {
            let loc = root.key("inputs");
            if let Some(items) = self.array(v, &loc, "'inputs'") {
                for (i, item) in items.iter().enumerate() {
                    if let Some(leaf) = self.input(item, &loc.index(i)) {
                        leaves.push(leaf);
                    }
                }
            }
        }
        let mut pending = Vec::new();
        if let Some(v) = top.get("weights") {
            let loc = root.key("weights");
            if let Some(items) = self.array(v, &loc, "'weights'") {
                for (i, item) in items.iter().enumerate() {
                    self.weight(item, &loc.index(i), &mut leaves, &mut pending);
                }
            }
        }
        let safetensors = match top.get("safetensors") {
            Some(v) => self.string(v, &root.key("safetensors"), "'safetensors'").map(|s| s.to_string()),
            None => None,
        };
        self.load_safetensors(safetensors.as_deref(), &root.key("safetensors"), &mut leaves, pending);

        let mut nodes = Vec::new();
        if let Some(v) = self.required(top, "nodes", &root, "the model") {
            let loc = root.key("nodes");
            let Some(items) = self.array(v, &loc, "'nodes'") else {
                // Without nodes every graph output would be reported as never produced.
                return Err(self.into_error());
            };
            for (i, item) in items.iter().enumerate() {
                if let Some(node) = self.node(item, &loc.index(i)) {
                    nodes.push(node);
                }
            }
        }
        self.constants(&mut nodes, &mut leaves);

        let mut outputs = Vec::new();
        if let Some(v) = self.required(top, "outputs", &root, "the model") {
            let loc = root.key("outputs");
            outputs = self.names(v, &loc, "'outputs'");
        }

        // Static parameters given as inputs become attributes; then every op is built.
        let mut static_uses: HashSet<String> = HashSet::new();
        let mut ops = Vec::with_capacity(nodes.len());
        // The last declaration of a name wins here; duplicates are reported by the builder.
        let leaf_index: HashMap<&str, usize> = leaves.iter().enumerate().map(|(i, l)| (l.name.as_str(), i)).collect();
        for node in &mut nodes {
            ops.push(self.build_op(node, &leaves, &leaf_index, &mut static_uses));
        }
        self.finish(name, leaves, nodes, ops, outputs, static_uses)
    }

    /// Checks format and version; false if the file is not a kiln model of a version this reads.
    fn header(&mut self, top: &Map<String, Value>, root: &Loc) -> bool {
        let mark = self.diags.len();
        const START: &str = "a kiln model starts with \"format\": \"kiln\", \"version\": 1";
        match top.get("format") {
            None => self.error(root, format!("missing key 'format' ({START})")),
            Some(Value::String(s)) if s == "kiln" => {}
            Some(Value::String(s)) => {
                self.error(&root.key("format"), format!("format is {s:?}, but kiln reads only \"kiln\" JSON models"))
            }
            Some(other) => self
                .error(&root.key("format"), format!("'format' must be the string \"kiln\", got {}", describe(other))),
        }
        match top.get("version") {
            None => self.error(root, format!("missing key 'version' ({START})")),
            Some(v) => match v.as_i64() {
                Some(1) => {}
                Some(n) => self
                    .error(&root.key("version"), format!("unsupported format version {n}: this kiln reads version 1")),
                None => {
                    self.error(&root.key("version"), format!("'version' must be the integer 1, got {}", describe(v)))
                }
            },
        }
        self.diags.len() == mark
    }

    /// The name of an input or weight, and the location labelled with it.
    fn leaf_name(&mut self, obj: &Map<String, Value>, loc: &Loc, what: &str) -> Option<(String, Loc)> {
        let v = self.required(obj, "name", loc, &format!("the {what}"))?;
        let name = self.string(v, &loc.key("name"), &format!("the {what} name"))?;
        Some((name.to_string(), loc.labelled(format!("{what} '{name}'"))))
    }

    fn dtype(&mut self, obj: &Map<String, Value>, loc: &Loc) -> Option<DType> {
        let Some(v) = obj.get("dtype") else { return Some(DType::F32) };
        let loc = loc.key("dtype");
        let name = self.string(v, &loc, "'dtype'")?;
        let dtype = DType::from_name(name);
        if dtype.is_none() {
            let names: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
            self.error(
                &loc,
                format!("unknown dtype {name:?}{}; kiln's dtypes are {}", hint(name, &names), names.join(", ")),
            );
        }
        dtype
    }

    /// A shape: a list of integers ≥ 0 (zero dimensions are refused later by the size check, with
    /// the tensor's type in the message).
    fn shape(&mut self, obj: &Map<String, Value>, loc: &Loc, what: &str) -> Option<Vec<usize>> {
        let v = self.required(obj, "shape", loc, what)?;
        let loc = loc.key("shape");
        let items = self.array(v, &loc, "'shape'")?;
        let mut shape = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match item.as_u64().and_then(|d| usize::try_from(d).ok()) {
                Some(d) => shape.push(d),
                None => {
                    let why = match item.as_i64() {
                        Some(d) => format!("dimension {i} is {d}; dimensions must be ≥ 1"),
                        None if item.is_u64() => format!("dimension {i} is too large"),
                        None => format!("dimension {i} must be an integer, got {}", describe(item)),
                    };
                    self.error(&loc.index(i), why);
                    ok = false;
                }
            }
        }
        ok.then_some(shape)
    }

    fn tensor_type(&mut self, obj: &Map<String, Value>, loc: &Loc, what: &str) -> Option<TensorType> {
        let dtype = self.dtype(obj, loc);
        let shape = self.shape(obj, loc, what);
        Some(TensorType::new(dtype?, shape?))
    }

    fn input(&mut self, v: &Value, loc: &Loc) -> Option<Leaf> {
        let obj = self.object(v, loc, "an input")?;
        let (name, loc) = self.leaf_name(obj, loc, "input")?;
        self.check_keys(obj, &loc, INPUT_KEYS, &format!("input '{name}'"));
        let mark = self.diags.len();
        let ty = self.tensor_type(obj, &loc, &format!("input '{name}'"));
        let problem = ty.is_none().then(|| self.take_problem(mark, &loc, "the input's type is invalid"));
        Some(Leaf { loc, name, ty, problem, is_input: true, data: None })
    }

    fn weight(&mut self, v: &Value, loc: &Loc, leaves: &mut Vec<Leaf>, pending: &mut Vec<PendingTensor>) {
        let Some(obj) = self.object(v, loc, "a weight") else { return };
        let Some((name, loc)) = self.leaf_name(obj, loc, "weight") else { return };
        let what = format!("weight '{name}'");
        self.check_keys(obj, &loc, WEIGHT_KEYS, &what);
        let mark = self.diags.len();
        let ty = self.tensor_type(obj, &loc, &what);
        let problem = ty.is_none().then(|| self.take_problem(mark, &loc, "the weight's type is invalid"));
        let sources: Vec<&str> = SOURCES.iter().copied().filter(|s| obj.contains_key(*s)).collect();
        let mut data = None;
        match sources.as_slice() {
            [] => self.error(&loc, format!("{what} has no source: give one of 'data', 'safetensors' or 'init'")),
            [source] => {
                let src_loc = loc.key(source);
                let Some(value) = obj.get(*source) else { return };
                // The size check comes before any data is read or generated; a weight that fails it
                // is reported by the graph builder.
                let claimed =
                    |this: &mut Self, ty: &TensorType| match this.budget.claim(ty_bytes(ty), &format!("{what} ({ty})"))
                    {
                        Ok(()) => true,
                        Err(e) => {
                            this.error(&src_loc, e);
                            false
                        }
                    };
                if let Some(ty) = ty.as_ref().filter(|ty| ty.check_size().is_ok() && claimed(self, ty)) {
                    match *source {
                        "data" => data = self.inline_data(value, &src_loc, ty, &what),
                        "safetensors" => {
                            if let Some(key) = self.string(value, &src_loc, "'safetensors' (a tensor key)") {
                                pending.push(PendingTensor { leaf: leaves.len(), key: key.into(), loc: src_loc });
                            }
                        }
                        _ => {
                            if let Some(init) = self.init(value, &src_loc) {
                                match generate(&init, ty) {
                                    Ok(t) => data = Some(t),
                                    Err(e) => self.error(&src_loc.key(init.kind_name()), e),
                                }
                            }
                        }
                    }
                }
            }
            many => {
                self.error(&loc, format!("{what} has several sources ({}); give exactly one", quoted_list(many)));
            }
        }
        leaves.push(Leaf { loc, name, ty, problem, is_input: false, data });
    }

    /// Inline values: a flat row-major list of exactly as many values as the type holds. `ty` has
    /// passed the size check.
    fn inline_data(&mut self, v: &Value, loc: &Loc, ty: &TensorType, what: &str) -> Option<Tensor> {
        let items = self.array(v, loc, "'data'")?;
        let n = ty.num_elements();
        if items.len() != n {
            let nested =
                if items.iter().any(Value::is_array) { " (as a flat list: the shape gives the layout)" } else { "" };
            self.error(loc, format!("{what} has {} values in 'data' but {ty} needs {n}{nested}", items.len()));
            return None;
        }
        let bad = |this: &mut Self, i: usize, want: &str, item: &Value| {
            this.error(&loc.index(i), format!("value {i} of {what} must be {want}, got {}", describe(item)));
        };
        let data = match ty.dtype {
            DType::F32 => {
                let mut values = Vec::with_capacity(n);
                for (i, item) in items.iter().enumerate() {
                    match f32_value(item) {
                        Some(x) => values.push(x),
                        None => {
                            bad(self, i, "a number within the f32 range, or \"nan\", \"inf\" or \"-inf\"", item);
                            return None;
                        }
                    }
                }
                TensorData::F32(values)
            }
            DType::I64 => {
                let mut values = Vec::with_capacity(n);
                for (i, item) in items.iter().enumerate() {
                    match item.as_i64() {
                        Some(x) => values.push(x),
                        None => {
                            bad(self, i, "a 64-bit integer", item);
                            return None;
                        }
                    }
                }
                TensorData::I64(values)
            }
            DType::Bool => {
                let mut values = Vec::with_capacity(n);
                for (i, item) in items.iter().enumerate() {
                    match item.as_bool() {
                        Some(x) => values.push(x),
                        None => {
                            bad(self, i, "true or false", item);
                            return None;
                        }
                    }
                }
                TensorData::Bool(values)
            }
        };
        match Tensor::new(ty.shape.clone(), data) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(loc, format!("{what}: {e}"));
                None
            }
        }
    }

    /// `{KIND: {PARAMS}}` → [`Init`]. Parameter values are checked by [`generate`].
    fn init(&mut self, v: &Value, loc: &Loc) -> Option<Init> {
        let obj = self.object(v, loc, "'init'")?;
        let mut kinds = obj.iter();
        let (kind, params) = match (kinds.next(), kinds.next()) {
            (Some(first), None) => first,
            (None, _) => {
                self.error(loc, format!("'init' names no initializer; kinds are {}", INIT_KINDS.join(", ")));
                return None;
            }
            (Some(_), Some(_)) => {
                let names: Vec<&str> = obj.keys().map(String::as_str).collect();
                self.error(loc, format!("'init' must name exactly one initializer, got {}", quoted_list(&names)));
                return None;
            }
        };
        let loc = loc.key(kind);
        let known: &[&str] = match kind.as_str() {
            "normal" => &["mean", "std", "seed"],
            "uniform" => &["low", "high", "seed"],
            "constant" => &["value"],
            "zeros" | "ones" => &[],
            "arange" => &["start", "step"],
            _ => {
                let message = format!(
                    "unknown initializer '{kind}'{}; kinds are {}",
                    hint(kind, INIT_KINDS),
                    INIT_KINDS.join(", ")
                );
                self.error(&loc, message);
                return None;
            }
        };
        let params = self.object(params, &loc, &format!("the parameters of '{kind}'"))?;
        let mark = self.diags.len();
        for key in params.keys() {
            if !known.contains(&key.as_str()) {
                let accepted = if known.is_empty() { "none".to_string() } else { known.join(", ") };
                let message =
                    format!("'{kind}' has no parameter '{key}'{}; its parameters: {accepted}", hint(key, known));
                self.error(&loc.key(key), message);
            }
        }
        let number = |this: &mut Self, name: &str, default: Option<f64>| -> Option<f64> {
            match params.get(name) {
                None if default.is_none() => {
                    this.error(&loc, format!("'{kind}' needs the parameter '{name}'"));
                    None
                }
                None => default,
                Some(v) => match v.as_f64() {
                    Some(x) => Some(x),
                    None => {
                        this.error(&loc.key(name), format!("'{name}' must be a number, got {}", describe(v)));
                        None
                    }
                },
            }
        };
        let seed = |this: &mut Self| -> Option<u64> {
            match params.get("seed") {
                None => Some(0),
                Some(v) => v.as_u64().or_else(|| {
                    let message = format!("'seed' must be an integer from 0 to 2^64 - 1, got {}", describe(v));
                    this.error(&loc.key("seed"), message);
                    None
                }),
            }
        };
        let init = match kind.as_str() {
            "normal" => {
                let (mean, std, seed) = (number(self, "mean", Some(0.0)), number(self, "std", Some(1.0)), seed(self));
                Init::Normal { mean: mean?, std: std?, seed: seed? }
            }
            "uniform" => {
                let (low, high, seed) = (number(self, "low", Some(0.0)), number(self, "high", Some(1.0)), seed(self));
                Init::Uniform { low: low?, high: high?, seed: seed? }
            }
            "constant" => Init::Constant { value: number(self, "value", None)? },
            "zeros" => Init::Zeros,
            "ones" => Init::Ones,
            _ => {
                let (start, step) = (number(self, "start", Some(0.0)), number(self, "step", Some(1.0)));
                Init::Arange { start: start?, step: step? }
            }
        };
        (self.diags.len() == mark).then_some(init)
    }

    /// Reads every pending weight's data from the safetensors file: the header first (its length
    /// checked against the file's), then only the byte range of each tensor a weight names, each
    /// checked against the declared type before it is read.
    fn load_safetensors(&mut self, file: Option<&str>, loc: &Loc, leaves: &mut [Leaf], pending: Vec<PendingTensor>) {
        if pending.is_empty() {
            return;
        }
        let Some(file) = file else {
            for p in &pending {
                let message = format!(
                    "weight '{}' reads safetensors key '{}' but the model names no safetensors file \
                     (add \"safetensors\": \"FILE\" at the top level)",
                    leaves[p.leaf].name, p.key
                );
                self.error(&p.loc, message);
            }
            return;
        };
        let needed_by = || {
            let mut list: Vec<String> =
                pending.iter().take(3).map(|p| format!("weight '{}' (key '{}')", leaves[p.leaf].name, p.key)).collect();
            if pending.len() > 3 {
                list.push(format!("{} more", pending.len() - 3));
            }
            list.join(", ")
        };
        let Some(base_dir) = self.base_dir else {
            let message = format!(
                "the safetensors file '{file}' (needed by {}) cannot be found: the model was not read from a file",
                needed_by()
            );
            self.error(loc, message);
            return;
        };
        let mut opened = match open_contained(base_dir, file, "the safetensors file") {
            Ok(opened) => opened,
            Err(e) => {
                let message = format!("cannot read the safetensors file '{file}' (needed by {}): {e}", needed_by());
                self.error(loc, message);
                return;
            }
        };
        let shown = opened.shown.clone();
        let (data_start, header) = match safetensors_header(&mut opened) {
            Ok(header) => header,
            Err(e) => {
                self.error(loc, format!("'{shown}' is not a valid safetensors file: {e}"));
                return;
            }
        };
        for p in pending {
            let leaf = &leaves[p.leaf];
            let Some(ty) = &leaf.ty else { continue };
            let what = format!("weight '{}'", leaf.name);
            let info = match header.get(&p.key).filter(|_| p.key != "__metadata__") {
                Some(v) => match serde_json::from_value::<safetensors::tensor::TensorInfo>(v.clone()) {
                    Ok(info) => info,
                    Err(e) => {
                        self.error(&p.loc, format!("key '{}' in '{shown}' has an invalid entry: {e}", p.key));
                        continue;
                    }
                },
                None => {
                    let names: Vec<&str> = header.keys().map(String::as_str).filter(|&k| k != "__metadata__").collect();
                    let hint = self.costly_hint(&p.key, &names);
                    let message = format!("safetensors key '{}' for {what} is not in '{shown}'{hint}", p.key);
                    self.error(&p.loc, message);
                    continue;
                }
            };
            let want = match ty.dtype {
                DType::F32 => safetensors::Dtype::F32,
                DType::I64 => safetensors::Dtype::I64,
                DType::Bool => safetensors::Dtype::BOOL,
            };
            if info.dtype != want {
                let message = format!(
                    "{what} is declared {} but key '{}' in '{shown}' holds {:?} data; store it as {want:?}",
                    ty.dtype, p.key, info.dtype
                );
                self.error(&p.loc, message);
                continue;
            }
            if info.shape != ty.shape {
                let message = format!(
                    "{what} is declared {ty} but key '{}' in '{shown}' has shape {}",
                    p.key,
                    kiln_ir::dtype::ShapeDisplay(&info.shape)
                );
                self.error(&p.loc, message);
                continue;
            }
            // The type passed the size check, so this product does not overflow.
            let want_bytes = ty.num_elements() * ty.dtype.size_bytes();
            let (start, end) = info.data_offsets;
            if end.checked_sub(start) != Some(want_bytes) {
                let message =
                    format!("key '{}' in '{shown}' spans bytes {start}..{end} but {ty} needs {want_bytes}", p.key);
                self.error(&p.loc, message);
                continue;
            }
            let bytes = match opened.read_range(data_start.saturating_add(start as u64), want_bytes) {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.error(&p.loc, format!("{what}: key '{}': {e}", p.key));
                    continue;
                }
            };
            let tensor = decode_le(ty.dtype, &bytes, &what).and_then(|data| Tensor::new(ty.shape.clone(), data));
            match tensor {
                Ok(t) => leaves[p.leaf].data = Some(t),
                Err(e) => self.error(&p.loc, format!("{what}: key '{}' in '{shown}': {e}", p.key)),
            }
        }
    }

    fn node(&mut self, v: &Value, loc: &Loc) -> Option<RawNode> {
        let obj = self.object(v, loc, "a node")?;
        let mark = self.diags.len();
        let name = match obj.get("name") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.error(&loc.key("name"), format!("a node's name must be a string, got {}", describe(other)));
                None
            }
            None => {
                self.error(loc, "the node has no 'name'");
                None
            }
        };
        let loc = match &name {
            Some(name) => loc.labelled(format!("node '{name}'")),
            None => loc.clone(),
        };
        // A node without a usable name still takes part, under its path, so that its outputs exist.
        let name = name.unwrap_or_else(|| loc.path.clone());
        self.check_keys(obj, &loc, NODE_KEYS, &format!("node '{name}'"));
        let op = match obj.get("op") {
            Some(v) => self.string(v, &loc.key("op"), "'op'").map(str::to_string),
            None => {
                self.error(&loc, format!("node '{name}' has no 'op'"));
                None
            }
        };
        let is_constant = op.as_deref() == Some("Constant");
        let (inputs, input_locs) = match obj.get("inputs") {
            Some(v) => self.names(v, &loc.key("inputs"), "'inputs'").into_iter().unzip(),
            None if is_constant => (Vec::new(), Vec::new()),
            None => {
                self.error(&loc, format!("node '{name}' has no 'inputs'"));
                (Vec::new(), Vec::new())
            }
        };
        let outputs = match self.required(obj, "outputs", &loc, &format!("node '{name}'")) {
            Some(v) => self.names(v, &loc.key("outputs"), "'outputs'").into_iter().map(|(n, _)| n).collect(),
            None => Vec::new(),
        };
        let mut attrs = Attrs::new();
        let mut attr_locs = HashMap::new();
        if let Some(v) = obj.get("attributes") {
            let attrs_loc = loc.key("attributes");
            if let Some(map) = self.object(v, &attrs_loc, "'attributes'") {
                for (key, value) in map {
                    let attr_loc = attrs_loc.key(key);
                    let attr = if is_constant && key == "value" {
                        // Kept for `constants`, which reads it as a tensor.
                        Some(Attr::Str(String::new()))
                    } else {
                        self.attr(value, &attr_loc, key)
                    };
                    if let Some(attr) = attr {
                        attrs.insert(key.clone(), attr);
                    }
                    attr_locs.insert(key.clone(), attr_loc);
                }
                if is_constant && let Some(value) = map.get("value") {
                    // Parsed here so that problems keep their path; stored as a tensor attribute.
                    if let Some(t) = self.constant_value(value, &attrs_loc.key("value"), &name) {
                        attrs.insert("value".into(), Attr::Tensor(t));
                    } else {
                        attrs.remove("value");
                    }
                }
            }
        }
        let problem = (self.diags.len() > mark).then(|| self.take_problem(mark, &loc, "the node is invalid"));
        Some(RawNode { loc, name, op, inputs, input_locs, outputs, attrs, attr_locs, problem })
    }

    /// A JSON attribute value → [`Attr`]: integers, floats, strings, lists of integers or of
    /// numbers; `true`/`false` are 1/0.
    fn attr(&mut self, v: &Value, loc: &Loc, name: &str) -> Option<Attr> {
        let bad = |this: &mut Self, why: String| {
            this.error(loc, format!("attribute '{name}': {why}"));
            None
        };
        match v {
            Value::Bool(b) => Some(Attr::Int(*b as i64)),
            Value::String(s) => Some(Attr::Str(s.clone())),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Some(Attr::Int(i))
                } else if n.is_u64() {
                    bad(self, format!("{n} does not fit in a 64-bit integer"))
                } else {
                    match f32_value(v) {
                        Some(x) => Some(Attr::Float(x)),
                        None => bad(self, format!("{n} is outside the f32 range")),
                    }
                }
            }
            Value::Array(items) => {
                if items.iter().all(|x| x.as_i64().is_some()) {
                    return Some(Attr::Ints(items.iter().filter_map(Value::as_i64).collect()));
                }
                let mut floats = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match (item, f32_value(item)) {
                        (Value::Number(_), Some(x)) => floats.push(x),
                        _ => {
                            return bad(
                                self,
                                format!(
                                    "a list attribute holds integers or numbers, but value {i} is {}",
                                    describe(item)
                                ),
                            );
                        }
                    }
                }
                Some(Attr::Floats(floats))
            }
            Value::Null | Value::Object(_) => {
                bad(self, format!("must be a number, a string or a list of numbers, got {}", describe(v)))
            }
        }
    }

    /// A Constant node's `value`: `{"dtype", "shape", "data"}`.
    fn constant_value(&mut self, v: &Value, loc: &Loc, node: &str) -> Option<Tensor> {
        let obj = self.object(v, loc, "a Constant's 'value'")?;
        let what = format!("the value of Constant '{node}'");
        self.check_keys(obj, loc, CONSTANT_VALUE_KEYS, &what);
        let ty = self.tensor_type(obj, loc, &what)?;
        if let Err(e) = ty.check_size() {
            self.error(loc, format!("{what}: {e}"));
            return None;
        }
        let data = self.required(obj, "data", loc, &what)?;
        if let Err(e) = self.budget.claim(ty_bytes(&ty), &format!("{what} ({ty})")) {
            self.error(loc, e);
            return None;
        }
        self.inline_data(data, &loc.key("data"), &ty, &what)
    }

    /// Turns Constant nodes into weights named after their output and removes them from `nodes`.
    fn constants(&mut self, nodes: &mut Vec<RawNode>, leaves: &mut Vec<Leaf>) {
        // Node names must be unique across all nodes; the builder checks the nodes it is given, so
        // pairs involving a Constant are checked here.
        let mut first_use: HashMap<&str, (usize, bool)> = HashMap::new();
        let mut clashes = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let is_constant = node.op.as_deref() == Some("Constant");
            match first_use.get(node.name.as_str()) {
                Some(&(j, first_constant)) if is_constant || first_constant => {
                    clashes.push((
                        node.loc.clone(),
                        format!("node name '{}' is already used at {}", node.name, nodes[j].loc),
                    ));
                }
                Some(_) => {}
                None => {
                    first_use.insert(&node.name, (i, is_constant));
                }
            }
        }
        for (loc, message) in clashes {
            self.error(&loc, message);
        }

        let mut kept = Vec::with_capacity(nodes.len());
        for node in nodes.drain(..) {
            if node.op.as_deref() != Some("Constant") {
                kept.push(node);
                continue;
            }
            let mut problem = node.problem;
            let fail = |problem: &mut Option<(String, String)>, message: String| {
                if problem.is_none() {
                    *problem = Some((node.loc.to_string(), message));
                }
            };
            if !node.inputs.is_empty() {
                fail(&mut problem, format!("Constant '{}' takes no inputs, got {}", node.name, node.inputs.len()));
            }
            let given: Vec<&str> = node.attrs.keys().map(String::as_str).collect();
            for key in &given {
                if !CONSTANT_ATTRS.contains(key) {
                    let message = format!("Constant has no attribute '{key}'{}", hint(key, CONSTANT_ATTRS));
                    fail(&mut problem, message);
                }
            }
            let value = match given.iter().filter(|k| CONSTANT_ATTRS.contains(k)).count() {
                1 => constant_tensor(&node.attrs),
                0 if node.attr_locs.contains_key("value") => None, // its problem is already reported
                _ => {
                    let message = format!(
                        "Constant '{}' needs exactly one of the attributes {}",
                        node.name,
                        quoted_list(CONSTANT_ATTRS)
                    );
                    fail(&mut problem, message);
                    None
                }
            };
            let [output] = node.outputs.as_slice() else {
                fail(
                    &mut problem,
                    format!("Constant '{}' has one output, the node names {}", node.name, node.outputs.len()),
                );
                if let Some((loc, message)) = problem {
                    self.diags.push((loc, message));
                }
                continue;
            };
            // The weight is typed from its value; without one, it is untyped and its problem is
            // the leaf's own failure.
            let ty = value.as_ref().map(Tensor::ty);
            if ty.is_none() && problem.is_none() {
                problem = Some((node.loc.to_string(), format!("Constant '{}' has no valid value", node.name)));
            }
            if ty.is_some()
                && let Some((loc, message)) = problem.take()
            {
                self.diags.push((loc, message));
            }
            leaves.push(Leaf {
                loc: node.loc.clone(),
                name: output.clone(),
                ty,
                problem,
                is_input: false,
                data: value,
            });
        }
        *nodes = kept;
    }

    /// Resolves static inputs into attributes and builds the node's op.
    fn build_op(
        &mut self,
        node: &mut RawNode,
        leaves: &[Leaf],
        leaf_index: &HashMap<&str, usize>,
        static_uses: &mut HashSet<String>,
    ) -> Result<Op, String> {
        let op_name = node.op.clone().unwrap_or_default();
        if let Some((loc, message)) = node.problem.take() {
            node.loc = Loc { path: loc, label: None };
            return Err(message);
        }
        let table = static_inputs(&op_name);
        if let Some(first) = table.iter().map(|&(pos, _, _)| pos).min() {
            let given = std::mem::take(&mut node.inputs);
            let locs = std::mem::take(&mut node.input_locs);
            for (pos, (input, loc)) in given.into_iter().zip(locs).enumerate() {
                if pos < first {
                    node.inputs.push(input);
                    node.input_locs.push(loc);
                    continue;
                }
                let Some(&(_, attr, kind)) = table.iter().find(|&&(p, _, _)| p == pos) else {
                    let message =
                        format!("{op_name} has no input {pos} in kiln (static parameters: {})", static_names(table));
                    return self.node_failure(node, &loc, message);
                };
                if input.is_empty() {
                    continue; // ONNX's way of leaving an optional input out
                }
                let what = format!("input {pos} of {op_name} ('{input}', its '{attr}')");
                let leaf = leaf_index.get(input.as_str()).and_then(|&i| leaves.get(i));
                let Some(tensor) = leaf.and_then(|l| if l.is_input { None } else { l.data.as_ref() }) else {
                    let why = match leaf {
                        Some(l) if l.is_input => "is a graph input".to_string(),
                        Some(_) => "has no data (see the weight's own error)".to_string(),
                        None => {
                            let hint = if self.hints_left > 0 {
                                let weights: Vec<&str> =
                                    leaves.iter().filter(|l| !l.is_input).map(|l| l.name.as_str()).collect();
                                self.costly_hint(&input, &weights)
                            } else {
                                String::new()
                            };
                            format!("is not a weight{hint}")
                        }
                    };
                    let message =
                        format!("{what} must name a weight whose data kiln reads at load time, but '{input}' {why}");
                    return self.node_failure(node, &loc, message);
                };
                static_uses.insert(input.clone());
                let value = match static_attr(tensor, kind) {
                    Ok(Some(value)) => value,
                    Ok(None) => continue,
                    Err(want) => {
                        let message = format!("{what} must be {want}, got {}", tensor.ty());
                        return self.node_failure(node, &loc, message);
                    }
                };
                if node.attrs.contains_key(attr) {
                    let message = format!("{op_name}'s '{attr}' is given both as an attribute and as input {pos}");
                    return self.node_failure(node, &loc, message);
                }
                node.attrs.insert(attr.to_string(), value);
                node.attr_locs.insert(attr.to_string(), loc);
            }
        }
        Op::from_parts(&op_name, &node.attrs).inspect_err(|message| {
            // Point at the attribute the message names, if any.
            if let Some(loc) = node.attr_locs.iter().find(|(k, _)| message.contains(&format!("'{k}'"))).map(|(_, l)| l)
            {
                node.loc = loc.clone();
            }
        })
    }

    fn node_failure(&mut self, node: &mut RawNode, loc: &Loc, message: String) -> Result<Op, String> {
        node.loc = loc.clone();
        Err(message)
    }

    fn finish(
        mut self,
        name: String,
        leaves: Vec<Leaf>,
        nodes: Vec<RawNode>,
        ops: Vec<Result<Op, String>>,
        outputs: Vec<(String, Loc)>,
        static_uses: HashSet<String>,
    ) -> Result<Model, Error> {
        // A weight read only as a static parameter is folded into attributes and left out of the
        // graph, unless its name is also used otherwise or declared twice (then the builder reports).
        let mut used: HashSet<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
        used.extend(nodes.iter().flat_map(|n| n.inputs.iter().map(String::as_str)));
        let mut declared: HashMap<&str, usize> = HashMap::new();
        for name in leaves
            .iter()
            .map(|l| l.name.as_str())
            .chain(nodes.iter().flat_map(|n| n.outputs.iter().map(String::as_str)))
        {
            *declared.entry(name).or_default() += 1;
        }
        let folded: Vec<bool> = leaves
            .iter()
            .map(|leaf| {
                !leaf.is_input
                    && static_uses.contains(&leaf.name)
                    && !used.contains(leaf.name.as_str())
                    && declared.get(leaf.name.as_str()) == Some(&1)
            })
            .collect();

        let mut builder = GraphBuilder::new(name);
        for (location, message) in std::mem::take(&mut self.diags) {
            builder.report(location, message);
        }
        let mut weights = Weights::new();
        // Consumed, so that weight data moves into the store instead of being copied.
        for (leaf, folded) in leaves.into_iter().zip(folded) {
            if folded {
                continue;
            }
            match (&leaf.ty, leaf.problem) {
                (Some(ty), _) => {
                    if leaf.is_input {
                        builder.input(leaf.loc.to_string(), leaf.name.clone(), ty.clone());
                    } else {
                        builder.weight(leaf.loc.to_string(), leaf.name.clone(), ty.clone());
                    }
                }
                (None, problem) => {
                    let (location, message) =
                        problem.unwrap_or_else(|| (leaf.loc.to_string(), "invalid type".to_string()));
                    // A failed pseudo-node defines the name, untyped, so users are not reported again.
                    builder.node(location, leaf.loc.path.clone(), Err(message), Vec::new(), vec![leaf.name.clone()]);
                }
            }
            if let Some(t) = leaf.data {
                weights.insert(leaf.name, t);
            }
        }
        for (node, op) in nodes.into_iter().zip(ops) {
            builder.node(node.loc.to_string(), node.name, op, node.inputs, node.outputs);
        }
        for (tensor, loc) in outputs {
            builder.output(loc.to_string(), tensor);
        }
        let graph = builder.finish()?;
        // Every declared weight has data by now, or a problem was reported; this is a consistency
        // check of this reader.
        weights.check_against(&graph)?;
        Ok(Model { graph, weights })
    }

    fn into_error(self) -> Error {
        let diags =
            self.diags.into_iter().map(|(location, message)| kiln_ir::Diagnostic { location, message }).collect();
        Error::from_diagnostics(diags).unwrap_or_else(|| Error::new("", "internal error: no problem recorded"))
    }
}

fn static_names(table: &[(usize, &str, StaticKind)]) -> String {
    table.iter().map(|(pos, name, _)| format!("{pos}: '{name}'")).collect::<Vec<_>>().join(", ")
}

/// A static-parameter tensor as an attribute value; `Err` names the type it must have.
fn static_attr(t: &Tensor, kind: StaticKind) -> Result<Option<Attr>, &'static str> {
    match kind {
        StaticKind::Ignored => Ok(None),
        StaticKind::Ints => match t.as_i64() {
            Some(v) if t.shape().len() <= 1 => Ok(Some(Attr::Ints(v.to_vec()))),
            _ => Err("an i64 tensor of rank 0 or 1"),
        },
        StaticKind::Floats => match t.as_f32() {
            Some(v) if t.shape().len() <= 1 => Ok(Some(Attr::Floats(v.to_vec()))),
            _ => Err("an f32 tensor of rank 0 or 1"),
        },
        StaticKind::Float => match t.as_f32() {
            Some([v]) => Ok(Some(Attr::Float(*v))),
            _ => Err("an f32 tensor of one element"),
        },
    }
}

/// The tensor a Constant's single value attribute describes.
fn constant_tensor(attrs: &Attrs) -> Option<Tensor> {
    let (key, attr) = attrs.iter().find(|(k, _)| CONSTANT_ATTRS.contains(&k.as_str()))?;
    match (key.as_str(), attr) {
        ("value", Attr::Tensor(t)) => Some(t.clone()),
        ("value_float", Attr::Float(x)) => Some(Tensor::scalar_f32(*x)),
        ("value_float", Attr::Int(x)) => Some(Tensor::scalar_f32(*x as f32)),
        ("value_int", Attr::Int(x)) => Tensor::from_i64([], vec![*x]).ok(),
        ("value_floats", Attr::Floats(v)) => Tensor::from_f32([v.len()], v.clone()).ok(),
        ("value_floats", Attr::Ints(v)) => Tensor::from_f32([v.len()], v.iter().map(|&x| x as f32).collect()).ok(),
        ("value_ints", Attr::Ints(v)) => Tensor::from_i64([v.len()], v.clone()).ok(),
        _ => None,
    }
}

/// A JSON number as an f32 (finite, within range), or one of the strings "nan", "inf", "-inf"
/// (JSON has no literal for them).
fn f32_value(v: &Value) -> Option<f32> {
    match v {
        Value::Number(n) => {
            let x = n.as_f64()? as f32;
            x.is_finite().then_some(x)
        }
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "nan" => Some(f32::NAN),
            "inf" | "+inf" | "infinity" | "+infinity" => Some(f32::INFINITY),
            "-inf" | "-infinity" => Some(f32::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// The bytes a tensor of type `ty` takes; `ty` has passed the size check, so this does not overflow.
fn ty_bytes(ty: &TensorType) -> u64 {
    ty.num_elements() as u64 * ty.dtype.size_bytes() as u64
}

/// The largest safetensors header kiln reads (the safetensors library's own limit).
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// A safetensors file's header: where its data starts, and the JSON object describing each tensor.
/// The header's declared length is checked against the file's before the header is read.
fn safetensors_header(file: &mut OpenFile) -> Result<(u64, Map<String, Value>), String> {
    let prefix = file.read_range(0, 8)?;
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&prefix);
    let n = u64::from_le_bytes(len_bytes);
    if n > MAX_SAFETENSORS_HEADER || n > file.len - 8 {
        return Err(format!(
            "its header length {n} exceeds the {} bytes after the length prefix (or the {MAX_SAFETENSORS_HEADER}-byte limit)",
            file.len - 8
        ));
    }
    let header = file.read_range(8, n as usize)?;
    let text = std::str::from_utf8(&header).map_err(|e| format!("its header is not UTF-8 ({e})"))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok((8 + n, map)),
        Ok(other) => Err(format!("its header must be a JSON object, got {}", describe(&other))),
        Err(e) => Err(format!("its header is not valid JSON ({e})")),
    }
}
