//! Dense convolution as an implicit GEMM on weights packed at compile time: per (image, group)
//! the output `[M, OH·OW]` is `W[M × C·kh·kw] · col[C·kh·kw × OH·OW]`, with the weights as the
//! left operand, packed once into the micro-kernel's MR-row panels ([`PackedConv::new`]), and the
//! im2col matrix never materialised: each KC×(block of output rows) piece of it is gathered
//! straight from the NCHW input into NR-pixel panels (an L2-sized scratch) just before the
//! micro-kernels read it. C rows are output channels and C columns output pixels, so tiles are
//! stored straight into NCHW (16 contiguous pixels per row), and the same micro-kernels as the
//! packed GEMM run (AVX2+FMA or portable, by `Isa`).
//!
//! ```text
//! unit = (image, group, block of whole output rows, part of the channel panels)
//!   bias → C block (or C is overwritten by the first K block)
//!   k, KC at a time:  gather col[k0.., block pixels] into NR-wide panels   (≤ 192 KiB, L2)
//!     MR-channel panels of the part (A micro-panel MR×KC, 6 KiB, stays in L1)
//!       NR-pixel panels of the block → micro-kernel
//!   after(unit) — the fused epilogue on the block's rows, while they are in cache
//! ```
//!
//! Each output is reduced in the same order (k ascending) whatever the split, so results do not
//! depend on the thread count.

use super::{Kernel, MR, NR, Tile};
use crate::Isa;
use crate::host::Im2Col;

/// Target pixels per block (rounded to whole output rows): a KC-deep gathered block of 192
/// pixels is 192 KiB, inside the 512 KiB L2 with the weights' KC slice beside it.
const BLOCK_PIXELS: usize = 192;
/// Deepest K block (as the packed GEMM's).
const KC: usize = 256;

/// One tap of the kernel window: where row `k` of the im2col matrix reads the input.
#[derive(Debug, Clone, Copy)]
struct Tap {
    /// Offset of the tap's input channel plane.
    plane: usize,
    /// Input row = output row · stride + dy.
    dy: isize,
    /// Input column = output column · stride + dx.
    dx: isize,
    /// Output columns `[first, end)` read inside the input row (the rest read padding).
    first: usize,
    end: usize,
}

/// A convolution with its weights packed for the micro-kernels. Args at run time: `[out, x, w]`
/// or `[out, x, w, bias]` (`w` is never read: the packed copy is), then the epilogue's.
#[derive(Debug)]
pub struct PackedConv {
    pub n: usize,
    pub groups: usize,
    /// Output channels per group.
    pub m: usize,
    pub geo: Im2Col,
    pub bias: bool,
    /// C·kh·kw.
    k: usize,
    kc: usize,
    /// Output rows per block.
    pub rows_per_block: usize,
    taps: Vec<Tap>,
    /// Per group, `ceil(m/MR)` panels of `k` columns of MR floats (rows past m zero).
    wts: Vec<f32>,
}

impl PackedConv {
    /// Packs `w` (`[groups·m, C, kh, kw]`, C = `geo.c`). `Err` names what was wrong: a weight of
    /// the wrong length or a packed copy that cannot be allocated.
    pub fn new(n: usize, groups: usize, m: usize, geo: Im2Col, bias: bool, w: &[f32]) -> Result<PackedConv, String> {
        let k = geo.c * geo.kh * geo.kw;
        if groups.checked_mul(m).and_then(|x| x.checked_mul(k)) != Some(w.len()) {
            return Err(format!("a conv weight of {} floats is not [{}, {}]", w.len(), groups * m, k));
        }
        let panels = m.div_ceil(MR);
        let len =
            groups.checked_mul(panels).and_then(|x| x.checked_mul(MR * k)).ok_or("packed weight size overflows")?;
        let mut wts = Vec::new();
        wts.try_reserve_exact(len).map_err(|_| format!("cannot allocate {} bytes for a packed weight", len * 4))?;
        wts.resize(len, 0.0);
        for g in 0..groups {
            for i in 0..panels {
                let panel = &mut wts[(g * panels + i) * MR * k..(g * panels + i + 1) * MR * k];
                for r in 0..MR.min(m - i * MR) {
                    let row = &w[(g * m + i * MR + r) * k..][..k];
                    for (kk, &v) in row.iter().enumerate() {
                        panel[kk * MR + r] = v;
                    }
                }
            }
        }
        let (s1, wd) = (geo.stride[1], geo.w as isize);
        let mut taps = Vec::with_capacity(k);
        for ci in 0..geo.c {
            for ky in 0..geo.kh {
                for kx in 0..geo.kw {
                    let dx = (kx * geo.dil[1]) as isize - geo.pad[1] as isize;
                    // ix = ox·s1 + dx; the ox with 0 ≤ ix < w form one range [first, end).
                    let first = if dx >= 0 { 0 } else { ((-dx) as usize).div_ceil(s1) };
                    let end = if wd - dx <= 0 { 0 } else { ((wd - dx) as usize).div_ceil(s1) };
                    taps.push(Tap {
                        plane: ci * geo.h * geo.w,
                        dy: (ky * geo.dil[0]) as isize - geo.pad[0] as isize,
                        dx,
                        first: first.min(geo.ow),
                        end: end.min(geo.ow),
                    });
                }
            }
        }
        let kc = if k == 0 { 0 } else { k.div_ceil(k.div_ceil(KC)) };
        let rows_per_block = ((BLOCK_PIXELS + geo.ow / 2) / geo.ow.max(1)).clamp(1, geo.oh.max(1));
        Ok(PackedConv { n, groups, m, geo, bias, k, kc, rows_per_block, taps, wts })
    }

    pub fn bytes(&self) -> usize {
        self.wts.len() * 4
    }

    /// Blocks of output rows per (image, group).
    pub fn blocks(&self) -> usize {
        if self.geo.ow == 0 { 0 } else { self.geo.oh.div_ceil(self.rows_per_block) }
    }

    /// Channel panels per group (the finest split of one block).
    pub fn m_panels(&self) -> usize {
        self.m.div_ceil(MR)
    }

    pub fn flops(&self) -> usize {
        2 * self.n * self.groups * self.m * self.k * self.geo.oh * self.geo.ow
    }

    /// Work units when each block's channel panels are split in `parts`.
    pub fn units(&self, parts: usize) -> usize {
        self.n * self.groups * self.blocks() * parts
    }

    /// Runs units `[lo, hi)` of [`PackedConv::units`]`(parts)`; calls `after(image, group
    /// channels [c0, c1) of the whole output, output rows [oh0, oh1))` when a unit is final.
    ///
    /// # Safety
    /// `args` as [`PackedConv`] documents, sized for `[n, groups·C, h, w]` input and
    /// `[n, groups·m, oh, ow]` output; concurrent calls only on disjoint unit ranges (of the same
    /// `parts`).
    pub unsafe fn run(
        &self,
        args: &[*mut u8],
        lo: usize,
        hi: usize,
        parts: usize,
        isa: Isa,
        after: &mut dyn FnMut(usize, usize, usize, usize, usize),
    ) {
        let kernel = Kernel::for_isa(isa);
        let geo = &self.geo;
        let plane = geo.oh * geo.ow;
        let (blocks, panels) = (self.blocks(), self.m_panels());
        BPACK.with(|cell| {
            let mut bpack = cell.take();
            let max_pix = self.rows_per_block * geo.ow;
            bpack.resize(self.kc * max_pix.div_ceil(NR) * NR, 0.0);
            for u in lo..hi {
                let part = u % parts;
                let blk = u / parts % blocks;
                let g = u / parts / blocks % self.groups;
                let img = u / parts / blocks / self.groups;
                let (i0, i1) = crate::pool::chunk(panels, parts, part);
                let (r0, r1) = (i0 * MR, (i1 * MR).min(self.m));
                if r0 >= r1 {
                    continue;
                }
                let oh0 = blk * self.rows_per_block;
                let oh1 = (oh0 + self.rows_per_block).min(geo.oh);
                let (q0, npix) = (oh0 * geo.ow, (oh1 - oh0) * geo.ow);
                let npan = npix.div_ceil(NR);
                // SAFETY: the image's group planes and the output block are inside x and out
                // (caller: the args are sized for these shapes).
                let (x, out) = unsafe {
                    (
                        (args[1] as *const f32).add((img * self.groups + g) * geo.c * geo.h * geo.w),
                        (args[0] as *mut f32).add((img * self.groups * self.m + g * self.m) * plane + q0),
                    )
                };
                if self.bias {
                    for r in r0..r1 {
                        // SAFETY: bias has groups·m floats; row r of the block is npix floats.
                        unsafe {
                            let b = *(args[3] as *const f32).add(g * self.m + r);
                            std::slice::from_raw_parts_mut(out.add(r * plane), npix).fill(b);
                        }
                    }
                }
                // k = 0 still runs one (empty) block, which writes C = bias or 0.
                let mut k0 = 0;
                loop {
                    let kc = self.kc.min(self.k - k0);
                    if kc > 0 {
                        // SAFETY: x holds this group's C planes of h·w floats.
                        unsafe { self.gather(&mut bpack[..kc * npan * NR], x, k0, kc, q0, npix) };
                    }
                    for i in i0..i1 {
                        let ap = &self.wts[(g * panels + i) * MR * self.k + k0 * MR..][..kc * MR];
                        for p in 0..npan {
                            let tile = Tile {
                                kc,
                                rows: MR.min(self.m - i * MR),
                                cols: NR.min(npix - p * NR),
                                alpha: 1.0,
                                beta: 1.0,
                                load_c: self.bias || k0 > 0,
                                c_rs: plane as isize,
                            };
                            // SAFETY: the tile's rows (channels < m) and columns (pixels of the
                            // block) are inside the output; ap and the panel hold kc·MR and kc·NR.
                            unsafe {
                                let bp = bpack.as_ptr().add(p * kc * NR);
                                kernel.run(&tile, ap.as_ptr(), bp, out.add(i * MR * plane + p * NR));
                            }
                        }
                    }
                    k0 += kc;
                    if k0 >= self.k {
                        break;
                    }
                }
                after(img, g * self.m + r0, g * self.m + r1, oh0, oh1);
            }
            cell.set(bpack);
        });
    }

    /// Gathers rows `[k0, k0+kc)`, pixels `[q0, q0+npix)` of the group's im2col matrix into
    /// NR-pixel panels: panel `p` holds `kc` rows of NR floats (columns past npix zero).
    ///
    /// # Safety
    /// `x` is readable for the group's `C·h·w` floats.
    unsafe fn gather(&self, dst: &mut [f32], x: *const f32, k0: usize, kc: usize, q0: usize, npix: usize) {
        let geo = &self.geo;
        let (s0, s1, ow, h) = (geo.stride[0], geo.stride[1], geo.ow, geo.h as isize);
        // SAFETY: caller.
        let x = unsafe { std::slice::from_raw_parts(x, geo.c * geo.h * geo.w) };
        let identity = geo.is_identity();
        for (p, panel) in dst.chunks_exact_mut(kc * NR).enumerate() {
            let pq = q0 + p * NR;
            let cols = NR.min(npix - p * NR);
            // The panel's pixels as runs within one output row: (first column j, len, oy, ox0).
            let mut segs = [(0usize, 0usize, 0usize, 0usize); NR];
            let mut nseg = 0;
            let mut j = 0;
            while j < cols {
                let (oy, ox0) = ((pq + j) / ow, (pq + j) % ow);
                let len = (ow - ox0).min(cols - j);
                segs[nseg] = (j, len, oy, ox0);
                nseg += 1;
                j += len;
            }
            for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                let tap = self.taps[k0 + kk];
                if cols < NR {
                    row[cols..].fill(0.0);
                }
                if identity {
                    // 1×1, stride 1, no padding: the pixels are contiguous in the channel plane.
                    row[..cols].copy_from_slice(&x[tap.plane + pq..][..cols]);
                    continue;
                }
                for &(j, len, oy, ox0) in &segs[..nseg] {
                    let out = &mut row[j..j + len];
                    let iy = (oy * s0) as isize + tap.dy;
                    if iy < 0 || iy >= h {
                        out.fill(0.0);
                        continue;
                    }
                    let lo = tap.first.clamp(ox0, ox0 + len);
                    let hi = tap.end.clamp(lo, ox0 + len);
                    out[..lo - ox0].fill(0.0);
                    out[hi - ox0..].fill(0.0);
                    if hi > lo {
                        // Columns [lo, hi) read ix = ox·s1 + dx inside [0, w).
                        let base = tap.plane + iy as usize * geo.w;
                        let ix0 = ((lo * s1) as isize + tap.dx) as usize;
                        let dst = &mut out[lo - ox0..hi - ox0];
                        if s1 == 1 {
                            dst.copy_from_slice(&x[base + ix0..base + ix0 + (hi - lo)]);
                        } else {
                            for (i, d) in dst.iter_mut().enumerate() {
                                *d = x[base + ix0 + i * s1];
                            }
                        }
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Each thread's gathered block of the im2col matrix, reused across calls (≤ 192 KiB).
    static BPACK: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    //! Against a naive f64 convolution, on every kernel this CPU can run. Tolerance as the packed
    //! GEMM's (gemm/tests.rs): `(k + 2)·ε·(Σ|w·x| + |bias|)` per output, ε = 2⁻²⁴ — the bound of
    //! a length-k f32 dot product plus the bias add; a wrong tap, pixel or channel misses it by
    //! orders of magnitude.
    use super::*;

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Generic];
        if Isa::supported(Isa::Avx2Fma) >= Isa::Avx2Fma {
            v.push(Isa::Avx2Fma);
        }
        v
    }

    fn data(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[derive(Debug, Clone, Copy)]
    struct Case {
        n: usize,
        groups: usize,
        c: usize,
        m: usize,
        h: usize,
        w: usize,
        k: [usize; 2],
        s: [usize; 2],
        d: [usize; 2],
        /// top, left, bottom, right
        p: [usize; 4],
        bias: bool,
    }

    fn geo(cs: &Case) -> Option<Im2Col> {
        let out = |i: usize, pa: usize, pb: usize, k: usize, d: usize, s: usize| {
            (i + pa + pb).checked_sub(d * (k - 1) + 1).map(|r| r / s + 1)
        };
        Some(Im2Col {
            c: cs.c,
            h: cs.h,
            w: cs.w,
            kh: cs.k[0],
            kw: cs.k[1],
            oh: out(cs.h, cs.p[0], cs.p[2], cs.k[0], cs.d[0], cs.s[0])?,
            ow: out(cs.w, cs.p[1], cs.p[3], cs.k[1], cs.d[1], cs.s[1])?,
            stride: cs.s,
            dil: cs.d,
            pad: [cs.p[0], cs.p[1]],
        })
    }

    /// Exact outputs and the per-output error bound.
    fn reference(cs: &Case, g: &Im2Col, x: &[f32], w: &[f32], b: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let (mt, ct) = (cs.m * cs.groups, cs.c * cs.groups);
        let k = cs.c * cs.k[0] * cs.k[1];
        let len = cs.n * mt * g.oh * g.ow;
        let (mut want, mut tol) = (vec![0.0; len], vec![0.0; len]);
        for ni in 0..cs.n {
            for mi in 0..mt {
                let gi = mi / cs.m;
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let (mut acc, mut mag) = if cs.bias { (b[mi] as f64, b[mi].abs() as f64) } else { (0.0, 0.0) };
                        for ci in 0..cs.c {
                            for ky in 0..cs.k[0] {
                                for kx in 0..cs.k[1] {
                                    let iy = (oy * cs.s[0] + ky * cs.d[0]) as isize - cs.p[0] as isize;
                                    let ix = (ox * cs.s[1] + kx * cs.d[1]) as isize - cs.p[1] as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < cs.h && (ix as usize) < cs.w {
                                        let xv =
                                            x[((ni * ct + gi * cs.c + ci) * cs.h + iy as usize) * cs.w + ix as usize];
                                        let wv = w[((mi * cs.c + ci) * cs.k[0] + ky) * cs.k[1] + kx];
                                        acc += xv as f64 * wv as f64;
                                        mag += (xv as f64 * wv as f64).abs();
                                    }
                                }
                            }
                        }
                        let o = ((ni * mt + mi) * g.oh + oy) * g.ow + ox;
                        want[o] = acc;
                        tol[o] = (k + 2) as f64 * f32::EPSILON as f64 / 2.0 * mag + 1e-30;
                    }
                }
            }
        }
        (want, tol)
    }

    /// Runs the case in `chunks` contiguous unit ranges with channel panels split in `parts`,
    /// and checks every output and that `after` reported every (channel, row) exactly once.
    fn check(isa: Isa, cs: &Case, parts: usize, chunks: usize) {
        let Some(g) = geo(cs) else { return };
        let (mt, ct) = (cs.m * cs.groups, cs.c * cs.groups);
        let x = data(cs.n * ct * cs.h * cs.w, 1 + cs.h as u64);
        let w = data(mt * cs.c * cs.k[0] * cs.k[1], 2 + cs.m as u64);
        let b = data(mt, 3);
        let (want, tol) = reference(cs, &g, &x, &w, &b);
        let pc = PackedConv::new(cs.n, cs.groups, cs.m, g.clone(), cs.bias, &w).unwrap();
        // NaN-filled output: any element the kernel skips fails the check.
        let mut out = vec![f32::NAN; want.len()];
        let args = [out.as_mut_ptr() as *mut u8, x.as_ptr() as *mut u8, w.as_ptr() as *mut u8, b.as_ptr() as *mut u8];
        let mut seen = vec![0u32; cs.n * mt * g.oh];
        let units = pc.units(parts);
        for c in 0..chunks {
            let (lo, hi) = crate::pool::chunk(units, chunks, c);
            let mut after = |img: usize, c0: usize, c1: usize, oh0: usize, oh1: usize| {
                for ch in c0..c1 {
                    for r in oh0..oh1 {
                        seen[(img * mt + ch) * g.oh + r] += 1;
                    }
                }
            };
            // SAFETY: the buffers are sized for the case's shapes.
            unsafe { pc.run(&args, lo, hi, parts, isa, &mut after) };
        }
        for (i, (&got, (&want, &tol))) in out.iter().zip(want.iter().zip(&tol)).enumerate() {
            assert!((got as f64 - want).abs() <= tol, "{isa:?} {cs:?} parts {parts} [{i}]: got {got}, want {want}");
        }
        assert!(seen.iter().all(|&s| s == 1), "{isa:?} {cs:?} parts {parts}: rows reported {seen:?}");
    }

    #[allow(clippy::too_many_arguments)]
    fn case(c: usize, m: usize, h: usize, w: usize, k: usize, s: usize, d: usize, p: usize) -> Case {
        Case { n: 1, groups: 1, c, m, h, w, k: [k, k], s: [s, s], d: [d, d], p: [p; 4], bias: true }
    }

    #[test]
    fn matches_the_definition() {
        let mut cases = vec![
            case(3, 16, 23, 23, 7, 2, 1, 3), // a stem
            case(8, 13, 11, 9, 3, 1, 1, 1),  // odd everything
            case(30, 7, 9, 13, 3, 1, 1, 1),  // k = 270: two K blocks
            case(5, 6, 10, 10, 3, 3, 1, 0),  // stride 3
            case(4, 5, 12, 11, 3, 1, 2, 2),  // dilation 2
            case(9, 11, 7, 7, 1, 1, 1, 0),   // 1×1 identity
            case(9, 11, 9, 8, 1, 2, 1, 0),   // 1×1 stride 2
            case(2, 3, 3, 40, 5, 1, 1, 2),   // 5×5: the whole image is one block
            case(2, 3, 2, 300, 3, 1, 1, 1),  // one row is a block: OW ≥ 192
            case(1, 1, 1, 1, 1, 1, 1, 0),    // a single output
            case(0, 4, 5, 5, 3, 1, 1, 1),    // no input channels: bias only
        ];
        cases.push(Case { n: 2, groups: 3, bias: false, ..case(4, 5, 9, 10, 3, 2, 1, 1) });
        cases.push(Case {
            groups: 2,
            k: [1, 3],
            s: [1, 2],
            d: [2, 1],
            p: [0, 2, 1, 0],
            ..case(3, 7, 8, 9, 3, 1, 1, 0)
        });
        cases.push(Case { k: [5, 2], s: [2, 1], p: [2, 0, 0, 1], ..case(6, 17, 13, 6, 1, 1, 1, 0) });
        for isa in isas() {
            for cs in &cases {
                for (parts, chunks) in [(1, 1), (1, 2), (2, 2), (3, 1), (3, 4)] {
                    check(isa, cs, parts, chunks);
                }
            }
        }
    }

    /// Every remainder of the 6×16 tile: channels 1..=13 (rows 1–6 and two panels), pixels per
    /// block 1..=35 (columns 1–16 of a panel, one to three panels).
    #[test]
    fn every_tile_tail_is_computed() {
        for isa in isas() {
            for m in 1..=13 {
                for ow in 1..=35 {
                    check(isa, &Case { h: 3, ..case(3, m, 3, ow, 3, 1, 1, 1) }, 1, 1);
                    check(isa, &case(2, m, 1, ow, 1, 1, 1, 0), 2, 2);
                }
            }
        }
    }
}
