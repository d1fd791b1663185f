//! Seeded weight initializers of the JSON model format (docs/model-format.md, "Weights"), so that
//! large benchmark models need no weight files and give the same numbers in any language.
//!
//! The random streams are SplitMix64 feeding a uniform in [0, 1) or a Box-Muller normal, computed in
//! f64 and rounded to f32 once per element. `kiln run` fills model inputs with the same normal stream
//! ([`standard_normal_input`]).

use crate::dtype::{DType, TensorType};
use crate::tensor::{Tensor, TensorData};

/// One seeded initializer, with its parameters. Parameters are f64 because every value is computed
/// in f64 and rounded to the element type once.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// `mean + std·z` with z from the Box-Muller normal stream.
    Normal {
        mean: f64,
        std: f64,
        seed: u64,
    },
    /// `low + (high − low)·u` with u from the uniform stream in [0, 1).
    Uniform {
        low: f64,
        high: f64,
        seed: u64,
    },
    Constant {
        value: f64,
    },
    Zeros,
    Ones,
    /// `start + i·step` for element i in row-major order.
    Arange {
        start: f64,
        step: f64,
    },
}

impl Init {
    /// The kind's name as the JSON format spells it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Init::Normal { .. } => "normal",
            Init::Uniform { .. } => "uniform",
            Init::Constant { .. } => "constant",
            Init::Zeros => "zeros",
            Init::Ones => "ones",
            Init::Arange { .. } => "arange",
        }
    }
}

/// Every initializer kind, for error messages and suggestions.
pub const INIT_KINDS: &[&str] = &["normal", "uniform", "constant", "zeros", "ones", "arange"];

/// SplitMix64 (Steele, Lea & Flood 2014): a 64-bit state advanced by a constant, then mixed.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

/// 2⁻⁵³: maps the top 53 bits of a draw onto [0, 1) exactly.
const TWO_POW_MINUS_53: f64 = 1.0 / (1u64 << 53) as f64;

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) from one draw.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * TWO_POW_MINUS_53
    }

    /// Standard normal from two draws (Box-Muller, cosine branch only). `u1` lies in (0, 1] so the
    /// logarithm is finite.
    pub fn normal(&mut self) -> f64 {
        let u1 = ((self.next_u64() >> 11) + 1) as f64 * TWO_POW_MINUS_53;
        let u2 = (self.next_u64() >> 11) as f64 * TWO_POW_MINUS_53;
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Builds the tensor an initializer describes. Refuses a type larger than the IR's limit before
/// allocating, parameters that make no sense (a negative std, low > high, a non-finite number), kinds
/// that do not fit the element type (random streams are f32 only) and values that do not fit it.
pub fn generate(init: &Init, ty: &TensorType) -> Result<Tensor, String> {
    ty.check_size()?;
    check_params(init)?;
    let n = ty.num_elements();
    let kind = init.kind_name();
    let data = match ty.dtype {
        DType::F32 => {
            let mut values = reserved(n, ty)?;
            match *init {
                Init::Normal { mean, std, seed } => {
                    let mut rng = SplitMix64::new(seed);
                    values.extend((0..n).map(|_| (mean + std * rng.normal()) as f32));
                }
                Init::Uniform { low, high, seed } => {
                    let mut rng = SplitMix64::new(seed);
                    values.extend((0..n).map(|_| (low + (high - low) * rng.uniform()) as f32));
                }
                Init::Constant { value } => values.resize(n, value as f32),
                Init::Zeros => values.resize(n, 0.0),
                Init::Ones => values.resize(n, 1.0),
                Init::Arange { start, step } => values.extend((0..n).map(|i| (start + i as f64 * step) as f32)),
            }
            // Finite f64 parameters can still leave the f32 range (std = 1e38, a long arange).
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(format!("the {kind} initializer gives element {i} a value outside the f32 range"));
            }
            TensorData::F32(values)
        }
        DType::I64 => {
            let value = |x: f64, what: &str| -> Result<i64, String> {
                exact_i64(x).ok_or_else(|| {
                    format!("the {kind} initializer of an i64 weight needs an integer {what} below 2^53 in magnitude, got {x}")
                })
            };
            match *init {
                Init::Constant { value: v } => TensorData::I64(filled(n, value(v, "value")?, ty)?),
                Init::Zeros => TensorData::I64(filled(n, 0, ty)?),
                Init::Ones => TensorData::I64(filled(n, 1, ty)?),
                Init::Arange { start, step } => {
                    let (start, step) = (value(start, "start")?, value(step, "step")?);
                    // The last element is the largest in magnitude; checking it checks them all.
                    let last =
                        i64::try_from(n - 1).ok().and_then(|k| k.checked_mul(step)).and_then(|d| d.checked_add(start));
                    if last.is_none() {
                        return Err(format!("the arange initializer overflows i64 over {n} elements"));
                    }
                    let mut values = reserved(n, ty)?;
                    values.extend((0..n as i64).map(|i| start + i * step));
                    TensorData::I64(values)
                }
                Init::Normal { .. } | Init::Uniform { .. } => {
                    return Err(format!("the {kind} initializer makes f32 weights only, not {}", ty.dtype));
                }
            }
        }
        DType::Bool => match init {
            Init::Zeros => TensorData::Bool(filled(n, false, ty)?),
            Init::Ones => TensorData::Bool(filled(n, true, ty)?),
            _ => return Err(format!("a bool weight accepts the zeros and ones initializers only, not {kind}")),
        },
    };
    Tensor::new(ty.shape.clone(), data)
}

/// Room for `n` values of a tensor of type `ty`, or an error naming the size: a tensor within
/// MAX_ELEMENTS may still be more than the machine has, and that is an error, not an abort.
fn reserved<T>(n: usize, ty: &TensorType) -> Result<Vec<T>, String> {
    let mut values = Vec::new();
    values.try_reserve_exact(n).map_err(|_| {
        let bytes = n as u64 * ty.dtype.size_bytes() as u64;
        format!("cannot allocate {bytes} bytes for a tensor of type {ty}")
    })?;
    Ok(values)
}

fn filled<T: Clone>(n: usize, value: T, ty: &TensorType) -> Result<Vec<T>, String> {
    let mut values = reserved(n, ty)?;
    values.resize(n, value);
    Ok(values)
}

/// The input `kiln run` makes up for input number `seed` (0-based, in declaration order) when none is
/// given: standard-normal f32 values from the `normal` stream with that seed, zeros for i64, false
/// for bool.
pub fn standard_normal_input(ty: &TensorType, seed: u64) -> Result<Tensor, String> {
    let init = match ty.dtype {
        DType::F32 => Init::Normal { mean: 0.0, std: 1.0, seed },
        DType::I64 | DType::Bool => Init::Zeros,
    };
    generate(&init, ty)
}

fn check_params(init: &Init) -> Result<(), String> {
    let finite = |name: &str, x: f64| -> Result<(), String> {
        if x.is_finite() {
            Ok(())
        } else {
            Err(format!("the {} initializer's '{name}' must be a finite number, got {x}", init.kind_name()))
        }
    };
    match *init {
        Init::Normal { mean, std, .. } => {
            finite("mean", mean)?;
            finite("std", std)?;
            if std < 0.0 {
                return Err(format!("the normal initializer's 'std' must be ≥ 0, got {std}"));
            }
        }
        Init::Uniform { low, high, .. } => {
            finite("low", low)?;
            finite("high", high)?;
            if low > high {
                return Err(format!("the uniform initializer needs low ≤ high, got low = {low}, high = {high}"));
            }
        }
        Init::Constant { value } => finite("value", value)?,
        Init::Zeros | Init::Ones => {}
        Init::Arange { start, step } => {
            finite("start", start)?;
            finite("step", step)?;
        }
    }
    Ok(())
}

/// `x` as an i64 if it is an integer below 2^53 in magnitude: those came through f64 exactly, while
/// a larger value may be a rounded neighbour (2^53 may have been 2^53 + 1 in the file).
fn exact_i64(x: f64) -> Option<i64> {
    const LIMIT: f64 = (1u64 << 53) as f64;
    (x.fract() == 0.0 && x.abs() < LIMIT).then_some(x as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values below were computed independently by tools/init_reference.py, which
    // implements the algorithm exactly as written in docs/model-format.md (Python ints masked to
    // 64 bits, math.log/math.cos/math.sqrt in f64, struct.pack('<f') for the rounding to f32).
    // f32 values are compared bit-exactly (no tolerance): both sides compute in f64 and round once.
    // libm's ln/cos may differ by about an f64 ulp (1e-16 relative) across platforms; the script
    // checks that every pinned value lies at least 5e-9 relative from a point where the f32
    // rounding would flip, so that cannot change a bit here.

    #[test]
    fn splitmix64_matches_the_reference_stream() {
        let mut rng = SplitMix64::new(0);
        assert_eq!(
            [rng.next_u64(), rng.next_u64(), rng.next_u64()],
            [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F]
        );
        let mut rng = SplitMix64::new(7);
        assert_eq!(rng.next_u64(), PY_SEED7_FIRST);
    }

    // From tools/init_reference.py: f32 bit patterns (values in comments).
    const PY_SEED7_FIRST: u64 = 0x63CB_E1E4_5932_0DD7;
    // -0.45275775, 2.650606, -0.9886041, 0.2524627
    const PY_NORMAL_SEED0: [u32; 4] = [0xBEE7CFDD, 0x4029A387, 0xBF7D1529, 0x3E8142CB];
    // 1.6824962, 0.80173802, 1.0022492
    const PY_NORMAL_SEED7_MEAN1_STD05: [u32; 3] = [0x3FD75C09, 0x3F4D3EB4, 0x3F8049B4];
    // 0.8833108, 0.431528, 0.026433771, 0.970882
    const PY_UNIFORM_SEED0: [u32; 4] = [0x3F6220A8, 0x3EDCF13D, 0x3CD88BA3, 0x3F788BB9];
    // -1.2058476, 2.9020545, 2.2908227
    const PY_UNIFORM_SEED3_LOWM2_HIGH5: [u32; 3] = [0xBF9A5937, 0x4039BB43, 0x40129CD7];

    fn bits(t: &Tensor) -> Vec<u32> {
        t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn normal_stream_matches_the_reference() {
        let t = generate(&Init::Normal { mean: 0.0, std: 1.0, seed: 0 }, &TensorType::f32([2, 2])).unwrap();
        assert_eq!(bits(&t), PY_NORMAL_SEED0);
        let t = generate(&Init::Normal { mean: 1.0, std: 0.5, seed: 7 }, &TensorType::f32([3])).unwrap();
        assert_eq!(bits(&t), PY_NORMAL_SEED7_MEAN1_STD05);
        // kiln run's input 0 is the same stream.
        let input = standard_normal_input(&TensorType::f32([4]), 0).unwrap();
        assert_eq!(bits(&input), PY_NORMAL_SEED0);
    }

    #[test]
    fn uniform_stream_matches_the_reference() {
        let t = generate(&Init::Uniform { low: 0.0, high: 1.0, seed: 0 }, &TensorType::f32([4])).unwrap();
        assert_eq!(bits(&t), PY_UNIFORM_SEED0);
        let t = generate(&Init::Uniform { low: -2.0, high: 5.0, seed: 3 }, &TensorType::f32([3])).unwrap();
        assert_eq!(bits(&t), PY_UNIFORM_SEED3_LOWM2_HIGH5);
        assert!(t.as_f32().unwrap().iter().all(|&v| (-2.0..5.0).contains(&v)));
    }

    #[test]
    fn deterministic_kinds() {
        let ty = TensorType::f32([2, 3]);
        assert_eq!(generate(&Init::Zeros, &ty).unwrap().as_f32().unwrap(), [0.0; 6]);
        assert_eq!(generate(&Init::Ones, &ty).unwrap().as_f32().unwrap(), [1.0; 6]);
        assert_eq!(generate(&Init::Constant { value: 0.1 }, &ty).unwrap().as_f32().unwrap(), [0.1f32; 6]);
        let t = generate(&Init::Arange { start: 1.0, step: 0.5 }, &ty).unwrap();
        assert_eq!(t.as_f32().unwrap(), [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]);
        assert_eq!(t.shape(), [2, 3]);
        let ity = TensorType::new(DType::I64, [4]);
        assert_eq!(generate(&Init::Arange { start: -3.0, step: 2.0 }, &ity).unwrap().as_i64().unwrap(), [-3, -1, 1, 3]);
        assert_eq!(generate(&Init::Constant { value: 7.0 }, &ity).unwrap().as_i64().unwrap(), [7; 4]);
        assert_eq!(generate(&Init::Ones, &TensorType::new(DType::Bool, [2])).unwrap().as_bool().unwrap(), [true; 2]);
        let scalar = generate(&Init::Constant { value: 2.0 }, &TensorType::f32([])).unwrap();
        assert_eq!(scalar.as_f32().unwrap(), [2.0]);
        let input = standard_normal_input(&TensorType::new(DType::I64, [3]), 5).unwrap();
        assert_eq!(input.as_i64().unwrap(), [0; 3]);
    }

    #[test]
    fn bad_parameters_and_types_are_refused() {
        let f = TensorType::f32([2]);
        let i = TensorType::new(DType::I64, [2]);
        let err = |init: Init, ty: &TensorType| generate(&init, ty).unwrap_err();
        assert!(err(Init::Normal { mean: 0.0, std: -1.0, seed: 0 }, &f).contains("'std' must be ≥ 0"));
        assert!(err(Init::Uniform { low: 1.0, high: 0.0, seed: 0 }, &f).contains("low ≤ high"));
        assert!(err(Init::Constant { value: f64::NAN }, &f).contains("finite"));
        assert!(err(Init::Constant { value: 1e300 }, &f).contains("outside the f32 range"));
        assert!(err(Init::Normal { mean: 0.0, std: 1.0, seed: 0 }, &i).contains("f32 weights only"));
        assert!(err(Init::Constant { value: 0.5 }, &i).contains("integer value"));
        assert!(err(Init::Constant { value: 9007199254740992.0 }, &i).contains("below 2^53"));
        let near_limit = generate(&Init::Constant { value: 9007199254740991.0 }, &i).unwrap();
        assert_eq!(near_limit.as_i64().unwrap(), [9007199254740991; 2]);
        assert!(
            err(Init::Arange { start: 0.0, step: 4e15 }, &TensorType::new(DType::I64, [4000])).contains("overflows")
        );
        assert!(err(Init::Arange { start: 0.0, step: 1.0 }, &TensorType::new(DType::Bool, [2])).contains("bool"));
    }

    #[test]
    fn absurd_sizes_are_refused_before_allocating() {
        // 10^12 elements: would be 4 TB; must fail at once, not abort on allocation.
        let err = generate(&Init::Zeros, &TensorType::f32([1_000_000, 1_000_000])).unwrap_err();
        assert!(err.contains("more than the limit"), "{err}");
        let err = generate(&Init::Ones, &TensorType::f32([3, 0])).unwrap_err();
        assert!(err.contains("zero"), "{err}");
    }
}
