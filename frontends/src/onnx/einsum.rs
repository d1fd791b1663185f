//! Einsum, lowered at load time into kiln's Transpose, Reshape, MatMul and ReduceSum.
//!
//! The equation is parsed into one letter list per operand (`...` expands to fresh letters, one per
//! broadcast axis, right-aligned). Operands are combined left to right, two at a time: letters
//! only one side has and nothing later needs are summed out first (ReduceSum), shared letters still
//! needed become batch axes, shared letters no longer needed are contracted, and the pair becomes
//! one batched MatMul `[batch…, M, K] · [batch…, K, N]` between a Transpose + Reshape of each side
//! and a Reshape back to `[batch…, a-letters…, b-letters…]`. What remains is summed over the letters
//! the output omits and transposed to the output's order. So "bij,bjk->bik" is one MatMul,
//! "i,j->ij" a MatMul with K = 1, "ij->ji" one Transpose, "ij->i" one ReduceSum; every sum is
//! a ReduceSum or a MatMul, exact to their (f64 reduction / f32 GEMM) accuracy.
//!
//! Refused with an error naming the equation: a letter repeated within one operand (a diagonal or
//! trace), a letter whose sizes differ between operands (explicit letters do not broadcast in
//! ONNX), output letters that no input has or that repeat, and malformed equations.

use super::import::Ctx;
use super::lower::{Lowered, input};
use super::proto::NodeProto;
use kiln_ir::{Attr, Attrs, Op, ReduceKind};

/// One intermediate: its value name, letters (one per axis) and shape.
#[derive(Clone)]
struct Term {
    value: String,
    letters: Vec<char>,
    shape: Vec<usize>,
}

pub(crate) fn lower(ctx: &Ctx, name: &str, node: &NodeProto, attrs: &Attrs) -> Result<Lowered, String> {
    let equation = match attrs.get("equation") {
        Some(Attr::Str(e)) => e.clone(),
        Some(other) => return Err(format!("Einsum's 'equation' must be a string, got {other}")),
        None => return Err("Einsum needs the string attribute 'equation'".into()),
    };
    if let Some(k) = attrs.keys().find(|k| k.as_str() != "equation") {
        return Err(format!("Einsum has no attribute '{k}'"));
    }
    let out = node.output.first().filter(|o| !o.is_empty()).ok_or("Einsum needs an output")?.clone();
    let mut shapes = Vec::new();
    let mut values = Vec::new();
    for i in 0..node.input.len() {
        let v = input(node, i).ok_or_else(|| format!("Einsum's input {i} is empty"))?;
        let ty = ctx.ty(v).ok_or_else(|| format!("the shape of Einsum input {i} ('{v}') is not known at load time"))?;
        shapes.push(ty.shape.clone());
        values.push(v.to_string());
    }
    let fail = |why: String| format!("Einsum equation {equation:?}: {why}");
    let (inputs, output) = parse(&equation, &shapes).map_err(fail)?;
    let mut terms: Vec<Term> = Vec::new();
    for ((letters, shape), value) in inputs.into_iter().zip(shapes).zip(values) {
        terms.push(Term { value, letters, shape });
    }
    let mut b = Builder { name: name.to_string(), l: Lowered::default(), count: 0 };
    // Sizes per letter agree across operands.
    let mut size_of: Vec<(char, usize)> = Vec::new();
    for (k, t) in terms.iter().enumerate() {
        for (&c, &d) in t.letters.iter().zip(&t.shape) {
            match size_of.iter().find(|(l, _)| *l == c) {
                Some(&(_, s)) if s != d => {
                    return Err(fail(format!("index '{c}' has size {s} in one operand and {d} in operand {k}")));
                }
                Some(_) => {}
                None => size_of.push((c, d)),
            }
        }
    }
    let mut acc = terms.remove(0);
    let rest = terms;
    for (k, next) in rest.iter().enumerate() {
        // Letters still needed after this pair: the output's and those of later operands.
        let needed: Vec<char> =
            output.iter().copied().chain(rest[k + 1..].iter().flat_map(|t| t.letters.iter().copied())).collect();
        acc = b.contract(acc, next.clone(), &needed);
    }
    // Sum what the output omits, then order the axes as the output.
    let gone: Vec<char> = acc.letters.iter().copied().filter(|c| !output.contains(c)).collect();
    acc = b.sum_out(acc, &gone);
    let perm: Vec<usize> = output.iter().map(|c| acc.letters.iter().position(|l| l == c).unwrap_or_default()).collect();
    acc = b.transpose(acc, &perm);
    if acc.value == node.input.first().cloned().unwrap_or_default() || b.l.nodes.is_empty() {
        b.l.push(name.to_string(), Op::Identity, vec![acc.value.clone()], vec![acc.value.clone()]);
    }
    // The last node writes the ONNX output.
    let last = b.l.nodes.len() - 1;
    b.l.nodes[last].outputs = vec![out];
    b.l.nodes[last].name = name.to_string();
    Ok(b.l)
}

/// Parses the equation against the operands' ranks: the letters of each operand and of the output.
fn parse(equation: &str, shapes: &[Vec<usize>]) -> Result<(Vec<Vec<char>>, Vec<char>), String> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let parts: Vec<&str> = lhs.split(',').collect();
    if parts.len() != shapes.len() {
        return Err(format!("{} operand terms for {} inputs", parts.len(), shapes.len()));
    }
    // Fresh letters for `...`: the broadcast axes, shared right-aligned by every operand.
    let ell_rank = parts
        .iter()
        .zip(shapes)
        .filter(|(p, _)| p.contains("..."))
        .map(|(p, s)| s.len().saturating_sub(p.replace("...", "").chars().count()))
        .max()
        .unwrap_or(0);
    let fresh: Vec<char> = ('\u{3b1}'..).take(ell_rank).collect(); // α, β, …: never an equation letter
    let mut inputs = Vec::new();
    for (k, (p, shape)) in parts.iter().zip(shapes).enumerate() {
        let letters = expand(p, shape.len(), &fresh).map_err(|e| format!("operand {k}: {e}"))?;
        if letters.len() != shape.len() {
            return Err(format!("operand {k} has {} indices but rank {}", letters.len(), shape.len()));
        }
        for (i, c) in letters.iter().enumerate() {
            if letters[..i].contains(c) {
                return Err(format!(
                    "index '{c}' repeats in operand {k} (a diagonal or trace), which kiln does not support"
                ));
            }
        }
        inputs.push(letters);
    }
    for (k, (letters, shape)) in inputs.iter().zip(shapes).enumerate() {
        // `...` axes broadcast between operands in ONNX; kiln needs them equal.
        for (c, &d) in letters.iter().zip(shape) {
            if fresh.contains(c) {
                let others = inputs.iter().zip(shapes).filter_map(|(l, s)| l.iter().position(|x| x == c).map(|i| s[i]));
                if let Some(o) = others.into_iter().find(|&o| o != d) {
                    return Err(format!(
                        "the '...' axes of operand {k} ({d}) and another operand ({o}) differ; kiln does not broadcast them"
                    ));
                }
            }
        }
    }
    let output = match rhs {
        Some(r) => {
            let out = expand(r, ell_rank + r.replace("...", "").chars().count(), &fresh)?;
            for (i, c) in out.iter().enumerate() {
                if out[..i].contains(c) {
                    return Err(format!("output index '{c}' repeats"));
                }
                if !inputs.iter().any(|l| l.contains(c)) {
                    return Err(format!("output index '{c}' is in no operand"));
                }
            }
            out
        }
        None => {
            // Implicit output: the broadcast axes, then every letter that occurs once, sorted.
            let mut once: Vec<char> = inputs
                .iter()
                .flatten()
                .copied()
                .filter(|c| !fresh.contains(c) && inputs.iter().flatten().filter(|x| *x == c).count() == 1)
                .collect();
            once.sort_unstable();
            fresh.iter().copied().chain(once).collect()
        }
    };
    Ok((inputs, output))
}

/// The letters of one term, `...` replaced by the last `rank − explicit` fresh letters.
fn expand(term: &str, rank: usize, fresh: &[char]) -> Result<Vec<char>, String> {
    let explicit = term.replace("...", "");
    if let Some(c) = explicit.chars().find(|c| !c.is_ascii_alphabetic()) {
        return Err(format!("'{c}' is not an index letter"));
    }
    if term.matches("...").count() > 1 {
        return Err("'...' appears more than once".into());
    }
    let n = explicit.chars().count();
    let Some((before, after)) = term.split_once("...") else { return Ok(term.chars().collect()) };
    let k = rank.checked_sub(n).ok_or_else(|| format!("more indices than the rank {rank}"))?;
    let ell = &fresh[fresh.len().saturating_sub(k)..];
    Ok(before.chars().chain(ell.iter().copied()).chain(after.chars()).collect())
}

/// Emits the kiln nodes, naming each `{name}/k`.
struct Builder {
    name: String,
    l: Lowered,
    count: usize,
}

impl Builder {
    fn emit(&mut self, op: Op, inputs: Vec<String>) -> String {
        let node = format!("{}/{}", self.name, self.count);
        self.count += 1;
        let out = format!("{node}:out");
        self.l.push(node, op, inputs, vec![out.clone()]);
        out
    }

    /// Sums `letters` out of `t` (keepdims = 0).
    fn sum_out(&mut self, t: Term, letters: &[char]) -> Term {
        let axes: Vec<i64> =
            t.letters.iter().enumerate().filter(|(_, c)| letters.contains(c)).map(|(i, _)| i as i64).collect();
        if axes.is_empty() {
            return t;
        }
        let op = Op::Reduce { kind: ReduceKind::Sum, axes: Some(axes), keepdims: false, noop_with_empty_axes: false };
        let value = self.emit(op, vec![t.value]);
        let keep = |i: &usize| !letters.contains(&t.letters[*i]);
        let idx: Vec<usize> = (0..t.letters.len()).filter(keep).collect();
        Term {
            value,
            letters: idx.iter().map(|&i| t.letters[i]).collect(),
            shape: idx.iter().map(|&i| t.shape[i]).collect(),
        }
    }

    fn transpose(&mut self, t: Term, perm: &[usize]) -> Term {
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return t;
        }
        let value = self.emit(Op::Transpose { perm: Some(perm.to_vec()) }, vec![t.value]);
        Term {
            value,
            letters: perm.iter().map(|&p| t.letters[p]).collect(),
            shape: perm.iter().map(|&p| t.shape[p]).collect(),
        }
    }

    fn reshape(&mut self, value: String, from: &[usize], to: &[usize]) -> String {
        if from == to {
            return value;
        }
        let shape = to.iter().map(|&d| d as i64).collect();
        self.emit(Op::Reshape { shape, allowzero: false }, vec![value])
    }

    /// Combines two terms, keeping the letters in `needed` (and those shared with nothing else).
    fn contract(&mut self, a: Term, b: Term, needed: &[char]) -> Term {
        // Letters of one side only that nothing later needs: summed now.
        let a_gone: Vec<char> =
            a.letters.iter().copied().filter(|c| !b.letters.contains(c) && !needed.contains(c)).collect();
        let b_gone: Vec<char> =
            b.letters.iter().copied().filter(|c| !a.letters.contains(c) && !needed.contains(c)).collect();
        let a = self.sum_out(a, &a_gone);
        let b = self.sum_out(b, &b_gone);
        let shared: Vec<char> = a.letters.iter().copied().filter(|c| b.letters.contains(c)).collect();
        let batch: Vec<char> = shared.iter().copied().filter(|c| needed.contains(c)).collect();
        let summed: Vec<char> = shared.iter().copied().filter(|c| !needed.contains(c)).collect();
        let a_only: Vec<char> = a.letters.iter().copied().filter(|c| !shared.contains(c)).collect();
        let b_only: Vec<char> = b.letters.iter().copied().filter(|c| !shared.contains(c)).collect();
        let pos = |t: &Term, c: &char| t.letters.iter().position(|l| l == c).unwrap_or_default();
        let size = |t: &Term, c: &char| t.shape[pos(t, c)];
        // A as [batch…, a_only…, summed…], B as [batch…, summed…, b_only…].
        let pa: Vec<usize> = batch.iter().chain(&a_only).chain(&summed).map(|c| pos(&a, c)).collect();
        let pb: Vec<usize> = batch.iter().chain(&summed).chain(&b_only).map(|c| pos(&b, c)).collect();
        let batch_dims: Vec<usize> = batch.iter().map(|c| size(&a, c)).collect();
        let m: usize = a_only.iter().map(|c| size(&a, c)).product();
        let k: usize = summed.iter().map(|c| size(&a, c)).product();
        let n: usize = b_only.iter().map(|c| size(&b, c)).product();
        let a_dims: Vec<usize> = a_only.iter().map(|c| size(&a, c)).collect();
        let b_dims: Vec<usize> = b_only.iter().map(|c| size(&b, c)).collect();
        let at = self.transpose(a, &pa);
        let bt = self.transpose(b, &pb);
        let a3: Vec<usize> = batch_dims.iter().copied().chain([m, k]).collect();
        let b3: Vec<usize> = batch_dims.iter().copied().chain([k, n]).collect();
        let av = self.reshape(at.value, &at.shape, &a3);
        let bv = self.reshape(bt.value, &bt.shape, &b3);
        let prod = self.emit(Op::MatMul, vec![av, bv]);
        let mn: Vec<usize> = batch_dims.iter().copied().chain([m, n]).collect();
        let shape: Vec<usize> = batch_dims.iter().chain(&a_dims).chain(&b_dims).copied().collect();
        let value = self.reshape(prod, &mn, &shape);
        Term { value, letters: batch.into_iter().chain(a_only).chain(b_only).collect(), shape }
    }
}
