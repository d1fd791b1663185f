//! Graph ⇄ e-graph. Into the e-graph: every op node becomes an e-node over its inputs' e-classes,
//! weights and graph inputs become leaves (multi-output ops get `get<i>` projections). Back: the
//! extracted node of every needed e-class becomes a node of a new graph built with
//! [`GraphBuilder`] (which re-validates and re-infers every type); nodes that survive keep their
//! names, nodes the rewrites created are named after the input nodes they replace or derive from
//! (e-class provenance, [`crate::analysis::Data::origin`]), graph outputs keep their names, constant
//! e-classes are evaluated into new weights with new names, and the original weights are never
//! modified.

use crate::analysis::{KGraph, KilnAnalysis, LeafInfo};
use crate::extract::{Extraction, IdMap};
use crate::fold::eval_fold;
use crate::lang::{KOp, Kiln};
use egg::{Id, Language, Symbol};
use kiln_ir::{Error, GraphBuilder, Model, NodeKind, Op, Tensor, Value, Weights};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The e-graph of a model and what is needed to map it back.
pub struct Lifted {
    pub egraph: KGraph,
    /// E-class of each graph output, in order.
    pub outputs: Vec<Id>,
    /// Every original op node as an e-node (children as first added), with its node name and
    /// output tensor names.
    pub originals: Vec<(Kiln, String, Vec<String>)>,
}

/// Whether every element of a weight equals one value.
fn uniform_value(t: &Tensor) -> Option<f32> {
    let v = t.as_f32()?;
    let first = *v.first()?;
    v.iter().all(|&x| x.to_bits() == first.to_bits()).then_some(first)
}

pub fn lift(model: &Model) -> Result<Lifted, Error> {
    let graph = &model.graph;
    let mut analysis = KilnAnalysis::default();
    for (ids, is_weight) in [(graph.inputs(), false), (graph.weights(), true)] {
        for &id in ids {
            let node = graph.node(id);
            let data = if is_weight { model.weights.get(&node.name) } else { None };
            let uniform = data.and_then(|t| uniform_value(t));
            let nonfinite = data.is_some_and(|t| !all_finite(t));
            let nonnegative =
                data.and_then(|t| t.as_f32()).is_some_and(|v| v.iter().all(|x| x.is_finite() && *x >= 0.0));
            let ty = node.outputs[0].ty.clone();
            let info = LeafInfo { ty, is_weight, uniform, nonfinite, nonnegative };
            analysis.leaves.insert(Symbol::from(&node.name), info);
        }
    }
    let mut egraph = KGraph::new(analysis);
    let mut values: HashMap<Value, Id> = HashMap::new();
    let mut originals = Vec::new();
    for id in graph.topo_order() {
        let node = graph.node(id);
        match &node.kind {
            NodeKind::Input | NodeKind::Weight => {
                let leaf = egraph.add(Kiln::Leaf(Symbol::from(&node.name)));
                values.insert(Value { node: id, port: 0 }, leaf);
            }
            NodeKind::Op(op) => {
                let args: Vec<Id> = graph
                    .node_inputs(id)
                    .iter()
                    .map(|v| {
                        values.get(v).copied().ok_or_else(|| {
                            Error::new(format!("node '{}'", node.name), "reads a value defined later (not a DAG)")
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let enode = Kiln::ir(op.clone(), args);
                let class = egraph.add(enode.clone());
                let names: Vec<String> = node.outputs.iter().map(|o| o.name.clone()).collect();
                if op.num_outputs() == 1 {
                    values.insert(Value { node: id, port: 0 }, class);
                } else {
                    for port in 0..node.outputs.len() {
                        let get = egraph.add(Kiln::Node(KOp::Get(port), vec![class]));
                        values.insert(Value { node: id, port }, get);
                    }
                }
                originals.push((enode, node.name.clone(), names));
            }
        }
    }
    egraph.rebuild();
    let outputs = graph
        .outputs()
        .iter()
        .map(|v| values.get(v).copied().ok_or_else(|| Error::new("graph outputs", "an output is never computed")))
        .collect::<Result<_, _>>()?;
    Ok(Lifted { egraph, outputs, originals })
}

impl Lifted {
    /// The input program as an extraction choice: each original node (and leaf) in its e-class.
    pub fn original_choice(&self) -> IdMap<Kiln> {
        let eg = &self.egraph;
        let mut choice = IdMap::default();
        for class in eg.classes() {
            for node in &class.nodes {
                if let Kiln::Leaf(_) = node {
                    choice.insert(class.id, node.clone());
                }
            }
        }
        for (enode, _, _) in &self.originals {
            let canon = enode.clone().map_children(|c| eg.find(c));
            if let Some(class) = eg.lookup(canon.clone()) {
                choice.entry(eg.find(class)).or_insert(canon);
            }
        }
        // Projections of multi-output nodes.
        for class in eg.classes() {
            if let Some(node) = class.nodes.iter().find(|n| matches!(n, Kiln::Node(KOp::Get(_), _))) {
                choice.entry(class.id).or_insert_with(|| node.clone());
            }
        }
        choice
    }
}

/// Why [`lower_checked`] failed.
#[derive(Debug)]
pub enum LowerError {
    Error(Error),
    /// A constant the optimizer created (`node`, chosen for e-class `class`) evaluated to a
    /// non-finite value although all its inputs are finite: a fold that overflowed (1/1e-39, a
    /// scale of 1e30 folded into a weight of 1e10); or to a NaN although none of its inputs is
    /// one (a zero scale folded into an infinite weight); or to a zero from nonzero factors (a
    /// product that underflowed). Extraction must avoid that node.
    NonFinite {
        class: Id,
        node: Kiln,
    },
}

impl From<Error> for LowerError {
    fn from(e: Error) -> LowerError {
        LowerError::Error(e)
    }
}

fn all_finite(t: &Tensor) -> bool {
    t.as_f32().is_none_or(|v| v.iter().all(|x| x.is_finite()))
}

fn no_nan(t: &Tensor) -> bool {
    t.as_f32().is_none_or(|v| v.iter().all(|x| !x.is_nan()))
}

/// Whether a product the optimizer folded lost a nonzero to underflow: an element of a created
/// W·s (a scale folded into a weight, `scale-rows`/`scale-cols`, or a Mul/Div of constants) that
/// is zero although none of its factors is (a divisor counts as a factor unless infinite). The
/// written program multiplies the run-time value by each factor in turn, so an infinite input
/// times the folded zero is NaN where the program gives ±∞ (weight −1e-30 scaled by 1e-39,
/// difftest seed 85032354). Which elements should be nonzero is found by running the same op on
/// 0/1 indicators of the factors, so the broadcasting is the op's own.
fn underflowed(op: &KOp, refs: &[&Tensor], outs: &[Tensor]) -> bool {
    use crate::lang::FoldOp;
    use kiln_ir::BinaryOp;
    let indicator = |t: &Tensor, keep: fn(f32) -> bool| {
        t.as_f32().and_then(|v| {
            Tensor::from_f32(t.shape().to_vec(), v.iter().map(|&x| f32::from(u8::from(keep(x)))).collect()).ok()
        })
    };
    let nonzero = |t: &Tensor| indicator(t, |x| x != 0.0);
    let finite = |t: &Tensor| indicator(t, f32::is_finite);
    let (Some(out), [a, b]) = (outs.first().and_then(|o| o.as_f32()), refs) else { return false };
    let expected = match op {
        KOp::Fold(f @ (FoldOp::ScaleRows | FoldOp::ScaleCols)) => match (nonzero(a), nonzero(b)) {
            (Some(ia), Some(ib)) => eval_fold(*f, &[&ia, &ib], &outs[0].ty()).ok(),
            _ => None,
        },
        KOp::Ir(ir) if matches!(ir.op, Op::Binary(BinaryOp::Mul | BinaryOp::Div)) => {
            let ib = if matches!(ir.op, Op::Binary(BinaryOp::Div)) { finite(b) } else { nonzero(b) };
            match (nonzero(a), ib) {
                (Some(ia), Some(ib)) => Op::Binary(BinaryOp::Mul).eval(&[&ia, &ib]).ok().and_then(|mut o| o.pop()),
                _ => None,
            }
        }
        _ => None,
    };
    let Some(expected) = expected else { return false };
    let Some(mask) = expected.as_f32() else { return false };
    mask.len() == out.len() && mask.iter().zip(out).any(|(&m, &y)| m != 0.0 && y == 0.0)
}

/// Builds the optimised model from an extraction; a non-finite fold is an error.
pub fn lower(model: &Model, lifted: &Lifted, extraction: &Extraction) -> Result<Model, Error> {
    lower_checked(model, lifted, extraction).map_err(|e| match e {
        LowerError::Error(e) => e,
        LowerError::NonFinite { class, node } => Error::new(
            "constant folding",
            format!("{node} (e-class {class}) overflowed to a non-finite value or underflowed to zero"),
        ),
    })
}

/// Builds the optimised model from an extraction, or says which created constant overflowed.
pub fn lower_checked(model: &Model, lifted: &Lifted, extraction: &Extraction) -> Result<Model, LowerError> {
    lower_named(model, lifted, extraction).map(|(model, _)| model)
}

/// [`lower_checked`], also returning the tensor name that holds each emitted e-class's value
/// (for [`crate::explain`]).
pub fn lower_named(
    model: &Model,
    lifted: &Lifted,
    extraction: &Extraction,
) -> Result<(Model, HashMap<Id, String>), LowerError> {
    let eg = &lifted.egraph;
    let graph = &model.graph;
    let canon = |n: &Kiln| n.clone().map_children(|c| eg.find(c));
    // Surviving original nodes by their canonical form.
    let mut survivors: HashMap<Kiln, (&str, &[String])> = HashMap::new();
    for (enode, name, outs) in &lifted.originals {
        survivors.entry(canon(enode)).or_insert((name.as_str(), outs.as_slice()));
    }
    let mut used: HashSet<String> = HashSet::new();
    for id in graph.dag().node_indices() {
        let node = graph.node(id);
        used.insert(node.name.clone());
        used.extend(node.outputs.iter().map(|o| o.name.clone()));
    }
    // The first original node of each e-class (its name and output names), for naming new nodes.
    let mut originals: HashMap<Id, Original> = HashMap::new();
    for (enode, name, outs) in &lifted.originals {
        if let (Some(class), Some(op)) = (eg.lookup(canon(enode)), enode.kop()) {
            originals.entry(eg.find(class)).or_insert(Original { name, outs, op: op.group() });
        }
    }
    let output_names: Vec<String> = graph.outputs().iter().map(|&v| graph.value_name(v).to_string()).collect();
    let mut lowering = Lowering {
        eg,
        model,
        choice: &extraction.choice,
        survivors,
        originals,
        claimed: HashSet::new(),
        used,
        names: HashMap::new(),
        preferred: HashMap::new(),
        builder: GraphBuilder::new(graph.name()),
        weights: Weights::new(),
        declared: HashSet::new(),
        constants: HashMap::new(),
        tuples: HashMap::new(),
        counter: 0,
        consumers: HashMap::new(),
    };
    for (&class, name) in lifted.outputs.iter().zip(&output_names) {
        lowering.preferred.entry(eg.find(class)).or_insert_with(|| name.clone());
    }
    // Inputs keep their declaration order.
    for &id in graph.inputs() {
        let node = graph.node(id);
        lowering.builder.input(format!("input '{}'", node.name), node.name.clone(), node.outputs[0].ty.clone());
    }
    for (&class, name) in lifted.outputs.iter().zip(&output_names) {
        let tensor = lowering.value(eg.find(class))?;
        if tensor == *name {
            lowering.builder.output(format!("output '{name}'"), name.clone());
        } else {
            // The output is a leaf, or shares its value with an earlier output: an Identity keeps
            // its name.
            let node_name = lowering.fresh(&format!("{name}.identity"));
            lowering.builder.node(
                format!("output '{name}'"),
                node_name,
                Ok(Op::Identity),
                vec![tensor],
                vec![name.clone()],
            );
            lowering.builder.output(format!("output '{name}'"), name.clone());
        }
    }
    let Lowering { builder, weights, names, .. } = lowering;
    let graph = builder.finish()?;
    weights.check_against(&graph)?;
    Ok((Model { graph, weights }, names))
}

/// An op node of the input graph, as far as naming goes.
#[derive(Clone, Copy)]
struct Original<'a> {
    name: &'a str,
    outs: &'a [String],
    op: &'static str,
}

/// Whether a node of op `new` may take the name of an original node of op `old`: the same op, or
/// one the optimizer turns into the other (MatMul + Add → Gemm, LayerNorm → RMSNorm).
fn same_family(new: &str, old: &str) -> bool {
    fn family(op: &str) -> &str {
        match op {
            "Gemm" => "MatMul",
            "RMSNormalization" => "LayerNormalization",
            other => other,
        }
    }
    family(new) == family(old)
}

struct Lowering<'a> {
    eg: &'a KGraph,
    model: &'a Model,
    choice: &'a IdMap<Kiln>,
    survivors: HashMap<Kiln, (&'a str, &'a [String])>,
    /// The first original node of each e-class.
    originals: HashMap<Id, Original<'a>>,
    /// Names of original nodes (and their outputs) given to new nodes.
    claimed: HashSet<String>,
    /// Every node and tensor name taken.
    used: HashSet<String>,
    /// Tensor name of each lowered e-class.
    names: HashMap<Id, String>,
    /// Graph-output e-classes and the name their tensor must have.
    preferred: HashMap<Id, String>,
    builder: GraphBuilder,
    weights: Weights,
    declared: HashSet<String>,
    /// Evaluated constant e-classes.
    constants: HashMap<Id, Arc<Tensor>>,
    /// Evaluated constant multi-output nodes (a Split of a constant), by e-class.
    tuples: HashMap<Id, Vec<Arc<Tensor>>>,
    counter: usize,
    /// The first node (e-class, argument position) found reading each constant e-class: a folded
    /// weight is named after the node it feeds (`fc0.bias.k2`), not after whichever original
    /// weight it happens to derive from first (`bn0.scale.k2` for a Gemm bias).
    consumers: HashMap<Id, (Id, usize)>,
}

impl<'a> Lowering<'a> {
    fn fresh(&mut self, base: &str) -> String {
        loop {
            self.counter += 1;
            let name = format!("{base}.k{}", self.counter);
            if self.used.insert(name.clone()) {
                return name;
            }
        }
    }

    /// `base`, or `base.1`, `base.2`, … whichever is free.
    fn unique(&mut self, base: &str) -> String {
        if self.used.insert(base.to_string()) {
            return base.to_string();
        }
        (1..).map(|i| format!("{base}.{i}")).find(|n| self.used.insert(n.clone())).unwrap_or_default()
    }

    /// The original node in an e-class, unless that e-class is emitted under another node (which
    /// keeps the name) or the name was given already.
    fn claimable(&self, class: Id, own: Id) -> Option<Original<'a>> {
        let o = *self.originals.get(&class)?;
        (class == own || !self.choice.contains_key(&class)).then_some(o).filter(|o| !self.claimed.contains(o.name))
    }

    /// An original node of the same op family as `op` that the node for `class` stands for: the
    /// e-class's own original, one that a node of the class adjusts (`center(x)`, `affine(x, …)`:
    /// a re-centred Gather, a MatMul with a folded scale), or an input of a node of the class (the
    /// MatMul of a MatMul + Add that became a Gemm).
    fn same_op_original(&self, class: Id, op: &str) -> Option<(Id, Original<'a>)> {
        let fits = |c: Id| self.originals.get(&c).filter(|o| same_family(op, o.op)).map(|&o| (c, o));
        if let Some(found) = fits(class) {
            return Some(found);
        }
        let mut related = Vec::new();
        for node in &self.eg[class].nodes {
            match node {
                Kiln::Node(KOp::Meta(_), args) => related.extend(args.first().map(|&a| self.eg.find(a))),
                Kiln::Node(KOp::Ir(_), args) => related.extend(args.iter().map(|&a| self.eg.find(a))),
                _ => {}
            }
        }
        related.into_iter().find_map(fits)
    }

    /// Node and output names for a node the optimizer created, in e-class `class`, so that a reader
    /// of the optimised graph can trace it back to the input graph. The node is named after, in
    /// order of preference:
    /// 1. an original node of the same op family it stands for (see [`Self::same_op_original`]);
    /// 2. the original node of its e-class (whose value it computes: a Softmax for Exp … Div);
    /// 3. the original node whose rewrite created it: that node's name when the op is of its family
    ///    (the RMSNorm left of a LayerNorm whose bias moved on), else `name.op`.
    ///
    /// A name that is taken gets a `.1`, `.2`, … suffix. In the e-class of an original node the
    /// outputs keep that node's output names (same values); otherwise they are `node.0`, ….
    fn new_node_names(&mut self, class: Id, op: &str, n_out: usize) -> (String, Vec<String>) {
        let class = self.eg.find(class);
        let own = self.originals.get(&class).copied();
        let named_after = self.same_op_original(class, op).or(own.map(|o| (class, o)));
        let node_name = match named_after {
            Some((c, o)) => match self.claimable(c, class) {
                Some(o) => {
                    self.claimed.insert(o.name.to_string());
                    o.name.to_string()
                }
                None => self.unique(o.name),
            },
            None => match self.provenance(class) {
                Some((c, o)) if same_family(op, o.op) && self.claimable(c, class).is_some() => {
                    self.claimed.insert(o.name.to_string());
                    o.name.to_string()
                }
                Some((_, o)) => self.unique(&format!("{}.{}", o.name, op.to_ascii_lowercase())),
                None => self.unique(&op.to_ascii_lowercase()),
            },
        };
        if let Some(o) = own
            && o.outs.len() == n_out
            && o.outs.iter().all(|t| *t == node_name || !self.claimed.contains(t.as_str()))
        {
            self.claimed.extend(o.outs.iter().cloned());
            return (node_name, o.outs.to_vec());
        }
        let outs = self.output_names(&node_name, n_out);
        (node_name, outs)
    }

    /// The original node whose rewrite created an e-class (followed back through the e-classes
    /// created on the way, a bounded number of steps).
    fn provenance(&self, class: Id) -> Option<(Id, Original<'a>)> {
        let mut c = self.eg[self.eg.find(class)].data.origin.map(|o| self.eg.find(o))?;
        for _ in 0..64 {
            if let Some(&o) = self.originals.get(&c) {
                return Some((c, o));
            }
            c = self.eg.find(self.eg[c].data.origin?);
        }
        None
    }

    /// Fresh output names for a new node: `node.0`, `node.1`, …
    fn output_names(&mut self, node: &str, n_out: usize) -> Vec<String> {
        (0..n_out).map(|i| self.unique(&format!("{node}.{i}"))).collect()
    }

    fn node_of(&self, class: Id) -> Result<&Kiln, Error> {
        self.choice
            .get(&class)
            .ok_or_else(|| Error::new("optimizer", format!("internal error: e-class {class} was not extracted")))
    }

    /// The tensor name holding the value of an e-class, emitting whatever it needs first. A walk
    /// with an explicit stack (children before parents, in argument order): a chain of 100k nodes
    /// must not overflow the call stack.
    fn value(&mut self, root: Id) -> Result<String, LowerError> {
        let root = self.eg.find(root);
        let mut stack = vec![(root, false)];
        while let Some((class, expanded)) = stack.pop() {
            if self.names.contains_key(&class) {
                continue;
            }
            let node = self.node_of(class)?.clone();
            let deps: Vec<Id> = match &node {
                Kiln::Leaf(_) => vec![],
                // Evaluated into a weight (by its own iterative walk), not emitted as ops.
                _ if self.eg[class].data.constant => vec![],
                Kiln::Node(_, args) => args.iter().map(|&a| self.eg.find(a)).collect(),
            };
            let pending: Vec<Id> = deps.into_iter().filter(|d| !self.names.contains_key(d)).collect();
            if !pending.is_empty() {
                if expanded {
                    let msg = format!("internal error: e-class {class} depends on itself");
                    return Err(Error::new("optimizer", msg).into());
                }
                if let Kiln::Node(_, args) = &node {
                    for (i, &a) in args.iter().enumerate() {
                        self.consumers.entry(self.eg.find(a)).or_insert((class, i));
                    }
                }
                stack.push((class, true));
                stack.extend(pending.into_iter().rev().map(|d| (d, false)));
                continue;
            }
            self.emit(class, &node)?;
        }
        let name = self.names.get(&root).cloned();
        name.ok_or_else(|| Error::new("optimizer", format!("internal error: e-class {root} was not emitted")).into())
    }

    /// Emits the node chosen for `class` (its inputs are emitted already) and records its tensor
    /// name.
    fn emit(&mut self, class: Id, node: &Kiln) -> Result<(), LowerError> {
        let eg = self.eg;
        let input = |names: &HashMap<Id, String>, a: Id| {
            names.get(&eg.find(a)).cloned().ok_or_else(|| {
                Error::new("optimizer", format!("internal error: input e-class {a} of {class} not emitted"))
            })
        };
        let name = match node {
            Kiln::Leaf(sym) => {
                let name = sym.as_str().to_string();
                self.declare_original_weight(&name)?;
                name
            }
            _ if self.eg[class].data.constant => self.constant_weight(class)?,
            Kiln::Node(KOp::Ir(ir), args) => {
                let arg_names = args.iter().map(|&a| input(&self.names, a)).collect::<Result<Vec<_>, _>>()?;
                let canon = node.clone().map_children(|c| self.eg.find(c));
                let survivor = self.survivors.get(&canon).map(|(n, o)| (n.to_string(), o.to_vec()));
                let op = ir.op.clone();
                let n_out = op.num_outputs();
                let (node_name, outs) = match survivor {
                    Some((n, outs)) => (n, outs),
                    None => self.new_node_names(class, op.name(), n_out),
                };
                let mut outs = outs;
                if n_out == 1
                    && let Some(p) = self.preferred.get(&class)
                {
                    outs = vec![p.clone()];
                }
                self.builder.node(format!("node '{node_name}'"), node_name.clone(), Ok(op), arg_names, outs.clone());
                // A multi-output node's class is a tuple: its outputs joined, for `get`.
                if n_out == 1 { outs[0].clone() } else { outs.join("\u{0}") }
            }
            Kiln::Node(KOp::Get(i), args) => {
                let tuple = input(&self.names, args[0])?;
                tuple
                    .split('\u{0}')
                    .nth(*i)
                    .map(str::to_string)
                    .ok_or_else(|| Error::new("optimizer", format!("internal error: get<{i}> of a {tuple:?}")))?
            }
            Kiln::Node(op, _) => {
                return Err(Error::new("optimizer", format!("internal error: extracted a non-IR term {op}")).into());
            }
        };
        self.names.insert(class, name);
        Ok(())
    }

    fn declare_original_weight(&mut self, name: &str) -> Result<(), Error> {
        if self.declared.contains(name) {
            return Ok(());
        }
        let graph = &self.model.graph;
        let is_input = graph.inputs().iter().any(|&id| graph.node(id).name == name);
        if is_input {
            return Ok(());
        }
        let tensor =
            self.model.weights.get(name).ok_or_else(|| Error::new(format!("weight '{name}'"), "has no data"))?;
        self.builder.weight(format!("weight '{name}'"), name.to_string(), tensor.ty());
        // Shared, not copied: a kept weight is the original's bytes (issue 15).
        self.weights.insert_shared(name.to_string(), std::sync::Arc::clone(tensor));
        self.declared.insert(name.to_string());
        Ok(())
    }

    /// Evaluates a constant e-class into a new weight (or reuses an original weight leaf).
    fn constant_weight(&mut self, class: Id) -> Result<String, LowerError> {
        if let Kiln::Leaf(sym) = self.node_of(class)? {
            let name = sym.as_str().to_string();
            self.declare_original_weight(&name)?;
            return Ok(name);
        }
        let tensor = self.eval_constant(class)?;
        let base = self.consumer_hint(class).or_else(|| self.hint(class)).unwrap_or_else(|| "const".into());
        let name = self.fresh(&base);
        self.builder.weight(format!("weight '{name}'"), name.clone(), tensor.ty());
        self.weights.insert_shared(name.clone(), tensor);
        self.declared.insert(name.clone());
        Ok(name)
    }

    /// A name hint for a folded weight from the node it feeds: that node's name (as
    /// [`Self::new_node_names`] would choose it first: a surviving node's own, else an original of
    /// the same op family, else its e-class's original) and the role of the argument
    /// (`fc0.bias`, `conv.weight`, `ln.scale`, else `node.inN`).
    fn consumer_hint(&self, class: Id) -> Option<String> {
        let &(parent, i) = self.consumers.get(&class)?;
        let node = self.choice.get(&parent)?;
        let Kiln::Node(KOp::Ir(ir), _) = node else { return None };
        let canon = node.clone().map_children(|c| self.eg.find(c));
        let owner = match self.survivors.get(&canon) {
            Some(&(name, _)) => name,
            None => {
                self.same_op_original(parent, ir.op.name())
                    .map(|(_, o)| o)
                    .or(self.originals.get(&parent).copied())?
                    .name
            }
        };
        let role = match (ir.op.name(), i) {
            ("Gemm" | "MatMul" | "Conv" | "ConvTranspose", 1) => "weight".to_string(),
            ("Gemm" | "Conv" | "ConvTranspose", 2) => "bias".to_string(),
            (
                "LayerNormalization"
                | "RMSNormalization"
                | "BatchNormalization"
                | "InstanceNormalization"
                | "GroupNormalization",
                1,
            ) => "scale".to_string(),
            ("LayerNormalization" | "BatchNormalization" | "InstanceNormalization" | "GroupNormalization", 2) => {
                "bias".to_string()
            }
            ("Add", 1) => "bias".to_string(),
            ("Mul", 1) => "scale".to_string(),
            ("Gather", 0) => "table".to_string(),
            ("EvoNormS0" | "EvoNormB0", 1) => "v".to_string(),
            ("EvoNormS0" | "EvoNormB0", 2) => "scale".to_string(),
            ("EvoNormS0" | "EvoNormB0", 3) => "bias".to_string(),
            (_, i) => format!("in{i}"),
        };
        Some(format!("{owner}.{role}"))
    }

    /// A name hint for a folded weight: the first original weight it derives from.
    fn hint(&self, class: Id) -> Option<String> {
        let mut stack = vec![class];
        let mut seen = HashSet::new();
        while let Some(c) = stack.pop() {
            if !seen.insert(c) {
                continue;
            }
            match self.choice.get(&c)? {
                Kiln::Leaf(s) => return Some(s.as_str().to_string()),
                n => stack.extend(n.children().iter().rev().map(|&x| self.eg.find(x))),
            }
        }
        None
    }

    /// Evaluates a constant e-class (and every constant it needs, children first, with an
    /// explicit stack). A value the optimizer created (not a node of the input graph) that is
    /// non-finite where all its inputs are finite, or NaN where none of them is, is refused ([`LowerError::NonFinite`]): the fold
    /// overflowed, and the caller extracts again without that node.
    fn eval_constant(&mut self, root: Id) -> Result<Arc<Tensor>, LowerError> {
        let root = self.eg.find(root);
        let mut stack = vec![(root, false)];
        while let Some((class, expanded)) = stack.pop() {
            if self.constants.contains_key(&class) || self.tuples.contains_key(&class) {
                continue;
            }
            let node = self.node_of(class)?.clone();
            let deps: Vec<Id> = match &node {
                Kiln::Leaf(_) => vec![],
                Kiln::Node(_, args) => args.iter().map(|&a| self.eg.find(a)).collect(),
            };
            let pending: Vec<Id> =
                deps.into_iter().filter(|d| !self.constants.contains_key(d) && !self.tuples.contains_key(d)).collect();
            if !pending.is_empty() {
                if expanded {
                    let msg = format!("internal error: e-class {class} depends on itself");
                    return Err(Error::new("constant folding", msg).into());
                }
                stack.push((class, true));
                stack.extend(pending.into_iter().rev().map(|d| (d, false)));
                continue;
            }
            self.eval_one(class, &node)?;
        }
        self.constants.get(&root).cloned().ok_or_else(|| {
            Error::new("constant folding", format!("internal error: e-class {root} is a tuple, not a tensor")).into()
        })
    }

    /// Evaluates one constant node whose inputs are evaluated.
    fn eval_one(&mut self, class: Id, node: &Kiln) -> Result<(), LowerError> {
        let fail = |msg: String| Error::new("constant folding", msg);
        let (op, args) = match node {
            Kiln::Leaf(sym) => {
                let t = self
                    .model
                    .weights
                    .get(sym.as_str())
                    .cloned()
                    .ok_or_else(|| Error::new(format!("weight '{sym}'"), "has no data"))?;
                self.constants.insert(class, t);
                return Ok(());
            }
            Kiln::Node(op, args) => (op, args),
        };
        let args: Vec<Id> = args.iter().map(|&a| self.eg.find(a)).collect();
        if let KOp::Get(i) = op {
            let tuple = self.tuples.get(&args[0]).ok_or_else(|| fail(format!("get<{i}> of a non-tuple")))?;
            let t = tuple.get(*i).cloned().ok_or_else(|| fail(format!("get<{i}> of {} outputs", tuple.len())))?;
            self.constants.insert(class, t);
            return Ok(());
        }
        let inputs: Vec<Arc<Tensor>> = args
            .iter()
            .map(|a| self.constants.get(a).cloned().ok_or_else(|| fail(format!("input e-class {a} is not a tensor"))))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&Tensor> = inputs.iter().map(|t| t.as_ref()).collect();
        let out_ty = self.eg[class].data.ty().cloned();
        let outs: Vec<Tensor> = match op {
            KOp::Ir(ir) => ir.op.eval(&refs).map_err(|e| fail(format!("{}: {e}", ir.op.name())))?,
            KOp::Fold(f) => {
                let ty = out_ty.clone().ok_or_else(|| fail(format!("{op}: untyped")))?;
                vec![eval_fold(*f, &refs, &ty).map_err(fail)?]
            }
            _ => return Err(fail(format!("cannot evaluate {op} at compile time")).into()),
        };
        let created = !self.survivors.contains_key(&node.clone().map_children(|c| self.eg.find(c)));
        // Overflow from finite values, or a NaN from none: 0·inf in a folded weight (a zero scale
        // moved into a weight holding −inf) is NaN where the input program computed 1·(−inf) + 0
        // (difftest seed 80098812).
        let overflowed = refs.iter().all(|t| all_finite(t)) && !outs.iter().all(all_finite);
        let made_nan = refs.iter().all(|t| no_nan(t)) && !outs.iter().all(no_nan);
        if created && (overflowed || made_nan || underflowed(op, &refs, &outs)) {
            return Err(LowerError::NonFinite { class, node: node.clone() });
        }
        if let KOp::Ir(ir) = op
            && ir.op.num_outputs() != 1
        {
            self.tuples.insert(class, outs.into_iter().map(Arc::new).collect());
            return Ok(());
        }
        let [result] = <[Tensor; 1]>::try_from(outs).map_err(|o| fail(format!("{op} has {} outputs", o.len())))?;
        if let Some(ty) = &out_ty
            && *ty != result.ty()
        {
            return Err(fail(format!("{op} evaluated to {} but was inferred as {ty}", result.ty())).into());
        }
        self.constants.insert(class, Arc::new(result));
        Ok(())
    }
}
