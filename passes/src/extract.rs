//! DAG-aware extraction. egg's `Extractor` minimises a *tree* cost, which counts a shared subterm
//! once per use: it would fold a BatchNorm into a Conv whose output is also needed elsewhere and
//! then pay for both convolutions. Here the objective is the cost of the extracted DAG, every
//! reachable e-class counted once:
//!
//! 1. start from the tree-cost optimum (Knuth's generalisation of Dijkstra: each class settled once);
//! 2. improve it by local search: for each reachable e-class with alternatives, try each node and
//!    keep it when the DAG cost of the whole extraction drops; repeat until no move helps (bounded).
//!    A move's cost change is computed incrementally (reference counts, a height-bounded cycle
//!    check), so both steps stay near-linear in the e-graph's size.
//!
//! `LpExtractor` would be exact but needs the CBC library; this is deterministic and dependency-free.

use crate::analysis::KGraph;
use crate::cost::CostModel;
use crate::lang::Kiln;
use egg::{Id, Language};
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for e-class ids (and small tuples of them): multiply-rotate, as in rustc's FxHasher.
/// The ids are small dense integers that no user controls, so SipHash's protection against
/// crafted keys buys nothing here, and it was a tenth of the optimizer's time on deep models.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl IdHasher {
    fn mix(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.mix(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }
    fn write_usize(&mut self, v: usize) {
        self.mix(v as u64);
    }
}

/// A map keyed by e-class id.
pub type IdMap<V> = HashMap<Id, V, BuildHasherDefault<IdHasher>>;
/// A set of e-class ids.
pub type IdSet = HashSet<Id, BuildHasherDefault<IdHasher>>;
type PairMap<V> = HashMap<(Id, usize), V, BuildHasherDefault<IdHasher>>;
/// Each e-class's nodes of finite cost, with their costs.
type NodeCosts = IdMap<Vec<(Kiln, f64)>>;

/// A tree cost ordered totally (costs are never NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Total(f64);

impl Eq for Total {}

impl PartialOrd for Total {
    fn partial_cmp(&self, other: &Total) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Total {
    fn cmp(&self, other: &Total) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The chosen node of every e-class the outputs need, and the DAG cost of the choice.
#[derive(Debug, Clone)]
pub struct Extraction {
    pub choice: IdMap<Kiln>,
    pub cost: f64,
    /// The DAG cost of the input program (set by [`extract_no_worse`]; otherwise `cost`).
    pub baseline_cost: f64,
}

/// The spacing of height labels (see `Search::heights`).
const GAP: u64 = 1 << 16;

/// How many local-search passes to run at most.
const MAX_PASSES: usize = 4;

/// Extracts the cheapest program found; `baseline` (the input program, as a node per e-class) is
/// kept instead when it is at least as cheap, so the result is never worse than the input under the
/// cost model.
pub fn extract_no_worse(
    eg: &KGraph,
    roots: &[Id],
    model: &CostModel,
    baseline: &IdMap<Kiln>,
) -> Result<Extraction, String> {
    extract_no_worse_without(eg, roots, model, baseline, &IdMap::default())
}

/// [`extract_no_worse`] never choosing the `banned` nodes of each e-class (constants that were
/// found to overflow when folded); the baseline is kept as it is.
pub fn extract_no_worse_without(
    eg: &KGraph,
    roots: &[Id],
    model: &CostModel,
    baseline: &IdMap<Kiln>,
    banned: &IdMap<Vec<Kiln>>,
) -> Result<Extraction, String> {
    let mut node_costs = node_costs(eg, model);
    for (class, nodes) in banned {
        if let Some(costs) = node_costs.get_mut(&eg.find(*class)) {
            costs.retain(|(n, _)| !nodes.contains(n));
        }
    }
    let found = extract_with(eg, roots, &node_costs);
    let roots: Vec<Id> = roots.iter().map(|&r| eg.find(r)).collect();
    let base_cost = dag_cost(eg, &roots, baseline, &node_costs);
    match found {
        Ok(found) if found.cost < base_cost => Ok(Extraction { baseline_cost: base_cost, ..found }),
        _ if base_cost.is_finite() => {
            let keep = reachable(eg, &roots, baseline);
            let choice = baseline.iter().filter(|(id, _)| keep.contains(id)).map(|(k, v)| (*k, v.clone())).collect();
            Ok(Extraction { choice, cost: base_cost, baseline_cost: base_cost })
        }
        other => other,
    }
}

fn node_costs(eg: &KGraph, model: &CostModel) -> NodeCosts {
    let mut node_costs: NodeCosts = Default::default();
    for class in eg.classes() {
        let nodes = class
            .nodes
            .iter()
            .map(|n| (n.clone(), model.node_cost(eg, class.id, n)))
            .filter(|(_, c)| c.is_finite())
            .collect();
        node_costs.insert(class.id, nodes);
    }
    node_costs
}

pub fn extract(eg: &KGraph, roots: &[Id], model: &CostModel) -> Result<Extraction, String> {
    extract_with(eg, roots, &node_costs(eg, model))
}

fn extract_with(eg: &KGraph, roots: &[Id], node_costs: &NodeCosts) -> Result<Extraction, String> {
    // 1. Tree-cost optimum by Knuth's generalisation of Dijkstra (a node's cost is its own,
    //    non-negative, plus its children's): every class is settled once, cheapest first, by the
    //    first of its cheapest nodes. Rounds of re-evaluation (as egg's extractor does) cost
    //    classes × depth on a residual stack, whose tree costs keep improving level by level.
    let parents = parents(eg);
    let mut users: IdMap<Vec<(Id, usize)>> = Default::default();
    let mut waiting: PairMap<usize> = Default::default();
    let mut heap: BinaryHeap<Reverse<(Total, Id, usize)>> = BinaryHeap::new();
    for class in eg.classes() {
        for (i, (node, cost)) in node_costs[&class.id].iter().enumerate() {
            for &c in node.children() {
                users.entry(eg.find(c)).or_default().push((class.id, i));
            }
            if node.children().is_empty() {
                heap.push(Reverse((Total(*cost), class.id, i)));
            } else {
                waiting.insert((class.id, i), node.children().len());
            }
        }
    }
    let mut best: IdMap<(f64, Kiln)> = Default::default();
    while let Some(Reverse((Total(total), class, i))) = heap.pop() {
        if best.contains_key(&class) {
            continue;
        }
        best.insert(class, (total, node_costs[&class][i].0.clone()));
        for &(user, j) in users.get(&class).into_iter().flatten() {
            let Some(left) = waiting.get_mut(&(user, j)) else { continue };
            *left -= 1;
            if *left == 0 && !best.contains_key(&user) {
                let (node, cost) = &node_costs[&user][j];
                let total = cost + node.children().iter().map(|&c| best[&eg.find(c)].0).sum::<f64>();
                heap.push(Reverse((Total(total), user, j)));
            }
        }
    }
    let mut choice: IdMap<Kiln> = best.into_iter().map(|(id, (_, n))| (id, n)).collect();
    let roots: Vec<Id> = roots.iter().map(|&r| eg.find(r)).collect();
    for &r in &roots {
        if !choice.contains_key(&r) {
            return Err(format!("no finite-cost term for e-class {r}: {:?}", eg[r].nodes));
        }
    }

    // 2. Local search on the DAG cost. A move's effect is computed incrementally (reference counts
    //    of the extracted DAG, a cycle check bounded by heights), not by re-costing the whole DAG:
    //    the latter made extraction quadratic in the graph size.
    let mut cost = dag_cost(eg, &roots, &choice, node_costs);
    if cost.is_finite() {
        let mut search = Search::new(eg, &roots, &choice, node_costs, &parents);
        for _ in 0..MAX_PASSES {
            let mut improved = false;
            let mut candidates: Vec<Id> = reachable(eg, &roots, &choice).into_iter().collect();
            candidates.sort();
            for class in candidates {
                let alternatives = &node_costs[&class];
                if alternatives.len() < 2 || search.count(class) == 0 {
                    continue;
                }
                let current = choice[&class].clone();
                let current_cost = search.chosen_cost(&choice, class);
                for (node, node_cost) in alternatives {
                    if *node == current || !node.children().iter().all(|c| choice.contains_key(&eg.find(*c))) {
                        continue;
                    }
                    if search.creates_cycle(&choice, class, node) {
                        continue;
                    }
                    let (delta, counts) = search.delta(&choice, &current, current_cost, node, *node_cost);
                    if cost + delta < cost * (1.0 - 1e-9) {
                        choice.insert(class, node.clone());
                        search.accept(&choice, class, counts);
                        cost += delta;
                        improved = true;
                        break;
                    }
                }
            }
            // Re-cost exactly once per pass, so that rounding in the running sum cannot build up.
            cost = dag_cost(eg, &roots, &choice, node_costs);
            if !improved {
                break;
            }
        }
    }
    if !cost.is_finite() {
        return Err("extraction found no acyclic finite-cost program".into());
    }
    let keep = reachable(eg, &roots, &choice);
    choice.retain(|id, _| keep.contains(id));
    Ok(Extraction { choice, cost, baseline_cost: cost })
}

/// Incremental bookkeeping for the local search: how many edges of the extracted DAG (plus root
/// references) enter each class, and each class's height in the current choice (for cycle checks).
struct Search<'a> {
    eg: &'a KGraph,
    costs: &'a NodeCosts,
    parents: &'a IdMap<Vec<Id>>,
    roots: Vec<Id>,
    counts: IdMap<usize>,
    /// A label per chosen class that decreases along every chosen edge: heights × [`GAP`], so that
    /// a move rarely has to relabel the classes above it.
    heights: IdMap<u64>,
}

impl<'a> Search<'a> {
    fn new(
        eg: &'a KGraph,
        roots: &[Id],
        choice: &IdMap<Kiln>,
        costs: &'a NodeCosts,
        parents: &'a IdMap<Vec<Id>>,
    ) -> Search<'a> {
        let mut s = Search {
            eg,
            costs,
            parents,
            roots: roots.to_vec(),
            counts: Default::default(),
            heights: Default::default(),
        };
        s.recount(choice);
        s
    }

    fn count(&self, id: Id) -> usize {
        self.counts.get(&id).copied().unwrap_or(0)
    }

    fn node_cost(&self, id: Id, node: &Kiln) -> f64 {
        self.costs[&id].iter().find(|(n, _)| n == node).map_or(f64::INFINITY, |(_, c)| *c)
    }

    fn chosen_cost(&self, choice: &IdMap<Kiln>, id: Id) -> f64 {
        choice.get(&id).map_or(f64::INFINITY, |n| self.node_cost(id, n))
    }

    fn children(&self, node: &Kiln) -> impl Iterator<Item = Id> + '_ {
        node.children().to_vec().into_iter().map(|c| self.eg.find(c))
    }

    /// Reference counts of the DAG reachable from the roots, and heights of every chosen class
    /// (the choice is acyclic).
    fn recount(&mut self, choice: &IdMap<Kiln>) {
        self.counts.clear();
        for &r in &self.roots {
            *self.counts.entry(r).or_insert(0) += 1;
        }
        for id in reachable(self.eg, &self.roots, choice) {
            if let Some(node) = choice.get(&id) {
                for c in node.children() {
                    *self.counts.entry(self.eg.find(*c)).or_insert(0) += 1;
                }
            }
        }
        self.heights.clear();
        let mut ids: Vec<Id> = choice.keys().copied().collect();
        ids.sort();
        // Classes entered and not yet finished: never re-entered, so a cyclic choice (which the
        // search never makes) could not loop here.
        let mut open = IdSet::default();
        for id in ids {
            let mut stack = vec![(id, false)];
            while let Some((c, done)) = stack.pop() {
                if self.heights.contains_key(&c) || (!done && !open.insert(c)) {
                    continue;
                }
                let kids: Vec<Id> = choice.get(&c).map(|n| self.children(n).collect()).unwrap_or_default();
                if done {
                    let h = kids.iter().map(|k| self.heights.get(k).map_or(0, |h| h + GAP)).max().unwrap_or(0);
                    self.heights.insert(c, h);
                    open.remove(&c);
                } else {
                    stack.push((c, true));
                    stack.extend(kids.into_iter().filter(|k| !self.heights.contains_key(k)).map(|k| (k, false)));
                }
            }
        }
    }

    /// Whether choosing `node` for `class` would make the choice cyclic: some child of `node`
    /// reaches `class`. Only classes higher than `class` can reach it.
    fn creates_cycle(&self, choice: &IdMap<Kiln>, class: Id, node: &Kiln) -> bool {
        let floor = self.heights.get(&class).copied().unwrap_or(0);
        let mut seen = IdSet::default();
        let mut stack: Vec<Id> = self.children(node).collect();
        while let Some(c) = stack.pop() {
            if c == class {
                return true;
            }
            if self.heights.get(&c).is_none_or(|&h| h <= floor) || !seen.insert(c) {
                continue;
            }
            if let Some(n) = choice.get(&c) {
                stack.extend(self.children(n));
            }
        }
        false
    }

    /// The change of DAG cost when one class's chosen node `old` becomes `new` (acyclic), and the
    /// changes of reference counts.
    fn delta(&self, choice: &IdMap<Kiln>, old: &Kiln, old_cost: f64, new: &Kiln, new_cost: f64) -> (f64, IdMap<isize>) {
        let mut delta = new_cost - old_cost;
        let mut changed: IdMap<isize> = Default::default();
        // Add the new node's edges first, so that a class both nodes use never drops to zero.
        let mut stack: Vec<Id> = self.children(new).collect();
        while let Some(c) = stack.pop() {
            let d = changed.entry(c).or_insert(0);
            let before = self.count(c) as isize + *d;
            *d += 1;
            if before == 0 {
                delta += self.chosen_cost(choice, c);
                stack.extend(choice.get(&c).into_iter().flat_map(|n| self.children(n)));
            }
        }
        let mut stack: Vec<Id> = self.children(old).collect();
        while let Some(c) = stack.pop() {
            let d = changed.entry(c).or_insert(0);
            *d -= 1;
            if self.count(c) as isize + *d == 0 {
                delta -= self.chosen_cost(choice, c);
                stack.extend(choice.get(&c).into_iter().flat_map(|n| self.children(n)));
            }
        }
        (delta, changed)
    }

    /// Applies an accepted move at `class` (the choice already updated). Heights only need to keep
    /// every chosen edge going downhill for the cycle check: when the new node's children are not
    /// all below `class`, it and the ancestors that need it are raised.
    fn accept(&mut self, choice: &IdMap<Kiln>, class: Id, changed: IdMap<isize>) {
        for (id, d) in changed {
            let n = (self.count(id) as isize + d).max(0) as usize;
            self.counts.insert(id, n);
        }
        let top = choice
            .get(&class)
            .map_or(0, |n| self.children(n).map(|c| self.heights.get(&c).map_or(0, |h| h + 1)).max().unwrap_or(0));
        if self.heights.get(&class).is_some_and(|&h| h >= top) {
            return;
        }
        self.heights.insert(class, top);
        let mut stack = vec![class];
        while let Some(c) = stack.pop() {
            let h = self.heights[&c];
            for &p in self.parents.get(&c).into_iter().flatten() {
                let uses = choice.get(&p).is_some_and(|n| n.children().iter().any(|&k| self.eg.find(k) == c));
                if uses && self.heights.get(&p).is_none_or(|&hp| hp <= h) {
                    self.heights.insert(p, h + 1);
                    stack.push(p);
                }
            }
        }
    }
}

/// The classes with a node that uses each class.
fn parents(eg: &KGraph) -> IdMap<Vec<Id>> {
    let mut parents: IdMap<Vec<Id>> = Default::default();
    for class in eg.classes() {
        for node in &class.nodes {
            for &c in node.children() {
                let list = parents.entry(eg.find(c)).or_default();
                if list.last() != Some(&class.id) {
                    list.push(class.id);
                }
            }
        }
    }
    parents
}

fn reachable(eg: &KGraph, roots: &[Id], choice: &IdMap<Kiln>) -> IdSet {
    let mut seen = IdSet::default();
    let mut stack: Vec<Id> = roots.to_vec();
    while let Some(id) = stack.pop() {
        if seen.insert(id)
            && let Some(node) = choice.get(&id)
        {
            stack.extend(node.children().iter().map(|&c| eg.find(c)));
        }
    }
    seen
}

/// The cost of the extracted DAG (each class once); infinity if it has a cycle.
fn dag_cost(eg: &KGraph, roots: &[Id], choice: &IdMap<Kiln>, costs: &NodeCosts) -> f64 {
    // Iterative DFS with colours to detect cycles.
    let mut state: IdMap<u8> = Default::default(); // 1 = in progress, 2 = done
    let mut total = 0.0;
    for &root in roots {
        let mut stack: Vec<(Id, bool)> = vec![(root, false)];
        while let Some((id, children_done)) = stack.pop() {
            if children_done {
                state.insert(id, 2);
                continue;
            }
            match state.get(&id) {
                Some(2) => continue,
                Some(1) => return f64::INFINITY,
                _ => {}
            }
            let Some(node) = choice.get(&id) else { return f64::INFINITY };
            state.insert(id, 1);
            total += costs[&id].iter().find(|(n, _)| n == node).map_or(f64::INFINITY, |(_, c)| *c);
            stack.push((id, true));
            for &c in node.children() {
                let c = eg.find(c);
                match state.get(&c) {
                    Some(2) => {}
                    Some(1) => return f64::INFINITY,
                    _ => stack.push((c, false)),
                }
            }
        }
    }
    total
}
