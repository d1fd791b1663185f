//! kiln's own sgemm for a constant right operand: B is packed once, when the model is compiled,
//! into column panels of [`NR`] floats ([`PackedB`]); each call packs row blocks of A and runs an
//! `MR×NR` register-tiled micro-kernel (BLIS/GotoBLAS structure, loops outermost first):
//!
//! ```text
//! rows of the caller's range, MC at a time        (A block: MC×KC floats, 72 KiB, stays in L2)
//!   k, KC at a time                                (A block packed here, MR-row panels)
//!     column panels of the caller's range          (B micro-panel: KC×NR, 16 KiB, stays in L1)
//!       MR-row panels of the A block → micro-kernel (6×16: 12 accumulators in registers)
//!   after(rows) — the caller's epilogue on the rows just finished, while they are in cache
//! ```
//!
//! B is never repacked, so threads split rows (or, for few rows, column panels) of one call and
//! share the packed B read-only. Each C element is reduced in the same order (KC blocks in turn,
//! k ascending inside) whatever the split, so results do not depend on the thread count.
//!
//! Kernels: `avx512.rs` (AVX-512, a 12×32 tile reading two adjacent 16-column panels),
//! `avx2.rs` (AVX2+FMA, 6×16) and a portable one below (any CPU, [`Isa::Generic`], 6×16). All
//! read the same packed B, so B's layout does not depend on the ISA the plan picks; the A panels
//! packed per call are as tall as the kernel's tile (`Kernel::mr`).

use crate::Isa;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod conv;
#[cfg(test)]
pub(crate) mod tests;

/// Rows of the AVX2 and portable micro-kernels' register tile (the AVX-512 one's is
/// `Kernel::mr`).
pub const MR: usize = 6;
/// The tallest register tile of any kernel (the AVX-512 one's 12 rows).
pub const MR_MAX: usize = 12;
/// Columns of the micro-kernel's register tile (two 8-float vectors): the packed panel width.
pub const NR: usize = 16;
/// Depth of one packed block: an A micro-panel (MR×KC) and a B micro-panel (KC×NR, 16 KiB) fit
/// L1 (32 KiB) together.
const KC: usize = 256;
/// Rows of one packed A block (MC×KC floats = 72 KiB, well inside the 512 KiB L2); a multiple of
/// every kernel's tile height.
const MC: usize = 72;
/// K blocks of one span: their packed A blocks (SB·MC·KC floats, 288 KiB) stay in L2 while each
/// column-panel group runs all of them, with its C tile in cache.
const SB: usize = 4;

/// A `k×n` matrix packed in column panels of [`NR`]: panel `p` holds columns `[p·NR, p·NR + NR)`
/// as `k` rows of `NR` floats, zero-padded past `n`. Any K block of a panel is contiguous.
#[derive(Debug, Clone)]
pub struct PackedB {
    pub k: usize,
    pub n: usize,
    data: Vec<f32>,
}

impl PackedB {
    /// Packs `B[kk][j] = b[kk·rs + j·cs]` (any strides: a transposed weight is packed from its
    /// plain copy). `Err` names what was wrong: an operand too short for its strides, or a packed
    /// copy that cannot be allocated.
    pub fn pack(b: &[f32], k: usize, n: usize, rs: usize, cs: usize) -> Result<PackedB, String> {
        if k > 0 && n > 0 {
            let last = (k - 1).checked_mul(rs).and_then(|r| (n - 1).checked_mul(cs).and_then(|c| r.checked_add(c)));
            if last.is_none_or(|l| l >= b.len()) {
                return Err(format!("a {k}×{n} operand with strides ({rs}, {cs}) does not fit its {} floats", b.len()));
            }
        }
        let panels = n.div_ceil(NR);
        let len = panels.checked_mul(k).and_then(|x| x.checked_mul(NR)).ok_or("packed operand size overflows")?;
        let mut data = Vec::new();
        data.try_reserve_exact(len).map_err(|_| format!("cannot allocate {} bytes for a packed operand", len * 4))?;
        data.resize(len, 0.0);
        for p in 0..panels {
            let cols = NR.min(n - p * NR);
            let panel = &mut data[p * k * NR..(p + 1) * k * NR];
            for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                for (j, x) in row[..cols].iter_mut().enumerate() {
                    *x = b[kk * rs + (p * NR + j) * cs];
                }
            }
        }
        Ok(PackedB { k, n, data })
    }

    /// [`PackedB::pack`] of an operand the caller gives up: when `b` is exactly a row-major `k×n`
    /// matrix or its transpose and `n` is a whole number of panels, it is rearranged in its own
    /// buffer, so that a weight never exists in both forms at once (issue 15: a model's largest
    /// weight was held twice while it was packed). Other layouts are packed into a new buffer.
    pub fn pack_owned(mut b: Vec<f32>, k: usize, n: usize, rs: usize, cs: usize) -> Result<PackedB, String> {
        if k == 0 || !n.is_multiple_of(NR) || k.checked_mul(n) != Some(b.len()) {
            return PackedB::pack(&b, k, n, rs, cs);
        }
        let panels = n / NR;
        if rs == 1 && cs == k {
            // B is Wᵀ for a row-major W[n][k]: panel p is the transpose of W's rows p·NR..(p+1)·NR,
            // which lie where the panel goes. Each is transposed through a copy of one panel.
            let mut scratch = Vec::new();
            scratch
                .try_reserve_exact(NR * k)
                .map_err(|_| format!("cannot allocate {} bytes to pack an operand", NR * k * 4))?;
            scratch.resize(NR * k, 0.0);
            for panel in b.chunks_exact_mut(NR * k) {
                scratch.copy_from_slice(panel);
                for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                    for (j, x) in row.iter_mut().enumerate() {
                        *x = scratch[j * k + kk];
                    }
                }
            }
        } else if rs == n && cs == 1 {
            // Row-major B: the NR-wide block (kk, p) at kk·panels + p goes to p·k + kk, a transpose
            // of a k×panels matrix of blocks, done by following each cycle of the permutation (one
            // bit per block marks those in place).
            let blocks = k * panels;
            let mut placed = vec![0u64; blocks.div_ceil(64)];
            for start in 0..blocks {
                if (placed[start / 64] >> (start % 64)) & 1 == 1 {
                    continue;
                }
                let mut first = [0.0f32; NR];
                first.copy_from_slice(&b[start * NR..(start + 1) * NR]);
                let mut to = start;
                loop {
                    placed[to / 64] |= 1 << (to % 64);
                    // The block that goes to `to` = p·k + kk comes from kk·panels + p.
                    let from = (to % k) * panels + to / k;
                    if from == start {
                        b[to * NR..(to + 1) * NR].copy_from_slice(&first);
                        break;
                    }
                    b.copy_within(from * NR..(from + 1) * NR, to * NR);
                    to = from;
                }
            }
        } else {
            return PackedB::pack(&b, k, n, rs, cs);
        }
        Ok(PackedB { k, n, data: b })
    }

    /// A packed operand of no rows or columns: a buffer for [`PackedB::repack_strided`].
    pub fn empty() -> PackedB {
        PackedB { k: 0, n: 0, data: Vec::new() }
    }

    /// Packs `B[kk][j] = b[kk·rs + j·cs]` (`k×n`, any strides) into this operand's own buffer,
    /// reusing its allocation: a right operand known only at run time, packed once and read by
    /// several calls of [`Product::run`] (attention's Kᵀ and V, packed once per head rather than
    /// once per block of query rows).
    ///
    /// # Safety
    /// `b` is valid for reads of every element `k×n` addresses through its strides.
    pub unsafe fn repack_strided(&mut self, b: *const f32, k: usize, n: usize, rs: isize, cs: isize) {
        // Every float is rewritten by the packing (padding columns as zeros).
        self.data.resize(n.div_ceil(NR) * k * NR, 0.0);
        // SAFETY: the buffer holds ⌈n/NR⌉·k·NR floats; B's elements are readable (caller).
        unsafe { pack_b_strided(&mut self.data, b, k, n, rs, cs) };
        (self.k, self.n) = (k, n);
    }

    /// Number of column panels.
    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

/// One product `C[m×n] = alpha·A[m×k]·B + beta·C` (beta only when `accumulate`), A and C in
/// element strides, B packed.
#[derive(Debug, Clone, Copy)]
pub struct Product {
    pub m: usize,
    pub a_rs: isize,
    pub a_cs: isize,
    pub c_rs: isize,
    pub alpha: f32,
    pub beta: f32,
    pub accumulate: bool,
}

/// Whether a product splits across `threads` workers by rows (each worker reads all of B, and
/// the epilogue runs per row block) rather than by column panels (each worker reads its share
/// of B): rows when there are enough row panels for every worker, unless the product is so wide
/// that B dwarfs A (a 64-row lm_head over 50k columns streams a 154 MB weight: once, not once
/// per worker).
/// Rows of the register tile the packed GEMM uses for `isa` on this CPU: threads split rows in
/// whole tiles of this height.
pub fn tile_rows(isa: Isa) -> usize {
    Kernel::for_isa(isa).mr()
}

pub fn split_rows(m: usize, n: usize, threads: usize) -> bool {
    threads <= 1 || (m.div_ceil(MR) >= threads * 4 && n < 64 * m)
}

impl Product {
    /// Computes rows `rows` and column panels `panels` of C; calls `after(r0, r1)` each time rows
    /// `[r0, r1)` of those panels are final.
    ///
    /// # Safety
    /// `a` is valid for reads of every element `m×k` addresses through its strides, `c` for reads
    /// and writes of every element of rows `rows` and columns `[0, n)`, C overlaps neither A nor
    /// `b`, and no other thread writes those elements meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run(
        &self,
        isa: Isa,
        a: *const f32,
        b: &PackedB,
        c: *mut f32,
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        after: &mut dyn FnMut(usize, usize),
    ) {
        let (k, n) = (b.k, b.n);
        let kernel = Kernel::for_isa(isa);
        let (mr, wide) = (kernel.mr(), kernel.panels_per_call());
        APACK.with(|cell| {
            let mut apack = cell.take();
            apack.resize(SB * MC * KC, 0.0);
            let mut r0 = rows.start;
            while r0 < rows.end {
                let mc = MC.min(rows.end - r0);
                // K in spans of up to SB blocks of KC, each span's A blocks packed together; per
                // column-panel group the span's blocks run in turn, so the C tile stays in cache
                // across them (a 72-row block of a 3072-column C is 884 KiB: re-read from L3 per
                // K block, it cost a 128×768×3072 product 10% of its time).
                // k = 0 still runs one (empty) block, which writes C = beta·C or 0.
                let mut s0 = 0;
                loop {
                    // The span's K blocks (k0, kc): at least one, an empty one when k = 0.
                    let mut span = [(0usize, 0usize); SB];
                    let nb = (k - s0).div_ceil(KC).clamp(1, SB);
                    for (j, blk) in span[..nb].iter_mut().enumerate() {
                        let k0 = s0 + j * KC;
                        *blk = (k0, KC.min(k - k0));
                    }
                    let blocks = &span[..nb];
                    for (j, &(k0, kc)) in blocks.iter().enumerate() {
                        // SAFETY: rows [r0, r0+mc) and columns [k0, k0+kc) are inside A (caller).
                        unsafe {
                            let dst = &mut apack[j * MC * KC..];
                            pack_a(dst, a, self.a_rs, self.a_cs, r0, mc, k0, kc, mr, kernel != Kernel::Generic)
                        };
                    }
                    // `wide` adjacent panels per kernel call (the AVX-512 kernel's 32 columns).
                    let mut p = panels.start;
                    while p < panels.end {
                        let np = wide.min(panels.end - p);
                        let cols = (np * NR).min(n - p * NR);
                        for (j, &(k0, kc)) in blocks.iter().enumerate() {
                            let (beta, load_c) = if k0 == 0 { (self.beta, self.accumulate) } else { (1.0, true) };
                            let start = p * k * NR + k0 * NR;
                            // The last panel's rows [k0, k0 + kc): the call reads up to its end.
                            let bp = &b.data[start..(p + np - 1) * k * NR + (k0 + kc) * NR];
                            for i in 0..mc.div_ceil(mr) {
                                let ap = &apack[j * MC * KC + i * mr * kc..][..mr * kc];
                                let tile = Tile {
                                    kc,
                                    rows: mr.min(mc - i * mr),
                                    cols,
                                    alpha: self.alpha,
                                    beta,
                                    load_c,
                                    c_rs: self.c_rs,
                                    b_next: (k * NR) as isize,
                                    mr,
                                    bias: std::ptr::null(),
                                };
                                // SAFETY: the tile's rows and columns are inside C's rows `rows`
                                // and columns [0, n) (caller); `ap` holds kc·mr floats, and `bp`
                                // the kc rows of each of the np panels, k·NR floats apart.
                                unsafe {
                                    let cp = c.offset((r0 + i * mr) as isize * self.c_rs).add(p * NR);
                                    kernel.run(&tile, ap.as_ptr(), bp.as_ptr(), cp);
                                }
                            }
                        }
                        p += np;
                    }
                    s0 += SB * KC;
                    if s0 >= k {
                        break;
                    }
                }
                after(r0, r0 + mc);
                r0 += mc;
            }
            cell.set(apack);
        });
    }
}

impl Product {
    /// [`Product::run`] with a B that is not known until run time (a product of two
    /// activations): `B[kk][j] = b[kk·b_rs + j·b_cs]`, `k×n`, is packed per call into this
    /// thread's scratch (its own, so concurrent runs of one model never share it; reused across
    /// calls), then every column panel of rows `rows` runs as in [`Product::run`], `after`
    /// called per row block while it is in cache.
    ///
    /// # Safety
    /// As [`Product::run`] for A and C (C holds `n` columns), and `b` is valid for reads of
    /// every element `k×n` addresses through its strides.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_strided(
        &self,
        isa: Isa,
        a: *const f32,
        b: *const f32,
        [k, n]: [usize; 2],
        [b_rs, b_cs]: [isize; 2],
        c: *mut f32,
        rows: std::ops::Range<usize>,
        after: &mut dyn FnMut(usize, usize),
    ) {
        BPACK.with(|cell| {
            let mut data = cell.take();
            data.resize(n.div_ceil(NR) * k * NR, 0.0);
            // SAFETY: `b` addresses k×n elements through its strides (caller).
            unsafe { pack_b_strided(&mut data, b, k, n, b_rs, b_cs) };
            let packed = PackedB { k, n, data };
            let panels = packed.panels();
            // SAFETY: the caller's contract, with B packed above.
            unsafe { self.run(isa, a, &packed, c, rows, 0..panels, after) };
            // Kept for the next call unless it is large: a thread does not hold a big B's copy
            // for its lifetime (a model's arena is per run; this is per thread).
            if packed.data.capacity() <= BPACK_KEEP {
                cell.set(packed.data);
            }
        });
    }
}

/// Largest packed B (floats, 4 MiB) a thread keeps between calls of [`Product::run_strided`].
const BPACK_KEEP: usize = 1 << 20;

/// Whether a product of two activations runs on kiln's micro-kernels
/// ([`Product::run_strided`]) rather than the `gemm` crate: not when it is at most one 16-column
/// panel wide (A is packed for 2·16 flops per element it holds, which cost attention's P·V
/// ([8, 128, 128]·[8, 128, 16]) 57 µs against the `gemm` crate's 41 on Zen 4), nor for fewer than
/// 4 rows (a row or two of A per B packed).
pub fn strided_pays(m: usize, n: usize) -> bool {
    n > NR && m >= 4
}

/// Packs `B[kk][j] = b[kk·rs + j·cs]` (`k×n`) into `dst` as [`PackedB`] lays it out, columns past
/// `n` zero.
///
/// # Safety
/// `dst` holds `⌈n/NR⌉·k·NR` floats; every addressed element of B is readable.
unsafe fn pack_b_strided(dst: &mut [f32], b: *const f32, k: usize, n: usize, rs: isize, cs: isize) {
    for p in 0..n.div_ceil(NR) {
        let cols = NR.min(n - p * NR);
        let panel = &mut dst[p * k * NR..(p + 1) * k * NR];
        // SAFETY (all reads below): row kk < k and column p·NR + j < n of B (caller).
        if cs == 1 {
            for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                let src = unsafe { b.offset(kk as isize * rs + (p * NR) as isize) };
                // A whole panel row as one fixed-size copy (vector moves, where a slice copy of
                // unknown length is a memmove call per 64 bytes: 5% of a BERT attention head).
                if let (Ok(row), true) = (<&mut [f32; NR]>::try_from(&mut *row), cols == NR) {
                    *row = unsafe { std::ptr::read_unaligned(src as *const [f32; NR]) };
                    continue;
                }
                let src = unsafe { std::slice::from_raw_parts(src, cols) };
                row[..cols].copy_from_slice(src);
                row[cols..].fill(0.0);
            }
        } else {
            // A transposed B (columns contiguous when rs = 1): column by column, reading along k.
            for j in 0..NR {
                if j >= cols {
                    panel.iter_mut().skip(j).step_by(NR).for_each(|x| *x = 0.0);
                    continue;
                }
                let col = unsafe { b.offset((p * NR + j) as isize * cs) };
                for (kk, x) in panel.iter_mut().skip(j).step_by(NR).enumerate() {
                    *x = unsafe { *col.offset(kk as isize * rs) };
                }
            }
        }
    }
}

thread_local! {
    /// Each thread's packed-A blocks (SB of them), reused across calls (288 KiB).
    static APACK: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// Each thread's B of a product of two activations, packed per call
    /// ([`Product::run_strided`]), reused across calls.
    static BPACK: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Packs rows `[r0, r0+mc)`, columns `[k0, k0+kc)` of A into `mr`-row panels: panel `i` holds
/// `kc` columns of `mr` floats (rows past `mc` zero), at `i·mr·kc`.
///
/// `simd`: the CPU has AVX (the kernel is an x86 one).
///
/// # Safety
/// Every addressed element of A is readable.
#[allow(clippy::too_many_arguments)]
unsafe fn pack_a(
    dst: &mut [f32],
    a: *const f32,
    rs: isize,
    cs: isize,
    r0: usize,
    mc: usize,
    k0: usize,
    kc: usize,
    mr: usize,
    simd: bool,
) {
    if kc == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if cs == 1 && simd && matches!(mr, 6 | 8 | 12) {
        // SAFETY: the caller's contract; `simd` only for an x86 kernel, whose CPU has AVX2.
        unsafe { pack_a_rows_avx(dst, a, rs, r0, mc, k0, kc, mr) };
        return;
    }
    let _ = simd;
    if cs == 1 {
        // SAFETY: the caller's contract.
        match mr {
            6 => unsafe { pack_a_rows::<6>(dst, a, rs, r0, mc, k0, kc) },
            8 => unsafe { pack_a_rows::<8>(dst, a, rs, r0, mc, k0, kc) },
            12 => unsafe { pack_a_rows::<12>(dst, a, rs, r0, mc, k0, kc) },
            _ => unsafe { pack_a_rows_any(dst, a, rs, r0, mc, k0, kc, mr) },
        }
        return;
    }
    for (i, panel) in dst[..mc.div_ceil(mr) * mr * kc].chunks_exact_mut(mr * kc).enumerate() {
        let rows = mr.min(mc - i * mr);
        for r in 0..mr {
            if r >= rows {
                panel.iter_mut().skip(r).step_by(mr).for_each(|x| *x = 0.0);
                continue;
            }
            // SAFETY: row r0 + i·mr + r < m and columns < k (caller).
            let row = unsafe { a.offset((r0 + i * mr + r) as isize * rs + k0 as isize * cs) };
            for (p, x) in panel.iter_mut().skip(r).step_by(mr).enumerate() {
                // SAFETY: as above.
                *x = unsafe { *row.offset(p as isize * cs) };
            }
        }
    }
}

/// [`pack_a`] of an A with contiguous rows (`cs` = 1), `MR` rows per panel: each panel written
/// in order, one k column of its `MR` rows at a time, reading the rows as `MR` sequential
/// streams (the strided-write order cost a product of two activations with N = 16 more to pack
/// A than to multiply).
///
/// # Safety
/// As [`pack_a`], with `cs` = 1.
unsafe fn pack_a_rows<const MR: usize>(
    dst: &mut [f32],
    a: *const f32,
    rs: isize,
    r0: usize,
    mc: usize,
    k0: usize,
    kc: usize,
) {
    for (i, panel) in dst[..mc.div_ceil(MR) * MR * kc].chunks_exact_mut(MR * kc).enumerate() {
        let rows = MR.min(mc - i * MR);
        if rows < MR {
            // SAFETY: as above, for the panel's `rows` rows.
            unsafe { pack_a_rows_any(panel, a, rs, r0 + i * MR, rows, k0, kc, MR) };
            continue;
        }
        // SAFETY: rows r0 + i·MR + r < m (r < MR ≤ rows left) and columns [k0, k0 + kc) < k.
        let src: [&[f32]; MR] = std::array::from_fn(|r| unsafe {
            std::slice::from_raw_parts(a.offset((r0 + i * MR + r) as isize * rs + k0 as isize), kc)
        });
        for (p, col) in panel.chunks_exact_mut(MR).enumerate() {
            for (x, row) in col.iter_mut().zip(&src) {
                *x = row[p];
            }
        }
    }
}

/// [`pack_a_rows`] with AVX for panels of 6, 8 or 12 rows: 8 k columns of 4 rows at a time
/// are loaded as 4 vectors and transposed in registers into 8 stores of 4 floats (a panel of 6
/// rows takes rows 0–3 and 2–5, writing rows 2 and 3 twice with the same values; a short panel's
/// rows past the end are zero); the last `kc % 8` columns and panels of fewer than 4 rows are
/// copied one float at a time.
///
/// # Safety
/// As [`pack_a`], with `cs` = 1, `mr` ∈ {6, 8, 12}, and the CPU has AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_a_rows_avx(
    dst: &mut [f32],
    a: *const f32,
    rs: isize,
    r0: usize,
    mc: usize,
    k0: usize,
    kc: usize,
    mr: usize,
) {
    use std::arch::x86_64::*;
    let k8 = kc / 8 * 8;
    for (i, panel) in dst[..mc.div_ceil(mr) * mr * kc].chunks_exact_mut(mr * kc).enumerate() {
        let rows = mr.min(mc - i * mr);
        if rows < 4 {
            // SAFETY: as above, for the panel's `rows` rows.
            unsafe { pack_a_rows_any(panel, a, rs, r0 + i * mr, rows, k0, kc, mr) };
            continue;
        }
        if rows < mr {
            // The rows past `rows` are zero: the whole panel cleared at once (a fill per k column
            // is a memset call per column).
            panel.fill(0.0);
        }
        // Groups of 4 rows at 0, 4, … and a last one ending at `rows` (overlapping the one
        // before when 4 does not divide `rows`).
        let groups = (0..rows / 4).map(|q| 4 * q).chain((!rows.is_multiple_of(4)).then_some(rows - 4));
        // SAFETY: row r0 + i·mr + r (r < rows left) and columns [k0, k0 + kc) are inside A.
        let row = |r: usize| unsafe { a.offset((r0 + i * mr + r) as isize * rs + k0 as isize) };
        let out = panel.as_mut_ptr();
        for g in groups {
            let (s0, s1, s2, s3) = (row(g), row(g + 1), row(g + 2), row(g + 3));
            let mut p = 0;
            while p < k8 {
                // SAFETY: columns p..p + 8 < kc of the four rows are inside A; the stores go to
                // k columns p..p + 8 (< kc), rows g..g + 4 (≤ mr) of this panel.
                unsafe {
                    let (r0v, r1v) = (_mm256_loadu_ps(s0.add(p)), _mm256_loadu_ps(s1.add(p)));
                    let (r2v, r3v) = (_mm256_loadu_ps(s2.add(p)), _mm256_loadu_ps(s3.add(p)));
                    let (t0, t1) = (_mm256_unpacklo_ps(r0v, r1v), _mm256_unpackhi_ps(r0v, r1v));
                    let (t2, t3) = (_mm256_unpacklo_ps(r2v, r3v), _mm256_unpackhi_ps(r2v, r3v));
                    // Columns (0, 4), (1, 5), (2, 6), (3, 7) of the 8, one per 128-bit half.
                    let u = [
                        _mm256_shuffle_ps::<0x44>(t0, t2),
                        _mm256_shuffle_ps::<0xEE>(t0, t2),
                        _mm256_shuffle_ps::<0x44>(t1, t3),
                        _mm256_shuffle_ps::<0xEE>(t1, t3),
                    ];
                    for (c, v) in u.iter().enumerate() {
                        _mm_storeu_ps(out.add((p + c) * mr + g), _mm256_castps256_ps128(*v));
                        _mm_storeu_ps(out.add((p + c + 4) * mr + g), _mm256_extractf128_ps::<1>(*v));
                    }
                }
                p += 8;
            }
        }
        for p in k8..kc {
            for r in 0..rows {
                // SAFETY: as above.
                panel[p * mr + r] = unsafe { *row(r).add(p) };
            }
        }
    }
}

/// [`pack_a_rows`] for any panel height, rows past `mc` zero.
///
/// # Safety
/// As [`pack_a`], with `cs` = 1.
#[allow(clippy::too_many_arguments)]
unsafe fn pack_a_rows_any(
    dst: &mut [f32],
    a: *const f32,
    rs: isize,
    r0: usize,
    mc: usize,
    k0: usize,
    kc: usize,
    mr: usize,
) {
    for (i, panel) in dst[..mc.div_ceil(mr) * mr * kc].chunks_exact_mut(mr * kc).enumerate() {
        let rows = mr.min(mc - i * mr);
        for r in 0..mr {
            if r >= rows {
                panel.iter_mut().skip(r).step_by(mr).for_each(|x| *x = 0.0);
                continue;
            }
            // SAFETY: row r0 + i·mr + r < m and columns [k0, k0 + kc) < k (caller).
            let row =
                unsafe { std::slice::from_raw_parts(a.offset((r0 + i * mr + r) as isize * rs + k0 as isize), kc) };
            for (x, &v) in panel[r..].iter_mut().step_by(mr).zip(row) {
                *x = v;
            }
        }
    }
}

#[derive(Clone, Copy)]
/// One micro-kernel call: a `rows×cols` tile (≤ `mr`×(NR·panels per call)) of C over depth `kc`.
pub(crate) struct Tile {
    pub kc: usize,
    pub rows: usize,
    pub cols: usize,
    pub alpha: f32,
    pub beta: f32,
    /// Whether C's old value is read (`beta·C` added); otherwise C is overwritten.
    pub load_c: bool,
    pub c_rs: isize,
    /// Floats from B row p of the tile's first 16 columns to the same row of its next 16 (a
    /// kernel reading several panels per call: columns past NR).
    pub b_next: isize,
    /// Floats per k step of the A panel (its height, ≥ rows): the kernel's [`Kernel::mr`].
    pub mr: usize,
    /// Null, or (only read when `!load_c`) one float per tile row added to `alpha·acc` as C is
    /// stored: a conv's bias without a pass that first fills C with it. `alpha·acc + bias[i]` is
    /// rounded once, as `fma(1, C = bias, alpha·acc)` was, so the bits are those of filling C.
    pub bias: *const f32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kernel {
    Generic,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    fn for_isa(isa: Isa) -> Kernel {
        match isa {
            Isa::Generic => Kernel::Generic,
            // AVX-512 CPUs have AVX2+FMA; `Isa` values come from `Isa::supported`, so the CPU
            // has the features (checked again here, as the kernel is unsafe without them).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if std::is_x86_feature_detected!("avx512f") => Kernel::Avx512,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma | Isa::Avx512
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") =>
            {
                Kernel::Avx2
            }
            _ => Kernel::Generic,
        }
    }

    /// Rows of the register tile: the height of the A panels it reads.
    fn mr(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512::MR512,
            _ => MR,
        }
    }

    /// The A panel height for a conv's `m` output channels (packed once, at compile time): the
    /// AVX-512 kernel takes 8-row panels where 12-row ones would leave more rows idle (64
    /// channels: 8 panels of 8 rather than 6 of 12, the last a third full).
    fn conv_mr(self, m: usize) -> usize {
        let mr = self.mr();
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx512 && m.div_ceil(8) * 8 < m.div_ceil(mr) * mr {
            return 8;
        }
        let _ = m;
        mr
    }

    /// Adjacent 16-column B panels one call covers.
    fn panels_per_call(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512::W512,
            _ => 1,
        }
    }

    /// # Safety
    /// `a` holds `kc·mr` floats (`t.mr` = [`Kernel::mr`], or any height for the portable kernel),
    /// B row p is NR floats at `b + p·NR` (and, past NR columns, `b_next` further), and `c` holds
    /// the tile's rows (stride `c_rs`) and columns.
    unsafe fn run(self, t: &Tile, a: *const f32, b: *const f32, c: *mut f32) {
        debug_assert!(t.mr == self.mr() || self == Kernel::Generic || (t.mr == 8 && t.rows <= 8));
        debug_assert!(t.cols <= NR * self.panels_per_call() && t.rows <= t.mr);
        match self {
            // SAFETY: per this function's contract.
            Kernel::Generic => unsafe { generic_dispatch(t, a, b, c) },
            // SAFETY: per this function's contract; the CPU has AVX2+FMA (checked in for_isa).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::dispatch(t, a, b, c) },
            // SAFETY: per this function's contract; the CPU has AVX-512 F (checked in for_isa).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { avx512::dispatch(t, a, b, c) },
        }
    }
}

impl Kernel {
    /// Whether [`Kernel::run_indirect`] exists for this kernel (the AVX2 and AVX-512 ones).
    fn has_indirect(self) -> bool {
        !matches!(self, Kernel::Generic)
    }

    /// The tile with B row p read at `b + offs[p]` (16 floats, and past NR columns 16 more at
    /// `b + b_next + offs[p]`) rather than from a packed panel.
    ///
    /// # Safety
    /// As [`Kernel::run`]; `offs` holds `kc` offsets, each with the tile's B floats readable
    /// there; only when [`Kernel::has_indirect`].
    unsafe fn run_indirect(self, t: &Tile, a: *const f32, b: *const f32, offs: *const usize, c: *mut f32) {
        match self {
            Kernel::Generic => unreachable!("the portable kernel has no indirect form (has_indirect)"),
            // SAFETY: per this function's contract; the CPU has AVX2+FMA (checked in for_isa).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::dispatch_indirect(t, a, b, offs, c) },
            // SAFETY: per this function's contract; the CPU has AVX-512 F (checked in for_isa).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { avx512::dispatch_indirect(t, a, b, offs, c) },
        }
    }
}

/// The portable kernel, one instance per row count so that the accumulator loops unroll (up to
/// 6 rows; a taller A panel — weights packed for the AVX-512 kernel run on the portable one — is
/// computed 6 rows at a time).
unsafe fn generic_dispatch(t: &Tile, a: *const f32, b: *const f32, c: *mut f32) {
    let mut i = 0;
    while i < t.rows {
        let part = Tile { rows: (t.rows - i).min(MR), ..*t };
        // SAFETY: per the caller's contract: rows [i, i + part.rows) of the tile.
        unsafe {
            let (a, c) = (a.add(i), c.offset(i as isize * t.c_rs));
            let part = Tile { bias: if t.bias.is_null() { t.bias } else { t.bias.add(i) }, ..part };
            let part = &part;
            match part.rows {
                1 => generic::<1>(part, a, b, c),
                2 => generic::<2>(part, a, b, c),
                3 => generic::<3>(part, a, b, c),
                4 => generic::<4>(part, a, b, c),
                5 => generic::<5>(part, a, b, c),
                _ => generic::<6>(part, a, b, c),
            }
        }
        i += MR;
    }
}

unsafe fn generic<const R: usize>(t: &Tile, a: *const f32, b: *const f32, c: *mut f32) {
    let mut acc = [[0.0f32; NR]; R];
    // SAFETY: per the caller's contract (A's last column is read up to row R).
    let b = unsafe { std::slice::from_raw_parts(b, t.kc * NR) };
    let step = |acc: &mut [[f32; NR]; R], ap: &[f32], bp: &[f32]| {
        for (row, &av) in acc.iter_mut().zip(ap) {
            for (x, &bv) in row.iter_mut().zip(bp) {
                // Not mul_add: without FMA hardware that is a libm call per element.
                *x += av * bv;
            }
        }
    };
    if t.mr == MR {
        // The packed GEMM's own panels (MR high, padded): a fixed stride, which vectorises.
        // SAFETY: as above; the panel holds kc·MR floats.
        let a = unsafe { std::slice::from_raw_parts(a, t.kc * MR) };
        for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
            step(&mut acc, ap, bp);
        }
    } else {
        // SAFETY: as above.
        let a = unsafe { std::slice::from_raw_parts(a, if t.kc == 0 { 0 } else { (t.kc - 1) * t.mr + R }) };
        for (ap, bp) in a.chunks(t.mr).zip(b.chunks_exact(NR)) {
            step(&mut acc, ap, bp);
        }
    }
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: row i < t.rows and columns < t.cols are inside C (caller).
        let cr = unsafe { std::slice::from_raw_parts_mut(c.offset(i as isize * t.c_rs), t.cols) };
        // SAFETY: a non-null bias holds one float per tile row (Tile::bias).
        let bias = if t.bias.is_null() { None } else { Some(unsafe { *t.bias.add(i) }) };
        for (d, &x) in cr.iter_mut().zip(row) {
            *d = match (t.load_c, bias) {
                (true, _) => t.alpha * x + t.beta * *d,
                (false, Some(b)) => t.alpha * x + b,
                (false, None) => t.alpha * x,
            };
        }
    }
}
