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

use crate::analysis::KGraph;
use crate::convert::Lifted;
use crate::extract::IdMap;
use crate::lang::{KOp, Kiln, MetaOp};
use egg::{ENodeOrVar, Id, Language, PatternAst, Subst, Symbol};
use kiln_ir::Model;
use std::collections::{BTreeSet, HashMap, HashSet};
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
    /// The e-nodes the match used, the left-hand side's root first (canonical when matched).
    pub matched: Vec<Kiln>,
}

/// The e-nodes of `class` and below that the pattern `lhs` matched with `subst`, root first
/// (the first way it matches; empty if it no longer does). Only run when explaining.
pub fn matched_nodes(eg: &KGraph, lhs: &PatternAst<Kiln>, class: Id, subst: &Subst) -> Vec<Kiln> {
    fn walk(eg: &KGraph, lhs: &PatternAst<Kiln>, at: Id, class: Id, subst: &Subst, out: &mut Vec<Kiln>) -> bool {
        match &lhs[at] {
            ENodeOrVar::Var(v) => subst.get(*v).is_some_and(|&c| eg.find(c) == eg.find(class)),
            ENodeOrVar::ENode(p) => {
                for n in &eg[class].nodes {
                    if !p.matches(n) {
                        continue;
                    }
                    let mark = out.len();
                    out.push(n.clone());
                    if p.children().iter().zip(n.children()).all(|(&pc, &nc)| walk(eg, lhs, pc, nc, subst, out)) {
                        return true;
                    }
                    out.truncate(mark);
                }
                false
            }
        }
    }
    let mut out = Vec::new();
    let root = Id::from(lhs.as_ref().len().saturating_sub(1));
    if !lhs.as_ref().is_empty() {
        walk(eg, lhs, root, class, subst, &mut out);
    }
    out
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
    /// Its value is the value of an earlier input node (`by`, with the rule that proved it, if
    /// any: the same op of the same inputs needs none), which is computed in its place.
    Merged,
}

impl Fate {
    pub fn name(self) -> &'static str {
        match self {
            Fate::Replaced => "replaced",
            Fate::Folded => "folded",
            Fate::Rewritten => "rewritten",
            Fate::Absorbed => "absorbed",
            Fate::Merged => "merged",
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
    /// The absorbed input nodes that it took in (the inverse of `into`): the MatMul and Softmax
    /// nodes an Attention replaced, the Conv a BatchNorm was folded into.
    pub absorbs: Vec<String>,
    /// The input nodes re-centred (their writes now compute their value minus its mean over the
    /// last axis) so that this one could change: the residual writes that prove a LayerNorm's
    /// input zero-mean, which made it an RMSNorm.
    pub recentred: Vec<String>,
    /// The other input nodes (LayerNorms) whose re-centred writes this one's input also sums.
    pub recentred_for: Vec<String>,
}

/// Why each changed node of the input graph changed, in the input graph's topological order.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub graph: String,
    /// Op nodes of the input graph.
    pub input_nodes: usize,
    pub changed: Vec<Change>,
    /// Why nothing could change, when the optimizer did not run (`-O0`).
    pub note: Option<String>,
}

impl Explanation {
    /// The explanation of a graph the optimizer did not run on: nothing changed, and `note` says why.
    pub fn unchanged(graph: &str, input_nodes: usize, note: &str) -> Explanation {
        Explanation { graph: graph.to_string(), input_nodes, changed: Vec::new(), note: Some(note.to_string()) }
    }
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
    /// The input node of each canonical e-node that is one (the first, for duplicates).
    original_node: HashMap<Kiln, usize>,
    /// The applications that joined a term into each final e-class, in order.
    joins: HashMap<Id, Vec<usize>>,
    /// The first joining application that matched each canonical e-node at its root.
    joined_at: HashMap<Kiln, usize>,
}

impl Builder<'_> {
    fn canon(&self, n: &Kiln) -> Kiln {
        n.clone().map_children(|c| self.lifted.egraph.find(c))
    }

    fn id_of(&self, n: &Kiln) -> Option<usize> {
        self.first.get(&self.canon(n)).copied()
    }

    /// The application (index into `apps`) that created e-node `id`.
    fn creator(&self, id: usize) -> Option<usize> {
        let i = self.apps.partition_point(|a| a.created.end <= id);
        self.apps.get(i).filter(|a| a.created.contains(&id)).map(|_| i)
    }

    /// An e-class: the input node that computes it, a uniform constant's value, a leaf's name, or
    /// its first e-node with its arguments to `depth` levels (deeper ones `…`).
    fn describe(&self, id: Id, depth: usize) -> String {
        let eg = &self.lifted.egraph;
        let class = eg.find(id);
        if let Some(&i) = self.class_original.get(&class) {
            return self.lifted.originals[i].1.clone();
        }
        if eg[class].data.constant {
            // A uniform constant by its value; another created constant is noise here.
            match (eg[class].data.uniform, &eg.nodes()[usize::from(id)]) {
                (Some(v), _) => return format!("{}", v.get()),
                (None, Kiln::Node(_, _)) => return "…".to_string(),
                _ => {}
            }
        }
        self.describe_node(&eg.nodes()[usize::from(id)], depth)
    }

    fn describe_node(&self, n: &Kiln, depth: usize) -> String {
        if let Some(&i) = self.original_node.get(&self.canon(n)) {
            return self.lifted.originals[i].1.clone();
        }
        match n {
            Kiln::Leaf(s) => s.as_str().to_string(),
            Kiln::Node(_, _) if depth == 0 => "…".to_string(),
            Kiln::Node(op, args) => {
                let args: Vec<String> = args.iter().map(|&a| self.describe(a, depth - 1)).collect();
                format!("{}({})", op.group(), args.join(", "))
            }
        }
    }

    fn step(&self, a: &Application) -> Step {
        let at = match a.matched.first() {
            Some(n) => self.describe_node(n, 2),
            None => self.describe(a.at, 2),
        };
        Step { rule: a.rule.as_str().to_string(), at }
    }

    /// The rules that produced `node`, the extracted node of e-class `class`, in the order they
    /// applied, and the e-classes its creation passed through (the matched classes, and x of the
    /// nearest `center(x)` matched: this node computes x re-centred).
    ///
    /// The creation path: the application that created `node`, the one that created the e-node
    /// that application matched at its root, … back to a match on an input node. Then, in the
    /// order they applied, every application that created another e-node those matches used (the
    /// Softmax an Attention matched was recognised first), transitively, at most [`MAX_STEPS`].
    fn chain(&self, node: &Kiln, class: Id) -> (Vec<Step>, Vec<Id>, Option<Id>) {
        let eg = &self.lifted.egraph;
        let mut visited = Vec::new();
        let Some(e) = self.id_of(node) else { return (Vec::new(), visited, None) };
        let mut app = self.creator(e);
        if e < self.lift_end {
            // A node that predates the rewrites (a graph input, another input node): the rule that
            // joined it to this e-class, preferring the application that joined exactly it.
            let joins = self.joins.get(&class).map(Vec::as_slice).unwrap_or_default();
            let exactly = joins.iter().find(|&&i| self.apps[i].joined.map(usize::from) == Some(e));
            app = exactly.or(joins.first()).copied();
        }
        let mut used: BTreeSet<usize> = BTreeSet::new();
        let mut centred: Option<Id> = None;
        while let Some(i) = app {
            if used.len() >= MAX_STEPS || !used.insert(i) {
                break;
            }
            let a = &self.apps[i];
            visited.push(eg.find(a.at));
            // The nearest `center(x)` on the way: this node computes x re-centred (the farther
            // ones are the sums x is a term of, re-centred by their own nodes).
            if let Some(Kiln::Node(KOp::Meta(MetaOp::Center), args)) = a.matched.first()
                && centred.is_none()
            {
                centred = args.first().map(|&c| eg.find(c));
                visited.extend(centred);
            }
            app = match a.matched.first().and_then(|m| self.id_of(m)) {
                Some(m) if m < self.lift_end => None,
                Some(m) => self.creator(m),
                None if self.class_original.contains_key(&eg.find(a.at)) || usize::from(a.at) < self.lift_end => None,
                None => self.creator(usize::from(a.at)),
            };
        }
        let mut stack: Vec<usize> = used.iter().copied().collect();
        while let Some(i) = stack.pop() {
            for m in &self.apps[i].matched {
                let Some(j) = self.id_of(m).filter(|&id| id >= self.lift_end).and_then(|id| self.creator(id)) else {
                    continue;
                };
                if used.len() < MAX_STEPS && used.insert(j) {
                    stack.push(j);
                }
            }
        }
        (used.into_iter().map(|i| self.step(&self.apps[i])).collect(), visited, centred)
    }

    /// The application that made input node `i` equal to the e-class it shares with another input
    /// node (`identity` at an Identity), when there is one.
    fn merged_by(&self, i: usize) -> Option<Step> {
        let own = self.canon(&self.lifted.originals[i].0);
        self.joined_at.get(&own).map(|&a| self.step(&self.apps[a]))
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
    let mut b = Builder {
        lifted,
        apps,
        lift_end,
        class_original: HashMap::new(),
        first: HashMap::new(),
        original_node: HashMap::new(),
        joins: HashMap::new(),
        joined_at: HashMap::new(),
    };
    for (i, a) in apps.iter().enumerate() {
        if let Some(j) = a.joined {
            b.joins.entry(eg.find(j)).or_default().push(i);
            if let Some(m) = a.matched.first() {
                let m = b.canon(m);
                b.joined_at.entry(m).or_insert(i);
            }
        }
    }
    for (i, n) in eg.nodes().iter().enumerate() {
        let c = b.canon(n);
        b.first.entry(c).or_insert(i);
    }
    for (i, (n, _, _)) in lifted.originals.iter().enumerate() {
        let c = b.canon(n);
        b.original_node.entry(c).or_insert(i);
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
    // The input-graph e-class each derivation computes re-centred, if it does.
    let mut centred_of: Vec<Option<Id>> = Vec::new();
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
        let (rules, visited, centred) = b.chain(chosen, class);
        let index = derivations.len();
        derivations.push(Derivation { node, op, rules });
        centred_of.push(centred);
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
        let change = |fate, by, into| {
            let c = Change {
                node: name.clone(),
                op: op.clone(),
                fate,
                by,
                into,
                absorbs: vec![],
                recentred: vec![],
                recentred_for: vec![],
            };
            Some(c)
        };
        let Some(class) = original_class[i] else {
            changes.push(None);
            continue;
        };
        if let Some(&j) = b.class_original.get(&class).filter(|&&j| j != i) {
            // The same value as an earlier input node: a duplicate, or proved equal (an Identity).
            if names.contains_key(&class) {
                computed.insert(i);
            }
            let (other, other_name, _) = &lifted.originals[j];
            let rules = b.merged_by(i).into_iter().collect();
            let other_op = other.ir_op().map_or("?", |op| op.name()).to_string();
            changes.push(change(
                Fate::Merged,
                vec![Derivation { node: other_name.clone(), op: other_op, rules }],
                vec![],
            ));
            continue;
        }
        let change = match (names.contains_key(&class), choice.get(&class)) {
            (true, Some(chosen)) => {
                computed.insert(i);
                let c = b.canon(chosen);
                let folded = eg[class].data.constant && !matches!(chosen, Kiln::Leaf(_));
                if c == b.canon(enode) && !folded {
                    None
                } else if let Some(&n) = surviving_name.get(&c).filter(|_| !eg[class].data.constant) {
                    // Computed by another input node (the same op of the same inputs, or one the
                    // rules proved equal).
                    let op = chosen.ir_op().map_or("?", |op| op.name()).to_string();
                    let (rules, _, _) = b.chain(chosen, class);
                    change(Fate::Replaced, vec![Derivation { node: n.to_string(), op, rules }], vec![])
                } else if let Kiln::Leaf(s) = chosen {
                    let (rules, _, _) = b.chain(chosen, class);
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
        // A replaced node's other new nodes: those whose creation passed through its e-class (the
        // MaskedSoftmax made of the division that moved inside a MatMul).
        let change = change.map(|mut c| {
            if c.fate != Fate::Rewritten {
                for &d in through.get(&class).map(Vec::as_slice).unwrap_or_default() {
                    if !c.by.iter().any(|x| x.node == derivations[d].node) {
                        c.by.push(derivations[d].clone());
                    }
                }
            }
            // The input nodes re-centred on the way (the residual writes a LayerNorm's input is the
            // sum of, which made it provably zero-mean).
            let mut recentred: Vec<usize> = through
                .get(&class)
                .into_iter()
                .flatten()
                .filter_map(|&d| centred_of[d].filter(|&x| x != class))
                .filter_map(|x| b.class_original.get(&x).copied())
                .collect();
            recentred.sort_unstable();
            recentred.dedup();
            c.recentred = recentred.into_iter().map(|j| lifted.originals[j].1.clone()).collect();
            c
        });
        changes.push(change);
    }

    // Absorbed nodes: the nearest input nodes downstream that are computed.
    let index_of: HashMap<&str, usize> =
        lifted.originals.iter().enumerate().map(|(i, (_, name, _))| (name.as_str(), i)).collect();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); lifted.originals.len()];
    let mut producers: Vec<Vec<usize>> = vec![Vec::new(); lifted.originals.len()];
    let ig = &input.graph;
    for id in ig.topo_order() {
        let node = ig.node(id);
        let Some(&i) = index_of.get(node.name.as_str()) else { continue };
        for v in ig.node_inputs(id) {
            if let Some(&p) = index_of.get(ig.node(v.node).name.as_str())
                && !consumers[p].contains(&i)
            {
                consumers[p].push(i);
                producers[i].push(p);
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
        for target in &into {
            if let Some(t) = changes.iter_mut().flatten().find(|c| c.node == *target) {
                t.absorbs.push(lifted.originals[i].1.clone());
            }
        }
        if let Some(c) = changes[i].as_mut() {
            c.into = into;
        }
    }

    // A LayerNorm's input stream is also the sum of writes re-centred earlier, for another
    // LayerNorm: name that one (l1.ln1's input l0.res2 = l0.res1 + l0.ff2, l0.res1 re-centred
    // for l0.ln2).
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        for n in c.iter().flat_map(|c| &c.recentred) {
            owner.entry(n.clone()).or_insert(i);
        }
    }
    for i in 0..changes.len() {
        if changes[i].as_ref().is_none_or(|c| c.recentred.is_empty()) {
            continue;
        }
        let mut also: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        let mut stack: Vec<usize> = producers[i].clone();
        while let Some(j) = stack.pop() {
            if !seen.insert(j) {
                continue;
            }
            match owner.get(&lifted.originals[j].1) {
                Some(&o) if o == i => stack.extend(producers[j].iter().rev()),
                Some(&o) => {
                    let name = &lifted.originals[o].1;
                    if !also.contains(name) {
                        also.push(name.clone());
                    }
                }
                None => {}
            }
        }
        if let Some(c) = changes[i].as_mut() {
            c.recentred_for = also;
        }
    }
    Explanation {
        graph: input.graph.name().to_string(),
        input_nodes: lifted.originals.len(),
        changed: changes.into_iter().flatten().collect(),
        note: None,
    }
}

impl fmt::Display for Derivation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}'", self.op, self.node)?;
        if self.op == "weight" && self.rules.is_empty() {
            write!(f, " (evaluated at compile time)")?;
        }
        if !self.rules.is_empty() {
            let steps: Vec<String> = self.rules.iter().map(|s| format!("{} @ {}", s.rule, s.at)).collect();
            write!(f, " by {}", steps.join(" -> "))?;
        }
        Ok(())
    }
}

/// The `kiln compile --explain` text: a header line, then per changed input node a line
/// `NODE (OP): FATE [into NODES] [with NODE by RULES] [, absorbing NODES] [, re-centring NODES
/// [and what was re-centred for NODES]]`
/// and one indented line
/// `-> OP 'NODE' by RULE @ WHERE -> …` per node of the optimised graph it became.
impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "explain {}: {} of {} input nodes changed", self.graph, self.changed.len(), self.input_nodes)?;
        match &self.note {
            Some(note) => writeln!(f, " ({note})")?,
            None => writeln!(f)?,
        }
        for c in &self.changed {
            write!(f, "{} ({}): {}", c.node, c.op, c.fate.name())?;
            if !c.into.is_empty() {
                write!(f, " into {}", c.into.join(", "))?;
            }
            if c.fate == Fate::Merged {
                for d in &c.by {
                    write!(f, " with {}", d.node)?;
                    let steps: Vec<String> = d.rules.iter().map(|s| format!("{} @ {}", s.rule, s.at)).collect();
                    match steps.is_empty() {
                        true => write!(f, " (the same op of the same inputs)")?,
                        false => write!(f, " by {}", steps.join(" -> "))?,
                    }
                }
            }
            if !c.absorbs.is_empty() {
                write!(f, ", absorbing {}", c.absorbs.join(", "))?;
            }
            if !c.recentred.is_empty() {
                write!(f, ", re-centring {}", c.recentred.join(", "))?;
            }
            if !c.recentred_for.is_empty() {
                write!(f, " and what was re-centred for {}", c.recentred_for.join(", "))?;
            }
            writeln!(f)?;
            if c.fate != Fate::Merged {
                for d in &c.by {
                    writeln!(f, "  -> {d}")?;
                }
            }
        }
        Ok(())
    }
}
