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
//! Kernels: `avx2.rs` (AVX2+FMA, 256-bit) and a portable one below (any CPU, [`Isa::Generic`]);
//! both use the same packed layout, so the layout does not depend on the ISA the plan picks.
//! An AVX-512 CPU runs the AVX2 kernel: there is no 512-bit kernel yet (this machine cannot test
//! one).

use crate::Isa;

#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod conv;
#[cfg(test)]
pub(crate) mod tests;

/// Rows of the micro-kernel's register tile.
pub const MR: usize = 6;
/// Columns of the micro-kernel's register tile (two 8-float vectors): the packed panel width.
pub const NR: usize = 16;
/// Depth of one packed block: an A micro-panel (MR×KC) and a B micro-panel (KC×NR, 16 KiB) fit
/// L1 (32 KiB) together.
const KC: usize = 256;
/// Rows of one packed A block (MC×KC floats = 72 KiB, well inside the 512 KiB L2).
const MC: usize = 72;

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
        APACK.with(|cell| {
            let mut apack = cell.take();
            apack.resize(MC * KC, 0.0);
            let mut r0 = rows.start;
            while r0 < rows.end {
                let mc = MC.min(rows.end - r0);
                // k = 0 still runs one (empty) block, which writes C = beta·C or 0.
                let mut k0 = 0;
                loop {
                    let kc = KC.min(k - k0);
                    // SAFETY: rows [r0, r0+mc) and columns [k0, k0+kc) are inside A (caller).
                    unsafe { pack_a(&mut apack, a, self.a_rs, self.a_cs, r0, mc, k0, kc) };
                    let (beta, load_c) = if k0 == 0 { (self.beta, self.accumulate) } else { (1.0, true) };
                    for p in panels.clone() {
                        let cols = NR.min(n - p * NR);
                        let bp = &b.data[p * k * NR + k0 * NR..p * k * NR + (k0 + kc) * NR];
                        for i in 0..mc.div_ceil(MR) {
                            let ap = &apack[i * MR * kc..(i + 1) * MR * kc];
                            let tile = Tile {
                                kc,
                                rows: MR.min(mc - i * MR),
                                cols,
                                alpha: self.alpha,
                                beta,
                                load_c,
                                c_rs: self.c_rs,
                            };
                            // SAFETY: the tile's rows and columns are inside C's rows `rows` and
                            // columns [0, n) (caller); `ap` and `bp` hold kc·MR and kc·NR floats.
                            unsafe {
                                let cp = c.offset((r0 + i * MR) as isize * self.c_rs).add(p * NR);
                                kernel.run(&tile, ap.as_ptr(), bp.as_ptr(), cp);
                            }
                        }
                    }
                    k0 += kc;
                    if k0 >= k {
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

thread_local! {
    /// Each thread's packed-A block, reused across calls (72 KiB).
    static APACK: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Packs rows `[r0, r0+mc)`, columns `[k0, k0+kc)` of A into MR-row panels: panel `i` holds
/// `kc` columns of MR floats (rows past `mc` zero), at `i·MR·kc`.
///
/// # Safety
/// Every addressed element of A is readable.
#[allow(clippy::too_many_arguments)]
unsafe fn pack_a(dst: &mut [f32], a: *const f32, rs: isize, cs: isize, r0: usize, mc: usize, k0: usize, kc: usize) {
    if kc == 0 {
        return;
    }
    for (i, panel) in dst[..mc.div_ceil(MR) * MR * kc].chunks_exact_mut(MR * kc).enumerate() {
        let rows = MR.min(mc - i * MR);
        for r in 0..MR {
            if r >= rows {
                panel.iter_mut().skip(r).step_by(MR).for_each(|x| *x = 0.0);
                continue;
            }
            // SAFETY: row r0 + i·MR + r < m and columns < k (caller).
            let row = unsafe { a.offset((r0 + i * MR + r) as isize * rs + k0 as isize * cs) };
            for (p, x) in panel.iter_mut().skip(r).step_by(MR).enumerate() {
                // SAFETY: as above.
                *x = unsafe { *row.offset(p as isize * cs) };
            }
        }
    }
}

/// One micro-kernel call: a `rows×cols` tile (≤ MR×NR) of C over depth `kc`.
pub(crate) struct Tile {
    pub kc: usize,
    pub rows: usize,
    pub cols: usize,
    pub alpha: f32,
    pub beta: f32,
    /// Whether C's old value is read (`beta·C` added); otherwise C is overwritten.
    pub load_c: bool,
    pub c_rs: isize,
}

#[derive(Clone, Copy)]
enum Kernel {
    Generic,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    fn for_isa(isa: Isa) -> Kernel {
        match isa {
            Isa::Generic => Kernel::Generic,
            // AVX-512 CPUs have AVX2+FMA; `Isa` values come from `Isa::supported`, so the CPU
            // has the features (checked again here, as the kernel is unsafe without them).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma | Isa::Avx512
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") =>
            {
                Kernel::Avx2
            }
            _ => Kernel::Generic,
        }
    }

    /// # Safety
    /// `a` holds `kc·MR` floats, `b` `kc·NR`, and `c` the tile's rows (stride `c_rs`) and columns.
    unsafe fn run(self, t: &Tile, a: *const f32, b: *const f32, c: *mut f32) {
        match self {
            // SAFETY: per this function's contract.
            Kernel::Generic => unsafe { generic_dispatch(t, a, b, c) },
            // SAFETY: per this function's contract; the CPU has AVX2+FMA (checked in for_isa).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::dispatch(t, a, b, c) },
        }
    }
}

impl Kernel {
    /// Whether [`Kernel::run_indirect`] exists for this kernel (the AVX2 one).
    fn has_indirect(self) -> bool {
        !matches!(self, Kernel::Generic)
    }

    /// The tile with B row p read at `b + offs[p]` (16 floats) rather than from a packed panel.
    ///
    /// # Safety
    /// As [`Kernel::run`]; `offs` holds `kc` offsets, each with 16 readable floats at
    /// `b + offset`; only when [`Kernel::has_indirect`].
    unsafe fn run_indirect(self, t: &Tile, a: *const f32, b: *const f32, offs: *const usize, c: *mut f32) {
        match self {
            Kernel::Generic => unreachable!("the portable kernel has no indirect form (has_indirect)"),
            // SAFETY: per this function's contract; the CPU has AVX2+FMA (checked in for_isa).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::dispatch_indirect(t, a, b, offs, c) },
        }
    }
}

/// The portable kernel, one instance per row count so that the accumulator loops unroll.
unsafe fn generic_dispatch(t: &Tile, a: *const f32, b: *const f32, c: *mut f32) {
    // SAFETY: per the caller's contract.
    unsafe {
        match t.rows {
            1 => generic::<1>(t, a, b, c),
            2 => generic::<2>(t, a, b, c),
            3 => generic::<3>(t, a, b, c),
            4 => generic::<4>(t, a, b, c),
            5 => generic::<5>(t, a, b, c),
            _ => generic::<6>(t, a, b, c),
        }
    }
}

unsafe fn generic<const R: usize>(t: &Tile, a: *const f32, b: *const f32, c: *mut f32) {
    // SAFETY: per the caller's contract.
    let (a, b) = unsafe { (std::slice::from_raw_parts(a, t.kc * MR), std::slice::from_raw_parts(b, t.kc * NR)) };
    let mut acc = [[0.0f32; NR]; R];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (row, &av) in acc.iter_mut().zip(ap) {
            for (x, &bv) in row.iter_mut().zip(bp) {
                // Not mul_add: without FMA hardware that is a libm call per element.
                *x += av * bv;
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: row i < t.rows and columns < t.cols are inside C (caller).
        let cr = unsafe { std::slice::from_raw_parts_mut(c.offset(i as isize * t.c_rs), t.cols) };
        for (d, &x) in cr.iter_mut().zip(row) {
            *d = if t.load_c { t.alpha * x + t.beta * *d } else { t.alpha * x };
        }
    }
}
