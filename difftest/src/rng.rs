//! Where the generator's choices come from: a seeded stream (reproducible from one u64) or the
//! bytes of a fuzzer input (so that libFuzzer's mutations steer the graph's structure).

/// A stream of choices.
pub trait Source {
    fn next_u64(&mut self) -> u64;
}

/// SplitMix64 (the same stream as the model format's initializers): one u64 seed, full period,
/// good enough statistics for test generation.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl Source for SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Choices read from fuzzer bytes, one byte a choice (most choices are among few options); when
/// the bytes run out every choice is 0, the simplest option, so a short input is a small graph.
pub struct ByteSource<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteSource<'a> {
    pub fn new(data: &'a [u8]) -> ByteSource<'a> {
        ByteSource { data, pos: 0 }
    }
}

impl Source for ByteSource<'_> {
    fn next_u64(&mut self) -> u64 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        u64::from(b)
    }
}

/// Convenience draws over any source.
pub struct Draw<S: Source>(pub S);

impl<S: Source> Draw<S> {
    /// Uniform-ish in 0..n (n ≥ 1). The modulo bias is irrelevant for test generation.
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 1 { 0 } else { (self.0.next_u64() % n as u64) as usize }
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent as usize
    }

    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    /// Uniform in [lo, hi).
    pub fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.0.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    pub fn range(&mut self, lo: usize, hi_inclusive: usize) -> usize {
        lo + self.below(hi_inclusive - lo + 1)
    }
}
