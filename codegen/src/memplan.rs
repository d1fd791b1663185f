//! Static memory plan: every intermediate tensor gets a fixed byte offset in one arena, chosen so
//! that tensors whose lifetimes overlap never overlap in memory.
//!
//! Lifetimes are step intervals `[def, last]` over the schedule. Placement is greedy by size
//! (largest first) with best fit: among the gaps left between already-placed, time-overlapping
//! buffers, take the smallest that fits, else go above them all. The lower bound reported next to
//! the peak is the largest total size of simultaneously live buffers, which no placement can beat.

/// Offsets are multiples of this (cache line; also satisfies f32x4 and i64 alignment).
pub const ALIGN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub bytes: usize,
    pub def: usize,
    pub last: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub offsets: Vec<usize>,
    /// Arena size.
    pub peak: usize,
    /// Max over steps of the live bytes (each rounded up to [`ALIGN`]).
    pub lower_bound: usize,
}

fn round(b: usize) -> usize {
    b.div_ceil(ALIGN) * ALIGN
}

pub fn place(bufs: &[Interval]) -> Placement {
    let mut order: Vec<usize> = (0..bufs.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(round(bufs[i].bytes)), bufs[i].def, i));
    let mut offsets = vec![usize::MAX; bufs.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut peak = 0;
    for &i in &order {
        let size = round(bufs[i].bytes);
        let b = bufs[i];
        let mut conflicts: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| bufs[j].def <= b.last && b.def <= bufs[j].last)
            .map(|&j| (offsets[j], round(bufs[j].bytes)))
            .collect();
        conflicts.sort();
        let mut cursor = 0;
        let mut best: Option<(usize, usize)> = None; // (gap size, offset)
        for (off, sz) in conflicts {
            if off >= cursor {
                let gap = off - cursor;
                if gap >= size && best.is_none_or(|(g, _)| gap < g) {
                    best = Some((gap, cursor));
                }
            }
            cursor = cursor.max(off + sz);
        }
        let off = best.map(|(_, o)| o).unwrap_or(cursor);
        offsets[i] = off;
        peak = peak.max(off + size);
        placed.push(i);
    }
    let steps = bufs.iter().map(|b| b.last + 1).max().unwrap_or(0);
    let mut live = vec![0usize; steps];
    for b in bufs {
        for l in &mut live[b.def..=b.last] {
            *l += round(b.bytes);
        }
    }
    Placement { offsets, peak, lower_bound: live.into_iter().max().unwrap_or(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_no_overlap(bufs: &[Interval], p: &Placement) {
        for i in 0..bufs.len() {
            for j in 0..i {
                let (a, b) = (bufs[i], bufs[j]);
                if a.def <= b.last && b.def <= a.last {
                    let (oa, ob) = (p.offsets[i], p.offsets[j]);
                    assert!(oa + round(a.bytes) <= ob || ob + round(b.bytes) <= oa, "{i} and {j} overlap");
                }
            }
        }
        assert!(p.peak >= p.lower_bound);
    }

    #[test]
    fn chain_reuses_memory() {
        // a → b → c → d, each dead after its consumer: two buffers suffice.
        let bufs: Vec<Interval> = (0..4).map(|i| Interval { bytes: 1000, def: i, last: i + 1 }).collect();
        let p = place(&bufs);
        check_no_overlap(&bufs, &p);
        assert_eq!(p.peak, 2 * 1024);
        assert_eq!(p.lower_bound, 2 * 1024);
    }

    #[test]
    fn best_fit_takes_the_smallest_gap() {
        let bufs = vec![
            Interval { bytes: 640, def: 0, last: 3 },
            Interval { bytes: 128, def: 0, last: 0 },
            Interval { bytes: 640, def: 0, last: 3 },
            Interval { bytes: 64, def: 1, last: 2 },
        ];
        let p = place(&bufs);
        check_no_overlap(&bufs, &p);
        assert_eq!(p.peak, 640 + 640 + 128);
    }

    #[test]
    fn random_intervals_never_overlap() {
        let mut seed = 12345u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50 {
            let bufs: Vec<Interval> = (0..30)
                .map(|_| {
                    let def = (next() % 20) as usize;
                    Interval { bytes: (next() % 5000) as usize + 1, def, last: def + (next() % 6) as usize }
                })
                .collect();
            check_no_overlap(&bufs, &place(&bufs));
        }
    }
}
