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
//! comes after the last use of `b` (DenseNet's BatchNorm+Relu after a concat runs in place over
//! it: `b`'s value must be dead by then); `b` is not already an alias (a value concatenated twice
//! keeps its second copy) and no alias lives inside `b`, so aliases never chain. The memory plan
//! then sees one buffer (the uses of each alias count as uses of `c`) and places each alias at its
//! block.

use super::{Place, Step, TensorType};
use std::collections::HashSet;

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
    buffers: &[usize],
    outputs: &[(Place, TensorType)],
    parts: &[ConcatPart],
) -> Vec<Option<(usize, usize)>> {
    let mut alias: Vec<Option<(usize, usize)>> = vec![None; buffers.len()];
    if parts.is_empty() {
        return alias;
    }
    let mut writers: Vec<Vec<usize>> = vec![Vec::new(); buffers.len()];
    let mut last_use = vec![0; buffers.len()];
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
    let output: HashSet<usize> =
        outputs.iter().filter_map(|(p, _)| if let Place::Buf(b) = *p { Some(b) } else { None }).collect();
    let mut parent = vec![false; buffers.len()];
    let mut dropped: HashSet<usize> = HashSet::new();
    for part in parts {
        let (Place::Buf(b), c) = (part.src, part.dst) else { continue };
        let copies_of_c = |s: &usize| parts.iter().any(|q| q.concat == part.concat && q.step == *s);
        let ok = b != c
            && !output.contains(&b)
            && !output.contains(&c)
            && alias[b].is_none()
            && !parent[b]
            && alias[c].is_none()
            && buffers[b] == part.bytes
            && part.off + part.bytes <= buffers[c]
            && !writers[b].is_empty()
            && writers[b].iter().all(|&s| s < part.step)
            && writers[c].iter().all(|s| copies_of_c(s) || *s > last_use[b]);
        if ok {
            alias[b] = Some((c, part.off));
            parent[c] = true;
            dropped.insert(part.step);
        }
    }
    let mut s = 0;
    steps.retain(|_| {
        s += 1;
        !dropped.contains(&(s - 1))
    });
    alias
}
