//! Rewrite rules, one file per theme, each rule named and introduced by a one-line math comment.
//!
//! Policy (Cranelift's): a rule's right-hand side is never worse than its left once extracted; no
//! blanket commutativity or associativity (only "constants to the right"); every condition checks
//! shapes, axes and constant-ness before a fold, since unchecked broadcasting and axes are where
//! wrong fusions come from. Conditions are named functions; rewrites that need attributes, shapes
//! or fresh terms are named functions ([`fn_rule`]). Every rule applies through [`KApplier`], which
//! refuses a union of terms of different types and keeps the e-graph within its node budget.
//!
//! Stages: [`recognise`] (canonical attributes, algebra, what exporters write, softmax, attention, scalar folding), then [`fold`]
//! (normalization folding and Pre-LN → Pre-RMSNorm, with algebra for clean-up).

/// `rw!("name"; "lhs" => "rhs")` or `rw!("name"; "lhs" => "rhs" if condition)`: egg's `rewrite!`
/// syntax, applied by [`KApplier`] (budget, provenance and the type check on every union).
macro_rules! rw {
    ($name:literal; $lhs:literal => $rhs:literal) => {
        $crate::rules::pattern_rule($name, $lhs, $rhs, None)
    };
    ($name:literal; $lhs:literal => $rhs:literal if $cond:expr) => {
        $crate::rules::pattern_rule($name, $lhs, $rhs, Some(Box::new($cond) as $crate::rules::KCondition))
    };
}

pub mod algebra;
pub mod attention;
pub mod exported;
pub mod ln_rms;
pub mod norm_fold;
pub mod scaling;
pub mod softmax;

use crate::analysis::{KGraph, KilnAnalysis};
use crate::lang::{FoldOp, IrOp, KOp, Kiln, MetaOp};
use egg::{Applier, Condition, Id, Pattern, PatternAst, Rewrite, SearchMatches, Subst, Symbol, Var};
use kiln_ir::{Op, TensorType};

pub type KRewrite = Rewrite<Kiln, KilnAnalysis>;

/// A rule family: its name and its rules.
pub struct Family {
    pub name: &'static str,
    pub rules: Vec<KRewrite>,
}

/// Stage 1: canonicalise, simplify, recognise softmax, move scalar multipliers; with `kiln_ops`,
/// also recognise the kiln-domain MaskedSoftmax and Attention (for backends that implement them).
pub fn recognise(kiln_ops: bool) -> Vec<KRewrite> {
    let mut rules = algebra::rules();
    rules.extend(algebra::recognise_rules());
    rules.extend(norm_fold::recognise_rules());
    rules.extend(exported::rules());
    rules.extend(softmax::rules());
    if kiln_ops {
        rules.extend(softmax::fused_rules());
        rules.extend(attention::rules());
    }
    rules.extend(scaling::rules());
    rules
}

/// Stage 2: fold normalizations into affines and affines into linear layers; Pre-LN → Pre-RMSNorm.
pub fn fold(ln_to_rms: bool) -> Vec<KRewrite> {
    let mut rules = algebra::rules();
    rules.extend(scaling::rules());
    rules.extend(norm_fold::rules());
    if ln_to_rms {
        rules.extend(ln_rms::rules());
    }
    rules
}

/// Every family, for listings and tests.
pub fn families() -> Vec<Family> {
    vec![
        Family { name: "algebra", rules: algebra::rules().into_iter().chain(algebra::recognise_rules()).collect() },
        Family { name: "softmax", rules: softmax::rules().into_iter().chain(softmax::fused_rules()).collect() },
        Family { name: "attention", rules: attention::rules() },
        Family { name: "exported", rules: exported::rules() },
        Family { name: "scaling", rules: scaling::rules() },
        Family {
            name: "norm_fold",
            rules: norm_fold::rules().into_iter().chain(norm_fold::recognise_rules()).collect(),
        },
        Family { name: "ln_rms", rules: ln_rms::rules() },
    ]
}

/// A rule's condition, as egg's `rewrite!` takes it.
pub type KCondition = Box<dyn Condition<Kiln, KilnAnalysis> + Send + Sync>;

/// How a rule builds its right-hand side.
enum Rhs {
    /// A pattern, instantiated when the condition (if any) holds.
    Pattern(Pattern<Kiln>, Option<KCondition>),
    /// A named function that returns the id of a term equal to the matched e-class, or `None`
    /// when the match does not qualify.
    Fn(fn(&mut KGraph, Id, &Subst) -> Option<Id>),
}

/// The one applier of every kiln rule. Around each application it
///
/// - stops once the e-graph has outgrown [`KilnAnalysis::node_budget`] (checked before every
///   application, so one iteration overshoots the budget by at most one application's nodes:
///   [`MAX_NODES_PER_APPLICATION`]);
/// - records provenance: every e-class created is marked as originating at the matched e-class
///   ([`crate::analysis::Data::origin`]), so that new nodes can be named after the ones they replace;
/// - refuses the union when the new term's types differ from the matched e-class's (a rule whose
///   condition missed a broadcast or a shape): such a union would merge different tensors. The
///   refusal is counted in [`KilnAnalysis::refused`] so that tests can insist on none;
/// - refuses a match that binds a constant holding an infinity or a NaN
///   ([`crate::analysis::Data::nonfinite`]), except in the rules of `NONFINITE_SAFE`. The rules'
///   algebra holds over the reals, not over IEEE infinities: (x·0 + c)·W = x·(0·W) + c·W is NaN
///   where W holds −inf and the left side is −inf (difftest seed 80098812).
pub struct KApplier {
    rhs: Rhs,
    /// The left-hand side's variables, whose classes are checked for non-finite constants.
    lhs_vars: Vec<Var>,
    nonfinite_safe: bool,
    /// The left-hand side, for explanations: which e-nodes a match used ([`crate::explain`]).
    lhs: PatternAst<Kiln>,
}

/// Rules that are exact for any constant, infinite or NaN: masks of −inf are what attention and
/// masked softmax are written with.
const NONFINITE_SAFE: &[&str] = &[
    "masked-softmax",
    "attention-scaled-bias",
    "attention-scaled",
    "attention-bias",
    "attention",
    "attention-nan-scaled-bias",
    "attention-nan-scaled",
    "attention-nan-bias",
    "attention-nan",
    "identity",
];

impl KApplier {
    fn new(name: &str, searcher: &Pattern<Kiln>, rhs: Rhs) -> KApplier {
        KApplier {
            rhs,
            lhs_vars: searcher.vars(),
            nonfinite_safe: NONFINITE_SAFE.contains(&name),
            lhs: searcher.ast.clone(),
        }
    }
}

/// The most e-nodes one application of any rule may add: every right-hand side is a handful of
/// terms (at most 12 measured over the passes test suite, by `affine-affine`: constants, their
/// `flat`/`Reshape` spellings and the new affine), so 64 leaves a margin. Debug-asserted after
/// every application.
pub const MAX_NODES_PER_APPLICATION: usize = 64;

impl KApplier {
    fn build(&self, egraph: &mut KGraph, eclass: Id, subst: &Subst) -> Option<Id> {
        if !self.nonfinite_safe
            && self.lhs_vars.iter().any(|&v| subst.get(v).is_some_and(|&c| egraph[c].data.nonfinite))
        {
            return None;
        }
        match &self.rhs {
            Rhs::Pattern(pattern, cond) => {
                if cond.as_ref().is_some_and(|c| !c.check(egraph, eclass, subst)) {
                    return None;
                }
                Some(egraph.add_instantiation(&pattern.ast, subst))
            }
            Rhs::Fn(f) => f(egraph, eclass, subst),
        }
    }
}

impl KApplier {
    /// Explanations: records an application that created e-nodes (from `first_id` on) or joined
    /// two e-classes, with the e-nodes its match used, when [`KilnAnalysis::applications`] is on.
    #[allow(clippy::too_many_arguments)]
    fn log(
        &self,
        egraph: &mut KGraph,
        rule: Symbol,
        at: Id,
        joined: Option<Id>,
        first_id: usize,
        created: bool,
        matched: Vec<Kiln>,
    ) {
        let end = if created { egraph.nodes().len() } else { first_id };
        if let Some(log) = egraph.analysis.applications.as_mut()
            && (created || joined.is_some())
        {
            let created = first_id..end;
            log.push(crate::explain::Application { rule, at, joined, created, matched });
        }
    }
}

impl Applier<Kiln, KilnAnalysis> for KApplier {
    fn apply_matches(&self, egraph: &mut KGraph, matches: &[SearchMatches<Kiln>], rule_name: Symbol) -> Vec<Id> {
        let mut changed = Vec::new();
        for m in matches {
            for subst in &m.substs {
                if egraph.total_size() > egraph.analysis.node_budget {
                    return changed;
                }
                changed.extend(self.apply_one(egraph, m.eclass, subst, None, rule_name));
            }
        }
        changed
    }

    fn apply_one(
        &self,
        egraph: &mut KGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Kiln>>,
        rule_name: Symbol,
    ) -> Vec<Id> {
        let before = egraph.total_size();
        let first_id = egraph.nodes().len();
        let matched = if egraph.analysis.applications.is_some() {
            crate::explain::matched_nodes(egraph, &self.lhs, eclass, subst)
        } else {
            Vec::new()
        };
        egraph.analysis.applying_at = Some(eclass);
        let built = self.build(egraph, eclass, subst);
        egraph.analysis.applying_at = None;
        let created = egraph.nodes().len() > first_id;
        let added = egraph.total_size().saturating_sub(before);
        debug_assert!(added <= MAX_NODES_PER_APPLICATION, "rule {rule_name} added {added} e-nodes in one application");
        egraph.analysis.peak_size = egraph.analysis.peak_size.max(egraph.total_size());
        let Some(id) = built else {
            self.log(egraph, rule_name, eclass, None, first_id, created, matched);
            return vec![];
        };
        let (new, old) = (&egraph[id].data.types, &egraph[eclass].data.types);
        if new.is_empty() || new != old {
            *egraph.analysis.refused.entry(rule_name.to_string()).or_insert(0) += 1;
            self.log(egraph, rule_name, eclass, None, first_id, created, matched);
            return vec![];
        }
        let joined = egraph.union(eclass, id);
        self.log(egraph, rule_name, eclass, joined.then_some(id), first_id, created, matched);
        if joined { vec![eclass] } else { vec![] }
    }

    fn vars(&self) -> Vec<Var> {
        match &self.rhs {
            Rhs::Pattern(p, cond) => {
                let mut vars = p.vars();
                vars.extend(cond.iter().flat_map(|c| c.vars()));
                vars
            }
            Rhs::Fn(_) => vec![],
        }
    }
}

/// A rule from two patterns and an optional condition (what `rw!` expands to).
pub fn pattern_rule(name: &str, lhs: &str, rhs: &str, cond: Option<KCondition>) -> KRewrite {
    let searcher: Pattern<Kiln> = lhs.parse().unwrap_or_else(|e| panic!("rule {name}: {e:?}"));
    let applier: Pattern<Kiln> = rhs.parse().unwrap_or_else(|e| panic!("rule {name}: {e:?}"));
    let applier = KApplier::new(name, &searcher, Rhs::Pattern(applier, cond));
    Rewrite::new(name, searcher, applier).unwrap_or_else(|e| panic!("rule {name}: {e}"))
}

/// A rule from a pattern and a named right-hand-side function.
pub fn fn_rule(name: &str, lhs: &str, rhs: fn(&mut KGraph, Id, &Subst) -> Option<Id>) -> KRewrite {
    let searcher: Pattern<Kiln> = lhs.parse().unwrap_or_else(|e| panic!("rule {name}: {e:?}"));
    let applier = KApplier::new(name, &searcher, Rhs::Fn(rhs));
    Rewrite::new(name, searcher, applier).unwrap_or_else(|e| panic!("rule {name}: {e}"))
}

// ---- small helpers for right-hand sides and conditions ----

pub fn var(name: &str) -> Var {
    name.parse().unwrap_or_else(|e| panic!("bad pattern variable {name}: {e:?}"))
}

/// The e-class a pattern variable is bound to.
pub fn get(subst: &Subst, name: &str) -> Id {
    subst[var(name)]
}

pub fn ty(egraph: &KGraph, id: Id) -> Option<TensorType> {
    egraph[id].data.ty().cloned()
}

pub fn shape(egraph: &KGraph, id: Id) -> Option<Vec<usize>> {
    egraph[id].data.shape().map(|s| s.to_vec())
}

pub fn is_const(egraph: &KGraph, id: Id) -> bool {
    egraph[id].data.constant
}

pub fn numel(egraph: &KGraph, id: Id) -> Option<usize> {
    egraph[id].data.ty().map(|t| t.num_elements())
}

/// Every element of the class is `v` (a `fill<v>` term or a uniform weight).
pub fn is_uniform(egraph: &KGraph, id: Id, v: f32) -> bool {
    egraph[id].data.uniform.is_some_and(|u| u.get() == v)
}

pub fn add_ir(egraph: &mut KGraph, op: Op, args: Vec<Id>) -> Id {
    egraph.add(Kiln::Node(KOp::Ir(IrOp::new(op)), args))
}

pub fn add_fold(egraph: &mut KGraph, op: FoldOp, args: Vec<Id>) -> Id {
    egraph.add(Kiln::Node(KOp::Fold(op), args))
}

pub fn add_meta(egraph: &mut KGraph, op: MetaOp, args: Vec<Id>) -> Id {
    egraph.add(Kiln::Node(KOp::Meta(op), args))
}

/// `(Reshape<shape> x)`.
pub fn add_reshape(egraph: &mut KGraph, x: Id, shape: &[usize]) -> Id {
    let shape = shape.iter().map(|&d| d as i64).collect();
    add_ir(egraph, Op::Reshape { shape, allowzero: false }, vec![x])
}

/// A per-channel vector reshaped to broadcast along `axis` of a rank-`rank` tensor: [C, 1, …, 1].
pub fn add_channel_vector(egraph: &mut KGraph, v: Id, channels: usize, axis: usize, rank: usize) -> Id {
    let flat = add_fold(egraph, FoldOp::Flat, vec![v]);
    let mut shape = vec![channels];
    shape.extend(std::iter::repeat_n(1, rank - axis - 1));
    if shape.len() == 1 { flat } else { add_reshape(egraph, flat, &shape) }
}

/// Normalises an op axis against a rank.
pub fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    kiln_ir::ops::normalize_axis(axis, rank).ok()
}

/// How deeply compile-time terms may nest in the constants a rule reads. Each fold wraps its
/// inputs in a few terms (flat, fma, reshape), so this allows a normalization to fold through a
/// couple of affines into a weight, and stops chains of compositions (affine of affine of …
/// across a residual stack) that would otherwise grow the e-graph without bound.
pub const MAX_FOLD_DEPTH: u32 = 6;

/// Every listed class is shallow enough to fold further.
pub fn shallow(egraph: &KGraph, ids: &[Id]) -> bool {
    ids.iter().all(|&i| egraph[i].data.depth <= MAX_FOLD_DEPTH)
}

/// Whether the class holds a node of the given term.
pub fn has_term(egraph: &KGraph, id: Id, op: &KOp) -> bool {
    egraph[id].nodes.iter().any(|n| n.kop() == Some(op))
}

#[cfg(test)]
pub(crate) mod testing {
    //! One-line rule tests: `check(leaves, rules, "lhs", "rhs")` asserts that saturation proves
    //! lhs = rhs; `check_not` asserts that it does not.

    use super::*;
    use crate::analysis::KilnAnalysis;
    use egg::{RecExpr, Runner};

    /// Leaves: `"w:f32[4,3]"` is a weight, `"x?f32[2,4]"` a graph input; `"s:f32[]=2.0"` a weight
    /// whose every element is 2 (a value the rules may read).
    pub fn leaves(decls: &[&str]) -> KilnAnalysis {
        let mut weights = Vec::new();
        let mut inputs = Vec::new();
        let mut uniform = Vec::new();
        for d in decls {
            let (d, value) = match d.split_once('=') {
                Some((d, v)) => (d, Some(v.parse::<f32>().expect("a number after '='"))),
                None => (*d, None),
            };
            let (name, ty, is_weight) = match (d.split_once(':'), d.split_once('?')) {
                (Some((n, t)), _) => (n, t, true),
                (None, Some((n, t))) => (n, t, false),
                _ => panic!("bad leaf {d}"),
            };
            let (dtype, dims) = ty.split_once('[').expect("dtype[dims] type");
            let dtype = kiln_ir::DType::from_name(dtype).expect("known dtype");
            let dims = dims.strip_suffix(']').expect("closing ]");
            let shape: Vec<usize> =
                if dims.is_empty() { vec![] } else { dims.split(',').map(|s| s.parse().unwrap()).collect() };
            let ty = TensorType::new(dtype, shape);
            if is_weight {
                weights.push((name, ty))
            } else {
                inputs.push((name, ty))
            }
            uniform.extend(value.map(|v| (name, v)));
        }
        let mut analysis = KilnAnalysis::with_leaves(&weights, &inputs);
        for (name, v) in uniform {
            if let Some(leaf) = analysis.leaves.get_mut(&Symbol::from(name)) {
                leaf.uniform = Some(v);
            }
        }
        analysis
    }

    fn run(decls: &[&str], rules: &[KRewrite], lhs: &str, rhs: &str) -> (bool, String) {
        let lhs: RecExpr<Kiln> = lhs.parse().expect("lhs parses");
        let rhs: RecExpr<Kiln> = rhs.parse().expect("rhs parses");
        let runner: Runner<Kiln, KilnAnalysis, ()> = Runner::new(leaves(decls))
            .with_expr(&lhs)
            .with_iter_limit(12)
            .with_node_limit(5_000)
            .with_time_limit(std::time::Duration::from_secs(60))
            .run(rules);
        let mut egraph = runner.egraph;
        // Every rule's own condition must check the result type: the applier's refusal is a
        // safety net, not a way for a rule to be right.
        assert!(egraph.analysis.refused.is_empty(), "rules proposed ill-typed unions: {:?}", egraph.analysis.refused);
        let root = egraph.find(runner.roots[0]);
        let found = egraph.lookup_expr(&rhs).map(|id| egraph.find(id));
        egraph.rebuild();
        let eq = found == Some(root);
        let dump = format!("lhs class {root}: {:?}", egraph[root].nodes);
        (eq, dump)
    }

    pub fn check(decls: &[&str], rules: &[KRewrite], lhs: &str, rhs: &str) {
        let (eq, dump) = run(decls, rules, lhs, rhs);
        assert!(eq, "expected {lhs} = {rhs}; {dump}");
    }

    pub fn check_not(decls: &[&str], rules: &[KRewrite], lhs: &str, rhs: &str) {
        let (eq, dump) = run(decls, rules, lhs, rhs);
        assert!(!eq, "unsound: {lhs} = {rhs} was proven; {dump}");
    }
}

#[cfg(test)]
mod tidy {
    use super::*;
    use std::collections::HashSet;

    /// The rule tests rely on debug assertions (an ill-typed merge panics in the analysis, an
    /// application larger than `MAX_NODES_PER_APPLICATION` panics in `KApplier`): the crate's dev
    /// profile must keep them on, whatever its opt-level.
    #[test]
    #[allow(clippy::assertions_on_constants)] // constant per build profile: that is the point
    fn tests_run_with_debug_assertions() {
        assert!(cfg!(debug_assertions), "kiln-passes is tested without debug assertions");
    }

    #[test]
    fn rule_names_are_unique_and_stages_use_every_family() {
        let mut seen = HashSet::new();
        for family in families() {
            assert!(!family.rules.is_empty(), "{}", family.name);
            for rule in &family.rules {
                assert!(seen.insert(rule.name.to_string()), "rule {} is defined twice", rule.name);
            }
        }
        let staged: HashSet<String> =
            recognise(true).iter().chain(fold(true).iter()).map(|r| r.name.to_string()).collect();
        assert_eq!(staged, seen, "every rule runs in some stage");
        let no_rms: HashSet<String> = fold(false).iter().map(|r| r.name.to_string()).collect();
        assert!(!no_rms.contains("ln-to-rms") && no_rms.contains("batchnorm-affine"));
        let plain: HashSet<String> = recognise(false).iter().map(|r| r.name.to_string()).collect();
        assert!(!plain.contains("masked-softmax") && !plain.contains("attention") && plain.contains("softmax-stable"));
    }
}
