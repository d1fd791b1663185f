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

/// Places `bufs` (each with `def ≤ last`).
pub fn place(bufs: &[Interval]) -> Placement {
    let mut order: Vec<usize> = (0..bufs.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(round(bufs[i].bytes)), bufs[i].def, i));
    let steps = bufs.iter().map(|b| b.last + 1).max().unwrap_or(0);
    let mut offsets = vec![usize::MAX; bufs.len()];
    // The placed buffers that overlap a new one in time are those live at its first step (a
    // stabbing query on a segment tree) plus those starting inside it (a range of `starts`):
    // O(log n + conflicts) per buffer instead of a scan of every placed buffer.
    let mut live_at = StabTree::new(steps);
    let mut starts: std::collections::BTreeMap<usize, Vec<usize>> = std::collections::BTreeMap::new();
    let mut peak = 0;
    let mut conflicts: Vec<(usize, usize)> = Vec::new();
    for &i in &order {
        let size = round(bufs[i].bytes);
        let b = bufs[i];
        conflicts.clear();
        live_at.query(b.def, &mut |j| conflicts.push((offsets[j], round(bufs[j].bytes))));
        if b.last > b.def {
            for (_, js) in starts.range(b.def + 1..=b.last) {
                conflicts.extend(js.iter().map(|&j| (offsets[j], round(bufs[j].bytes))));
            }
        }
        conflicts.sort_unstable();
        let mut cursor = 0;
        let mut best: Option<(usize, usize)> = None; // (gap size, offset)
        for &(off, sz) in &conflicts {
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
        live_at.insert(b.def, b.last, i);
        starts.entry(b.def).or_default().push(i);
    }
    // Live bytes per step by a difference array: O(buffers + steps).
    let mut delta = vec![0isize; steps + 1];
    for b in bufs {
        delta[b.def] += round(b.bytes) as isize;
        delta[b.last + 1] -= round(b.bytes) as isize;
    }
    let mut live = 0isize;
    let mut lower_bound = 0;
    for d in &delta[..steps] {
        live += d;
        lower_bound = lower_bound.max(live as usize);
    }
    Placement { offsets, peak, lower_bound }
}

/// Intervals over steps `[0, len)`, each stored at the O(log len) segment-tree nodes that cover
/// it; `query(t)` reports every interval containing step t once.
struct StabTree {
    len: usize,
    nodes: Vec<Vec<usize>>,
}

impl StabTree {
    fn new(len: usize) -> StabTree {
        StabTree { len, nodes: vec![Vec::new(); 4 * len.max(1)] }
    }

    fn insert(&mut self, lo: usize, hi: usize, id: usize) {
        // Iterative descent: (node, node_lo, node_hi) with the node covering [node_lo, node_hi].
        let mut stack = vec![(1usize, 0usize, self.len.max(1) - 1)];
        while let Some((n, nl, nh)) = stack.pop() {
            if hi < nl || nh < lo {
                continue;
            }
            if lo <= nl && nh <= hi {
                self.nodes[n].push(id);
                continue;
            }
            let mid = nl + (nh - nl) / 2;
            stack.push((2 * n, nl, mid));
            stack.push((2 * n + 1, mid + 1, nh));
        }
    }

    fn query(&self, t: usize, report: &mut dyn FnMut(usize)) {
        let (mut n, mut nl, mut nh) = (1usize, 0usize, self.len.max(1) - 1);
        loop {
            self.nodes[n].iter().for_each(|&id| report(id));
            if nl == nh || t < nl || t > nh {
                return;
            }
            let mid = nl + (nh - nl) / 2;
            if t <= mid {
                (n, nh) = (2 * n, mid);
            } else {
                (n, nl) = (2 * n + 1, mid + 1);
            }
        }
    }
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

    /// The placement of the original all-pairs scan, to check the indexed one against.
    fn place_by_scan(bufs: &[Interval]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..bufs.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(round(bufs[i].bytes)), bufs[i].def, i));
        let mut offsets = vec![usize::MAX; bufs.len()];
        let mut placed: Vec<usize> = Vec::new();
        for &i in &order {
            let (size, b) = (round(bufs[i].bytes), bufs[i]);
            let mut conflicts: Vec<(usize, usize)> = placed
                .iter()
                .filter(|&&j| bufs[j].def <= b.last && b.def <= bufs[j].last)
                .map(|&j| (offsets[j], round(bufs[j].bytes)))
                .collect();
            conflicts.sort();
            let (mut cursor, mut best) = (0, None::<(usize, usize)>);
            for (off, sz) in conflicts {
                if off >= cursor && off - cursor >= size && best.is_none_or(|(g, _)| off - cursor < g) {
                    best = Some((off - cursor, cursor));
                }
                cursor = cursor.max(off + sz);
            }
            offsets[i] = best.map(|(_, o)| o).unwrap_or(cursor);
            placed.push(i);
        }
        offsets
    }

    #[test]
    fn indexed_conflicts_give_the_same_placement_as_a_full_scan() {
        let mut seed = 99u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..100 {
            let bufs: Vec<Interval> = (0..60)
                .map(|_| {
                    let def = (next() % 40) as usize;
                    Interval { bytes: (next() % 3000) as usize + 1, def, last: def + (next() % 12) as usize }
                })
                .collect();
            let p = place(&bufs);
            check_no_overlap(&bufs, &p);
            assert_eq!(p.offsets, place_by_scan(&bufs));
        }
    }

    /// Issue 11: placement scanned every placed buffer per buffer (quadratic). A 200k-buffer chain
    /// (plus outputs live to the end) must place in well under a second; the bound is generous
    /// for a loaded debug build.
    #[test]
    fn long_chains_place_in_near_linear_time() {
        let n = 200_000;
        let mut bufs: Vec<Interval> = (0..n).map(|i| Interval { bytes: 4096, def: i, last: i + 1 }).collect();
        bufs.extend((0..8).map(|i| Interval { bytes: 64, def: i * 1000, last: n + 1 }));
        let t = std::time::Instant::now();
        let p = place(&bufs);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(p.peak, 2 * 4096 + 8 * 64);
        assert!(secs < 20.0, "placing {n} chained buffers took {secs:.1} s");
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
