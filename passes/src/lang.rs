//! The e-graph language: kiln IR ops (op and attributes in the node's discriminant), weights and
//! graph inputs as leaves, and two kinds of terms the IR lacks:
//!
//! - *meta* terms that only exist during saturation (`affine`, `center`): never extracted (infinite
//!   cost); rules rewrite them into IR ops or fold them away;
//! - *fold* terms, compile-time arithmetic on weights (`scale-rows`, `bn-scale<ε>`, …), evaluated
//!   after extraction by [`crate::fold`] into new weights.
//!
//! Text form (egg's s-expressions): an IR op prints as `Name` or `Name<attr=value;…>` with the
//! attributes [`kiln_ir::Op::to_parts`] gives (defaults omitted), so `(Conv<pads=[1,1,1,1]> x w b)`.
//! In patterns, `Name*` matches that op with any attributes; rules that need the attributes read
//! them from the matched node ([`find_ir_op`]).

use egg::{Id, Language, Symbol};
use kiln_ir::attr::fmt_f32;
use kiln_ir::{Attr, Attrs, Op};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

/// An IR op with a canonical text key (its printed form): equality, hashing and order go by the
/// key, which is exact because floats print in round-trip form. Shared behind an `Arc`: egg clones
/// e-nodes constantly (memo, rebuild, matching), and a deep copy of the op and its key per clone
/// was a large part of the optimizer's allocations and memory traffic.
#[derive(Debug, Clone)]
pub struct IrOp(Arc<IrOpData>);

#[derive(Debug)]
pub struct IrOpData {
    pub op: Op,
    key: String,
    /// A hash of `key`, computed once (deterministically: e-graph iteration orders depend on it).
    hash: u64,
}

impl std::ops::Deref for IrOp {
    type Target = IrOpData;
    fn deref(&self) -> &IrOpData {
        &self.0
    }
}

impl IrOp {
    pub fn new(op: Op) -> IrOp {
        let (name, attrs) = op.to_parts();
        let key = if attrs.is_empty() {
            name.to_string()
        } else {
            let body: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={}", fmt_attr(v))).collect();
            format!("{name}<{}>", body.join(";"))
        };
        let mut hasher = std::hash::DefaultHasher::new();
        key.hash(&mut hasher);
        IrOp(Arc::new(IrOpData { op, key, hash: hasher.finish() }))
    }

    pub fn name(&self) -> &'static str {
        self.0.op.name()
    }

    pub fn key(&self) -> &str {
        &self.0.key
    }
}

impl PartialEq for IrOp {
    fn eq(&self, other: &IrOp) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.0.hash == other.0.hash && self.0.key == other.0.key)
    }
}
impl Eq for IrOp {}
impl Hash for IrOp {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash)
    }
}
impl PartialOrd for IrOp {
    fn partial_cmp(&self, other: &IrOp) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for IrOp {
    fn cmp(&self, other: &IrOp) -> Ordering {
        if Arc::ptr_eq(&self.0, &other.0) { Ordering::Equal } else { self.0.key.cmp(&other.0.key) }
    }
}

/// Attribute values without spaces, so that an op stays one s-expression atom.
fn fmt_attr(attr: &Attr) -> String {
    match attr {
        Attr::Int(v) => v.to_string(),
        Attr::Float(v) => fmt_f32(*v),
        Attr::Str(s) => s.clone(),
        Attr::Ints(v) => format!("[{}]", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")),
        Attr::Floats(v) => format!("[{}]", v.iter().map(|x| fmt_f32(*x)).collect::<Vec<_>>().join(",")),
        // No op's to_parts produces a tensor attribute.
        Attr::Tensor(t) => format!("{t:?}").replace(' ', ""),
    }
}

fn parse_attr(text: &str) -> Result<Attr, String> {
    let is_float = |s: &str| s.contains(['.', 'e', 'E']) || s == "nan" || s == "inf" || s == "-inf";
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        if inner.is_empty() {
            return Ok(Attr::Ints(vec![]));
        }
        let parts: Vec<&str> = inner.split(',').collect();
        if parts.iter().any(|p| is_float(p)) {
            let v: Result<Vec<f32>, _> = parts.iter().map(|p| p.parse::<f32>()).collect();
            return v.map(Attr::Floats).map_err(|e| format!("bad float list {text:?}: {e}"));
        }
        let v: Result<Vec<i64>, _> = parts.iter().map(|p| p.parse::<i64>()).collect();
        return v.map(Attr::Ints).map_err(|e| format!("bad int list {text:?}: {e}"));
    }
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Attr::Int(i));
    }
    if is_float(text)
        && let Ok(f) = text.parse::<f32>()
    {
        return Ok(Attr::Float(f));
    }
    Ok(Attr::Str(text.to_string()))
}

impl FromStr for IrOp {
    type Err = String;
    fn from_str(s: &str) -> Result<IrOp, String> {
        let (name, attrs) = match s.find('<') {
            None => (s, Attrs::new()),
            Some(i) => {
                let body = s[i + 1..].strip_suffix('>').ok_or_else(|| format!("unclosed '<' in {s:?}"))?;
                let mut attrs = Attrs::new();
                for part in body.split(';').filter(|p| !p.is_empty()) {
                    let (k, v) = part.split_once('=').ok_or_else(|| format!("attribute without '=' in {s:?}"))?;
                    attrs.insert(k.to_string(), parse_attr(v)?);
                }
                (&s[..i], attrs)
            }
        };
        Ok(IrOp::new(Op::from_parts(name, &attrs)?))
    }
}

/// An f32 stored by its bits, so that terms carrying one stay `Eq + Hash + Ord`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct F32Bits(pub u32);

impl F32Bits {
    pub fn new(v: f32) -> F32Bits {
        F32Bits(v.to_bits())
    }
    pub fn get(self) -> f32 {
        f32::from_bits(self.0)
    }
}

/// Compile-time weight arithmetic, evaluated by [`crate::fold`]. Every input must be constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FoldOp {
    /// `(scale-rows W s)`: W[i, …]·s\[i\] (s flattened; |s| = W.shape\[0\]).
    ScaleRows,
    /// `(scale-cols W s)`: W[:, j, …]·s\[j\] (s flattened; |s| = W.shape\[1\]).
    ScaleCols,
    /// `(center-last W)`: W minus its mean over the last axis.
    CenterLast,
    /// `(center-rows W)`: W minus its mean over axis 0.
    CenterRows,
    /// `(bn-scale<ε> γ v)`: γ/√(v + ε), flat.
    BnScale(F32Bits),
    /// `(bn-shift<ε> γ β m v)`: β − m·γ/√(v + ε), flat.
    BnShift(F32Bits),
    /// `(vec-mat c W)`: Σᵢ c\[i\]·W[i, j] for W [in, out] (c flattened), shape \[out\].
    VecMat,
    /// `(mat-vec W c)`: Σⱼ W[i, j]·c\[j\] for W [out, in] (c flattened), shape \[out\].
    MatVec,
    /// `(conv-sum W c)`: Σ_{c,kh,kw} W[m, c, kh, kw]·c\[c\] for W [M, C, kh, kw], shape \[M\].
    ConvSum,
    /// `(fill<v> x)`: a tensor of x's type filled with v.
    Fill(F32Bits),
    /// `(flat x)`: x's data as a 1-D tensor.
    Flat,
    /// `(fma a b c)`: flat(a)·flat(b) + flat(c), all of one length (1-D result).
    Fma,
}

/// Terms that exist only during saturation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetaOp {
    /// `(affine x a c)`: x·a + c with a and c constant, broadcast against x along one channel axis.
    Affine,
    /// `(center x)`: x minus its mean over the last axis.
    Center,
}

/// The operator of an e-node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KOp {
    Ir(IrOp),
    /// Pattern only: any IR op of this name.
    Wild(&'static str),
    /// Output i of a multi-output IR node (Split).
    Get(usize),
    Meta(MetaOp),
    Fold(FoldOp),
}

impl KOp {
    /// The name that groups nodes for matching (IR op name, or the term's name).
    pub fn group(&self) -> &'static str {
        match self {
            KOp::Ir(op) => op.name(),
            KOp::Wild(name) => name,
            KOp::Get(_) => "get",
            KOp::Meta(MetaOp::Affine) => "affine",
            KOp::Meta(MetaOp::Center) => "center",
            KOp::Fold(f) => match f {
                FoldOp::ScaleRows => "scale-rows",
                FoldOp::ScaleCols => "scale-cols",
                FoldOp::CenterLast => "center-last",
                FoldOp::CenterRows => "center-rows",
                FoldOp::BnScale(_) => "bn-scale",
                FoldOp::BnShift(_) => "bn-shift",
                FoldOp::VecMat => "vec-mat",
                FoldOp::MatVec => "mat-vec",
                FoldOp::ConvSum => "conv-sum",
                FoldOp::Fill(_) => "fill",
                FoldOp::Flat => "flat",
                FoldOp::Fma => "fma",
            },
        }
    }

    /// Whether an e-node with operator `self` (a pattern node) matches one with `other`.
    fn matches(&self, other: &KOp) -> bool {
        match (self, other) {
            (KOp::Wild(name), KOp::Ir(op)) => *name == op.name(),
            (KOp::Ir(op), KOp::Wild(name)) => *name == op.name(),
            _ => self == other,
        }
    }
}

/// Ordered by group first, a wildcard before every op of its group: egg keeps an e-class's nodes
/// sorted and finds the nodes a pattern node matches by binary search within its group.
impl Ord for KOp {
    fn cmp(&self, other: &KOp) -> Ordering {
        self.group().cmp(other.group()).then_with(|| match (self, other) {
            (KOp::Wild(_), KOp::Wild(_)) => Ordering::Equal,
            (KOp::Wild(_), _) => Ordering::Less,
            (_, KOp::Wild(_)) => Ordering::Greater,
            (KOp::Ir(a), KOp::Ir(b)) => a.cmp(b),
            (KOp::Get(a), KOp::Get(b)) => a.cmp(b),
            (KOp::Meta(a), KOp::Meta(b)) => a.cmp(b),
            (KOp::Fold(a), KOp::Fold(b)) => a.cmp(b),
            // Different kinds never share a group name.
            _ => format!("{self:?}").cmp(&format!("{other:?}")),
        })
    }
}
impl PartialOrd for KOp {
    fn partial_cmp(&self, other: &KOp) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for KOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KOp::Ir(op) => f.write_str(op.key()),
            KOp::Wild(name) => write!(f, "{name}*"),
            KOp::Get(i) => write!(f, "get<{i}>"),
            KOp::Fold(FoldOp::BnScale(e)) | KOp::Fold(FoldOp::BnShift(e)) | KOp::Fold(FoldOp::Fill(e)) => {
                write!(f, "{}<{}>", self.group(), fmt_f32(e.get()))
            }
            _ => f.write_str(self.group()),
        }
    }
}

impl FromStr for KOp {
    type Err = String;
    fn from_str(s: &str) -> Result<KOp, String> {
        if let Some(name) = s.strip_suffix('*') {
            return kiln_ir::OP_NAMES
                .iter()
                .find(|n| **n == name)
                .map(|n| KOp::Wild(n))
                .ok_or_else(|| format!("unknown op {name:?} in wildcard"));
        }
        let (head, arg) = match s.find('<') {
            Some(i) if !s.starts_with(|c: char| c.is_ascii_uppercase()) => {
                let arg = s[i + 1..].strip_suffix('>').ok_or_else(|| format!("unclosed '<' in {s:?}"))?;
                (&s[..i], Some(arg))
            }
            _ => (s, None),
        };
        let float = |a: Option<&str>| -> Result<F32Bits, String> {
            let a = a.ok_or_else(|| format!("{head} needs a value: {head}<…>"))?;
            a.parse::<f32>().map(F32Bits::new).map_err(|e| format!("bad number in {s:?}: {e}"))
        };
        Ok(match head {
            "get" => {
                let a = arg.ok_or("get needs an index: get<i>")?;
                KOp::Get(a.parse().map_err(|e| format!("bad index in {s:?}: {e}"))?)
            }
            "affine" => KOp::Meta(MetaOp::Affine),
            "center" => KOp::Meta(MetaOp::Center),
            "scale-rows" => KOp::Fold(FoldOp::ScaleRows),
            "scale-cols" => KOp::Fold(FoldOp::ScaleCols),
            "center-last" => KOp::Fold(FoldOp::CenterLast),
            "center-rows" => KOp::Fold(FoldOp::CenterRows),
            "bn-scale" => KOp::Fold(FoldOp::BnScale(float(arg)?)),
            "bn-shift" => KOp::Fold(FoldOp::BnShift(float(arg)?)),
            "vec-mat" => KOp::Fold(FoldOp::VecMat),
            "mat-vec" => KOp::Fold(FoldOp::MatVec),
            "conv-sum" => KOp::Fold(FoldOp::ConvSum),
            "fill" => KOp::Fold(FoldOp::Fill(float(arg)?)),
            "flat" => KOp::Fold(FoldOp::Flat),
            "fma" => KOp::Fold(FoldOp::Fma),
            _ => KOp::Ir(s.parse()?),
        })
    }
}

/// An e-node: a leaf (weight or graph input, by tensor name) or an operator with children.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kiln {
    Leaf(Symbol),
    Node(KOp, Vec<Id>),
}

impl Kiln {
    pub fn ir(op: Op, args: Vec<Id>) -> Kiln {
        Kiln::Node(KOp::Ir(IrOp::new(op)), args)
    }

    pub fn kop(&self) -> Option<&KOp> {
        match self {
            Kiln::Node(op, _) => Some(op),
            Kiln::Leaf(_) => None,
        }
    }

    pub fn ir_op(&self) -> Option<&Op> {
        match self {
            Kiln::Node(KOp::Ir(op), _) => Some(&op.op),
            _ => None,
        }
    }
}

impl Language for Kiln {
    type Discriminant = &'static str;

    fn discriminant(&self) -> &'static str {
        match self {
            Kiln::Leaf(_) => "leaf",
            Kiln::Node(op, _) => op.group(),
        }
    }

    fn matches(&self, other: &Kiln) -> bool {
        match (self, other) {
            (Kiln::Leaf(a), Kiln::Leaf(b)) => a == b,
            (Kiln::Node(a, ac), Kiln::Node(b, bc)) => ac.len() == bc.len() && a.matches(b),
            _ => false,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            Kiln::Leaf(_) => &[],
            Kiln::Node(_, c) => c,
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            Kiln::Leaf(_) => &mut [],
            Kiln::Node(_, c) => c,
        }
    }
}

impl fmt::Display for Kiln {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kiln::Leaf(s) => write!(f, "{s}"),
            Kiln::Node(op, _) => write!(f, "{op}"),
        }
    }
}

impl egg::FromOp for Kiln {
    type Error = String;
    fn from_op(op: &str, children: Vec<Id>) -> Result<Kiln, String> {
        // No operator takes zero inputs, so a childless atom is a tensor name.
        if children.is_empty() {
            return Ok(Kiln::Leaf(Symbol::from(op)));
        }
        Ok(Kiln::Node(op.parse()?, children))
    }
}

/// The IR ops of a given name in an e-class whose children are `args` (canonical ids), for rules
/// that match `Name*` and need the attributes of what they matched.
pub fn find_ir_op<N: egg::Analysis<Kiln>>(
    egraph: &egg::EGraph<Kiln, N>,
    eclass: Id,
    name: &str,
    args: &[Id],
) -> Option<Op> {
    let args: Vec<Id> = args.iter().map(|&a| egraph.find(a)).collect();
    egraph[eclass].nodes.iter().find_map(|n| match n {
        Kiln::Node(KOp::Ir(op), c)
            if op.name() == name && c.iter().map(|&i| egraph.find(i)).eq(args.iter().copied()) =>
        {
            Some(op.op.clone())
        }
        _ => None,
    })
}

/// Every IR op of a given name in an e-class, with its children.
pub fn ir_nodes<'a, N: egg::Analysis<Kiln>>(
    egraph: &'a egg::EGraph<Kiln, N>,
    eclass: Id,
    name: &'a str,
) -> impl Iterator<Item = (&'a Op, &'a [Id])> + 'a {
    egraph[eclass].nodes.iter().filter_map(move |n| match n {
        Kiln::Node(KOp::Ir(op), c) if op.name() == name => Some((&op.op, c.as_slice())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_print_and_parse_back() {
        for text in [
            "(Conv<pads=[1,1,1,1]> x w b)",
            "(BatchNormalization<epsilon=0.001> x g b m v)",
            "(ReduceMax<axes=[-1]> x)",
            "(Clip<max=5.0;min=-5.0> s)",
            "(bn-scale<1e-5> g v)",
            "(get<1> (Split<num_outputs=2> x))",
            "(affine x (fill<1.0> a) (center-last c))",
        ] {
            let expr: egg::RecExpr<Kiln> = text.parse().unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(expr.to_string(), text);
        }
        assert!("(Sofmax x)".parse::<egg::RecExpr<Kiln>>().is_err());
    }

    #[test]
    fn wildcards_match_any_attributes() {
        let pattern: egg::Pattern<Kiln> = "(BatchNormalization* ?x ?g ?b ?m ?v)".parse().unwrap();
        let mut egraph: egg::EGraph<Kiln, ()> = egg::EGraph::default();
        egraph.add_expr(&"(BatchNormalization<epsilon=0.001> x g b m v)".parse().unwrap());
        egraph.rebuild();
        assert_eq!(egg::Searcher::<Kiln, ()>::search(&pattern, &egraph).len(), 1);
    }
}
