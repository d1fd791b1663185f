//! The instruction set kiln's hand-written kernels target, chosen at run time when a model is
//! compiled (never from the build machine's `target-cpu`): the same binary runs AVX-512 kernels on
//! an AVX-512 Xeon and AVX2 kernels on an AVX2 EPYC.

use std::fmt;

/// x86-64 vector levels kiln has kernels for, from least to most capable; kernels for a level may
/// use every feature of the levels below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// No wide-vector kernels: portable Rust (any CPU, any architecture).
    Generic,
    /// AVX2 + FMA (x86-64-v3): 256-bit vectors, 16 registers.
    Avx2Fma,
    /// AVX-512 F/BW/DQ/VL on top of AVX2 + FMA (x86-64-v4): 512-bit vectors, 32 registers.
    Avx512,
}

impl Isa {
    /// The most capable level this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            let avx512 = std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512dq")
                && std::is_x86_feature_detected!("avx512vl");
            if avx2 && avx512 {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2Fma;
            }
        }
        Isa::Generic
    }

    /// `requested`, lowered to what this CPU supports (asking for AVX-512 on an AVX2 machine
    /// gives AVX2): a model never runs instructions its CPU lacks.
    pub fn supported(requested: Isa) -> Isa {
        requested.min(Isa::detect())
    }

    /// The name used in `kiln bench --json` ("isa") and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Generic => "generic",
            Isa::Avx2Fma => "avx2+fma",
            Isa::Avx512 => "avx512",
        }
    }

    /// Parses [`Isa::name`] (for the CLI's `--isa`).
    pub fn from_name(name: &str) -> Option<Isa> {
        [Isa::Generic, Isa::Avx2Fma, Isa::Avx512].into_iter().find(|i| i.name() == name)
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Isa;

    #[test]
    fn a_request_never_exceeds_the_cpu() {
        let cpu = Isa::detect();
        for want in [Isa::Generic, Isa::Avx2Fma, Isa::Avx512] {
            let got = Isa::supported(want);
            assert!(got <= cpu && got <= want, "{want} on a {cpu} CPU gave {got}");
        }
        assert_eq!(Isa::supported(Isa::Generic), Isa::Generic);
    }

    #[test]
    fn names_round_trip() {
        for isa in [Isa::Generic, Isa::Avx2Fma, Isa::Avx512] {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name("sse9"), None);
    }
}
