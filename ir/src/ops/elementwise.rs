//! Elementwise ops: Unary, Binary (numpy broadcasting), Where, Cast, Identity.
//!
//! [`UnaryOp::apply`] and [`BinaryOp::apply_f32`] are the scalar reference semantics that generated
//! code is checked against. Transcendentals are computed in f64 and rounded to f32 once, so the
//! reference is within one rounding of the exact result (erf is kiln's own f64 implementation, below).

use super::broadcast::{broadcast_indices, broadcast_shapes};
use super::not_in_family;
use crate::dtype::{DType, TensorType};
use crate::op::{BinaryOp, Op, UnaryOp};
use crate::tensor::{Tensor, TensorData};

pub(crate) fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    match op {
        Op::Unary(u) => {
            let (input, output) = u.dtypes();
            if inputs[0].dtype != input {
                return Err(format!("{} input 0 must be {input}, got {}", op.name(), inputs[0].dtype));
            }
            Ok(vec![TensorType::new(output, inputs[0].shape.clone())])
        }
        Op::Binary(b) => {
            let (x, y) = (inputs[0], inputs[1]);
            if x.dtype != y.dtype {
                return Err(format!("{} needs inputs of one element type, got {} and {}", op.name(), x.dtype, y.dtype));
            }
            let takes: &[DType] = match b {
                BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => &[DType::Bool],
                BinaryOp::Equal => &[DType::F32, DType::I64, DType::Bool],
                BinaryOp::PRelu => &[DType::F32],
                _ => &[DType::F32, DType::I64],
            };
            if !takes.contains(&x.dtype) {
                let names: Vec<&str> = takes.iter().map(|d| d.name()).collect();
                return Err(format!("{} takes {} inputs, got {}", op.name(), names.join(" or "), x.dtype));
            }
            let shape = broadcast_shapes(&x.shape, &y.shape)?;
            if *b == BinaryOp::PRelu && shape != x.shape {
                return Err(format!("PRelu's slope {} must broadcast to x {} (unidirectional broadcasting)", y, x));
            }
            let dtype = if b.is_comparison() { DType::Bool } else { x.dtype };
            Ok(vec![TensorType::new(dtype, shape)])
        }
        Op::Where => {
            let (c, x, y) = (inputs[0], inputs[1], inputs[2]);
            if c.dtype != DType::Bool {
                return Err(format!("Where's condition must be bool, got {}", c.dtype));
            }
            if x.dtype != y.dtype {
                return Err(format!("Where needs x and y of one element type, got {} and {}", x.dtype, y.dtype));
            }
            let shape = broadcast_shapes(&broadcast_shapes(&c.shape, &x.shape)?, &y.shape)?;
            Ok(vec![TensorType::new(x.dtype, shape)])
        }
        Op::Cast { to } => Ok(vec![TensorType::new(*to, inputs[0].shape.clone())]),
        Op::Identity => Ok(vec![inputs[0].clone()]),
        _ => Err(not_in_family(op)),
    }
}

pub(crate) fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    let out = match op {
        Op::Unary(UnaryOp::Not) => {
            let x = inputs[0].as_bool().ok_or("Not needs a bool input")?;
            Tensor::from_bool(inputs[0].shape(), x.iter().map(|&v| !v).collect())?
        }
        Op::Unary(u) if u.dtypes().1 == DType::Bool => {
            let x = f32_data(op, inputs[0])?;
            Tensor::from_bool(inputs[0].shape(), x.iter().map(|&v| u.apply(v) != 0.0).collect())?
        }
        Op::Unary(u) => {
            let x = f32_data(op, inputs[0])?;
            Tensor::from_f32(inputs[0].shape(), x.iter().map(|&v| u.apply(v)).collect())?
        }
        Op::Binary(b) => eval_binary(*b, inputs[0], inputs[1])?,
        Op::Where => {
            let (c, x, y) = (inputs[0], inputs[1], inputs[2]);
            let shape = broadcast_shapes(&broadcast_shapes(c.shape(), x.shape())?, y.shape())?;
            let ci = broadcast_indices(c.shape(), &shape);
            let xi = broadcast_indices(x.shape(), &shape);
            let yi = broadcast_indices(y.shape(), &shape);
            let cond = c.as_bool().ok_or("Where's condition must be bool")?;
            let pick = |k: usize| if cond[ci[k]] { (true, xi[k]) } else { (false, yi[k]) };
            let n = ci.len();
            let data = match (x.data(), y.data()) {
                (TensorData::F32(a), TensorData::F32(b)) => TensorData::F32(select(n, pick, a, b)),
                (TensorData::I64(a), TensorData::I64(b)) => TensorData::I64(select(n, pick, a, b)),
                (TensorData::Bool(a), TensorData::Bool(b)) => TensorData::Bool(select(n, pick, a, b)),
                _ => return Err("Where needs x and y of one element type".into()),
            };
            Tensor::new(shape, data)?
        }
        Op::Cast { to } => Tensor::new(inputs[0].shape(), cast(inputs[0].data(), *to))?,
        Op::Identity => inputs[0].clone(),
        _ => return Err(not_in_family(op)),
    };
    Ok(vec![out])
}

fn f32_data<'a>(op: &Op, t: &'a Tensor) -> Result<&'a [f32], String> {
    t.as_f32().ok_or_else(|| format!("{} needs f32 input, got {}", op.name(), t.dtype()))
}

fn select<T: Copy>(n: usize, pick: impl Fn(usize) -> (bool, usize), a: &[T], b: &[T]) -> Vec<T> {
    (0..n)
        .map(|k| match pick(k) {
            (true, i) => a[i],
            (false, i) => b[i],
        })
        .collect()
}

fn eval_binary(b: BinaryOp, x: &Tensor, y: &Tensor) -> Result<Tensor, String> {
    let shape = broadcast_shapes(x.shape(), y.shape())?;
    let xi = broadcast_indices(x.shape(), &shape);
    let yi = broadcast_indices(y.shape(), &shape);
    let pairs = xi.iter().zip(&yi);
    let data = match (x.data(), y.data()) {
        (TensorData::F32(p), TensorData::F32(q)) => {
            if b.is_comparison() {
                TensorData::Bool(pairs.map(|(&i, &j)| b.apply_f32(p[i], q[j]) != 0.0).collect())
            } else {
                TensorData::F32(pairs.map(|(&i, &j)| b.apply_f32(p[i], q[j])).collect())
            }
        }
        (TensorData::I64(p), TensorData::I64(q)) => {
            if b.is_comparison() {
                TensorData::Bool(pairs.map(|(&i, &j)| b.compare_i64(p[i], q[j])).collect())
            } else {
                TensorData::I64(pairs.map(|(&i, &j)| b.apply_i64(p[i], q[j])).collect::<Result<_, _>>()?)
            }
        }
        // Equal, And, Or, Xor (the only ops `infer` lets take bool).
        (TensorData::Bool(p), TensorData::Bool(q)) => {
            TensorData::Bool(pairs.map(|(&i, &j)| b.apply_f32(p[i] as u8 as f32, q[j] as u8 as f32) != 0.0).collect())
        }
        (p, q) => {
            return Err(format!("{b:?} takes two f32 or two i64 inputs, got {} and {}", p.dtype(), q.dtype()));
        }
    };
    Tensor::new(shape, data)
}

/// Element type conversion. f32 → i64 truncates toward zero (ONNX/C); where C is undefined kiln uses
/// Rust's saturating `as`: NaN → 0, ±∞ and out-of-range values → i64::MIN/MAX. i64 → f32 rounds to
/// nearest even. Anything → bool is `x != 0` (so NaN → true, as in C and numpy); bool → 1/0.
fn cast(data: &TensorData, to: DType) -> TensorData {
    match (data, to) {
        (TensorData::F32(v), DType::F32) => TensorData::F32(v.clone()),
        (TensorData::F32(v), DType::I64) => TensorData::I64(v.iter().map(|&x| x as i64).collect()),
        (TensorData::F32(v), DType::Bool) => TensorData::Bool(v.iter().map(|&x| x != 0.0).collect()),
        (TensorData::I64(v), DType::F32) => TensorData::F32(v.iter().map(|&x| x as f32).collect()),
        (TensorData::I64(v), DType::I64) => TensorData::I64(v.clone()),
        (TensorData::I64(v), DType::Bool) => TensorData::Bool(v.iter().map(|&x| x != 0).collect()),
        (TensorData::Bool(v), DType::F32) => TensorData::F32(v.iter().map(|&x| x as u8 as f32).collect()),
        (TensorData::Bool(v), DType::I64) => TensorData::I64(v.iter().map(|&x| x as i64).collect()),
        (TensorData::Bool(v), DType::Bool) => TensorData::Bool(v.clone()),
    }
}

impl UnaryOp {
    /// The element types of the op's input and output: f32 → f32 except IsNaN and IsInf
    /// (f32 → bool) and Not (bool → bool).
    pub fn dtypes(self) -> (DType, DType) {
        match self {
            UnaryOp::IsNaN | UnaryOp::IsInf { .. } => (DType::F32, DType::Bool),
            UnaryOp::Not => (DType::Bool, DType::Bool),
            _ => (DType::F32, DType::F32),
        }
    }

    /// The reference scalar function. Computed in f64 where that is cheap, rounded to f32 once.
    /// NaN inputs give NaN for every f32 → f32 op (Relu, LeakyRelu and Clip included) except
    /// ThresholdedRelu and Shrink, whose ONNX definitions (and ONNX Runtime) give 0. Bool values
    /// (IsNaN, IsInf, Not) are 1.0/0.0, as in the JIT's arena.
    pub fn apply(self, x: f32) -> f32 {
        let d = x as f64;
        match self {
            UnaryOp::Sin => d.sin() as f32,
            UnaryOp::Cos => d.cos() as f32,
            UnaryOp::Tan => d.tan() as f32,
            UnaryOp::Asin => d.asin() as f32,
            UnaryOp::Acos => d.acos() as f32,
            UnaryOp::Atan => d.atan() as f32,
            UnaryOp::Sinh => d.sinh() as f32,
            UnaryOp::Cosh => d.cosh() as f32,
            UnaryOp::Asinh => d.asinh() as f32,
            UnaryOp::Acosh => d.acosh() as f32,
            UnaryOp::Atanh => d.atanh() as f32,
            UnaryOp::Floor => x.floor(),
            UnaryOp::Ceil => x.ceil(),
            UnaryOp::Round => x.round_ties_even(),
            // ±0 and NaN map to themselves.
            UnaryOp::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    x
                }
            }
            UnaryOp::Softplus => softplus(d) as f32,
            // ONNX's definition X / (1 + |X|): NaN at ±∞, as ONNX Runtime.
            UnaryOp::Softsign => (d / (1.0 + d.abs())) as f32,
            // x·tanh(softplus(x)); NaN at −∞ (−∞·0) as the ONNX function body.
            UnaryOp::Mish => (d * softplus(d).tanh()) as f32,
            UnaryOp::HardSwish => (d * hard_sigmoid(d, 1.0 / 6.0, 0.5)) as f32,
            UnaryOp::HardSigmoid { alpha, beta } => hard_sigmoid(d, alpha as f64, beta as f64) as f32,
            UnaryOp::Elu { alpha } => {
                if d > 0.0 {
                    x
                } else {
                    (alpha as f64 * d.exp_m1()) as f32
                }
            }
            // max(0, x) + min(0, α·(e^{x/α} − 1)) is x for x > 0 and α·expm1(x/α) otherwise, for
            // either sign of α.
            UnaryOp::Celu { alpha } => {
                if d > 0.0 {
                    x
                } else {
                    (alpha as f64 * (d / alpha as f64).exp_m1()) as f32
                }
            }
            UnaryOp::ThresholdedRelu { alpha } => {
                if x > alpha {
                    x
                } else {
                    0.0
                }
            }
            UnaryOp::Shrink { bias, lambd } => {
                if x < -lambd {
                    (d + bias as f64) as f32
                } else if x > lambd {
                    (d - bias as f64) as f32
                } else {
                    0.0
                }
            }
            UnaryOp::IsNaN => x.is_nan() as u8 as f32,
            UnaryOp::IsInf { positive, negative } => {
                ((positive && x == f32::INFINITY) || (negative && x == f32::NEG_INFINITY)) as u8 as f32
            }
            UnaryOp::Not => (x == 0.0) as u8 as f32,
            UnaryOp::Sqrt => d.sqrt() as f32,
            UnaryOp::Reciprocal => 1.0 / x,
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Exp => d.exp() as f32,
            UnaryOp::Log => d.ln() as f32,
            UnaryOp::Tanh => d.tanh() as f32,
            UnaryOp::Erf => erf(d) as f32,
            UnaryOp::Sigmoid => sigmoid(d) as f32,
            // x > 0 ? x : 0, keeping NaN (and mapping −0 to +0).
            UnaryOp::Relu => {
                if x.is_nan() || x > 0.0 {
                    x
                } else {
                    0.0
                }
            }
            UnaryOp::Silu => (d * sigmoid(d)) as f32,
            UnaryOp::LeakyRelu { alpha } => {
                if x < 0.0 {
                    (alpha as f64 * d) as f32
                } else {
                    x
                }
            }
            // ONNX: γ·x for x > 0, γ·α·(eˣ − 1) otherwise; exp_m1 keeps precision near 0.
            UnaryOp::Selu { alpha, gamma } => {
                let y = if d > 0.0 { d } else { alpha as f64 * d.exp_m1() };
                (gamma as f64 * y) as f32
            }
            UnaryOp::Gelu { tanh: false } => {
                // 0.5·x·(1 + erf(x/√2)) = 0.5·x·erfc(−x/√2); erfc keeps the tiny negative tail accurate.
                (0.5 * d * erfc(-d * std::f64::consts::FRAC_1_SQRT_2)) as f32
            }
            UnaryOp::Gelu { tanh: true } => {
                // √(2/π) = 2/√π · 1/√2; ½d·(1 + tanh v) = d/(1 + e^{−2v}), which keeps the negative
                // tail that 1 + tanh v cancels to 0.
                let k = std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2;
                (d / (1.0 + (-2.0 * k * (d + 0.044715 * d * d * d)).exp())) as f32
            }
            UnaryOp::Clip { min, max } => {
                let mut y = x;
                if let Some(lo) = min
                    && y < lo
                {
                    y = lo;
                }
                if let Some(hi) = max
                    && y > hi
                {
                    y = hi;
                }
                y
            }
        }
    }
}

impl BinaryOp {
    /// Whether the op produces bool.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Equal
                | BinaryOp::Less
                | BinaryOp::Greater
                | BinaryOp::GreaterOrEqual
                | BinaryOp::LessOrEqual
                | BinaryOp::And
                | BinaryOp::Or
                | BinaryOp::Xor
        )
    }

    /// The reference scalar function on f32. Add/Sub/Mul/Div are single IEEE f32 operations; Pow is
    /// computed in f64 and rounded once. Max/Min propagate NaN (numpy maximum/minimum). Equal and Less
    /// return 1.0 for true and 0.0 for false.
    pub fn apply_f32(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => (a as f64).powf(b as f64) as f32,
            BinaryOp::Max | BinaryOp::Min if a.is_nan() || b.is_nan() => f32::NAN,
            BinaryOp::Max => {
                if b > a {
                    b
                } else {
                    a
                }
            }
            BinaryOp::Min => {
                if b < a {
                    b
                } else {
                    a
                }
            }
            BinaryOp::Equal => (a == b) as u8 as f32,
            BinaryOp::Less => (a < b) as u8 as f32,
            BinaryOp::Greater => (a > b) as u8 as f32,
            BinaryOp::GreaterOrEqual => (a >= b) as u8 as f32,
            BinaryOp::LessOrEqual => (a <= b) as u8 as f32,
            // Bool operands are 0.0/1.0.
            BinaryOp::And => (a != 0.0 && b != 0.0) as u8 as f32,
            BinaryOp::Or => (a != 0.0 || b != 0.0) as u8 as f32,
            BinaryOp::Xor => ((a != 0.0) != (b != 0.0)) as u8 as f32,
            // C fmod, exact (Rust's `%` on floats).
            BinaryOp::Mod { fmod: true } => a % b,
            // Floor-mod (ONNX Mod-28, Python's float `%`): fmod moved to the divisor's sign; a
            // zero takes the divisor's sign too.
            BinaryOp::Mod { fmod: false } => {
                let r = a % b;
                if r == 0.0 {
                    0f32.copysign(b)
                } else if (r < 0.0) != (b < 0.0) {
                    r + b
                } else {
                    r
                }
            }
            BinaryOp::PRelu => {
                if a < 0.0 {
                    a * b
                } else {
                    a
                }
            }
        }
    }

    /// The reference function on i64 for the arithmetic ops. Overflow wraps (two's complement); Div
    /// truncates toward zero like C and ONNX, and division by zero is an error; Pow is integer
    /// power and a negative exponent is an error.
    pub fn apply_i64(self, a: i64, b: i64) -> Result<i64, String> {
        Ok(match self {
            BinaryOp::Add => a.wrapping_add(b),
            BinaryOp::Sub => a.wrapping_sub(b),
            BinaryOp::Mul => a.wrapping_mul(b),
            BinaryOp::Div => {
                if b == 0 {
                    return Err(format!("integer division by zero ({a} / 0)"));
                }
                a.wrapping_div(b)
            }
            BinaryOp::Pow => {
                if b < 0 {
                    return Err(format!("integer Pow with a negative exponent ({a} ^ {b})"));
                }
                // Square-and-multiply; wrapping like the other ops, and any exponent fits.
                let (mut base, mut exp, mut acc) = (a, b as u64, 1i64);
                while exp > 0 {
                    if exp & 1 == 1 {
                        acc = acc.wrapping_mul(base);
                    }
                    base = base.wrapping_mul(base);
                    exp >>= 1;
                }
                acc
            }
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
            BinaryOp::Mod { fmod } => {
                if b == 0 {
                    return Err(format!("integer Mod by zero ({a} mod 0)"));
                }
                // fmod: the sign of the dividend (C); otherwise that of the divisor (Python).
                let r = a.wrapping_rem(b);
                if !fmod && r != 0 && ((r < 0) != (b < 0)) { r + b } else { r }
            }
            BinaryOp::PRelu => return Err("PRelu takes f32 inputs".into()),
            _ => self.compare_i64(a, b) as i64,
        })
    }

    fn compare_i64(self, a: i64, b: i64) -> bool {
        match self {
            BinaryOp::Less => a < b,
            BinaryOp::Greater => a > b,
            BinaryOp::GreaterOrEqual => a >= b,
            BinaryOp::LessOrEqual => a <= b,
            BinaryOp::And => a != 0 && b != 0,
            BinaryOp::Or => a != 0 || b != 0,
            BinaryOp::Xor => (a != 0) != (b != 0),
            _ => a == b,
        }
    }
}

/// ln(1 + eˣ) without overflow: x + ln(1 + e⁻ˣ) for x > 0.
fn softplus(x: f64) -> f64 {
    if x > 0.0 { x + (-x).exp().ln_1p() } else { x.exp().ln_1p() }
}

/// max(0, min(1, α·x + β)), NaN propagating.
fn hard_sigmoid(x: f64, alpha: f64, beta: f64) -> f64 {
    let y = alpha * x + beta;
    if y.is_nan() { y } else { y.clamp(0.0, 1.0) }
}

fn sigmoid(x: f64) -> f64 {
    // exp(−x) overflows to ∞ for x < −709, giving 1/∞ = 0: the right limit.
    1.0 / (1.0 + (-x).exp())
}

/// Below this, erf comes from its power series; above, erfc from its continued fraction.
const ERF_SERIES_LIMIT: f64 = 2.5;

/// erf(x) in f64, relative error around 1e-15 (see the tests).
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < ERF_SERIES_LIMIT { erf_series(a) } else { 1.0 - erfc_fraction(a) };
    r.copysign(x)
}

/// erfc(x) = 1 − erf(x) in f64, accurate in the tails as well.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x >= ERF_SERIES_LIMIT {
        erfc_fraction(x)
    } else if x >= 0.0 {
        1.0 - erf_series(x)
    } else if x > -ERF_SERIES_LIMIT {
        1.0 + erf_series(-x)
    } else {
        2.0 - erfc_fraction(-x)
    }
}

/// erf(x) for 0 ≤ x < 2.5 from erf(x) = 2/√π · e^(−x²) · Σₙ 2ⁿ x^(2n+1) / (1·3·…·(2n+1)). Every term
/// is positive, so the sum has no cancellation (unlike the alternating Maclaurin series).
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    // Terms shrink geometrically once 2n+1 > 2x² (n ≳ 6 at x = 2.5); 200 is far more than needed.
    for _ in 0..200 {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    std::f64::consts::FRAC_2_SQRT_PI * (-x2).exp() * sum
}

/// erfc(x) for x ≥ 2.5 from the continued fraction
/// erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …))))),
/// evaluated bottom-up from a fixed depth (deep enough for full f64 precision at x = 2.5).
fn erfc_fraction(x: f64) -> f64 {
    if x.is_infinite() {
        return 0.0;
    }
    const DEPTH: u32 = 120;
    let mut g = x;
    for k in (1..=DEPTH).rev() {
        g = x + (k as f64 / 2.0) / g;
    }
    // 1/√π = (2/√π)/2.
    (-x * x).exp() * (std::f64::consts::FRAC_2_SQRT_PI / 2.0) / g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape, v.to_vec()).unwrap()
    }

    fn i64s(shape: &[usize], v: &[i64]) -> Tensor {
        Tensor::from_i64(shape, v.to_vec()).unwrap()
    }

    fn run(op: Op, inputs: &[&Tensor]) -> Tensor {
        let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let inferred = op.infer(&refs).unwrap();
        let mut out = op.eval(inputs).unwrap();
        assert_eq!(out.len(), 1);
        let out = out.remove(0);
        assert_eq!(out.ty(), inferred[0], "eval and infer disagree");
        out
    }

    fn infer_err(op: Op, types: &[TensorType]) -> String {
        let refs: Vec<&TensorType> = types.iter().collect();
        op.infer(&refs).unwrap_err()
    }

    fn rel_err(got: f64, want: f64) -> f64 {
        if want == 0.0 { got.abs() } else { ((got - want) / want).abs() }
    }

    #[test]
    fn erf_matches_known_values() {
        // Reference values from the brief (computed with high-precision libraries) and from CPython's
        // math.erf / math.erfc (libm). Tolerance: the f64 function is held to 1e-13 relative, far
        // inside the 1e-7 that an f32 result needs; the f32 rounding is checked separately.
        let known = [
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (-3.0, -0.9999779095030014),
            (1e-3, 0.0011283787909692363),
            (0.1, 0.1124629160182849),
            (-1.5, -0.9661051464753108),
            (2.4, 0.999311486103355),
        ];
        for (x, want) in known {
            let got = erf(x);
            assert!(rel_err(got, want) < 1e-13, "erf({x}) = {got}, want {want}");
            let got32 = UnaryOp::Erf.apply(x as f32) as f64;
            // The f32 input is x rounded, so compare against erf of the rounded input, with one f32
            // rounding (2^-24 ≈ 6e-8 relative) allowed.
            let want32 = erf(x as f32 as f64);
            assert!(rel_err(got32, want32) < 1e-7, "f32 erf({x}) = {got32}, want {want32}");
        }
        let tails = [(2.5, 0.0004069520174449589), (3.0, 2.2090496998585438e-05), (5.0, 1.5374597944280351e-12)];
        for (x, want) in tails {
            let got = erfc(x);
            assert!(rel_err(got, want) < 1e-12, "erfc({x}) = {got}, want {want}");
        }
        assert!(rel_err(erfc(10.0), 2.088487583762545e-45) < 1e-12);
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        assert!(erf(f64::NAN).is_nan());
        // Continuity across the switch between series and continued fraction.
        let below = erf(ERF_SERIES_LIMIT - 1e-12);
        let above = erf(ERF_SERIES_LIMIT);
        assert!((above - below).abs() < 1e-14, "{below} vs {above}");
    }

    #[test]
    fn erf_sweep_against_maclaurin_series() {
        // An independent formula: erf(x) = 2/√π Σ (−1)ⁿ x^(2n+1) / (n!(2n+1)). For |x| ≤ 2 its largest
        // term is below e^4 ≈ 55, so cancellation costs < 2 digits of f64: good to ~1e-14 relative.
        let maclaurin = |x: f64| {
            let (mut term, mut sum) = (x, x);
            for n in 1..80 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            std::f64::consts::FRAC_2_SQRT_PI * sum
        };
        for i in -200..=200 {
            let x = i as f64 / 100.0;
            let (got, want) = (erf(x), maclaurin(x));
            assert!(rel_err(got, want) < 1e-12, "erf({x}) = {got}, series {want}");
            // The f32 function rounds once: within half an f32 ulp plus the f64 error, < 1e-7.
            let x32 = x as f32;
            let got32 = UnaryOp::Erf.apply(x32) as f64;
            assert!(rel_err(got32, maclaurin(x32 as f64)) < 1e-7, "f32 erf({x32})");
        }
    }

    #[test]
    fn unary_values() {
        let cases: &[(UnaryOp, f32, f64)] = &[
            (UnaryOp::Sqrt, 6.25, 2.5),
            (UnaryOp::Reciprocal, 4.0, 0.25),
            (UnaryOp::Neg, 3.0, -3.0),
            (UnaryOp::Abs, -2.5, 2.5),
            (UnaryOp::Exp, 0.0, 1.0),
            (UnaryOp::Exp, 1.0, std::f64::consts::E),
            (UnaryOp::Log, 1.0, 0.0),
            (UnaryOp::Tanh, 0.0, 0.0),
            // tanh(0.5) = (e − 1)/(e + 1).
            (UnaryOp::Tanh, 0.5, 0.46211716),
            (UnaryOp::Sigmoid, 0.0, 0.5),
            // σ(ln 3) = 3/4.
            (UnaryOp::Sigmoid, 1.0986123, 0.75),
            (UnaryOp::Relu, -1.0, 0.0),
            (UnaryOp::Relu, 2.0, 2.0),
            // silu(ln 3) = ln 3 · 3/4.
            (UnaryOp::Silu, 1.0986123, 0.82395923),
            (UnaryOp::LeakyRelu { alpha: 0.1 }, -2.0, -0.2),
            (UnaryOp::LeakyRelu { alpha: 0.1 }, 3.0, 3.0),
            (UnaryOp::Selu { alpha: 2.0, gamma: 3.0 }, 1.0, 3.0),
            // 3·2·(e⁻¹ − 1) = 6·(−0.63212056) = −3.7927234.
            (UnaryOp::Selu { alpha: 2.0, gamma: 3.0 }, -1.0, -3.7927234),
            // 0.5·1·(1 + erf(1/√2)) = Φ(1) = 0.8413447460685429.
            (UnaryOp::Gelu { tanh: false }, 1.0, 0.84134475),
            // −Φ(−1) = −0.15865525393145707.
            (UnaryOp::Gelu { tanh: false }, -1.0, -0.15865525),
            // 0.5·(1 + tanh(√(2/π)·1.044715)) = 0.8411919906082768.
            (UnaryOp::Gelu { tanh: true }, 1.0, 0.841192),
            (UnaryOp::Clip { min: Some(-1.0), max: Some(1.0) }, 5.0, 1.0),
            (UnaryOp::Clip { min: Some(-1.0), max: Some(1.0) }, -5.0, -1.0),
            (UnaryOp::Clip { min: Some(-1.0), max: None }, 5.0, 5.0),
            (UnaryOp::Clip { min: None, max: Some(1.0) }, -5.0, -5.0),
        ];
        for &(op, x, want) in cases {
            let got = op.apply(x) as f64;
            // Hand-derived constants carry 8 significant digits: 2e-7 relative (plus a tiny absolute
            // floor for exact zeros).
            assert!((got - want).abs() <= 2e-7 * want.abs() + 1e-30, "{op:?}({x}) = {got}, want {want}");
        }
        // Gelu's far negative tail: −10·Φ(−10) = −10·erfc(10/√2)/2 ≈ −7.619853e-23, not 0.
        let tail = UnaryOp::Gelu { tanh: false }.apply(-10.0);
        assert!(rel_err(tail as f64, -7.619853024160527e-23) < 1e-6, "{tail}");
        // The tanh form's tail: −10/(1 + e^{2·√(2/π)·(10 + 44.715)}) (Python, f64), not the 0 that
        // ½x·(1 + tanh) gives once tanh rounds to −1 (here even in f64).
        let tail = UnaryOp::Gelu { tanh: true }.apply(-10.0);
        assert!(rel_err(tail as f64, -1.2040923482098023e-37) < 1e-6, "{tail}");
        for op in [UnaryOp::Relu, UnaryOp::LeakyRelu { alpha: 0.1 }, UnaryOp::Clip { min: Some(0.0), max: Some(1.0) }] {
            assert!(op.apply(f32::NAN).is_nan(), "{op:?}");
        }
        let t = run(Op::Unary(UnaryOp::Neg), &[&f32s(&[2], &[1.0, -2.0])]);
        assert_eq!(t.as_f32().unwrap(), &[-1.0, 2.0]);
    }

    #[test]
    fn binary_broadcasting() {
        // [2,1] + [3] → [2,3].
        let a = f32s(&[2, 1], &[10.0, 20.0]);
        let b = f32s(&[3], &[1.0, 2.0, 3.0]);
        let t = run(Op::Binary(BinaryOp::Add), &[&a, &b]);
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.as_f32().unwrap(), &[11.0, 12.0, 13.0, 21.0, 22.0, 23.0]);
        // Rank-0 operand.
        let s = Tensor::scalar_f32(2.0);
        let t = run(Op::Binary(BinaryOp::Sub), &[&s, &b]);
        assert_eq!(t.shape(), &[3]);
        assert_eq!(t.as_f32().unwrap(), &[1.0, 0.0, -1.0]);
        let t = run(Op::Binary(BinaryOp::Mul), &[&s, &s]);
        assert_eq!(t.shape(), &[] as &[usize]);
        assert_eq!(t.as_f32().unwrap(), &[4.0]);
        // Size-1 on both sides: [1,3] and [2,1].
        let c = f32s(&[1, 3], &[1.0, 2.0, 3.0]);
        let d = f32s(&[2, 1], &[2.0, 4.0]);
        let t = run(Op::Binary(BinaryOp::Div), &[&c, &d]);
        assert_eq!(t.as_f32().unwrap(), &[0.5, 1.0, 1.5, 0.25, 0.5, 0.75]);
        let t = run(Op::Binary(BinaryOp::Pow), &[&c, &d]);
        assert_eq!(t.as_f32().unwrap(), &[1.0, 4.0, 9.0, 1.0, 16.0, 81.0]);
        let t = run(Op::Binary(BinaryOp::Max), &[&c, &d]);
        assert_eq!(t.as_f32().unwrap(), &[2.0, 2.0, 3.0, 4.0, 4.0, 4.0]);
        let t = run(Op::Binary(BinaryOp::Min), &[&c, &d]);
        assert_eq!(t.as_f32().unwrap(), &[1.0, 2.0, 2.0, 1.0, 2.0, 3.0]);
        let t = run(Op::Binary(BinaryOp::Equal), &[&c, &d]);
        assert_eq!(t.as_bool().unwrap(), &[false, true, false, false, false, false]);
        let t = run(Op::Binary(BinaryOp::Less), &[&c, &d]);
        assert_eq!(t.as_bool().unwrap(), &[true, false, false, true, true, true]);
        assert!(BinaryOp::Max.apply_f32(f32::NAN, 1.0).is_nan());
        assert!(BinaryOp::Min.apply_f32(1.0, f32::NAN).is_nan());
    }

    #[test]
    fn binary_i64() {
        let a = i64s(&[4], &[7, -7, 7, -7]);
        let b = i64s(&[4], &[2, 2, -2, -2]);
        // Truncating division, as in C: 7/2 = 3, −7/2 = −3.
        let t = run(Op::Binary(BinaryOp::Div), &[&a, &b]);
        assert_eq!(t.as_i64().unwrap(), &[3, -3, -3, 3]);
        let t = run(Op::Binary(BinaryOp::Pow), &[&i64s(&[3], &[3, -2, 0]), &i64s(&[], &[3])]);
        assert_eq!(t.as_i64().unwrap(), &[27, -8, 0]);
        assert_eq!(BinaryOp::Pow.apply_i64(5, 0), Ok(1));
        let t = run(Op::Binary(BinaryOp::Add), &[&a, &i64s(&[1], &[1])]);
        assert_eq!(t.as_i64().unwrap(), &[8, -6, 8, -6]);
        let t = run(Op::Binary(BinaryOp::Less), &[&a, &b]);
        assert_eq!(t.dtype(), DType::Bool);
        assert_eq!(t.as_bool().unwrap(), &[false, true, false, true]);
        let t = run(Op::Binary(BinaryOp::Max), &[&a, &b]);
        assert_eq!(t.as_i64().unwrap(), &[7, 2, 7, -2]);
        let err = Op::Binary(BinaryOp::Pow).eval(&[&a, &i64s(&[], &[-1])]).unwrap_err();
        assert!(err.contains("negative exponent"), "{err}");
        let err = Op::Binary(BinaryOp::Div).eval(&[&a, &i64s(&[], &[0])]).unwrap_err();
        assert!(err.contains("division by zero"), "{err}");
    }

    #[test]
    fn binary_infer_errors() {
        let err = infer_err(Op::Binary(BinaryOp::Add), &[TensorType::f32([2, 3]), TensorType::f32([4])]);
        assert!(err.contains("do not broadcast"), "{err}");
        let err = infer_err(Op::Binary(BinaryOp::Add), &[TensorType::f32([2]), TensorType::new(DType::I64, [2])]);
        assert_eq!(err, "Add needs inputs of one element type, got f32 and i64");
        let b = TensorType::new(DType::Bool, [2]);
        let err = infer_err(Op::Binary(BinaryOp::Less), &[b.clone(), b]);
        assert_eq!(err, "Less takes f32 or i64 inputs, got bool");
        let err = infer_err(Op::Unary(UnaryOp::Exp), &[TensorType::new(DType::I64, [2])]);
        assert_eq!(err, "Exp input 0 must be f32, got i64");
    }

    #[test]
    fn where_three_way_broadcast() {
        // cond [2,1], x [3], y rank 0 → [2,3].
        let c = Tensor::from_bool([2, 1], vec![true, false]).unwrap();
        let x = f32s(&[3], &[1.0, 2.0, 3.0]);
        let y = Tensor::scalar_f32(-1.0);
        let t = run(Op::Where, &[&c, &x, &y]);
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.as_f32().unwrap(), &[1.0, 2.0, 3.0, -1.0, -1.0, -1.0]);
        let t = run(Op::Where, &[&c, &i64s(&[1], &[5]), &i64s(&[1, 2], &[6, 7])]);
        assert_eq!(t.as_i64().unwrap(), &[5, 5, 6, 7]);
        let err = infer_err(Op::Where, &[TensorType::f32([2]), TensorType::f32([2]), TensorType::f32([2])]);
        assert_eq!(err, "Where's condition must be bool, got f32");
        let cb = TensorType::new(DType::Bool, [2]);
        let err = infer_err(Op::Where, &[cb.clone(), TensorType::f32([2]), TensorType::new(DType::I64, [2])]);
        assert!(err.contains("one element type"), "{err}");
        let err = infer_err(Op::Where, &[cb, TensorType::f32([2]), TensorType::f32([3])]);
        assert!(err.contains("do not broadcast"), "{err}");
    }

    #[test]
    fn cast_and_identity() {
        let x = f32s(&[6], &[2.7, -2.7, 0.0, f32::NAN, 1e30, -0.5]);
        let t = run(Op::Cast { to: DType::I64 }, &[&x]);
        assert_eq!(t.as_i64().unwrap(), &[2, -2, 0, 0, i64::MAX, 0]);
        let t = run(Op::Cast { to: DType::Bool }, &[&x]);
        assert_eq!(t.as_bool().unwrap(), &[true, true, false, true, true, true]);
        let t = run(Op::Cast { to: DType::F32 }, &[&i64s(&[2], &[3, -4])]);
        assert_eq!(t.as_f32().unwrap(), &[3.0, -4.0]);
        let b = Tensor::from_bool([2], vec![true, false]).unwrap();
        let t = run(Op::Cast { to: DType::I64 }, &[&b]);
        assert_eq!(t.as_i64().unwrap(), &[1, 0]);
        let t = run(Op::Cast { to: DType::F32 }, &[&b]);
        assert_eq!(t.as_f32().unwrap(), &[1.0, 0.0]);
        let t = run(Op::Identity, &[&b]);
        assert_eq!(t, b);
    }

    #[test]
    fn issue12_unary_specials() {
        let inf = f32::INFINITY;
        let x = f32s(&[8], &[0.0, -0.0, 1.5, -2.5, 2.5, inf, -inf, f32::NAN]);
        let apply = |op: UnaryOp| -> Vec<f32> { run(Op::Unary(op), &[&x]).as_f32().unwrap().to_vec() };
        // Round is half to even; Floor/Ceil keep ±0 and ±inf.
        assert_eq!(&apply(UnaryOp::Round)[..7], &[0.0, -0.0, 2.0, -2.0, 2.0, inf, -inf]);
        assert_eq!(&apply(UnaryOp::Floor)[..7], &[0.0, -0.0, 1.0, -3.0, 2.0, inf, -inf]);
        assert_eq!(&apply(UnaryOp::Ceil)[..7], &[0.0, -0.0, 2.0, -2.0, 3.0, inf, -inf]);
        assert_eq!(&apply(UnaryOp::Sign)[..7], &[0.0, -0.0, 1.0, -1.0, 1.0, 1.0, -1.0]);
        assert!(apply(UnaryOp::Sign)[1].is_sign_negative());
        for op in [UnaryOp::Round, UnaryOp::Sign, UnaryOp::Sin, UnaryOp::Softplus, UnaryOp::Elu { alpha: 1.0 }] {
            assert!(apply(op)[7].is_nan(), "{op:?}(NaN)");
        }
        // sin/cos/tan of ±inf are NaN; atan of ±inf is ±π/2.
        assert!(apply(UnaryOp::Sin)[5].is_nan() && apply(UnaryOp::Cos)[6].is_nan() && apply(UnaryOp::Tan)[5].is_nan());
        assert_eq!(apply(UnaryOp::Atan)[5], std::f32::consts::FRAC_PI_2);
        // Softplus: no overflow, exact limits.
        assert_eq!(&apply(UnaryOp::Softplus)[5..7], &[inf, 0.0]);
        assert_eq!(UnaryOp::Softplus.apply(100.0), 100.0);
        assert_eq!(UnaryOp::Softplus.apply(0.0), std::f32::consts::LN_2);
        // ThresholdedRelu and Shrink give 0 for NaN (ONNX's definitions).
        assert_eq!(UnaryOp::ThresholdedRelu { alpha: 1.0 }.apply(f32::NAN), 0.0);
        assert_eq!(UnaryOp::ThresholdedRelu { alpha: 1.0 }.apply(1.0), 0.0);
        assert_eq!(UnaryOp::ThresholdedRelu { alpha: 1.0 }.apply(1.5), 1.5);
        let shrink = UnaryOp::Shrink { bias: 0.5, lambd: 1.0 };
        assert_eq!(
            [shrink.apply(-2.0), shrink.apply(-1.0), shrink.apply(1.0), shrink.apply(3.0)],
            [-1.5, 0.0, 0.0, 2.5]
        );
        assert_eq!(shrink.apply(f32::NAN), 0.0);
        // HardSigmoid/HardSwish clamp; HardSwish(3) = 3.
        let hs = UnaryOp::HardSigmoid { alpha: 0.2, beta: 0.5 };
        assert_eq!([hs.apply(-10.0), hs.apply(0.0), hs.apply(10.0)], [0.0, 0.5, 1.0]);
        assert!(hs.apply(f32::NAN).is_nan());
        assert_eq!([UnaryOp::HardSwish.apply(3.0), UnaryOp::HardSwish.apply(-3.0)], [3.0, 0.0]);
        // Elu/Celu: α·(e^{x/α} − 1) below 0.
        assert_eq!(UnaryOp::Elu { alpha: 2.0 }.apply(-inf), -2.0);
        assert_eq!(UnaryOp::Celu { alpha: 2.0 }.apply(-2.0), (2.0 * (-1f64).exp_m1()) as f32);
        assert_eq!(UnaryOp::Celu { alpha: 2.0 }.apply(3.0), 3.0);
        // Softsign and Mish follow ONNX's function bodies at infinities (NaN), not the limits.
        assert!(UnaryOp::Softsign.apply(inf).is_nan());
        assert_eq!(UnaryOp::Softsign.apply(1.0), 0.5);
        assert!(UnaryOp::Mish.apply(-inf).is_nan());
        assert_eq!(UnaryOp::Mish.apply(inf), inf);
        // Inverse hyperbolics and their domains.
        assert!(UnaryOp::Acosh.apply(0.5).is_nan() && UnaryOp::Asin.apply(1.5).is_nan());
        assert_eq!(UnaryOp::Atanh.apply(1.0), inf);
        assert_eq!(UnaryOp::Cosh.apply(0.0), 1.0);
    }

    #[test]
    fn issue12_bool_results_and_inputs() {
        let inf = f32::INFINITY;
        let x = f32s(&[4], &[1.0, inf, -inf, f32::NAN]);
        let t = run(Op::Unary(UnaryOp::IsNaN), &[&x]);
        assert_eq!(t.as_bool().unwrap(), &[false, false, false, true]);
        let t = run(Op::Unary(UnaryOp::IsInf { positive: true, negative: true }), &[&x]);
        assert_eq!(t.as_bool().unwrap(), &[false, true, true, false]);
        let t = run(Op::Unary(UnaryOp::IsInf { positive: false, negative: true }), &[&x]);
        assert_eq!(t.as_bool().unwrap(), &[false, false, true, false]);
        let b = Tensor::from_bool([4], vec![true, false, true, false]).unwrap();
        let c = Tensor::from_bool([4], vec![true, true, false, false]).unwrap();
        assert_eq!(run(Op::Unary(UnaryOp::Not), &[&b]).as_bool().unwrap(), &[false, true, false, true]);
        assert_eq!(run(Op::Binary(BinaryOp::And), &[&b, &c]).as_bool().unwrap(), &[true, false, false, false]);
        assert_eq!(run(Op::Binary(BinaryOp::Or), &[&b, &c]).as_bool().unwrap(), &[true, true, true, false]);
        assert_eq!(run(Op::Binary(BinaryOp::Xor), &[&b, &c]).as_bool().unwrap(), &[false, true, true, false]);
        assert_eq!(run(Op::Binary(BinaryOp::Equal), &[&b, &c]).as_bool().unwrap(), &[true, false, false, true]);
        // Broadcast bool with a scalar.
        let one = Tensor::from_bool(Vec::<usize>::new(), vec![true]).unwrap();
        assert_eq!(run(Op::Binary(BinaryOp::And), &[&b, &one]).as_bool().unwrap(), &[true, false, true, false]);
        // Type checks.
        let err = infer_err(Op::Unary(UnaryOp::Not), &[TensorType::f32([2])]);
        assert_eq!(err, "Not input 0 must be bool, got f32");
        let err = infer_err(Op::Binary(BinaryOp::And), &[TensorType::f32([2]), TensorType::f32([2])]);
        assert_eq!(err, "And takes bool inputs, got f32");
        let err = infer_err(Op::Unary(UnaryOp::IsNaN), &[TensorType::new(DType::I64, [2])]);
        assert_eq!(err, "IsNaN input 0 must be f32, got i64");
    }

    #[test]
    fn issue12_comparisons_mod_prelu() {
        let a = f32s(&[4], &[1.0, 2.0, f32::NAN, -0.0]);
        let b = f32s(&[4], &[2.0, 2.0, 1.0, 0.0]);
        let cmp = |op| run(Op::Binary(op), &[&a, &b]).as_bool().unwrap().to_vec();
        assert_eq!(cmp(BinaryOp::Greater), [false, false, false, false]);
        assert_eq!(cmp(BinaryOp::GreaterOrEqual), [false, true, false, true]);
        assert_eq!(cmp(BinaryOp::LessOrEqual), [true, true, false, true]);
        let p = i64s(&[3], &[-1, 5, 7]);
        let q = i64s(&[], &[5]);
        assert_eq!(run(Op::Binary(BinaryOp::GreaterOrEqual), &[&p, &q]).as_bool().unwrap(), &[false, true, true]);
        assert_eq!(run(Op::Binary(BinaryOp::Greater), &[&p, &q]).as_bool().unwrap(), &[false, false, true]);
        // Mod: floor-mod takes the divisor's sign, fmod the dividend's.
        let x = i64s(&[4], &[7, -7, 7, -7]);
        let y = i64s(&[4], &[3, 3, -3, -3]);
        let t = run(Op::Binary(BinaryOp::Mod { fmod: false }), &[&x, &y]);
        assert_eq!(t.as_i64().unwrap(), &[1, 2, -2, -1]);
        let t = run(Op::Binary(BinaryOp::Mod { fmod: true }), &[&x, &y]);
        assert_eq!(t.as_i64().unwrap(), &[1, -1, 1, -1]);
        assert_eq!(BinaryOp::Mod { fmod: false }.apply_i64(i64::MIN, -1), Ok(0));
        let err = Op::Binary(BinaryOp::Mod { fmod: false }).eval(&[&x, &i64s(&[], &[0])]).unwrap_err();
        assert!(err.contains("Mod by zero"), "{err}");
        let fx = f32s(&[5], &[5.5, -5.5, 1.0, f32::INFINITY, 3.0]);
        let fy = f32s(&[5], &[2.0, 2.0, f32::INFINITY, 2.0, 0.0]);
        let t = run(Op::Binary(BinaryOp::Mod { fmod: true }), &[&fx, &fy]);
        let v = t.as_f32().unwrap();
        assert_eq!(&v[..3], &[1.5, -1.5, 1.0]);
        assert!(v[3].is_nan() && v[4].is_nan());
        // Floor-mod on floats (ONNX Mod-28's special cases): the divisor's sign, zeros included;
        // x mod ±inf is x with the same sign, else the divisor.
        let t = run(Op::Binary(BinaryOp::Mod { fmod: false }), &[&fx, &fy]);
        let v = t.as_f32().unwrap();
        assert_eq!(&v[..3], &[1.5, 0.5, 1.0]);
        let zx = f32s(&[4], &[0.0, -0.0, -1.0, 4.0]);
        let zy = f32s(&[4], &[-2.0, 2.0, f32::INFINITY, -2.0]);
        let t = run(Op::Binary(BinaryOp::Mod { fmod: false }), &[&zx, &zy]);
        let v = t.as_f32().unwrap();
        assert_eq!(v, &[0.0, 0.0, f32::INFINITY, 0.0]);
        assert!(v[0].is_sign_negative() && v[1].is_sign_positive() && v[3].is_sign_negative());
        // PRelu: slope broadcasts to x, never the other way.
        let x = f32s(&[2, 2], &[-1.0, 2.0, -3.0, f32::NAN]);
        let s = f32s(&[2], &[0.5, 0.25]);
        let t = run(Op::Binary(BinaryOp::PRelu), &[&x, &s]);
        let v = t.as_f32().unwrap();
        assert_eq!(&v[..3], &[-0.5, 2.0, -1.5]);
        assert!(v[3].is_nan());
        let err = infer_err(Op::Binary(BinaryOp::PRelu), &[TensorType::f32([2]), TensorType::f32([2, 2])]);
        assert!(err.contains("unidirectional"), "{err}");
    }

    #[test]
    fn issue12_ops_round_trip_through_parts() {
        use crate::attr::{Attr, Attrs};
        let mut attrs = Attrs::new();
        attrs.insert("detect_negative".into(), Attr::Int(0));
        let op = Op::from_parts("IsInf", &attrs).unwrap();
        assert_eq!(op, Op::Unary(UnaryOp::IsInf { positive: true, negative: false }));
        assert_eq!(Op::from_parts(op.name(), &op.to_parts().1), Ok(op));
        let mut attrs = Attrs::new();
        attrs.insert("fmod".into(), Attr::Int(1));
        let op = Op::from_parts("Mod", &attrs).unwrap();
        assert_eq!(op, Op::Binary(BinaryOp::Mod { fmod: true }));
        assert_eq!(Op::from_parts(op.name(), &op.to_parts().1), Ok(op));
        let mut attrs = Attrs::new();
        attrs.insert("alpha".into(), Attr::Float(0.0));
        assert!(Op::from_parts("Celu", &attrs).unwrap_err().contains("non-zero"));
        attrs.insert("lambd".into(), Attr::Float(2.0));
        attrs.insert("bias".into(), Attr::Float(1.0));
        attrs.remove("alpha");
        let op = Op::from_parts("Shrink", &attrs).unwrap();
        assert_eq!(op, Op::Unary(UnaryOp::Shrink { bias: 1.0, lambd: 2.0 }));
        assert_eq!(Op::from_parts(op.name(), &op.to_parts().1), Ok(op));
    }
}
