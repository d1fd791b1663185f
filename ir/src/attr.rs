//! Generic attributes: the form in which every frontend and the text form hand attributes to
//! [`crate::Op::from_parts`], which alone knows each op's attribute names, types and defaults.

use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::fmt;

/// One attribute value, as a model file spells it.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Str(String),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Tensor(Tensor),
}

impl Attr {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Attr::Int(_) => "int",
            Attr::Float(_) => "float",
            Attr::Str(_) => "string",
            Attr::Ints(_) => "list of ints",
            Attr::Floats(_) => "list of floats",
            Attr::Tensor(_) => "tensor",
        }
    }
}

/// Attributes by name, in a stable order.
pub type Attrs = BTreeMap<String, Attr>;

/// Formats an f32 so that parsing it back gives the same bits (Rust's shortest round-trip form,
/// always with a decimal point or exponent so it reads as a float).
pub fn fmt_f32(value: f32) -> String {
    if value.is_nan() {
        return "nan".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let s = format!("{value:?}");
    if s.contains(['.', 'e', 'E']) { s } else { format!("{s}.0") }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Int(v) => write!(f, "{v}"),
            Attr::Float(v) => f.write_str(&fmt_f32(*v)),
            Attr::Str(s) => write!(f, "{s:?}"),
            Attr::Ints(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
            Attr::Floats(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(&fmt_f32(*x))?;
                }
                f.write_str("]")
            }
            Attr::Tensor(t) => write!(f, "{t:?}"),
        }
    }
}

/// Reads typed attributes for one op, applying defaults, and rejects unknown or ill-typed ones.
pub(crate) struct AttrReader<'a> {
    op: &'a str,
    attrs: &'a Attrs,
    known: Vec<&'static str>,
}

impl<'a> AttrReader<'a> {
    pub(crate) fn new(op: &'a str, attrs: &'a Attrs) -> Self {
        AttrReader { op, attrs, known: Vec::new() }
    }

    fn get(&mut self, name: &'static str) -> Option<&'a Attr> {
        self.known.push(name);
        self.attrs.get(name)
    }

    fn wrong(&self, name: &str, want: &str, got: &Attr) -> String {
        format!("attribute '{name}' of {} must be {want}, got {} {got}", self.op, got.kind_name())
    }

    /// Accepts an attribute that kiln reads but does not need (e.g. BatchNormalization's momentum).
    pub(crate) fn ignore(&mut self, name: &'static str) {
        self.known.push(name);
    }

    pub(crate) fn int_opt(&mut self, name: &'static str) -> Result<Option<i64>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(*v)),
            Some(other) => Err(self.wrong(name, "an int", other)),
        }
    }

    pub(crate) fn int(&mut self, name: &'static str, default: i64) -> Result<i64, String> {
        Ok(self.int_opt(name)?.unwrap_or(default))
    }

    pub(crate) fn int_required(&mut self, name: &'static str) -> Result<i64, String> {
        self.int_opt(name)?.ok_or_else(|| format!("{} needs the int attribute '{name}'", self.op))
    }

    pub(crate) fn bool(&mut self, name: &'static str, default: bool) -> Result<bool, String> {
        match self.int(name, default as i64)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(format!("attribute '{name}' of {} must be 0 or 1, got {v}", self.op)),
        }
    }

    /// A non-negative count or index.
    pub(crate) fn usize(&mut self, name: &'static str, default: usize) -> Result<usize, String> {
        let v = self.int(name, default as i64)?;
        usize::try_from(v).map_err(|_| format!("attribute '{name}' of {} must be ≥ 0, got {v}", self.op))
    }

    pub(crate) fn float_opt(&mut self, name: &'static str) -> Result<Option<f32>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Float(v)) => Ok(Some(*v)),
            // An integer literal where a float is expected is what a person writing JSON means.
            Some(Attr::Int(v)) => Ok(Some(*v as f32)),
            Some(other) => Err(self.wrong(name, "a float", other)),
        }
    }

    pub(crate) fn float(&mut self, name: &'static str, default: f32) -> Result<f32, String> {
        Ok(self.float_opt(name)?.unwrap_or(default))
    }

    pub(crate) fn string(&mut self, name: &'static str, default: &str) -> Result<String, String> {
        match self.get(name) {
            None => Ok(default.to_string()),
            Some(Attr::Str(s)) => Ok(s.clone()),
            Some(other) => Err(self.wrong(name, "a string", other)),
        }
    }

    pub(crate) fn ints_opt(&mut self, name: &'static str) -> Result<Option<Vec<i64>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(Attr::Int(v)) => Ok(Some(vec![*v])),
            Some(other) => Err(self.wrong(name, "a list of ints", other)),
        }
    }

    pub(crate) fn ints_required(&mut self, name: &'static str) -> Result<Vec<i64>, String> {
        self.ints_opt(name)?.ok_or_else(|| format!("{} needs the list attribute '{name}'", self.op))
    }

    /// A list of non-negative ints.
    pub(crate) fn usizes_opt(&mut self, name: &'static str) -> Result<Option<Vec<usize>>, String> {
        match self.ints_opt(name)? {
            None => Ok(None),
            Some(v) => v
                .iter()
                .map(|&x| usize::try_from(x))
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
                .map_err(|_| format!("attribute '{name}' of {} must not be negative, got {v:?}", self.op)),
        }
    }

    pub(crate) fn floats_opt(&mut self, name: &'static str) -> Result<Option<Vec<f32>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v.clone())),
            Some(Attr::Ints(v)) => Ok(Some(v.iter().map(|&x| x as f32).collect())),
            Some(other) => Err(self.wrong(name, "a list of floats", other)),
        }
    }

    /// Fails on any attribute the op does not know, suggesting the nearest known name.
    pub(crate) fn finish(self) -> Result<(), String> {
        for name in self.attrs.keys() {
            if !self.known.contains(&name.as_str()) {
                let hint = crate::suggest::nearest(name, self.known.iter().copied())
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
                return Err(format!("{} has no attribute '{name}'{hint}", self.op));
            }
        }
        Ok(())
    }
}

/// Writes typed attributes back into generic form, leaving out values equal to their default so
/// that the text form stays short.
#[derive(Default)]
pub(crate) struct AttrWriter {
    pub(crate) attrs: Attrs,
}

impl AttrWriter {
    pub(crate) fn int(&mut self, name: &str, value: i64, default: i64) {
        if value != default {
            self.attrs.insert(name.into(), Attr::Int(value));
        }
    }

    pub(crate) fn int_always(&mut self, name: &str, value: i64) {
        self.attrs.insert(name.into(), Attr::Int(value));
    }

    pub(crate) fn float(&mut self, name: &str, value: f32, default: f32) {
        if value.to_bits() != default.to_bits() {
            self.attrs.insert(name.into(), Attr::Float(value));
        }
    }

    pub(crate) fn string(&mut self, name: &str, value: &str, default: &str) {
        if value != default {
            self.attrs.insert(name.into(), Attr::Str(value.into()));
        }
    }

    pub(crate) fn ints(&mut self, name: &str, value: &[i64]) {
        self.attrs.insert(name.into(), Attr::Ints(value.to_vec()));
    }

    pub(crate) fn usizes(&mut self, name: &str, value: &[usize]) {
        self.ints(name, &value.iter().map(|&x| x as i64).collect::<Vec<_>>());
    }

    pub(crate) fn floats(&mut self, name: &str, value: &[f32]) {
        self.attrs.insert(name.into(), Attr::Floats(value.to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_so_they_parse_back() {
        for v in [1.0f32, 0.1, 1e-5, 1.050_701, -3.5e20, f32::MIN_POSITIVE] {
            let s = fmt_f32(v);
            assert_eq!(s.parse::<f32>().unwrap().to_bits(), v.to_bits(), "{s}");
        }
        assert_eq!(fmt_f32(2.0), "2.0");
    }
}
