//! Concat in place: a Concat whose inputs are contiguous blocks of its output (every axis before
//! the concat axis has extent 1, as NCHW channel concats of one image) needs no copies when each
//! input's producer writes straight into its block. After lowering, such an input's buffer
//! becomes an *alias* of the block — same bytes, its own buffer index, so that steps comparing
//! places still tell the values apart — and its copy step is dropped.
//!
//! An input buffer `b` is aliased into the concat's buffer `c` only when nothing can tell: `b`
//! is not a graph output and holds exactly the input's bytes; every step writing `b` comes before
//! the copy (a value written into `b` in place later would overwrite the block while the concat
//! is live); `c` is not a graph output, and every step writing `c` other than this concat's copies
//! comes after the last use of `b` and of every alias inside `b` (DenseNet's BatchNorm+Relu after
//! a concat runs in place over it: `b`'s value must be dead by then); `b` is not already an alias
//! (a value concatenated twice keeps its second copy) and `c` is none yet (its inputs come before
//! its own use as an input). Aliases chain when `b` is itself a concat with aliases inside
//! (Caffe-style DenseNets concat the previous concat with the new feature). The memory plan then
//! sees one buffer per chain (the uses of each alias count as uses of its root) and places each
//! alias at its block.
//!
//! A concat whose inputs all became aliases of consecutive blocks of one buffer `c`, in order
//! (DenseNet's concat of the first k features of a block, all of them aliased into the block's
//! last concat), holds exactly those bytes of `c`: it becomes a *view* of `c` (an alias of its
//! own, with every copy dropped) when `c`'s bytes outlive its reads — every step writing `c`
//! other than `c`'s copies comes after them. A step that wrote the concat in place (its
//! BatchNorm+Relu) gets a fresh buffer for its result instead, and so do the steps after it.
//!
//! Copy views ([`copy_views`]), after both: a copy that takes a contiguous block of its source in
//! order (a Split or Slice along the first axis longer than 1 — ShuffleNet's channel split, a
//! fused qkv projection's split into q, k and v — or a Transpose that moves only unit axes)
//! becomes an alias of that block when the source's bytes outlive its reads: the copy's output
//! is written by nothing else, is not a graph output and has no alias inside it, its source's
//! root is not a graph output, and every step writing the root (or any alias inside it) comes
//! before the copy or after the output's last use.

use super::{Place, Step, StepKind, TensorType};
use crate::host::{AxisCopy, PAD};
use std::collections::{HashMap, HashSet};

/// One input of a Concat whose block in the output is contiguous.
#[derive(Debug, Clone)]
pub(super) struct ConcatPart {
    /// Which Concat (parts of one Concat share it).
    pub concat: usize,
    /// The copy step of this input.
    pub step: usize,
    /// The concat's output buffer.
    pub dst: usize,
    pub src: Place,
    /// Byte offset and size of the input's block in `dst`.
    pub off: usize,
    pub bytes: usize,
}

/// Decides which parts run in place, drops their copy steps and returns, per buffer, the
/// (buffer, byte offset) it is an alias of.
pub(super) fn concat_in_place(
    steps: &mut Vec<Step>,
    buffers: &mut Vec<usize>,
    outputs: &[(Place, TensorType)],
    parts: &[ConcatPart],
) -> Vec<Option<(usize, usize)>> {
    let mut alias: Vec<Option<(usize, usize)>> = vec![None; buffers.len()];
    if parts.is_empty() {
        return alias;
    }
    let mut plan = Plan::of(steps, buffers.len(), outputs);
    // Per concat buffer, its copy steps (each concat has a buffer of its own).
    for part in parts {
        plan.copy_steps.entry(part.dst).or_default().insert(part.step);
    }
    let mut parent = vec![false; buffers.len()];
    // Per buffer, the last use of it or of any alias inside it (transitively): its bytes must
    // stay until then wherever it is placed.
    let mut last_use_within = plan.last_use.clone();
    let mut dropped: HashSet<usize> = HashSet::new();
    for part in parts {
        let (Place::Buf(b), c) = (part.src, part.dst) else { continue };
        let ok = b != c
            && !plan.output.contains(&b)
            && !plan.output.contains(&c)
            && alias[b].is_none()
            && alias[c].is_none()
            && buffers[b] == part.bytes
            && part.off + part.bytes <= buffers[c]
            && !plan.writers[b].is_empty()
            && plan.writers[b].iter().all(|&s| s < part.step)
            && plan.writers[c].iter().all(|s| plan.copy_steps[&c].contains(s) || *s > last_use_within[b]);
        if ok {
            alias[b] = Some((c, part.off));
            parent[c] = true;
            last_use_within[c] = last_use_within[c].max(last_use_within[b]);
            dropped.insert(part.step);
        }
    }
    concat_views(steps, buffers, parts, &plan, &mut alias, &mut parent, &mut dropped);
    let mut s = 0;
    steps.retain(|_| {
        s += 1;
        !dropped.contains(&(s - 1))
    });
    alias
}

/// What the rules read of the steps as they stand (for the concat rules: as lowered, before any
/// copy is dropped).
struct Plan {
    /// Buffers holding a graph output.
    output: HashSet<usize>,
    /// Per buffer, the steps writing it, in order.
    writers: Vec<Vec<usize>>,
    /// Per buffer, the last step using it (0 when none does).
    last_use: Vec<usize>,
    /// Per concat buffer, its copy steps (the concat rules fill it).
    copy_steps: HashMap<usize, HashSet<usize>>,
}

impl Plan {
    fn of(steps: &[Step], buffers: usize, outputs: &[(Place, TensorType)]) -> Plan {
        let mut writers: Vec<Vec<usize>> = vec![Vec::new(); buffers];
        let mut last_use = vec![0; buffers];
        for (s, step) in steps.iter().enumerate() {
            for (i, p) in step.args.iter().enumerate() {
                if let Place::Buf(b) = *p {
                    last_use[b] = s;
                    if i < step.n_writes {
                        writers[b].push(s);
                    }
                }
            }
        }
        let output = outputs.iter().filter_map(|(p, _)| if let Place::Buf(b) = *p { Some(b) } else { None }).collect();
        Plan { output, writers, last_use, copy_steps: HashMap::new() }
    }
}

/// The buffer an alias chain from `b` ends at, and `b`'s byte offset in it.
pub(crate) fn alias_root(alias: &[Option<(usize, usize)>], mut b: usize) -> (usize, usize) {
    let mut off = 0;
    while let Some((c, o)) = alias.get(b).copied().flatten() {
        (b, off) = (c, off + o);
    }
    (b, off)
}

/// The second rule of the module doc: concats made views of the buffer their inputs alias.
fn concat_views(
    steps: &mut [Step],
    buffers: &mut Vec<usize>,
    parts: &[ConcatPart],
    plan: &Plan,
    alias: &mut Vec<Option<(usize, usize)>>,
    parent: &mut [bool],
    dropped: &mut HashSet<usize>,
) {
    let mut start = 0;
    while start < parts.len() {
        let end = start + parts[start..].iter().take_while(|p| p.concat == parts[start].concat).count();
        let concat = &parts[start..end];
        start = end;
        let k = concat[0].dst;
        if plan.output.contains(&k) || parent[k] || alias[k].is_some() {
            continue;
        }
        // Every input an alias of the same buffer, at consecutive offsets in order.
        let Some((c, base)) = (match concat[0].src {
            Place::Buf(b) => alias[b],
            _ => None,
        }) else {
            continue;
        };
        let lined_up = concat.iter().all(|p| match p.src {
            Place::Buf(b) => alias[b] == Some((c, base + p.off)),
            _ => false,
        });
        let whole = concat.last().is_some_and(|p| p.off + p.bytes == buffers[k]);
        // `c` a root: the bytes of a chained buffer are also its ancestors', whose writers this
        // does not look at.
        if c == k || alias[c].is_some() || !lined_up || !whole {
            continue;
        }
        // The concat's value is read until its first writer other than its copies (which reads
        // it, in place) or its last use; `c` must keep those bytes until then.
        let copies = &plan.copy_steps[&k];
        let rewrite = plan.writers[k].iter().copied().filter(|s| !copies.contains(s)).min();
        // (Earlier views renamed only their own buffers: `k`'s uses are as lowered.)
        let last_read = rewrite.unwrap_or(plan.last_use[k]);
        let no_copies = HashSet::new();
        let c_copies = plan.copy_steps.get(&c).unwrap_or(&no_copies);
        if !plan.writers[c].iter().all(|s| c_copies.contains(s) || *s > last_read) {
            continue;
        }
        if let Some(s1) = rewrite {
            // From its first in-place writer on, the buffer holds other values: they move to a
            // fresh buffer (that step still reads the concat from `k`).
            buffers.push(buffers[k]);
            alias.push(None);
            let fresh = Place::Buf(buffers.len() - 1);
            for (s, step) in steps.iter_mut().enumerate().skip(s1) {
                let n = if s == s1 { step.n_writes } else { step.args.len() };
                for p in step.args.iter_mut().take(n) {
                    if *p == Place::Buf(k) {
                        *p = fresh;
                    }
                }
            }
        }
        alias[k] = Some((c, base));
        parent[c] = true;
        dropped.extend(copies.iter().copied());
    }
}

/// The rule of the module doc's last paragraph: copies of a contiguous block of their source
/// become aliases of it (the copy is dropped; a step left with no copies is dropped).
pub(super) fn copy_views(
    steps: &mut Vec<Step>,
    buffers: &[usize],
    outputs: &[(Place, TensorType)],
    alias: &mut [Option<(usize, usize)>],
) {
    let n = buffers.len();
    let Plan { output, writers, last_use, .. } = Plan::of(steps, n, outputs);
    // Per root buffer, the steps writing it or any alias inside it.
    let mut root_writers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (b, ws) in writers.iter().enumerate() {
        root_writers[alias_root(alias, b).0].extend(ws);
    }
    let mut parent = vec![false; n];
    for a in alias.iter().flatten() {
        parent[a.0] = true;
    }
    let mut viewed: HashSet<(usize, usize)> = HashSet::new();
    for (s, step) in steps.iter().enumerate() {
        let StepKind::Copies(copies) = &step.kind else { continue };
        let Some(&Place::Buf(x)) = step.args.get(step.n_writes) else { continue };
        for (i, copy) in copies.iter().enumerate() {
            let Some(&Place::Buf(out)) = step.args.get(i) else { continue };
            let Some(start) = contiguous_block(copy) else { continue };
            let bytes = copy.shape.iter().product::<usize>() * copy.elem;
            let off = start * copy.elem;
            let r = alias_root(alias, x).0;
            let ok = out != x
                && !output.contains(&out)
                && !output.contains(&x)
                && !output.contains(&r)
                && alias[out].is_none()
                && !parent[out]
                && buffers[out] == bytes
                && off + bytes <= buffers[x]
                && writers[out] == [s]
                && root_writers[r].iter().all(|&t| t < s || t > last_use[out]);
            if ok {
                alias[out] = Some((x, off));
                parent[x] = true;
                viewed.insert((s, i));
            }
        }
    }
    if viewed.is_empty() {
        return;
    }
    for (s, step) in steps.iter_mut().enumerate() {
        let StepKind::Copies(copies) = &mut step.kind else { continue };
        let mut i = 0;
        copies.retain(|_| {
            i += 1;
            !viewed.contains(&(s, i - 1))
        });
        let mut i = 0;
        let n_writes = step.n_writes;
        step.args.retain(|_| {
            i += 1;
            i > n_writes || !viewed.contains(&(s, i - 1))
        });
        step.n_writes = copies.len();
    }
    steps.retain(|st| !matches!(&st.kind, StepKind::Copies(c) if c.is_empty()));
}

/// The element offset of the source block a copy takes whole and in order into a contiguous
/// destination, or `None` (any other copy: a permutation, a stride, a broadcast, padding).
fn contiguous_block(c: &AxisCopy) -> Option<usize> {
    let rank = c.shape.len();
    if c.src_tab.len() != rank || c.dst_strides.len() != rank || c.dst_off != 0 || c.shape.contains(&0) {
        return None;
    }
    let mut stride = 1usize;
    let mut start = 0usize;
    for j in (0..rank).rev() {
        let tab = &c.src_tab[j];
        if tab.len() != c.shape[j] || (c.shape[j] > 1 && c.dst_strides[j] != stride) {
            return None;
        }
        let first = usize::try_from(tab[0]).ok().filter(|_| tab[0] != PAD)?;
        if tab.iter().enumerate().any(|(k, &v)| v != (first + k * stride) as i64) {
            return None;
        }
        start += first;
        stride *= c.shape[j];
    }
    Some(start)
}
