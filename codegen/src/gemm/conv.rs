//! Dense convolution as an implicit GEMM on weights packed at compile time: per (image, group)
//! the output `[M, OH·OW]` is `W[M × C·kh·kw] · col[C·kh·kw × OH·OW]`, with the weights as the
//! left operand, packed once into the micro-kernel's `mr`-row panels ([`PackedConv::new`]: 6 rows
//! for the AVX2 and portable kernels, 12 or 8 for the AVX-512 one, chosen by the plan's `Isa`), and the
//! im2col matrix never materialised: each KC×(block of output rows) piece of it is gathered
//! into NR-pixel panels (an L2-sized scratch) just before the micro-kernels read it, from a
//! zero-padded, stride-phase-split copy of the input rows the block reads (the *window*,
//! `WindowGeo`), where every run of a panel's pixels in one output row is 16 contiguous floats
//! for any stride, dilation or padding: the gather is whole-vector copies with no tests. C rows are output channels and C columns output pixels, so tiles are
//! stored straight into NCHW (16 contiguous pixels per row), and the same micro-kernels as the
//! packed GEMM run (AVX-512, AVX2+FMA or portable, by `Isa`; the AVX-512 one covers two pixel
//! panels, 32 pixels, per call).
//!
//! ```text
//! unit = (image, group, block of whole output rows, part of the channel panels)
//!   the block's input rows → window (padding as zeros, phases of the column stride)
//!   k, KC at a time:  gather col[k0.., block pixels] into NR-wide panels   (≤ 256 KiB, L2)
//!     mr-channel panels of the part (A micro-panel mr×KC, 6 or 12 KiB, stays in L1)
//!       NR-pixel panels of the block (1 or 2 per call) → micro-kernel
//!       (the first K block overwrites C with acc + bias; the others add to it)
//!   after(unit) — the fused epilogue on the block's rows, while they are in cache
//! ```
//!
//! Where the pixel panels are read from the window or the input planes in place (the indirect
//! kernel), the pixel panels run outermost instead, each kept in L1 across the channel panels;
//! a conv whose B block is at most `STREAM_BYTES` (small K) runs the channel panels outermost and
//! calls `after` per channel panel of the last K block (`PackedConv::stream`).
//!
//! Each output is reduced in the same order (k ascending) whatever the split, so results do not
//! depend on the thread count.

use super::{Kernel, NR, Tile};
use crate::Isa;
use crate::host::Im2Col;

/// Most pixels per block (whole output rows, at least one): a KC-deep gathered block of 256
/// pixels is 256 KiB, inside a 512 KiB L2 with the weights' KC slice beside it.
const BLOCK_PIXELS: usize = 256;
/// Deepest K block (as the packed GEMM's).
const KC: usize = 256;
/// Largest B block (K block × block pixels, bytes) run with the channel panels outermost and the
/// epilogue per channel panel (see [`PackedConv::run`]): well inside a 32 KiB L1 beside the
/// weights' panel and the C rows being written.
const STREAM_BYTES: usize = 16 * 1024;

/// Where the im2col rows read a unit's *window*: the input rows one block of output rows reads,
/// for every channel of the group, copied into a per-thread scratch with the padding written as
/// zeros and each row split into `stride_w` phases (as `crate::window` does): phase `p` column
/// `j` is padded column `j·stride_w + p`. Output column `ox` of tap `kx` then reads phase
/// `(kx·dil_w) mod stride_w` at column `ox + ⌊kx·dil_w / stride_w⌋`, so for any stride, dilation
/// or padding the 16 pixels of a panel that lie in one output row are 16 contiguous floats of the
/// window, copied as whole vectors with no bounds or padding tests.
#[derive(Debug, Clone)]
struct WindowGeo {
    /// Floats per phase of a window row.
    phase: usize,
    /// Floats per window row (`stride_w` phases).
    row: usize,
    /// Window rows per channel (the padded input rows one block reads).
    rows: usize,
    /// Per im2col row k = (channel, ky, kx): its offset in the window from output pixel (0, 0).
    taps: Vec<usize>,
}

impl WindowGeo {
    fn new(geo: &Im2Col, rows_per_block: usize) -> WindowGeo {
        let (s1, d1) = (geo.stride[1], geo.dil[1]);
        let phase = geo.ow + (geo.kw.saturating_sub(1) * d1) / s1;
        let row = s1 * phase;
        let rows = (rows_per_block.saturating_sub(1)) * geo.stride[0] + geo.kh.saturating_sub(1) * geo.dil[0] + 1;
        let mut taps = Vec::with_capacity(geo.c * geo.kh * geo.kw);
        for ci in 0..geo.c {
            for ky in 0..geo.kh {
                for kx in 0..geo.kw {
                    let cpos = kx * d1;
                    taps.push(ci * rows * row + ky * geo.dil[0] * row + (cpos % s1) * phase + cpos / s1);
                }
            }
        }
        WindowGeo { phase, row, rows, taps }
    }

    /// Floats of one window, with the slack a whole-vector read past the last pixel needs.
    fn len(&self, c: usize) -> usize {
        c * self.rows * self.row + NR
    }
}

/// Output rows per block: whole rows, at most [`BLOCK_PIXELS`] pixels (at least one row). The
/// count computes the fewest idle columns in the blocks' last NR-pixel panels over the whole
/// plane (2 or 4 rows of 56 = 7 or 14 panels exactly, where 3 rows leave half a panel idle per
/// block), then divides the plane evenly (a short last block unbalances a split of few blocks),
/// then is the largest.
fn rows_per_block(oh: usize, ow: usize) -> usize {
    rows_per_block_within(oh, ow, BLOCK_PIXELS / ow.max(1))
}

/// As [`rows_per_block`], with at most `most` rows per block.
fn rows_per_block_within(oh: usize, ow: usize, most: usize) -> usize {
    (1..=most.clamp(1, oh.max(1)))
        .min_by_key(|&r| (computed_columns(oh, ow, r), !oh.is_multiple_of(r), usize::MAX - r))
        .unwrap_or(1)
}

/// Pixel columns the micro-kernels compute over a plane in blocks of `r` rows.
fn computed_columns(oh: usize, ow: usize, r: usize) -> usize {
    ((oh / r) * (r * ow).div_ceil(NR) + (oh % r * ow).div_ceil(NR)) * NR
}

/// The share of the micro-kernels' pixel columns that are real output pixels, with the blocks
/// `rows_per_block` chooses: 1.0 when every block fills whole 16-pixel panels (56², 28², 12²),
/// 0.56 for a 3×3 plane (9 pixels in one 16-column panel). Below about 0.9 the implicit GEMM
/// computes too many idle columns: the caller keeps im2col + GEMM there (resnet18's 6² and 3²
/// layers at a 96² input ran 10% and 70% slower as implicit GEMM).
pub fn panel_fill(oh: usize, ow: usize) -> f64 {
    if oh == 0 || ow == 0 {
        return 1.0;
    }
    (oh * ow) as f64 / computed_columns(oh, ow, rows_per_block(oh, ow)) as f64
}

/// Largest output plane (pixels) [`PackedConv::by_channels`] is used for: its per-thread scratch
/// holds the plane's product (pixels × channels; 7² planes of 2048 channels are 0.4 MB) and one
/// K block of its A panels, which the memory plan does not count.
pub const BY_CHANNELS_MAX_PIXELS: usize = 64;

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
    win: WindowGeo,
    /// Rows of the weight panels: the tile height of the kernel they were packed for.
    mr: usize,
    /// The 1×1 identity case: per input channel, its plane's offset in the input (B row k of a
    /// block is channel k's plane from the block's first pixel: the indirect kernel reads whole
    /// 16-pixel panels there, with no gather). In the other 1×1 cases (`subsample`), its plane's
    /// offset in the block's compact copy. Empty otherwise.
    plane_taps: Vec<usize>,
    /// A 1×1 conv that is not the identity (stride, padding: ResNet's stride-2 downsamples): per
    /// block, the input pixels its output pixels read are copied into a compact per-thread
    /// `[C, block pixels]` scratch (padding as zeros), which is then the identity case's input:
    /// every whole 16-pixel panel is read in place, none gathered, and only the pixels the conv
    /// reads are copied (the window of the general case holds every input row and column
    /// between them: 4× the floats at stride 2).
    subsample: bool,
    /// Small output planes ([`PackedConv::by_channels`]): per group, the weight transposed and
    /// packed as a GEMM's B (`k × m`, 16-channel panels); `wts` is then empty.
    by_channels: Option<Vec<super::PackedB>>,
    /// Per group, `ceil(m/mr)` panels of `k` columns of `mr` floats (rows past m zero).
    wts: Vec<f32>,
    /// Whether a block's B (what one K block of the micro-kernels reads: the window, the block's
    /// pixels of the input planes or the gathered panels) is at most [`STREAM_BYTES`], so that
    /// it stays in L1 while the channel panels run one after another, each one's rows finished
    /// with the epilogue before the next starts (small-K convs: MobileNet v2's 16→96 1×1 at
    /// 112² wrote its output, a 4.8 MB plane, then re-read it for the bias and the epilogue).
    stream: bool,
    /// What the conv applies to each output as it is stored (see [`Post`]).
    post: Option<Post>,
}

/// A residual Add and/or a Relu or a Clip the conv applies to its output as each register tile's
/// last K block is stored (while the tile is in L1), rather than a separate epilogue pass: `out =
/// act(conv + r)`, each step rounded as the interpreter rounds it (the add, then the Relu, which
/// keeps NaN and maps −0 to +0, or the Clip: `v < lo ? lo : v`, then `v > hi ? hi : v`, which
/// keeps NaN and −0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Post {
    /// Index in the run's args of the residual `r` (same shape as the output), if any.
    pub residual: Option<usize>,
    pub relu: bool,
    /// A Clip's bounds (±∞ for a bound it does not have: MobileNet v2's ReLU6 is (0, 6)); never
    /// with `relu`.
    pub clip: Option<(f32, f32)>,
}

/// [`Post`] for one micro-kernel call: the residual at the tile's first output (rows at C's
/// stride; null: none), the Relu and the Clip, applied in registers as the tile is stored.
#[derive(Clone, Copy)]
pub(super) struct StorePost {
    pub res: *const f32,
    pub relu: bool,
    /// Whether `[lo, hi]` is applied (the interpreter's Clip, see [`Post`]).
    pub clip: bool,
    pub lo: f32,
    pub hi: f32,
}

impl Post {
    /// The [`StorePost`] of this Post with the residual at `res` (null: none).
    pub(super) fn store(&self, res: *const f32) -> StorePost {
        let (lo, hi) = self.clip.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        StorePost { res, relu: self.relu, clip: self.clip.is_some(), lo, hi }
    }
}

impl StorePost {
    pub const NONE: StorePost =
        StorePost { res: std::ptr::null(), relu: false, clip: false, lo: f32::NEG_INFINITY, hi: f32::INFINITY };

    /// Whether it does anything.
    pub fn any(&self) -> bool {
        !self.res.is_null() || self.relu || self.clip
    }
}

/// The interpreter's Clip of one value: `v < lo ? lo : v`, then `v > hi ? hi : v` (NaN and −0
/// kept).
#[inline(always)]
pub(super) fn clip1(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v < lo { lo } else { v };
    if v > hi { hi } else { v }
}

impl Kernel {
    /// [`Kernel::run`] (`offs` null) or [`Kernel::run_indirect`] with `post` applied to each value
    /// as it is stored (the portable kernel: to the tile after it is stored).
    ///
    /// # Safety
    /// As those; a non-null `post.res` holds the tile's rows (at `t.c_rs`) and columns.
    unsafe fn run_post(
        self,
        t: &Tile,
        a: *const f32,
        b: *const f32,
        offs: *const usize,
        c: *mut f32,
        post: &StorePost,
    ) {
        match self {
            Kernel::Generic => {
                // SAFETY: per this function's contract (the portable kernel has no indirect form,
                // so offs is null: has_indirect).
                unsafe {
                    self.run(t, a, b, c);
                    post_tile(Isa::Generic, c, t.c_rs as usize, t.rows, t.cols, post);
                }
            }
            // SAFETY: per this function's contract; the CPU has AVX2+FMA (checked in for_isa).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { super::avx2::dispatch_post(t, a, b, offs, c, post) },
            // SAFETY: per this function's contract; the CPU has AVX-512 F (checked in for_isa).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { super::avx512::dispatch_post(t, a, b, offs, c, post) },
        }
    }
}

/// The GEMM depth K = C·kh·kw of a conv weight, checked to hold `groups`·`m` rows of K floats.
fn weight_k(groups: usize, m: usize, geo: &Im2Col, w: &[f32]) -> Result<usize, String> {
    let k = geo.c * geo.kh * geo.kw;
    if groups.checked_mul(m).and_then(|x| x.checked_mul(k)) != Some(w.len()) {
        return Err(format!("a conv weight of {} floats is not [{}, {}]", w.len(), groups * m, k));
    }
    Ok(k)
}

impl PackedConv {
    /// Packs `w` (`[groups·m, C, kh, kw]`, C = `geo.c`) for the kernel `isa` selects on this CPU
    /// (the one [`PackedConv::run`] with the same `isa` runs). `Err` names what was wrong: a
    /// weight of the wrong length or a packed copy that cannot be allocated.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        n: usize,
        groups: usize,
        m: usize,
        geo: Im2Col,
        bias: bool,
        isa: Isa,
        w: &[f32],
    ) -> Result<PackedConv, String> {
        let k = weight_k(groups, m, &geo, w)?;
        let mr = Kernel::for_isa(isa).conv_mr(m);
        let panels = m.div_ceil(mr);
        let len =
            groups.checked_mul(panels).and_then(|x| x.checked_mul(mr * k)).ok_or("packed weight size overflows")?;
        let mut wts = Vec::new();
        wts.try_reserve_exact(len).map_err(|_| format!("cannot allocate {} bytes for a packed weight", len * 4))?;
        wts.resize(len, 0.0);
        for g in 0..groups {
            for i in 0..panels {
                let panel = &mut wts[(g * panels + i) * mr * k..(g * panels + i + 1) * mr * k];
                for r in 0..mr.min(m - i * mr) {
                    let row = &w[(g * m + i * mr + r) * k..][..k];
                    for (kk, &v) in row.iter().enumerate() {
                        panel[kk * mr + r] = v;
                    }
                }
            }
        }
        let kc = if k == 0 { 0 } else { k.div_ceil(k.div_ceil(KC)) };
        let identity = geo.is_identity();
        let subsample = !identity && geo.kh == 1 && geo.kw == 1;
        // The floats one K block of the micro-kernels reads as B in blocks of r rows (see
        // `stream`): the window when the indirect kernel reads it, else the gathered panels (or,
        // the same count, the block's pixels of kc input planes or of the compact copy).
        let flat = identity || subsample;
        let windowed = indirect(Kernel::for_isa(isa), flat) && !flat;
        let b_floats = |r: usize| {
            if windowed { WindowGeo::new(&geo, r).len(geo.c) } else { kc * (r * geo.ow).div_ceil(NR) * NR }
        };
        let mut rows_per_block = rows_per_block(geo.oh, geo.ow);
        // A single K block whose B is too large to stream in L1: fewer rows per block, if some
        // count fits and computes no more idle pixel columns (mobilenet_v2's 24→144 1×1 at 56²:
        // 2 rows of 112 pixels, 7 panels, rather than 4).
        if kc == k && b_floats(rows_per_block) * 4 > STREAM_BYTES {
            let fewer = (1..rows_per_block).rev().find(|&r| b_floats(r) * 4 <= STREAM_BYTES);
            if let Some(r) = fewer.map(|r| rows_per_block_within(geo.oh, geo.ow, r))
                && computed_columns(geo.oh, geo.ow, r) <= computed_columns(geo.oh, geo.ow, rows_per_block)
            {
                rows_per_block = r;
            }
        }
        let win = WindowGeo::new(&geo, rows_per_block);
        let stream = b_floats(rows_per_block) * 4 <= STREAM_BYTES;
        let plane_taps = if identity {
            (0..geo.c).map(|ci| ci * geo.h * geo.w).collect()
        } else if subsample {
            (0..geo.c).map(|ci| ci * rows_per_block * geo.ow).collect()
        } else {
            Vec::new()
        };
        Ok(PackedConv {
            n,
            groups,
            m,
            geo,
            bias,
            k,
            kc,
            rows_per_block,
            win,
            mr,
            plane_taps,
            subsample,
            by_channels: None,
            wts,
            stream,
            post: None,
        })
    }

    /// A conv whose output plane is too small for 16-pixel panels (3², 6², 7²: [`panel_fill`]
    /// below 0.9) run with the register tile along output channels: per (image, group) the
    /// transposed output `[OH·OW, m] = col[K, OH·OW]ᵀ · Wᵀ[K, m]` is a GEMM with Wᵀ as its B (packed
    /// now, 16-channel panels) and the im2col matrix as its A (gathered per K block straight from
    /// the input into the micro-kernel's pixel panels), written to a scratch and transposed into
    /// NCHW with the bias. Threads split the channel panels. `Err` as [`PackedConv::new`].
    pub fn by_channels(
        n: usize,
        groups: usize,
        m: usize,
        geo: Im2Col,
        bias: bool,
        w: &[f32],
    ) -> Result<PackedConv, String> {
        let k = weight_k(groups, m, &geo, w)?;
        let packed = (0..groups)
            .map(|g| super::PackedB::pack(&w[g * m * k..(g + 1) * m * k], k, m, 1, k))
            .collect::<Result<Vec<_>, _>>()?;
        let win = WindowGeo::new(&geo, geo.oh);
        Ok(PackedConv {
            n,
            groups,
            m,
            bias,
            k,
            kc: 0,
            rows_per_block: geo.oh.max(1),
            win,
            mr: NR,
            plane_taps: Vec::new(),
            subsample: false,
            by_channels: Some(packed),
            wts: Vec::new(),
            stream: false,
            post: None,
            geo,
        })
    }

    /// Whether the channel panels run outermost with the epilogue after each (see the field).
    pub fn streams(&self) -> bool {
        self.stream
    }

    /// The residual Add / Relu applied as outputs are stored, if any.
    pub fn post(&self) -> Option<&Post> {
        self.post.as_ref()
    }

    /// Makes the conv apply `relu(out + args[residual])` or `clip(out + args[residual])` (each
    /// part optional; not both a Relu and a Clip) as it stores each output; the args then carry
    /// the residual at that index.
    pub fn set_post(&mut self, residual: Option<usize>, relu: bool, clip: Option<(f32, f32)>) {
        let clip = if relu { None } else { clip };
        self.post = Some(Post { residual, relu, clip });
    }

    /// Whether each block reads a compact copy of the input pixels of a 1×1 conv that is not
    /// the identity (see the field).
    pub fn subsamples(&self) -> bool {
        self.subsample
    }

    pub fn bytes(&self) -> usize {
        self.wts.len() * 4 + self.by_channels.iter().flatten().map(|b| b.bytes()).sum::<usize>()
    }

    /// Blocks of output rows per (image, group).
    pub fn blocks(&self) -> usize {
        if self.geo.ow == 0 { 0 } else { self.geo.oh.div_ceil(self.rows_per_block) }
    }

    /// Channel panels per group (the finest split of one block).
    pub fn m_panels(&self) -> usize {
        self.m.div_ceil(self.mr)
    }

    pub fn flops(&self) -> usize {
        2 * self.n * self.groups * self.m * self.k * self.geo.oh * self.geo.ow
    }

    /// Work units when each block's channel panels are split in `parts`.
    pub fn units(&self, parts: usize) -> usize {
        if self.by_channels.is_some() {
            return self.n * self.groups * parts;
        }
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
        // The kernel the weights were packed for; another `isa` than `new`'s (not done by the
        // plan) falls back to the portable kernel, which reads panels of any height.
        if let Some(packed) = &self.by_channels {
            // SAFETY: per this function's contract.
            unsafe { self.run_by_channels(packed, args, lo, hi, parts, isa, after) };
            return;
        }
        let kernel = Some(Kernel::for_isa(isa)).filter(|k| k.conv_mr(self.m) == self.mr).unwrap_or(Kernel::Generic);
        let (mr, wide) = (self.mr, kernel.panels_per_call());
        let geo = &self.geo;
        let plane = geo.oh * geo.ow;
        let (blocks, panels) = (self.blocks(), self.m_panels());
        let identity = geo.is_identity();
        // The identity case and the compact copy of a 1×1 (`subsample`): B rows are planes of
        // the block's pixels, contiguous.
        let flat = identity || self.subsample;
        // A flat B of at most 64 rows is gathered even where the kernel could read it in place:
        // the 64→256 1×1 on 56² (+ residual + Relu) ran 6–8% faster so (CPU time, 3 rounds);
        // at K = 128 and 256 reading in place was as fast or faster.
        let indirect = indirect(kernel, flat) && !(flat && self.k <= 64);
        SCRATCH.with(|cell| {
            let (mut bpack, mut win) = cell.take();
            let max_pix = self.rows_per_block * geo.ow;
            bpack.resize(self.kc * max_pix.div_ceil(NR) * NR, 0.0);
            if self.subsample {
                win.resize(geo.c * max_pix, 0.0);
            } else if !identity {
                win.resize(self.win.len(geo.c), 0.0);
            }
            for u in lo..hi {
                let part = u % parts;
                let blk = u / parts % blocks;
                let g = u / parts / blocks % self.groups;
                let img = u / parts / blocks / self.groups;
                let (i0, i1) = crate::pool::chunk(panels, parts, part);
                let (r0, r1) = (i0 * mr, (i1 * mr).min(self.m));
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
                        std::slice::from_raw_parts(
                            (args[1] as *const f32).add((img * self.groups + g) * geo.c * geo.h * geo.w),
                            geo.c * geo.h * geo.w,
                        ),
                        (args[0] as *mut f32).add((img * self.groups * self.m + g * self.m) * plane + q0),
                    )
                };
                // The residual at the same offset as the output block (Post).
                let res = match self.post.and_then(|p| p.residual) {
                    // SAFETY: the residual has the output's shape (Post::residual).
                    Some(r) => unsafe {
                        (args[r] as *const f32).add((img * self.groups * self.m + g * self.m) * plane + q0)
                    },
                    None => std::ptr::null(),
                };
                // The Post's Relu / Clip (its residual is `res`).
                let act = self.post.map_or(StorePost::NONE, |p| p.store(std::ptr::null()));
                // The bias is added by the first K block's micro-kernels as they store C (no pass
                // filling C with it first).
                let bias = if self.bias {
                    // SAFETY: bias has groups·m floats.
                    unsafe { (args[3] as *const f32).add(g * self.m) }
                } else {
                    std::ptr::null()
                };
                if self.subsample {
                    self.fill_compact(&mut win, x, oh0, oh1);
                } else if !identity && self.k > 0 {
                    self.fill_window(isa, &mut win, x, oh0, oh1);
                }
                // Whether `after` was called per channel panel (the streaming order below).
                let mut reported = false;
                // k = 0 still runs one (empty) block, which writes C = bias or 0.
                let mut k0 = 0;
                loop {
                    let kc = self.kc.min(self.k - k0);
                    let last = k0 + kc >= self.k;
                    if kc > 0 {
                        let dst = &mut bpack[..kc * npan * NR];
                        if identity {
                            gather_identity(dst, x, geo.h * geo.w, k0, q0, npix, indirect);
                        } else if self.subsample {
                            gather_identity(dst, &win, max_pix, k0, 0, npix, indirect);
                        } else {
                            self.gather(isa, dst, &win, k0, npix, indirect);
                        }
                    }
                    // A tile of pixel panels [p, p + np) (np ≤ wide) and channel panel i, its
                    // B rows at `b` (+ `b_next` for the second panel) through `offs` or packed.
                    let tile = |i: usize, p: usize, np: usize, b_next: usize| Tile {
                        kc,
                        rows: mr.min(self.m - i * mr),
                        cols: (np * NR).min(npix - p * NR),
                        alpha: 1.0,
                        beta: 1.0,
                        load_c: k0 > 0,
                        c_rs: plane as isize,
                        b_next: b_next as isize,
                        mr,
                        // SAFETY: channel panel i's rows are < m (bias holds m floats).
                        bias: if bias.is_null() { bias } else { unsafe { bias.add(i * mr) } },
                    };
                    let weights = |i: usize| &self.wts[(g * panels + i) * mr * self.k + k0 * mr..][..kc * mr];
                    // Panels of 16 pixels in one output row are read straight from the window (B
                    // row k at the panel's offset + the tap's) by the indirect kernel, the others
                    // from the gathered panels. A wide kernel takes two adjacent panels read the
                    // same way in one call. In the 1×1 identity case every whole panel is read
                    // from the input planes.
                    let (src, taps) = if identity {
                        (x.as_ptr(), &self.plane_taps[k0..k0 + kc])
                    } else if self.subsample {
                        (win.as_ptr(), &self.plane_taps[k0..k0 + kc])
                    } else {
                        (win.as_ptr(), &self.win.taps[k0..k0 + kc])
                    };
                    let step = geo.stride[0] * self.win.row;
                    let full = |p: usize| {
                        let q = p * NR;
                        indirect && NR.min(npix - q) == NR && (flat || q % geo.ow + NR <= geo.ow)
                    };
                    let base = |p: usize| {
                        if identity {
                            q0 + p * NR
                        } else if self.subsample {
                            p * NR
                        } else {
                            (p * NR) / geo.ow * step + (p * NR) % geo.ow
                        }
                    };
                    // Pixel panels of the call starting at panel p.
                    let width = |p: usize| {
                        let np = wide.min(npan - p);
                        if np == 2 && full(p) != full(p + 1) { 1 } else { np }
                    };
                    // Runs channel panel i × pixel panels [p, p + np).
                    let run_tile = |i: usize, p: usize, np: usize| {
                        let ap = weights(i);
                        // SAFETY: the tile's rows (channels < m) and columns (pixels of the block)
                        // are inside the output; ap holds kc·mr floats. A gathered tile's np
                        // panels are kc·NR floats each, kc·NR apart. A full panel's B rows are 16
                        // floats of the window at (q / ow)·step + q mod ow + tap, inside its slack
                        // (WindowGeo::len), as the gather reads them, or (identity) of the input
                        // at tap + q0 + q, inside the channel's plane as the block's pixels are,
                        // or (subsample) of the compact copy at tap + q, likewise;
                        // at tap + q0 + q, inside the channel's plane as the block's pixels are;
                        // of two full panels the second's are b_next floats after the first's.
                        unsafe {
                            let c = out.add(i * mr * plane + p * NR);
                            if last && !res.is_null() {
                                // The residual rows the tile adds once it is stored, requested
                                // while the micro-kernel runs: read when the tile is final, they
                                // would be cache misses down a column of planes.
                                let t = tile(i, p, np, 0);
                                prefetch_rows(res.add(i * mr * plane + p * NR), plane, t.rows, t.cols);
                            }
                            // The last K block's tile applies the Post as it is stored.
                            let post = if !last {
                                StorePost::NONE
                            } else if res.is_null() {
                                act
                            } else {
                                StorePost { res: res.add(i * mr * plane + p * NR), ..act }
                            };
                            let posted = post.any();
                            if full(p) {
                                let t = tile(i, p, np, if np == 2 { base(p + 1) - base(p) } else { 0 });
                                let (a, b) = (ap.as_ptr(), src.add(base(p)));
                                if posted {
                                    kernel.run_post(&t, a, b, taps.as_ptr(), c, &post);
                                } else {
                                    kernel.run_indirect(&t, a, b, taps.as_ptr(), c);
                                }
                            } else {
                                let t = tile(i, p, np, kc * NR);
                                let (a, b) = (ap.as_ptr(), bpack.as_ptr().add(p * kc * NR));
                                if posted {
                                    kernel.run_post(&t, a, b, std::ptr::null(), c, &post);
                                } else {
                                    kernel.run(&t, a, b, c);
                                }
                            }
                        }
                    };
                    if self.stream || !indirect {
                        // Channel panels outermost: the block's B is read once per channel panel
                        // (from L1 when the conv streams, see `PackedConv::stream`), and when the
                        // conv streams, each channel panel's rows are final as soon as its pixel
                        // panels of the last K block are done: `after` (the epilogue) runs on
                        // them then, while they are in L1, so that the output goes to memory once.
                        let stream = last && self.stream;
                        for i in i0..i1 {
                            let mut p = 0;
                            while p < npan {
                                let np = width(p);
                                run_tile(i, p, np);
                                p += np;
                            }
                            if stream {
                                let c0 = g * self.m + i * mr;
                                after(img, c0, (c0 + mr).min(g * self.m + self.m), oh0, oh1);
                            }
                        }
                        reported = stream;
                    } else {
                        // Pixel panels outermost: each (a kc × 32-float B tile of the window, of
                        // the input or gathered) stays in L1 across the channel panels.
                        let mut p = 0;
                        while p < npan {
                            let np = width(p);
                            for i in i0..i1 {
                                run_tile(i, p, np);
                            }
                            p += np;
                        }
                    }
                    k0 += kc;
                    if k0 >= self.k {
                        break;
                    }
                }
                if !reported {
                    after(img, g * self.m + r0, g * self.m + r1, oh0, oh1);
                }
            }
            cell.set((bpack, win));
        });
    }

    /// [`PackedConv::run`] of a [`PackedConv::by_channels`] conv: unit = (image, group, part of
    /// the 16-channel panels).
    ///
    /// # Safety
    /// As [`PackedConv::run`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_by_channels(
        &self,
        packed: &[super::PackedB],
        args: &[*mut u8],
        lo: usize,
        hi: usize,
        parts: usize,
        isa: Isa,
        after: &mut dyn FnMut(usize, usize, usize, usize, usize),
    ) {
        let geo = &self.geo;
        let (plane, m) = (geo.oh * geo.ow, self.m);
        let panels = m.div_ceil(NR);
        let act = self.post.map_or(StorePost::NONE, |p| p.store(std::ptr::null()));
        let kernel = Kernel::for_isa(isa);
        let (mr, wide, k) = (kernel.mr(), kernel.panels_per_call(), self.k);
        let row_panels = plane.div_ceil(mr);
        let gather = self.pixel_taps(mr);
        SCRATCH.with(|cell| {
            let (mut apack, mut ct) = cell.take();
            apack.resize(row_panels * mr * KC, 0.0);
            ct.resize(plane * m, 0.0);
            for u in lo..hi {
                let part = u % parts;
                let g = u / parts % self.groups;
                let img = u / parts / self.groups;
                let (p0, p1) = crate::pool::chunk(panels, parts, part);
                let (c0, c1) = (p0 * NR, (p1 * NR).min(m));
                if c0 >= c1 {
                    continue;
                }
                // SAFETY: the image's group planes are inside x (caller: args sized for these
                // shapes).
                let x = unsafe {
                    std::slice::from_raw_parts(
                        (args[1] as *const f32).add((img * self.groups + g) * geo.c * geo.h * geo.w),
                        geo.c * geo.h * geo.w,
                    )
                };
                let b = &packed[g];
                // The product ct[plane × m] = im2col(x)ᵀ · Wᵀ over K blocks of KC, its A panels
                // (mr pixels × kc taps) gathered from the input directly (no im2col matrix, no
                // strided repack), B the packed Wᵀ's column panels `wide` at a time.
                // k = 0 still runs one (empty) block, which writes ct = 0.
                let mut k0 = 0;
                loop {
                    let kc = KC.min(k - k0);
                    self.pack_pixels(&mut apack[..row_panels * mr * kc], x, &gather, k0, mr);
                    let mut p = p0;
                    while p < p1 {
                        let np = wide.min(p1 - p);
                        let t = Tile {
                            kc,
                            rows: mr,
                            cols: (np * NR).min(m - p * NR),
                            alpha: 1.0,
                            beta: 1.0,
                            load_c: k0 > 0,
                            c_rs: m as isize,
                            b_next: (k * NR) as isize,
                            mr,
                            bias: std::ptr::null(),
                        };
                        // Panel p's rows [k0, k0 + kc) and, past NR columns, the next panel's.
                        let bp = &b.data[p * k * NR + k0 * NR..(p + np - 1) * k * NR + (k0 + kc) * NR];
                        for i in 0..row_panels {
                            let t = Tile { rows: mr.min(plane - i * mr), ..t };
                            // SAFETY: the A panel holds kc·mr floats, B's rows are inside bp (the
                            // second panel's b_next = k·NR after the first's), and the tile's
                            // rows (pixels < plane) and columns (channels < m) are inside ct.
                            unsafe {
                                let c = ct.as_mut_ptr().add(i * mr * m + p * NR);
                                kernel.run(&t, apack.as_ptr().add(i * mr * kc), bp.as_ptr(), c);
                            }
                        }
                        p += np;
                    }
                    k0 += kc;
                    if k0 >= k {
                        break;
                    }
                }
                // SAFETY: the (image, group) output planes are inside out (caller: args sized for
                // these shapes); bias holds groups·m floats, the residual the output's.
                unsafe {
                    let out = (args[0] as *mut f32).add((img * self.groups + g) * m * plane);
                    // Into NCHW 16 channels at a time: per pixel one contiguous read of the
                    // product's row, 16 channel planes written in step. (Channel by channel, the
                    // reads ran down a column m floats apart: at m = 2048 every one of them in the
                    // same L1 set, 20% of a 512→2048 1×1 on 7².)
                    let bias = if self.bias { (args[3] as *const f32).add(g * m) } else { std::ptr::null() };
                    // The residual's (image, group) planes (Post), at the output's offset.
                    let res = match self.post.and_then(|p| p.residual) {
                        Some(r) => (args[r] as *const f32).add((img * self.groups + g) * m * plane),
                        None => std::ptr::null(),
                    };
                    let mut j0 = c0;
                    while j0 < c1 {
                        let jn = NR.min(c1 - j0);
                        let mut b = [0.0f32; NR];
                        if !bias.is_null() {
                            b[..jn].copy_from_slice(std::slice::from_raw_parts(bias.add(j0), jn));
                        }
                        let planes = std::slice::from_raw_parts_mut(out.add(j0 * plane), jn * plane);
                        for (q, src) in ct.chunks_exact(m).take(plane).enumerate() {
                            for (t, (&v, &bt)) in src[j0..j0 + jn].iter().zip(&b).enumerate() {
                                planes[t * plane + q] = v + bt;
                            }
                        }
                        if act.any() || !res.is_null() {
                            let r = if res.is_null() { res } else { res.add(j0 * plane) };
                            post_tile(isa, planes.as_mut_ptr(), plane, jn, plane, &StorePost { res: r, ..act });
                        }
                        j0 += jn;
                    }
                }
                after(img, g * m + c0, g * m + c1, 0, geo.oh);
            }
            cell.set((apack, ct));
        });
    }

    /// Per pixel panel (`mr` output pixels) and tap (ky, kx) of the kernel window, each pixel's
    /// input offset in a channel plane, or `u32::MAX` (padding, or past the plane): what
    /// [`PackedConv::pack_pixels`] reads. `mr·kh·kw` entries per panel.
    fn pixel_taps(&self, mr: usize) -> Vec<u32> {
        let geo = &self.geo;
        let plane = geo.oh * geo.ow;
        let mut tab = Vec::with_capacity(plane.div_ceil(mr) * mr * geo.kh * geo.kw);
        for i in 0..plane.div_ceil(mr) {
            for ky in 0..geo.kh {
                for kx in 0..geo.kw {
                    for q in i * mr..i * mr + mr {
                        let (oy, ox) = (q / geo.ow.max(1), q % geo.ow.max(1));
                        let iy = (oy * geo.stride[0] + ky * geo.dil[0]).wrapping_sub(geo.pad[0]);
                        let ix = (ox * geo.stride[1] + kx * geo.dil[1]).wrapping_sub(geo.pad[1]);
                        let inside = q < plane && iy < geo.h && ix < geo.w;
                        tab.push(if inside { u32::try_from(iy * geo.w + ix).unwrap_or(u32::MAX) } else { u32::MAX });
                    }
                }
            }
        }
        tab
    }

    /// The A panels of the channel-tiled product for taps `[k0, k0 + dst.len() / (panels·mr))`:
    /// panel i holds, per tap k = (channel, ky, kx), the input values under output pixels
    /// `[i·mr, i·mr + mr)` (zero for padding and past the plane), read through `gather`
    /// ([`PackedConv::pixel_taps`]).
    fn pack_pixels(&self, dst: &mut [f32], x: &[f32], gather: &[u32], k0: usize, mr: usize) {
        let geo = &self.geo;
        let panels = (geo.oh * geo.ow).div_ceil(mr);
        if panels == 0 || dst.is_empty() {
            return;
        }
        let (kc, taps, hw) = (dst.len() / panels / mr, geo.kh * geo.kw, geo.h * geo.w);
        if geo.is_identity() {
            // Tap k of pixel q is x[k·hw + q]: each column is mr contiguous floats of one plane
            // (the table's per-float lookups were 13% of a 960→320 1×1 on 7²).
            for (i, panel) in dst.chunks_exact_mut(kc * mr).enumerate() {
                let (q0, n) = (i * mr, mr.min(hw - i * mr));
                for (kk, col) in panel.chunks_exact_mut(mr).enumerate() {
                    col[..n].copy_from_slice(&x[(k0 + kk) * hw + q0..][..n]);
                    col[n..].fill(0.0);
                }
            }
            return;
        }
        for (i, panel) in dst.chunks_exact_mut(kc * mr).enumerate() {
            let (mut ci, mut t) = (k0 / taps, k0 % taps);
            for col in panel.chunks_exact_mut(mr) {
                let chan = &x[ci * hw..][..hw];
                let offs = &gather[(i * taps + t) * mr..][..mr];
                for (d, &o) in col.iter_mut().zip(offs) {
                    // u32::MAX is never inside a plane: padding reads as zero.
                    *d = chan.get(o as usize).copied().unwrap_or(0.0);
                }
                t += 1;
                if t == taps {
                    (ci, t) = (ci + 1, 0);
                }
            }
        }
    }

    /// The compact copy of a `subsample` conv: for output rows `[oh0, oh1)`, channel `ci`'s input
    /// pixel under output pixel `j` of the block (rows of `ow`) at `ci·rows_per_block·ow + j`,
    /// zero where that pixel is padding.
    fn fill_compact(&self, win: &mut [f32], x: &[f32], oh0: usize, oh1: usize) {
        let geo = &self.geo;
        let (ow, s1, pl) = (geo.ow, geo.stride[1], geo.pad[1]);
        // Output columns [j0, j1) read input columns j·s1 − pl inside [0, w).
        let j0 = pl.div_ceil(s1).min(ow);
        let j1 = ((geo.w + pl).div_ceil(s1)).clamp(j0, ow);
        for (ci, chan) in win.chunks_exact_mut(self.rows_per_block * ow).take(geo.c).enumerate() {
            for (r, dst) in chan.chunks_exact_mut(ow).take(oh1 - oh0).enumerate() {
                let iy = ((oh0 + r) * geo.stride[0]).wrapping_sub(geo.pad[0]);
                if iy >= geo.h {
                    dst.fill(0.0);
                    continue;
                }
                dst[..j0].fill(0.0);
                dst[j1..].fill(0.0);
                if j0 < j1 {
                    // j0·s1 ≥ pl (j0 = ⌈pl/s1⌉ when the range is not empty).
                    let src = &x[(ci * geo.h + iy) * geo.w + j0 * s1 - pl..][..(j1 - j0 - 1) * s1 + 1];
                    for (d, &v) in dst[j0..j1].iter_mut().zip(src.iter().step_by(s1)) {
                        *d = v;
                    }
                }
            }
        }
    }

    /// Copies the input rows that output rows `[oh0, oh1)` read, of every channel of the group
    /// (`x`, `C·h·w` floats), into the window (see [`WindowGeo`]), padding as zeros.
    fn fill_window(&self, isa: Isa, win: &mut [f32], x: &[f32], oh0: usize, oh1: usize) {
        let (geo, wg) = (&self.geo, &self.win);
        let (s1, pl) = (geo.stride[1], geo.pad[1]);
        // Rows of a shorter last block past its span are never read: leave them.
        let rows = (oh1 - oh0 - 1) * geo.stride[0] + (geo.kh - 1) * geo.dil[0] + 1;
        for (ci, chan) in win.chunks_exact_mut(wg.rows * wg.row).take(geo.c).enumerate() {
            for (r, dst) in chan.chunks_exact_mut(wg.row).take(rows).enumerate() {
                let iy = (oh0 * geo.stride[0] + r).wrapping_sub(geo.pad[0]);
                if iy >= geo.h {
                    dst.fill(0.0);
                    continue;
                }
                let src = &x[(ci * geo.h + iy) * geo.w..][..geo.w];
                if s1 == 1 {
                    // Padded columns [pl, pl + w) hold the row; columns past the phase are never
                    // read.
                    let n = geo.w.min(wg.phase.saturating_sub(pl));
                    dst[..pl.min(wg.phase)].fill(0.0);
                    dst[pl.min(wg.phase)..pl.min(wg.phase) + n].copy_from_slice(&src[..n]);
                    dst[pl.min(wg.phase) + n..].fill(0.0);
                } else {
                    dst.fill(0.0);
                    crate::window::split_phases(isa, src, dst, pl, s1, wg.phase);
                }
            }
        }
    }

    /// Gathers rows `[k0, k0 + dst.len() / (panels·NR))` of the block's im2col matrix (`npix`
    /// pixels from the block's first) from the window into NR-pixel panels: panel `p` holds `kc`
    /// rows of NR floats (columns past npix zero).
    /// `skip_full`: leave the panels whose 16 pixels lie in one output row unwritten (the
    /// indirect kernel reads those from the window).
    fn gather(&self, isa: Isa, dst: &mut [f32], win: &[f32], k0: usize, npix: usize, skip_full: bool) {
        #[cfg(target_arch = "x86_64")]
        if isa >= Isa::Avx512 && std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512 F (checked just above).
            unsafe { self.gather_rows_512(dst, win, k0, npix, skip_full) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if isa >= Isa::Avx2Fma {
            #[target_feature(enable = "avx2")]
            fn wide(pc: &PackedConv, dst: &mut [f32], win: &[f32], k0: usize, npix: usize, skip: bool) {
                pc.gather_rows(dst, win, k0, npix, skip);
            }
            // SAFETY: the Isa was lowered to what this CPU supports (Isa::supported), so AVX2
            // is present: the same copies, as 32-byte moves.
            unsafe { wide(self, dst, win, k0, npix, skip_full) };
            return;
        }
        let _ = isa;
        self.gather_rows(dst, win, k0, npix, skip_full);
    }

    /// [`PackedConv::gather_rows`] with AVX-512: a panel whose pixels lie in several output rows
    /// is one 16-lane vector per tap merged from one masked load per run (lanes `[j, j + len)`
    /// of a run read its `len` window floats), where the portable form copies each run into a
    /// line and the line into the panel (a store-to-load forwarding stall per tap: 11% of a
    /// 3×3 conv on a 14² plane, whose panels all span two or three rows, went to the gather).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn gather_rows_512(&self, dst: &mut [f32], win: &[f32], k0: usize, npix: usize, skip_full: bool) {
        use std::arch::x86_64::*;
        let (ow, step) = (self.geo.ow, self.geo.stride[0] * self.win.row);
        let kc = dst.len() / npix.div_ceil(NR) / NR;
        let taps = &self.win.taps[k0..k0 + kc];
        for (p, panel) in dst.chunks_exact_mut(kc * NR).enumerate() {
            let cols = NR.min(npix - p * NR);
            let (segs, nseg) = panel_runs(ow, step, p, cols);
            let rows = panel.as_chunks_mut::<NR>().0;
            if nseg == 1 && cols == NR {
                if !skip_full {
                    copy_whole_panel(rows, win, segs[0].1, taps);
                }
                continue;
            }
            // Each run's lanes, [j, j + len).
            let masks: [__mmask16; NR] = std::array::from_fn(|i| {
                let (j, _, len) = segs[i];
                (((1u32 << len) - 1) << j) as __mmask16
            });
            for (row, &t) in rows.iter_mut().zip(taps) {
                let mut v = _mm512_setzero_ps();
                for (&(j, off, len), &m) in segs[..nseg].iter().zip(&masks) {
                    // The run's floats as the portable gather reads them (inside the window).
                    let run = &win[off + t..off + t + len];
                    // SAFETY: only the lanes of m, [j, j + len), are read: lane j + i reads
                    // run[i], i < len; the pointer is formed without being dereferenced elsewhere.
                    v = unsafe { _mm512_mask_loadu_ps(v, m, run.as_ptr().wrapping_sub(j)) };
                }
                // SAFETY: row holds 16 floats.
                unsafe { _mm512_storeu_ps(row.as_mut_ptr(), v) };
            }
        }
    }

    #[inline(always)]
    fn gather_rows(&self, dst: &mut [f32], win: &[f32], k0: usize, npix: usize, skip_full: bool) {
        let (ow, step) = (self.geo.ow, self.geo.stride[0] * self.win.row);
        let kc = dst.len() / npix.div_ceil(NR) / NR;
        let taps = &self.win.taps[k0..k0 + kc];
        for (p, panel) in dst.chunks_exact_mut(kc * NR).enumerate() {
            let cols = NR.min(npix - p * NR);
            let (segs, nseg) = panel_runs(ow, step, p, cols);
            let rows = panel.as_chunks_mut::<NR>().0;
            if nseg == 1 && cols == NR {
                if !skip_full {
                    copy_whole_panel(rows, win, segs[0].1, taps);
                }
                continue;
            }
            // Runs of several rows: each run is copied as 16 floats into a 32-float line at its
            // column, the next run overwriting what the previous read past its end.
            for (row, &t) in rows.iter_mut().zip(taps) {
                let mut line = [0.0f32; 2 * NR];
                for &(j, off, _) in &segs[..nseg] {
                    line[j..j + NR].copy_from_slice(first16(&win[off + t..]));
                }
                line[cols..NR].fill(0.0);
                row.copy_from_slice(&line[..NR]);
            }
        }
    }
}

/// Asks for the cache lines of `rows` rows of `cols` floats at `r` (rows `rs` floats apart) to be
/// brought into L1 (a hint: no access is made, any address is allowed).
#[inline(always)]
fn prefetch_rows(r: *const f32, rs: usize, rows: usize, cols: usize) {
    #[cfg(target_arch = "x86_64")]
    for i in 0..rows {
        for j in (0..cols).step_by(NR) {
            let line = r.wrapping_add(i * rs + j) as *const i8;
            // SAFETY: a prefetch is a hint that never faults and reads nothing architecturally.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (r, rs, rows, cols);
}

/// [`Post`] on `rows` rows of `cols` outputs at `c` (rows `c_rs` floats apart), just stored:
/// `c += post.res` when that is not null (the residual, same layout), then the Relu or the Clip.
///
/// # Safety
/// The rows and columns are inside C and (when not null) the residual.
unsafe fn post_tile(isa: Isa, c: *mut f32, c_rs: usize, rows: usize, cols: usize, post: &StorePost) {
    #[inline(always)]
    unsafe fn rows_of(c: *mut f32, c_rs: usize, rows: usize, cols: usize, post: &StorePost) {
        for i in 0..rows {
            // SAFETY: per post_tile's contract.
            let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * c_rs), cols) };
            if !post.res.is_null() {
                // SAFETY: per post_tile's contract.
                let res = unsafe { std::slice::from_raw_parts(post.res.add(i * c_rs), cols) };
                for (d, &x) in row.iter_mut().zip(res) {
                    *d += x;
                }
            }
            if post.relu {
                for d in row.iter_mut() {
                    // The interpreter's Relu: x > 0 or NaN keeps x, else +0.
                    *d = if *d > 0.0 || d.is_nan() { *d } else { 0.0 };
                }
            }
            if post.clip {
                for d in row.iter_mut() {
                    *d = clip1(*d, post.lo, post.hi);
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512 && std::is_x86_feature_detected!("avx512f") {
        #[target_feature(enable = "avx512f")]
        unsafe fn wide(c: *mut f32, c_rs: usize, rows: usize, cols: usize, post: &StorePost) {
            // SAFETY: per post_tile's contract.
            unsafe { rows_of(c, c_rs, rows, cols, post) }
        }
        // SAFETY: the CPU has AVX-512 F (checked just above); the rest per this function's contract.
        unsafe { wide(c, c_rs, rows, cols, post) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2Fma {
        #[target_feature(enable = "avx2")]
        unsafe fn wide(c: *mut f32, c_rs: usize, rows: usize, cols: usize, post: &StorePost) {
            // SAFETY: per post_tile's contract.
            unsafe { rows_of(c, c_rs, rows, cols, post) }
        }
        // SAFETY: the Isa was lowered to what this CPU supports (Isa::supported), so AVX2 is
        // present; the rest per this function's contract.
        unsafe { wide(c, c_rs, rows, cols, post) };
        return;
    }
    let _ = isa;
    // SAFETY: per this function's contract.
    unsafe { rows_of(c, c_rs, rows, cols, post) }
}

/// Whether `kernel` reads a conv's whole 16-pixel panels in place (the window, or the input planes
/// in the 1×1 identity case, or a 1×1's compact copy: `flat`) rather than gathered. The flat cases
/// read the planes directly only with the AVX-512 kernel: with the AVX2 one that ran ~20% slower
/// than gathering (conv1x1_256to64x56, CPU time).
fn indirect(kernel: Kernel, flat: bool) -> bool {
    kernel.has_indirect() && (!flat || kernel.panels_per_call() > 1)
}

/// The first `cols` pixels of panel `p` as runs within one output row (`ow` pixels, `step` window
/// floats apart): (first column j, window offset, length) each, and how many runs.
#[inline(always)]
fn panel_runs(ow: usize, step: usize, p: usize, cols: usize) -> ([(usize, usize, usize); NR], usize) {
    let mut segs = [(0, 0, 0); NR];
    let (mut n, mut j) = (0, 0);
    while j < cols {
        let (oy, ox0) = ((p * NR + j) / ow, (p * NR + j) % ow);
        let len = (ow - ox0).min(cols - j);
        segs[n] = (j, oy * step + ox0, len);
        n += 1;
        j += len;
    }
    (segs, n)
}

/// The common case: 16 pixels of one output row at window offset `base`, one whole-vector copy
/// per tap.
#[inline(always)]
fn copy_whole_panel(rows: &mut [[f32; NR]], win: &[f32], base: usize, taps: &[usize]) {
    for (row, &t) in rows.iter_mut().zip(taps) {
        *row = *first16(&win[base + t..]);
    }
}

/// The first 16 floats of `s` (the window's slack guarantees them).
#[inline(always)]
fn first16(s: &[f32]) -> &[f32; NR] {
    s.first_chunk::<NR>().expect("a window holds 16 floats past every pixel it gathers")
}

/// The 1×1, stride 1, unpadded case: rows `k0..` of the im2col matrix are the channel planes of
/// `x` (`plane` floats each), pixels `[q0, q0 + npix)` contiguous in each. `skip_full`: leave the
/// whole 16-pixel panels unwritten (the indirect kernel reads those from `x`).
fn gather_identity(dst: &mut [f32], x: &[f32], plane: usize, k0: usize, q0: usize, npix: usize, skip_full: bool) {
    let kc = dst.len() / npix.div_ceil(NR) / NR;
    for (p, panel) in dst.chunks_exact_mut(kc * NR).enumerate() {
        let (pq, cols) = (q0 + p * NR, NR.min(npix - p * NR));
        if skip_full && cols == NR {
            continue;
        }
        for (kk, row) in panel.as_chunks_mut::<NR>().0.iter_mut().enumerate() {
            let src = &x[(k0 + kk) * plane + pq..];
            match src.first_chunk::<NR>() {
                Some(s) if cols == NR => *row = *s,
                _ => {
                    row[..cols].copy_from_slice(&src[..cols]);
                    row[cols..].fill(0.0);
                }
            }
        }
    }
}

thread_local! {
    /// Each thread's gathered block of the im2col matrix (≤ 256 KiB) and window of input rows,
    /// reused across calls.
    static SCRATCH: std::cell::Cell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

#[cfg(test)]
mod tests {
    //! Against a naive f64 convolution, on every kernel this CPU can run. Tolerance as the packed
    //! GEMM's (gemm/tests.rs): `(k + 2)·ε·(Σ|w·x| + |bias|)` per output, ε = 2⁻²⁴ — the bound of
    //! a length-k f32 dot product plus the bias add; a wrong tap, pixel or channel misses it by
    //! orders of magnitude.
    use super::*;

    use crate::gemm::tests::isas;
    use crate::simd::tests::data;

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
        check_packed(isa, cs, parts, chunks, false);
    }

    /// As [`check`]; `by_channels`: the conv packed by [`PackedConv::by_channels`].
    fn check_packed(isa: Isa, cs: &Case, parts: usize, chunks: usize, by_channels: bool) {
        let Some(g) = geo(cs) else { return };
        let (mt, ct) = (cs.m * cs.groups, cs.c * cs.groups);
        let x = data(cs.n * ct * cs.h * cs.w, 1 + cs.h as u64);
        let w = data(mt * cs.c * cs.k[0] * cs.k[1], 2 + cs.m as u64);
        let b = data(mt, 3);
        let (want, tol) = reference(cs, &g, &x, &w, &b);
        let pc = if by_channels {
            PackedConv::by_channels(cs.n, cs.groups, cs.m, g.clone(), cs.bias, &w).unwrap()
        } else {
            PackedConv::new(cs.n, cs.groups, cs.m, g.clone(), cs.bias, isa, &w).unwrap()
        };
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
            case(3, 16, 23, 23, 7, 2, 1, 3),  // a stem
            case(8, 13, 11, 9, 3, 1, 1, 1),   // odd everything
            case(30, 7, 9, 13, 3, 1, 1, 1),   // k = 270: two K blocks
            case(5, 6, 10, 10, 3, 3, 1, 0),   // stride 3
            case(4, 5, 12, 11, 3, 1, 2, 2),   // dilation 2
            case(9, 11, 7, 7, 1, 1, 1, 0),    // 1×1 identity
            case(9, 11, 9, 8, 1, 2, 1, 0),    // 1×1 stride 2
            case(2, 3, 3, 40, 5, 1, 1, 2),    // 5×5: the whole image is one block
            case(2, 3, 2, 300, 3, 1, 1, 1),   // one row is a block: OW ≥ 256
            case(1, 1, 1, 1, 1, 1, 1, 0),     // a single output
            case(0, 4, 5, 5, 3, 1, 1, 1),     // no input channels: bias only
            case(16, 29, 13, 23, 1, 1, 1, 0), // small-K 1×1: streamed channel panels
            case(3, 32, 37, 41, 3, 2, 1, 1),  // a MobileNet v2 stem: streamed
            case(40, 7, 6, 35, 3, 1, 1, 1),   // K = 360 in two blocks, window past STREAM_BYTES
        ];
        cases.push(Case { n: 2, groups: 3, bias: false, ..case(4, 5, 9, 10, 3, 2, 1, 1) });
        cases.push(Case { bias: false, ..case(16, 40, 9, 7, 1, 1, 1, 0) });
        cases.push(Case {
            groups: 2,
            k: [1, 3],
            s: [1, 2],
            d: [2, 1],
            p: [0, 2, 1, 0],
            ..case(3, 7, 8, 9, 3, 1, 1, 0)
        });
        cases.push(Case { k: [5, 2], s: [2, 1], p: [2, 0, 0, 1], ..case(6, 17, 13, 6, 1, 1, 1, 0) });
        // 1×1 convs that are not the identity (the compact copy): stride 2 with rows of 28 and
        // 14 output pixels (panels across rows, whole ones read in place), two K blocks, a
        // stride of 3 by 1, padding on every side (zero pixels), one output pixel, groups.
        cases.extend([
            case(19, 13, 56, 56, 1, 2, 1, 0),
            Case { bias: false, ..case(300, 9, 28, 27, 1, 2, 1, 0) },
            Case { s: [3, 1], p: [1, 2, 2, 1], ..case(5, 21, 10, 37, 1, 1, 1, 0) },
            Case { p: [1, 1, 1, 1], ..case(7, 6, 9, 9, 1, 2, 1, 0) },
            case(4, 3, 1, 1, 1, 2, 1, 0),
            Case { n: 2, groups: 2, ..case(6, 17, 33, 35, 1, 2, 1, 0) },
        ]);
        for isa in isas() {
            for cs in &cases {
                for (parts, chunks) in [(1, 1), (1, 2), (2, 2), (3, 1), (3, 4)] {
                    check(isa, cs, parts, chunks);
                }
            }
        }
    }

    /// The streaming order is chosen where a block's B fits STREAM_BYTES (small K) on every
    /// kernel, and not for a 3×3 conv of 64 channels (a 577-float-row window per channel).
    #[test]
    fn small_k_convs_stream() {
        for isa in isas() {
            for (cs, want) in [
                (case(16, 96, 112, 112, 1, 1, 1, 0), true),
                (case(24, 144, 56, 56, 1, 1, 1, 0), true),
                (case(3, 32, 224, 224, 3, 2, 1, 1), true),
                (case(64, 64, 56, 56, 3, 1, 1, 1), false),
                (case(256, 64, 56, 56, 1, 1, 1, 0), false),
            ] {
                let g = geo(&cs).unwrap();
                let w = vec![0.0; cs.m * cs.c * cs.k[0] * cs.k[1]];
                let pc = PackedConv::new(1, 1, cs.m, g, true, isa, &w).unwrap();
                assert_eq!(pc.streams(), want, "{isa:?} {cs:?}");
            }
        }
    }

    /// The channel-tiled form for small planes: channels off the 16-column panels and the 32-column
    /// AVX-512 tile, planes of 1 to 7² pixels (rows off every tile height), K past one KC block
    /// and past one span of A blocks, strides and pads, groups, 1×1, no bias, no input channels.
    #[test]
    fn by_channels_matches_the_definition() {
        let mut cases = vec![
            case(16, 16, 3, 3, 3, 1, 1, 1),  // a 3² plane
            case(30, 33, 6, 6, 3, 1, 1, 1),  // 6², K = 270
            case(120, 17, 5, 5, 3, 2, 1, 1), // 3², K = 1080: two spans of A blocks
            case(9, 48, 7, 7, 1, 1, 1, 0),   // 7² 1×1 identity
            case(4, 70, 13, 13, 3, 2, 1, 1), // 7², stride 2
            case(3, 1, 1, 1, 1, 1, 1, 0),    // one output, one channel
            case(0, 20, 3, 3, 3, 1, 1, 1),   // no input channels: bias only
        ];
        cases.push(Case { n: 2, groups: 3, bias: false, ..case(4, 19, 4, 4, 3, 1, 1, 1) });
        for isa in isas() {
            for cs in &cases {
                for (parts, chunks) in [(1, 1), (1, 2), (2, 2), (3, 4)] {
                    check_packed(isa, cs, parts, chunks, true);
                }
            }
        }
    }

    /// 1×1 convs other than the identity read the compact copy; the identity and the other
    /// kernels do not.
    #[test]
    fn strided_1x1_reads_a_compact_copy() {
        for isa in isas() {
            for (cs, want) in [
                (case(256, 512, 56, 56, 1, 2, 1, 0), true),
                (case(8, 8, 9, 9, 1, 1, 1, 1), true),
                (case(256, 64, 56, 56, 1, 1, 1, 0), false),
                (case(64, 64, 56, 56, 3, 2, 1, 1), false),
            ] {
                let g = geo(&cs).unwrap();
                let w = vec![0.0; cs.m * cs.c * cs.k[0] * cs.k[1]];
                let pc = PackedConv::new(1, 1, cs.m, g, true, isa, &w).unwrap();
                assert_eq!(pc.subsamples(), want, "{isa:?} {cs:?}");
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
