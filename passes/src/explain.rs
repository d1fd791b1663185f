//! Explanations (`kiln compile --explain`): for every node of the input graph that the optimizer
//! changed, why — the named rules from the input term to the extracted one, with the input nodes
//! they were applied at.
//!
//! Mechanism: kiln's own provenance, not egg's explanations. [`crate::rules::KApplier`] logs each
//! application that created e-nodes or joined two e-classes ([`Application`]: the rule, the
//! matched e-class, the range of e-node ids it created). egg numbers e-nodes densely in creation
//! order and keeps each one as it was added ([`egg::EGraph::nodes`]), so the application that
//! created any e-node is a binary search away. From an extracted node the walk goes: the
//! application that created it, the matched e-class, the application that created that, … until a
//! matched e-class holds a node of the input graph. The log costs a few words per application and
//! changes nothing the rules see, so the optimised graph is the same with or without it (tested).
//! egg's explanations would give full proofs, but they keep a second copy of every e-node,
//! `add` of an existing e-node creates a new id, and `EGraph::total_size` (the node budget) then
//! counts differently: they would change where the deterministic budgets stop, so what is
//! optimised.
//!
//! Everything here is derived from creation order, never from hash-map iteration or e-class ids,
//! so the same model and options give the same text (snapshot-tested on every zoo model).

use crate::convert::Lifted;
use crate::extract::IdMap;
use crate::lang::{KOp, Kiln};
use egg::{Id, Language, Symbol};
use kiln_ir::Model;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;

/// One rule application that created e-nodes or joined e-classes (logged by
/// [`crate::rules::KApplier`] when [`crate::analysis::KilnAnalysis::applications`] is on).
#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    pub rule: Symbol,
    /// The e-class the rule matched (canonical when it was matched).
    pub at: Id,
    /// The e-class of the built term, when it was joined to `at` (a new equality).
    pub joined: Option<Id>,
    /// The ids of the e-nodes the application created (empty when it built nothing new).
    pub created: Range<usize>,
}

/// What became of a node of the input graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Its value is computed by a different node (`by`).
    Replaced,
    /// Its value is a constant, evaluated at compile time into a weight (`by`).
    Folded,
    /// Its value is no longer computed as such; the nodes in `by` were derived from it (a
    /// LayerNorm whose γ/β moved into its consumers and whose statistics became an RMSNorm, a
    /// residual write re-centred so that a LayerNorm downstream could become an RMSNorm).
    Rewritten,
    /// Its value is no longer computed: it was folded into the input nodes listed in `into`
    /// (a Conv whose following BatchNorm is now a Conv with new weights).
    Absorbed,
}

impl Fate {
    pub fn name(self) -> &'static str {
        match self {
            Fate::Replaced => "replaced",
            Fate::Folded => "folded",
            Fate::Rewritten => "rewritten",
            Fate::Absorbed => "absorbed",
        }
    }
}

/// One rule application on the way from an input node to an output node.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub rule: String,
    /// Where it applied: the input node whose value the matched term has, or the term itself
    /// (`center(residual1)`, `LayerNormalization(center(x), fill(ln.weight))`), subterms that are
    /// input nodes by name, deeper ones as `…`.
    pub at: String,
}

/// A node (or folded weight) of the optimised graph and the rules that produced it, in the order
/// they applied (empty for a node of the input graph kept as it was).
#[derive(Debug, Clone, PartialEq)]
pub struct Derivation {
    /// The node's name in the optimised graph (a weight's name for a folded constant).
    pub node: String,
    /// Its op (`weight` for a folded constant, `input` for a graph input).
    pub op: String,
    pub rules: Vec<Step>,
}

/// One changed node of the input graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub node: String,
    pub op: String,
    pub fate: Fate,
    /// The nodes of the optimised graph that compute it or were derived from it.
    pub by: Vec<Derivation>,
    /// For [`Fate::Absorbed`]: the nearest input nodes downstream that are still computed (or
    /// were rewritten) and took it in.
    pub into: Vec<String>,
}

/// Why each changed node of the input graph changed, in the input graph's topological order.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub graph: String,
    /// Op nodes of the input graph.
    pub input_nodes: usize,
    pub changed: Vec<Change>,
}

/// Most steps followed back from one extracted node (each an application whose match was itself
/// created by an application); far above the longest chain of the zoo (6).
const MAX_STEPS: usize = 64;

struct Builder<'a> {
    lifted: &'a Lifted,
    apps: &'a [Application],
    lift_end: usize,
    /// The first original node of each final e-class (index into `lifted.originals`).
    class_original: HashMap<Id, usize>,
    /// The first id of each canonical e-node.
    first: HashMap<Kiln, usize>,
}

impl Builder<'_> {
    fn canon(&self, n: &Kiln) -> Kiln {
        n.clone().map_children(|c| self.lifted.egraph.find(c))
    }

    /// The application that created e-node `id`.
    fn creator(&self, id: usize) -> Option<&Application> {
        let i = self.apps.partition_point(|a| a.created.end <= id);
        self.apps.get(i).filter(|a| a.created.contains(&id))
    }

    fn describe(&self, id: Id, depth: usize) -> String {
        let eg = &self.lifted.egraph;
        if let Some(&i) = self.class_original.get(&eg.find(id)) {
            return self.lifted.originals[i].1.clone();
        }
        match &eg.nodes()[usize::from(id)] {
            Kiln::Leaf(s) => s.as_str().to_string(),
            Kiln::Node(_, _) if depth == 0 => "…".to_string(),
            Kiln::Node(op, args) => {
                let args: Vec<String> = args.iter().map(|&a| self.describe(a, depth - 1)).collect();
                format!("{}({})", op.group(), args.join(", "))
            }
        }
    }

    /// The rules from an input node to `node`, the extracted node of e-class `class`, and the
    /// final e-classes the walk passed through.
    fn chain(&self, node: &Kiln, class: Id) -> (Vec<Step>, Vec<Id>) {
        let eg = &self.lifted.egraph;
        let mut steps = Vec::new();
        let mut visited = Vec::new();
        let Some(&e) = self.first.get(&self.canon(node)) else { return (steps, visited) };
        let mut app = self.creator(e);
        if e < self.lift_end {
            // A node that predates the rewrites (a graph input, another input node): the rule that
            // joined it to this e-class, preferring the application that joined exactly it.
            let joins = || self.apps.iter().filter(|a| a.joined.is_some_and(|j| eg.find(j) == class));
            app = joins().find(|a| a.joined.map(usize::from) == Some(e)).or_else(|| joins().next());
        }
        for _ in 0..MAX_STEPS {
            let Some(a) = app else { break };
            steps.push(Step { rule: a.rule.as_str().to_string(), at: self.describe(a.at, 2) });
            let at = eg.find(a.at);
            visited.push(at);
            if self.class_original.contains_key(&at) || usize::from(a.at) < self.lift_end {
                break;
            }
            app = self.creator(usize::from(a.at));
        }
        steps.reverse();
        (steps, visited)
    }
}

/// Builds the explanation of an optimisation: `input` was lifted into `lifted` (whose first
/// `lift_end` e-nodes are the lifted graph), `choice` extracted, and lowered into `output` with
/// `names` the tensor holding each emitted e-class.
pub fn explain(
    input: &Model,
    lifted: &Lifted,
    lift_end: usize,
    choice: &IdMap<Kiln>,
    names: &HashMap<Id, String>,
    output: &Model,
) -> Explanation {
    let eg = &lifted.egraph;
    let apps = eg.analysis.applications.as_deref().unwrap_or(&[]);
    let mut b = Builder { lifted, apps, lift_end, class_original: HashMap::new(), first: HashMap::new() };
    for (i, n) in eg.nodes().iter().enumerate() {
        let c = b.canon(n);
        b.first.entry(c).or_insert(i);
    }
    let original_class: Vec<Option<Id>> =
        lifted.originals.iter().map(|(n, _, _)| eg.lookup(b.canon(n)).map(|c| eg.find(c))).collect();
    for (i, c) in original_class.iter().enumerate() {
        if let Some(c) = c {
            b.class_original.entry(*c).or_insert(i);
        }
    }
    let survivors: HashSet<Kiln> = lifted.originals.iter().map(|(n, _, _)| b.canon(n)).collect();

    // The optimised graph: each tensor's producer, and each emitted e-class by tensor.
    let graph = &output.graph;
    let mut producer: HashMap<&str, (&str, &str)> = HashMap::new();
    for id in graph.op_nodes() {
        let node = graph.node(id);
        let op = node.op().map_or("?", |op| op.name());
        for o in &node.outputs {
            producer.insert(o.name.as_str(), (node.name.as_str(), op));
        }
    }
    let first_tensor = |class: Id| names.get(&class).map(|t| t.split('\u{0}').next().unwrap_or_default());

    // Derivations of every emitted e-class, in the optimised graph's order (nodes, then weights).
    let mut class_of_tensor: HashMap<&str, Id> = HashMap::new();
    for (&class, tensor) in names {
        for t in tensor.split('\u{0}') {
            class_of_tensor.insert(t, class);
        }
    }
    let mut derivations: Vec<Derivation> = Vec::new();
    let mut derivation_of: HashMap<Id, usize> = HashMap::new();
    let mut through: HashMap<Id, Vec<usize>> = HashMap::new();
    let mut tensors: Vec<&str> = Vec::new();
    for id in graph.topo_order() {
        let node = graph.node(id);
        if matches!(node.kind, kiln_ir::NodeKind::Weight | kiln_ir::NodeKind::Op(_)) {
            tensors.extend(node.outputs.iter().map(|o| o.name.as_str()));
        }
    }
    for tensor in tensors {
        let Some(&class) = class_of_tensor.get(tensor) else { continue };
        if derivation_of.contains_key(&class) {
            continue;
        }
        let Some(chosen) = choice.get(&class) else { continue };
        let (node, op) = match chosen {
            Kiln::Leaf(_) => continue,
            _ if eg[class].data.constant => (tensor.to_string(), "weight".to_string()),
            Kiln::Node(KOp::Ir(_), _) if survivors.contains(&b.canon(chosen)) => continue,
            Kiln::Node(KOp::Ir(_), _) => match producer.get(tensor) {
                Some(&(n, op)) => (n.to_string(), op.to_string()),
                None => continue,
            },
            _ => continue,
        };
        let (rules, visited) = b.chain(chosen, class);
        let index = derivations.len();
        derivations.push(Derivation { node, op, rules });
        derivation_of.insert(class, index);
        let mut seen = HashSet::new();
        for v in visited.into_iter().filter(|&v| v != class) {
            if seen.insert(v) {
                through.entry(v).or_default().push(index);
            }
        }
    }

    // Each input node's fate.
    let mut changes: Vec<Option<Change>> = Vec::new();
    let mut computed: HashSet<usize> = HashSet::new();
    let surviving_name: HashMap<Kiln, &str> =
        lifted.originals.iter().rev().map(|(n, name, _)| (b.canon(n), name.as_str())).collect();
    for (i, (enode, name, _)) in lifted.originals.iter().enumerate() {
        let op = enode.ir_op().map_or("?", |op| op.name()).to_string();
        let change = |fate, by, into| Some(Change { node: name.clone(), op: op.clone(), fate, by, into });
        let Some(class) = original_class[i] else {
            changes.push(None);
            continue;
        };
        let change = match (names.contains_key(&class), choice.get(&class)) {
            (true, Some(chosen)) => {
                computed.insert(i);
                let c = b.canon(chosen);
                if c == b.canon(enode) {
                    None
                } else if let Some(&n) = surviving_name.get(&c).filter(|_| !eg[class].data.constant) {
                    // Computed by another input node (the same op of the same inputs, or one the
                    // rules proved equal).
                    let op = chosen.ir_op().map_or("?", |op| op.name()).to_string();
                    let (rules, _) = b.chain(chosen, class);
                    change(Fate::Replaced, vec![Derivation { node: n.to_string(), op, rules }], vec![])
                } else if let Kiln::Leaf(s) = chosen {
                    let (rules, _) = b.chain(chosen, class);
                    let op = if eg[class].data.constant { "weight" } else { "input" };
                    change(Fate::Replaced, vec![Derivation { node: s.to_string(), op: op.into(), rules }], vec![])
                } else {
                    let by: Vec<Derivation> = derivation_of
                        .get(&class)
                        .map(|&d| derivations[d].clone())
                        .or_else(|| {
                            let t = first_tensor(class)?;
                            Some(Derivation { node: t.to_string(), op: "weight".into(), rules: vec![] })
                        })
                        .into_iter()
                        .collect();
                    let fate = if eg[class].data.constant { Fate::Folded } else { Fate::Replaced };
                    change(fate, by, vec![])
                }
            }
            _ => match through.get(&class) {
                Some(ds) => {
                    computed.insert(i);
                    change(Fate::Rewritten, ds.iter().map(|&d| derivations[d].clone()).collect(), vec![])
                }
                None => change(Fate::Absorbed, vec![], vec![]),
            },
        };
        changes.push(change);
    }

    // Absorbed nodes: the nearest input nodes downstream that are computed.
    let index_of: HashMap<&str, usize> =
        lifted.originals.iter().enumerate().map(|(i, (_, name, _))| (name.as_str(), i)).collect();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); lifted.originals.len()];
    let ig = &input.graph;
    for id in ig.topo_order() {
        let node = ig.node(id);
        let Some(&i) = index_of.get(node.name.as_str()) else { continue };
        for v in ig.node_inputs(id) {
            if let Some(&p) = index_of.get(ig.node(v.node).name.as_str())
                && !consumers[p].contains(&i)
            {
                consumers[p].push(i);
            }
        }
    }
    for i in 0..changes.len() {
        if !changes[i].as_ref().is_some_and(|c| c.fate == Fate::Absorbed) {
            continue;
        }
        let mut into = Vec::new();
        let mut seen = HashSet::new();
        let mut stack: Vec<usize> = consumers[i].iter().rev().copied().collect();
        while let Some(j) = stack.pop() {
            if !seen.insert(j) {
                continue;
            }
            if computed.contains(&j) {
                into.push(lifted.originals[j].1.clone());
            } else {
                stack.extend(consumers[j].iter().rev());
            }
        }
        if let Some(c) = changes[i].as_mut() {
            c.into = into;
        }
    }
    Explanation {
        graph: input.graph.name().to_string(),
        input_nodes: lifted.originals.len(),
        changed: changes.into_iter().flatten().collect(),
    }
}

impl fmt::Display for Derivation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}'", self.op, self.node)?;
        if !self.rules.is_empty() {
            let steps: Vec<String> = self.rules.iter().map(|s| format!("{} @ {}", s.rule, s.at)).collect();
            write!(f, " by {}", steps.join(" -> "))?;
        }
        Ok(())
    }
}

/// The `kiln compile --explain` text: a header line, then per changed input node a line
/// `NODE (OP): FATE` and one indented line per node of the optimised graph it became.
impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "explain {}: {} of {} input nodes changed", self.graph, self.changed.len(), self.input_nodes)?;
        for c in &self.changed {
            write!(f, "{} ({}): {}", c.node, c.op, c.fate.name())?;
            if !c.into.is_empty() {
                write!(f, " into {}", c.into.join(", "))?;
            }
            writeln!(f)?;
            for d in &c.by {
                writeln!(f, "  -> {d}")?;
            }
        }
        Ok(())
    }
}
