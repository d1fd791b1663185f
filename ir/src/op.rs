//! The operator set. Ops follow the ONNX operator spec (names, attributes, defaults, numpy
//! broadcasting) wherever ONNX has the op; the rest live in the `kiln` domain, documented here.
//!
//! Static parameters that ONNX passes as constant inputs in recent opsets (Reshape's shape, Slice's
//! starts/ends, Unsqueeze's axes, Pad's pads, Clip's bounds, Resize's scales, …) are attributes here:
//! shapes are static, so frontends resolve those inputs at load time.
//!
//! [`Op::from_parts`] and [`Op::to_parts`] are the one place that maps attribute names, types and
//! defaults; shape inference and reference evaluation live in [`crate::ops`].

use crate::attr::{AttrReader, AttrWriter, Attrs};
use crate::dtype::DType;

/// Elementwise ops of two inputs with numpy broadcasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    /// Produces bool.
    Equal,
    /// Produces bool.
    Less,
    /// Produces bool.
    Greater,
    /// Produces bool.
    GreaterOrEqual,
    /// Produces bool.
    LessOrEqual,
    /// Bool inputs, bool result.
    And,
    /// Bool inputs, bool result.
    Or,
    /// Bool inputs, bool result.
    Xor,
    /// Remainder. `fmod`: C fmod (sign of the dividend; the only form ONNX allows on floats);
    /// otherwise integer floor-mod (sign of the divisor, as Python's `%`).
    Mod {
        fmod: bool,
    },
    /// PRelu(x, slope): x < 0 ? slope·x : x; slope broadcasts to x (unidirectionally).
    PRelu,
}

/// Elementwise ops of one f32 input. Parameters are part of the op.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    Sqrt,
    Reciprocal,
    Neg,
    Abs,
    Exp,
    Log,
    Tanh,
    Erf,
    Sigmoid,
    Relu,
    /// x·σ(x) (kiln domain; ONNX spells it Mul(x, Sigmoid(x))).
    Silu,
    LeakyRelu {
        alpha: f32,
    },
    /// λ·(x if x > 0 else α·(eˣ − 1)).
    Selu {
        alpha: f32,
        gamma: f32,
    },
    /// GELU; `tanh` selects the tanh approximation.
    Gelu {
        tanh: bool,
    },
    /// Clamp to [min, max]; an absent bound is no bound.
    Clip {
        min: Option<f32>,
        max: Option<f32>,
    },
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    /// −1, 0 or 1 (NaN stays NaN).
    Sign,
    /// ln(1 + eˣ).
    Softplus,
    /// x/(1 + |x|).
    Softsign,
    /// x·tanh(softplus(x)).
    Mish,
    /// x·HardSigmoid(x) with α = 1/6, β = ½.
    HardSwish,
    /// max(0, min(1, α·x + β)).
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// x if x > 0 else α·(eˣ − 1).
    Elu {
        alpha: f32,
    },
    /// max(0, x) + min(0, α·(e^{x/α} − 1)).
    Celu {
        alpha: f32,
    },
    /// x if x > α else 0.
    ThresholdedRelu {
        alpha: f32,
    },
    /// x + bias if x < −λ, x − bias if x > λ, else 0.
    Shrink {
        bias: f32,
        lambd: f32,
    },
    /// f32 input, bool result.
    IsNaN,
    /// f32 input, bool result: +∞ counts when `positive`, −∞ when `negative`.
    IsInf {
        positive: bool,
        negative: bool,
    },
    /// Bool input, bool result.
    Not,
}

/// Which reduction a `Reduce*` op computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Mean,
    Sum,
    Max,
    L2,
    Min,
    Prod,
}

/// How ScatterND/ScatterElements combine an update with the element already there (ONNX
/// `reduction`). `None` overwrites; with duplicate indices the last update wins, as ONNX Runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScatterReduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

impl ScatterReduction {
    pub fn name(self) -> &'static str {
        match self {
            ScatterReduction::None => "none",
            ScatterReduction::Add => "add",
            ScatterReduction::Mul => "mul",
            ScatterReduction::Max => "max",
            ScatterReduction::Min => "min",
        }
    }

    fn from_name(op: &str, name: &str) -> Result<ScatterReduction, String> {
        Ok(match name {
            "none" => ScatterReduction::None,
            "add" => ScatterReduction::Add,
            "mul" => ScatterReduction::Mul,
            "max" => ScatterReduction::Max,
            "min" => ScatterReduction::Min,
            other => return Err(format!("{op}'s reduction must be none, add, mul, max or min, got {other:?}")),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
}

/// Resize's coordinate transformation (ONNX names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoordTransform {
    HalfPixel,
    Asymmetric,
    AlignCorners,
    PytorchHalfPixel,
    /// half_pixel shifted so that the resized image stays centred when the output size was rounded.
    HalfPixelSymmetric,
    /// Samples the region of interest `roi` (normalised start…end per axis); outside the input the
    /// output is the extrapolation value. Interpolating modes only.
    TfCropAndResize,
}

/// Resize's interpolating modes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InterpMode {
    /// Linear along every axis (bilinear over two resized axes, trilinear over three).
    Linear,
    /// Cubic convolution with coefficient `a` (ONNX cubic_coeff_a); `exclude_outside` gives the taps
    /// outside the input weight 0 and renormalises the rest.
    Cubic { a: f32, exclude_outside: bool },
}

impl CoordTransform {
    /// The ONNX name.
    pub fn name(self) -> &'static str {
        match self {
            CoordTransform::HalfPixel => "half_pixel",
            CoordTransform::Asymmetric => "asymmetric",
            CoordTransform::AlignCorners => "align_corners",
            CoordTransform::PytorchHalfPixel => "pytorch_half_pixel",
            CoordTransform::HalfPixelSymmetric => "half_pixel_symmetric",
            CoordTransform::TfCropAndResize => "tf_crop_and_resize",
        }
    }
}

/// Resize's rounding of nearest source coordinates (ONNX names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

/// The window of a pooling op over the spatial axes (all axes after N and C), one value per
/// spatial axis; `pads` is ONNX's [x1_begin, x2_begin, …, x1_end, x2_end, …]. `auto_pad` is
/// resolved to `pads` by the frontend (it needs the input shape).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolWindow {
    pub kernel_shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Output extents rounded up (a last window that starts in the end padding is dropped).
    pub ceil_mode: bool,
}

/// One operator with its attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// Where(cond: bool, x, y), broadcast.
    Where,
    /// Element type conversion.
    Cast {
        to: DType,
    },
    Identity,
    /// Batched, broadcasting matrix product (numpy matmul).
    MatMul,
    /// alpha·op(A)·op(B) + beta·C, A and B 2-D, C unidirectionally broadcast to the result.
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    /// 2-D convolution, NCHW, weights [M, C/group, kH, kW], optional bias \[M\].
    /// `pads` is [top, left, bottom, right].
    Conv {
        strides: [usize; 2],
        dilations: [usize; 2],
        pads: [usize; 4],
        group: usize,
    },
    /// ConvTranspose 2-D, NCHW, weights [C, M/group, kH, kW], optional bias \[M\]:
    /// y[o·] = Σ x[i·]·w[k·] over o = i·stride + k·dilation − pad_begin, output extent
    /// stride·(in − 1) + output_padding + dilation·(k − 1) + 1 − pads. `pads` is [top, left, bottom,
    /// right]; `output_shape` and `auto_pad` are resolved to pads by the frontend.
    ConvTranspose {
        strides: [usize; 2],
        dilations: [usize; 2],
        pads: [usize; 4],
        output_padding: [usize; 2],
        group: usize,
    },
    /// Max over each window (padding never wins). Only the values output: ONNX's optional Indices
    /// output (and so `storage_order`) is refused by the frontend.
    MaxPool(PoolWindow),
    /// Mean over each window; the divisor counts the explicit padding when `count_include_pad`,
    /// never the ceil_mode overhang past it.
    AveragePool {
        window: PoolWindow,
        count_include_pad: bool,
    },
    /// (Σ |x|ᵖ)^(1/p) over each window (padding contributes 0).
    LpPool {
        window: PoolWindow,
        p: u32,
    },
    /// `pads` is ONNX's [x1_begin, x2_begin, …, x1_end, x2_end, …]; negative pads crop.
    Pad {
        mode: PadMode,
        pads: Vec<i64>,
        value: f32,
    },
    /// Inference BatchNormalization(x, scale, bias, mean, var) over axis 1.
    BatchNormalization {
        epsilon: f32,
    },
    /// LayerNormalization(x, scale, bias?) over the axes from `axis` to the last.
    LayerNormalization {
        axis: i64,
        epsilon: f32,
    },
    /// RMSNormalization(x, scale) over the axes from `axis` to the last (ONNX opset 23).
    RmsNormalization {
        axis: i64,
        epsilon: f32,
    },
    /// GroupNormalization(x, scale\[C\], bias\[C\]) with ONNX opset-21 semantics (per-channel affine).
    GroupNormalization {
        num_groups: usize,
        epsilon: f32,
    },
    /// InstanceNormalization(x, scale\[C\], bias\[C\]): statistics over the spatial axes.
    InstanceNormalization {
        epsilon: f32,
    },
    Softmax {
        axis: i64,
    },
    LogSoftmax {
        axis: i64,
    },
    /// ReduceMean/Sum/Max/L2. `axes: None` reduces every axis (unless `noop_with_empty_axes`).
    Reduce {
        kind: ReduceKind,
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    /// ArgMax (`max`) or ArgMin along `axis`: i64 indices of the first (or, with
    /// `select_last_index`, the last) extreme element. A NaN never wins a comparison (as ONNX Runtime).
    ArgReduce {
        max: bool,
        axis: i64,
        keepdims: bool,
        select_last_index: bool,
    },
    /// Cumulative sum along `axis` (ONNX CumSum with the axis input resolved at load time).
    CumSum {
        axis: i64,
        exclusive: bool,
        reverse: bool,
    },
    /// TopK(x) along `axis` with a static `k`: outputs values and i64 indices. NaN counts as larger
    /// than every number; equal values keep the lower index first (as ONNX Runtime).
    TopK {
        k: usize,
        axis: i64,
        largest: bool,
        sorted: bool,
    },
    /// ONNX Reshape with a static target: 0 copies the input dimension (unless `allowzero`), -1 is
    /// inferred.
    Reshape {
        shape: Vec<i64>,
        allowzero: bool,
    },
    Transpose {
        perm: Option<Vec<usize>>,
    },
    Concat {
        axis: i64,
    },
    /// Split along `axis` into `split` sizes, or into `num_outputs` near-equal parts (ONNX 18).
    Split {
        axis: i64,
        split: Option<Vec<usize>>,
        num_outputs: usize,
    },
    Slice {
        starts: Vec<i64>,
        ends: Vec<i64>,
        axes: Option<Vec<i64>>,
        steps: Option<Vec<i64>>,
    },
    /// Gather(data, indices: i64) along `axis`; negative indices count from the end.
    Gather {
        axis: i64,
    },
    Unsqueeze {
        axes: Vec<i64>,
    },
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Expand {
        shape: Vec<i64>,
    },
    Flatten {
        axis: i64,
    },
    /// Tile with static `repeats` (each ≥ 1; kiln needs every dimension ≥ 1).
    Tile {
        repeats: Vec<usize>,
    },
    /// GatherElements(data, indices: i64) along `axis`; negative indices count from the end.
    GatherElements {
        axis: i64,
    },
    /// GatherND(data, indices: i64) with `batch_dims` leading batch axes.
    GatherND {
        batch_dims: usize,
    },
    /// ScatterND(data, indices: i64, updates).
    ScatterND {
        reduction: ScatterReduction,
    },
    /// ScatterElements(data, indices: i64, updates) along `axis`.
    ScatterElements {
        axis: i64,
        reduction: ScatterReduction,
    },
    /// Nearest-neighbour Resize with static `scales` or `sizes`; with both (after
    /// keep_aspect_ratio_policy) `sizes` are the output extents and `scales` the coordinates'.
    Resize {
        scales: Option<Vec<f32>>,
        sizes: Option<Vec<usize>>,
        coordinate_transformation_mode: CoordTransform,
        nearest_mode: NearestMode,
    },
    /// Resize by interpolation. The output extents are `sizes` when given, else ⌊in·scale⌋; the
    /// coordinate transformation divides by `scales` when given, else by out/in (both are given
    /// after keep_aspect_ratio_policy). `roi` ([starts…, ends…], normalised) and the extrapolation
    /// value are used by tf_crop_and_resize only.
    ResizeInterp {
        mode: InterpMode,
        scales: Option<Vec<f32>>,
        sizes: Option<Vec<usize>>,
        coordinate_transformation_mode: CoordTransform,
        roi: Option<Vec<f32>>,
        extrapolation_value: f32,
    },
    /// kiln: Unified Normalization at inference, y = γ·x/√(running_var + ε) + β along `axis`
    /// (inputs x, scale, bias, running_var, each parameter of x's size along `axis`).
    UnifiedNorm {
        axis: i64,
        epsilon: f32,
    },
    /// kiln: PowerNorm at inference with GroupScaling (inputs x, scale, bias, running_phi over the
    /// last axis): GS(x)_g = x_g/√(mean_g(x_g²) + group_epsilon) per token over `groups` contiguous
    /// groups of the last axis, then y = γ·GS(x)/√(running_phi + ε) + β.
    PowerNorm {
        groups: usize,
        epsilon: f32,
        group_epsilon: f32,
    },
    /// kiln: EvoNorm-S0 (inputs x NCHW, v, gamma, beta, each \[C\]):
    /// y = x·σ(v·x)/√(Var_{group,H,W}(x) + ε)·γ + β, with `groups` contiguous channel groups
    /// (C a multiple of `groups`), Var the population variance per sample and group.
    EvoNormS0 {
        groups: usize,
        epsilon: f32,
    },
    /// kiln: EvoNorm-B0 at inference (inputs x NCHW, v, gamma, beta, running_var, each \[C\]):
    /// y = x / max(√(running_var + ε), v·x + √(Var_{H,W}(x) + ε))·γ + β, Var the population
    /// variance per sample and channel (timm: `unbiased=False`).
    EvoNormB0 {
        epsilon: f32,
    },
    /// kiln: Region Normalization, RN-B (inputs x NCHW, mask \[N,1,H,W\] with 1 = foreground and
    /// 0 = background, already at x's resolution; gamma_fg, beta_fg, gamma_bg, beta_bg each \[C\]).
    /// Per region r ∈ {fg, bg} and channel, μ_r and the population variance σ²_r are taken over
    /// the region's elements across N, H and W together (the official code batch-normalises the
    /// whole batch): rn_r = (x − μ_r)/√(σ²_r + ε·NHW/|r|) inside r, 0 outside (an empty region
    /// contributes 0); y = rn_fg·(1 + γ_fg) + rn_bg·(1 + γ_bg) + β_fg + β_bg (both β everywhere).
    /// A mask value other than 0 or 1 is an evaluation error.
    RegionNorm {
        epsilon: f32,
    },
    /// kiln: softmax weighted by a mask along the last axis (inputs x, mask broadcastable to x):
    /// y = exp(x)·M / Σ exp(x)·M, evaluated as exp(x − m)·M / Σ exp(x − m)·M with m the maximum over
    /// the kept elements (M ≠ 0), masked elements weighing exactly 0 (the same value without
    /// overflow or underflow). A row whose mask sums to zero gives NaN, as the unfused form does. What
    /// the optimizer makes of the graph transformer's exp(clamp(S))·M / Σ exp(clamp(S))·M.
    MaskedSoftmax,
    /// kiln: fused attention softmax(scale·Q·Kt + bias)·V (inputs Q [.., Lq, d], Kt [.., d, Lk],
    /// V [.., Lk, dv], optional bias broadcastable to the scores [.., Lq, Lk]; batch axes broadcast
    /// as in MatMul). Kt is K already transposed, as the graphs that compute it hold it.
    /// `nan_to_zero`: probabilities that are NaN count as 0 (a row whose scores are all −inf
    /// gives a row of zeros), which is what torch's exported scaled_dot_product_attention writes
    /// as Where(IsNaN(p), 0, p).
    Attention {
        scale: f32,
        nan_to_zero: bool,
    },
    /// kiln: CRMSNorm (Jiang et al. 2023) over the last axis of x′, the first d−1 components of a
    /// zero-mean vector x ∈ ℝᵈ whose last component is implied (x_d = −Σx′):
    /// y′ = x′ / √((Σx′² + (Σx′)²)/d + ε), which is the first d−1 components of RMSNorm(x). x′'s
    /// last dimension must be d − 1. No scale: the optimizer folds γ into the consumers.
    CrmsNormalization {
        epsilon: f32,
        d: usize,
    },
}

/// Every op name the IR accepts, for error messages and suggestions.
pub const OP_NAMES: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Equal",
    "Less",
    "Where",
    "Cast",
    "Identity",
    "Sqrt",
    "Reciprocal",
    "Neg",
    "Abs",
    "Exp",
    "Log",
    "Tanh",
    "Erf",
    "Sigmoid",
    "Relu",
    "Silu",
    "LeakyRelu",
    "Selu",
    "Gelu",
    "Clip",
    "MatMul",
    "Gemm",
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "AveragePool",
    "LpPool",
    "Pad",
    "BatchNormalization",
    "LayerNormalization",
    "RMSNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceL2",
    "ReduceMin",
    "ReduceProd",
    "ArgMax",
    "ArgMin",
    "CumSum",
    "TopK",
    "Tile",
    "GatherElements",
    "GatherND",
    "ScatterND",
    "ScatterElements",
    "Reshape",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Expand",
    "Flatten",
    "Resize",
    "UnifiedNorm",
    "PowerNorm",
    "EvoNormS0",
    "EvoNormB0",
    "RegionNorm",
    "MaskedSoftmax",
    "Attention",
    "CRMSNormalization",
    // Elementwise ops of issue 12 (kept together so merges are "take both").
    "Greater",
    "GreaterOrEqual",
    "LessOrEqual",
    "And",
    "Or",
    "Xor",
    "Mod",
    "PRelu",
    "Sin",
    "Cos",
    "Tan",
    "Asin",
    "Acos",
    "Atan",
    "Sinh",
    "Cosh",
    "Asinh",
    "Acosh",
    "Atanh",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Softplus",
    "Softsign",
    "Mish",
    "HardSwish",
    "HardSigmoid",
    "Elu",
    "Celu",
    "ThresholdedRelu",
    "Shrink",
    "IsNaN",
    "IsInf",
    "Not",
];

const SELU_ALPHA: f32 = 1.673_263_2;
const SELU_GAMMA: f32 = 1.050_701;

impl Op {
    /// The op's name as model files spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Unary(u) => match u {
                UnaryOp::Sqrt => "Sqrt",
                UnaryOp::Reciprocal => "Reciprocal",
                UnaryOp::Neg => "Neg",
                UnaryOp::Abs => "Abs",
                UnaryOp::Exp => "Exp",
                UnaryOp::Log => "Log",
                UnaryOp::Tanh => "Tanh",
                UnaryOp::Erf => "Erf",
                UnaryOp::Sigmoid => "Sigmoid",
                UnaryOp::Relu => "Relu",
                UnaryOp::Silu => "Silu",
                UnaryOp::LeakyRelu { .. } => "LeakyRelu",
                UnaryOp::Selu { .. } => "Selu",
                UnaryOp::Gelu { .. } => "Gelu",
                UnaryOp::Clip { .. } => "Clip",
                UnaryOp::Sin => "Sin",
                UnaryOp::Cos => "Cos",
                UnaryOp::Tan => "Tan",
                UnaryOp::Asin => "Asin",
                UnaryOp::Acos => "Acos",
                UnaryOp::Atan => "Atan",
                UnaryOp::Sinh => "Sinh",
                UnaryOp::Cosh => "Cosh",
                UnaryOp::Asinh => "Asinh",
                UnaryOp::Acosh => "Acosh",
                UnaryOp::Atanh => "Atanh",
                UnaryOp::Floor => "Floor",
                UnaryOp::Ceil => "Ceil",
                UnaryOp::Round => "Round",
                UnaryOp::Sign => "Sign",
                UnaryOp::Softplus => "Softplus",
                UnaryOp::Softsign => "Softsign",
                UnaryOp::Mish => "Mish",
                UnaryOp::HardSwish => "HardSwish",
                UnaryOp::HardSigmoid { .. } => "HardSigmoid",
                UnaryOp::Elu { .. } => "Elu",
                UnaryOp::Celu { .. } => "Celu",
                UnaryOp::ThresholdedRelu { .. } => "ThresholdedRelu",
                UnaryOp::Shrink { .. } => "Shrink",
                UnaryOp::IsNaN => "IsNaN",
                UnaryOp::IsInf { .. } => "IsInf",
                UnaryOp::Not => "Not",
            },
            Op::Binary(b) => match b {
                BinaryOp::Add => "Add",
                BinaryOp::Sub => "Sub",
                BinaryOp::Mul => "Mul",
                BinaryOp::Div => "Div",
                BinaryOp::Pow => "Pow",
                BinaryOp::Max => "Max",
                BinaryOp::Min => "Min",
                BinaryOp::Equal => "Equal",
                BinaryOp::Less => "Less",
                BinaryOp::Greater => "Greater",
                BinaryOp::GreaterOrEqual => "GreaterOrEqual",
                BinaryOp::LessOrEqual => "LessOrEqual",
                BinaryOp::And => "And",
                BinaryOp::Or => "Or",
                BinaryOp::Xor => "Xor",
                BinaryOp::Mod { .. } => "Mod",
                BinaryOp::PRelu => "PRelu",
            },
            Op::Where => "Where",
            Op::Cast { .. } => "Cast",
            Op::Identity => "Identity",
            Op::MatMul => "MatMul",
            Op::Gemm { .. } => "Gemm",
            Op::Conv { .. } => "Conv",
            Op::ConvTranspose { .. } => "ConvTranspose",
            Op::MaxPool(_) => "MaxPool",
            Op::AveragePool { .. } => "AveragePool",
            Op::LpPool { .. } => "LpPool",
            Op::Pad { .. } => "Pad",
            Op::BatchNormalization { .. } => "BatchNormalization",
            Op::LayerNormalization { .. } => "LayerNormalization",
            Op::RmsNormalization { .. } => "RMSNormalization",
            Op::GroupNormalization { .. } => "GroupNormalization",
            Op::InstanceNormalization { .. } => "InstanceNormalization",
            Op::Softmax { .. } => "Softmax",
            Op::LogSoftmax { .. } => "LogSoftmax",
            Op::Reduce { kind, .. } => match kind {
                ReduceKind::Mean => "ReduceMean",
                ReduceKind::Sum => "ReduceSum",
                ReduceKind::Max => "ReduceMax",
                ReduceKind::L2 => "ReduceL2",
                ReduceKind::Min => "ReduceMin",
                ReduceKind::Prod => "ReduceProd",
            },
            Op::ArgReduce { max: true, .. } => "ArgMax",
            Op::ArgReduce { max: false, .. } => "ArgMin",
            Op::CumSum { .. } => "CumSum",
            Op::TopK { .. } => "TopK",
            Op::Tile { .. } => "Tile",
            Op::GatherElements { .. } => "GatherElements",
            Op::GatherND { .. } => "GatherND",
            Op::ScatterND { .. } => "ScatterND",
            Op::ScatterElements { .. } => "ScatterElements",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Split { .. } => "Split",
            Op::Slice { .. } => "Slice",
            Op::Gather { .. } => "Gather",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Squeeze { .. } => "Squeeze",
            Op::Expand { .. } => "Expand",
            Op::Flatten { .. } => "Flatten",
            Op::Resize { .. } | Op::ResizeInterp { .. } => "Resize",
            Op::UnifiedNorm { .. } => "UnifiedNorm",
            Op::PowerNorm { .. } => "PowerNorm",
            Op::EvoNormS0 { .. } => "EvoNormS0",
            Op::EvoNormB0 { .. } => "EvoNormB0",
            Op::RegionNorm { .. } => "RegionNorm",
            Op::MaskedSoftmax => "MaskedSoftmax",
            Op::Attention { .. } => "Attention",
            Op::CrmsNormalization { .. } => "CRMSNormalization",
        }
    }

    /// How many inputs the op takes: (fewest, most).
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Unary(_) | Op::Cast { .. } | Op::Identity => (1, 1),
            Op::Binary(_) | Op::MatMul => (2, 2),
            Op::Where => (3, 3),
            Op::Gemm { .. } => (2, 3),
            Op::Conv { .. } | Op::ConvTranspose { .. } => (2, 3),
            Op::MaxPool(_) | Op::AveragePool { .. } | Op::LpPool { .. } => (1, 1),
            Op::Pad { .. } => (1, 1),
            Op::BatchNormalization { .. } => (5, 5),
            Op::LayerNormalization { .. } => (2, 3),
            Op::RmsNormalization { .. } => (2, 2),
            Op::GroupNormalization { .. } | Op::InstanceNormalization { .. } => (3, 3),
            Op::Softmax { .. } | Op::LogSoftmax { .. } | Op::Reduce { .. } => (1, 1),
            Op::Reshape { .. } | Op::Transpose { .. } => (1, 1),
            Op::Concat { .. } => (1, usize::MAX),
            Op::Split { .. } | Op::Slice { .. } => (1, 1),
            Op::Gather { .. } => (2, 2),
            Op::ArgReduce { .. } | Op::CumSum { .. } | Op::TopK { .. } | Op::Tile { .. } => (1, 1),
            Op::GatherElements { .. } | Op::GatherND { .. } => (2, 2),
            Op::ScatterND { .. } | Op::ScatterElements { .. } => (3, 3),
            Op::Unsqueeze { .. } | Op::Squeeze { .. } | Op::Expand { .. } | Op::Flatten { .. } => (1, 1),
            Op::Resize { .. } | Op::ResizeInterp { .. } => (1, 1),
            Op::UnifiedNorm { .. } | Op::PowerNorm { .. } => (4, 4),
            Op::EvoNormS0 { .. } => (4, 4),
            Op::EvoNormB0 { .. } => (5, 5),
            Op::RegionNorm { .. } => (6, 6),
            Op::MaskedSoftmax => (2, 2),
            Op::Attention { .. } => (3, 4),
            Op::CrmsNormalization { .. } => (1, 1),
        }
    }

    /// How many outputs the op produces.
    pub fn num_outputs(&self) -> usize {
        match self {
            Op::Split { num_outputs, .. } => *num_outputs,
            Op::TopK { .. } => 2,
            _ => 1,
        }
    }

    /// Builds an op from its name and generic attributes, applying ONNX defaults. Unknown names and
    /// attributes are errors with a suggestion of the nearest known name.
    pub fn from_parts(name: &str, attrs: &Attrs) -> Result<Op, String> {
        let mut r = AttrReader::new(name, attrs);
        let op = match name {
            "Add" => Op::Binary(BinaryOp::Add),
            "Sub" => Op::Binary(BinaryOp::Sub),
            "Mul" => Op::Binary(BinaryOp::Mul),
            "Div" => Op::Binary(BinaryOp::Div),
            "Pow" => Op::Binary(BinaryOp::Pow),
            "Max" => Op::Binary(BinaryOp::Max),
            "Min" => Op::Binary(BinaryOp::Min),
            "Equal" => Op::Binary(BinaryOp::Equal),
            "Less" => Op::Binary(BinaryOp::Less),
            "Where" => Op::Where,
            "Cast" => {
                let to = r.string("to", "")?;
                let to = DType::from_name(&to)
                    .ok_or_else(|| format!("Cast needs 'to' to be one of f32, i64, bool, got {to:?}"))?;
                Op::Cast { to }
            }
            "Identity" => Op::Identity,
            "Sqrt" => Op::Unary(UnaryOp::Sqrt),
            "Reciprocal" => Op::Unary(UnaryOp::Reciprocal),
            "Neg" => Op::Unary(UnaryOp::Neg),
            "Abs" => Op::Unary(UnaryOp::Abs),
            "Exp" => Op::Unary(UnaryOp::Exp),
            "Log" => Op::Unary(UnaryOp::Log),
            "Tanh" => Op::Unary(UnaryOp::Tanh),
            "Erf" => Op::Unary(UnaryOp::Erf),
            "Sigmoid" => Op::Unary(UnaryOp::Sigmoid),
            "Relu" => Op::Unary(UnaryOp::Relu),
            "Silu" => Op::Unary(UnaryOp::Silu),
            "LeakyRelu" => Op::Unary(UnaryOp::LeakyRelu { alpha: r.float("alpha", 0.01)? }),
            "Selu" => {
                Op::Unary(UnaryOp::Selu { alpha: r.float("alpha", SELU_ALPHA)?, gamma: r.float("gamma", SELU_GAMMA)? })
            }
            "Gelu" => {
                let approximate = r.string("approximate", "none")?;
                let tanh = match approximate.as_str() {
                    "none" => false,
                    "tanh" => true,
                    other => {
                        return Err(format!("Gelu's 'approximate' must be \"none\" or \"tanh\", got {other:?}"));
                    }
                };
                Op::Unary(UnaryOp::Gelu { tanh })
            }
            "Clip" => Op::Unary(UnaryOp::Clip { min: r.float_opt("min")?, max: r.float_opt("max")? }),
            // Elementwise ops of issue 12.
            "Greater" => Op::Binary(BinaryOp::Greater),
            "GreaterOrEqual" => Op::Binary(BinaryOp::GreaterOrEqual),
            "LessOrEqual" => Op::Binary(BinaryOp::LessOrEqual),
            "And" => Op::Binary(BinaryOp::And),
            "Or" => Op::Binary(BinaryOp::Or),
            "Xor" => Op::Binary(BinaryOp::Xor),
            "Mod" => Op::Binary(BinaryOp::Mod { fmod: r.bool("fmod", false)? }),
            "PRelu" => Op::Binary(BinaryOp::PRelu),
            "Sin" => Op::Unary(UnaryOp::Sin),
            "Cos" => Op::Unary(UnaryOp::Cos),
            "Tan" => Op::Unary(UnaryOp::Tan),
            "Asin" => Op::Unary(UnaryOp::Asin),
            "Acos" => Op::Unary(UnaryOp::Acos),
            "Atan" => Op::Unary(UnaryOp::Atan),
            "Sinh" => Op::Unary(UnaryOp::Sinh),
            "Cosh" => Op::Unary(UnaryOp::Cosh),
            "Asinh" => Op::Unary(UnaryOp::Asinh),
            "Acosh" => Op::Unary(UnaryOp::Acosh),
            "Atanh" => Op::Unary(UnaryOp::Atanh),
            "Floor" => Op::Unary(UnaryOp::Floor),
            "Ceil" => Op::Unary(UnaryOp::Ceil),
            "Round" => Op::Unary(UnaryOp::Round),
            "Sign" => Op::Unary(UnaryOp::Sign),
            "Softplus" => Op::Unary(UnaryOp::Softplus),
            "Softsign" => Op::Unary(UnaryOp::Softsign),
            "Mish" => Op::Unary(UnaryOp::Mish),
            "HardSwish" => Op::Unary(UnaryOp::HardSwish),
            "HardSigmoid" => {
                Op::Unary(UnaryOp::HardSigmoid { alpha: r.float("alpha", 0.2)?, beta: r.float("beta", 0.5)? })
            }
            "Elu" => Op::Unary(UnaryOp::Elu { alpha: r.float("alpha", 1.0)? }),
            "Celu" => {
                let alpha = r.float("alpha", 1.0)?;
                if alpha == 0.0 || !alpha.is_finite() {
                    return Err(format!("Celu's 'alpha' must be finite and non-zero, got {alpha}"));
                }
                Op::Unary(UnaryOp::Celu { alpha })
            }
            "ThresholdedRelu" => Op::Unary(UnaryOp::ThresholdedRelu { alpha: r.float("alpha", 1.0)? }),
            "Shrink" => Op::Unary(UnaryOp::Shrink { bias: r.float("bias", 0.0)?, lambd: r.float("lambd", 0.5)? }),
            "IsNaN" => Op::Unary(UnaryOp::IsNaN),
            "IsInf" => Op::Unary(UnaryOp::IsInf {
                positive: r.bool("detect_positive", true)?,
                negative: r.bool("detect_negative", true)?,
            }),
            "Not" => Op::Unary(UnaryOp::Not),
            "MatMul" => Op::MatMul,
            "Gemm" => Op::Gemm {
                alpha: r.float("alpha", 1.0)?,
                beta: r.float("beta", 1.0)?,
                trans_a: r.bool("transA", false)?,
                trans_b: r.bool("transB", false)?,
            },
            "Conv" => {
                let auto_pad = r.string("auto_pad", "NOTSET")?;
                if auto_pad != "NOTSET" {
                    return Err(format!(
                        "Conv's auto_pad {auto_pad:?} must be resolved to explicit 'pads' by the frontend"
                    ));
                }
                r.ignore("kernel_shape");
                let strides = pair(name, "strides", r.usizes_opt("strides")?, 1)?;
                let dilations = pair(name, "dilations", r.usizes_opt("dilations")?, 1)?;
                let pads = match r.usizes_opt("pads")? {
                    None => [0; 4],
                    Some(p) if p.len() == 4 => [p[0], p[1], p[2], p[3]],
                    Some(p) => {
                        return Err(format!("Conv's 'pads' must have 4 values for 2-D, got {}", p.len()));
                    }
                };
                if strides.contains(&0) || dilations.contains(&0) {
                    return Err("Conv's strides and dilations must be ≥ 1".into());
                }
                let group = r.usize("group", 1)?;
                if group == 0 {
                    return Err("Conv's 'group' must be ≥ 1".into());
                }
                Op::Conv { strides, dilations, pads, group }
            }
            "ConvTranspose" => {
                let auto_pad = r.string("auto_pad", "NOTSET")?;
                if auto_pad != "NOTSET" {
                    return Err(format!(
                        "ConvTranspose's auto_pad {auto_pad:?} must be resolved to explicit 'pads' by the frontend"
                    ));
                }
                if r.ints_opt("output_shape")?.is_some() {
                    return Err(
                        "ConvTranspose's output_shape must be resolved to explicit 'pads' by the frontend".into()
                    );
                }
                r.ignore("kernel_shape");
                let strides = pair(name, "strides", r.usizes_opt("strides")?, 1)?;
                let dilations = pair(name, "dilations", r.usizes_opt("dilations")?, 1)?;
                let output_padding = pair(name, "output_padding", r.usizes_opt("output_padding")?, 0)?;
                let pads = match r.usizes_opt("pads")? {
                    None => [0; 4],
                    Some(p) if p.len() == 4 => [p[0], p[1], p[2], p[3]],
                    Some(p) => {
                        return Err(format!("ConvTranspose's 'pads' must have 4 values for 2-D, got {}", p.len()));
                    }
                };
                if strides.contains(&0) || dilations.contains(&0) {
                    return Err("ConvTranspose's strides and dilations must be ≥ 1".into());
                }
                let group = positive(name, "group", r.usize("group", 1)?)?;
                Op::ConvTranspose { strides, dilations, pads, output_padding, group }
            }
            "MaxPool" => {
                // storage_order only lays out the Indices output, which the frontend refuses.
                let storage_order = r.int("storage_order", 0)?;
                if !(0..=1).contains(&storage_order) {
                    return Err(format!("MaxPool's storage_order must be 0 or 1, got {storage_order}"));
                }
                Op::MaxPool(pool_window(name, &mut r)?)
            }
            "AveragePool" => {
                let window = pool_window(name, &mut r)?;
                Op::AveragePool { window, count_include_pad: r.bool("count_include_pad", false)? }
            }
            "LpPool" => {
                let window = pool_window(name, &mut r)?;
                let p = r.int("p", 2)?;
                let p = u32::try_from(p)
                    .ok()
                    .filter(|&p| (1..=64).contains(&p))
                    .ok_or_else(|| format!("LpPool's p must be in 1..=64, got {p}"))?;
                Op::LpPool { window, p }
            }
            "Pad" => {
                let mode = match r.string("mode", "constant")?.as_str() {
                    "constant" => PadMode::Constant,
                    "reflect" => PadMode::Reflect,
                    "edge" => PadMode::Edge,
                    other => return Err(format!("Pad's mode must be constant, reflect or edge, got {other:?}")),
                };
                Op::Pad { mode, pads: r.ints_required("pads")?, value: r.float("value", 0.0)? }
            }
            "BatchNormalization" => {
                r.ignore("momentum");
                r.ignore("spatial");
                if r.bool("training_mode", false)? {
                    return Err("BatchNormalization with training_mode=1 is not an inference op".into());
                }
                Op::BatchNormalization { epsilon: r.float("epsilon", 1e-5)? }
            }
            "LayerNormalization" => {
                r.ignore("stash_type");
                Op::LayerNormalization { axis: r.int("axis", -1)?, epsilon: r.float("epsilon", 1e-5)? }
            }
            "RMSNormalization" => {
                r.ignore("stash_type");
                Op::RmsNormalization { axis: r.int("axis", -1)?, epsilon: r.float("epsilon", 1e-5)? }
            }
            "GroupNormalization" => {
                r.ignore("stash_type");
                let num_groups = r.int_required("num_groups")?;
                let num_groups = usize::try_from(num_groups)
                    .ok()
                    .filter(|&g| g > 0)
                    .ok_or_else(|| format!("GroupNormalization's num_groups must be ≥ 1, got {num_groups}"))?;
                Op::GroupNormalization { num_groups, epsilon: r.float("epsilon", 1e-5)? }
            }
            "InstanceNormalization" => Op::InstanceNormalization { epsilon: r.float("epsilon", 1e-5)? },
            "Softmax" => Op::Softmax { axis: r.int("axis", -1)? },
            "LogSoftmax" => Op::LogSoftmax { axis: r.int("axis", -1)? },
            "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceL2" | "ReduceMin" | "ReduceProd" => {
                let kind = match name {
                    "ReduceMean" => ReduceKind::Mean,
                    "ReduceSum" => ReduceKind::Sum,
                    "ReduceMax" => ReduceKind::Max,
                    "ReduceMin" => ReduceKind::Min,
                    "ReduceProd" => ReduceKind::Prod,
                    _ => ReduceKind::L2,
                };
                Op::Reduce {
                    kind,
                    axes: r.ints_opt("axes")?,
                    keepdims: r.bool("keepdims", true)?,
                    noop_with_empty_axes: r.bool("noop_with_empty_axes", false)?,
                }
            }
            "Reshape" => Op::Reshape { shape: r.ints_required("shape")?, allowzero: r.bool("allowzero", false)? },
            "Transpose" => Op::Transpose { perm: r.usizes_opt("perm")? },
            "Concat" => Op::Concat { axis: r.int_required("axis")? },
            "Split" => {
                let axis = r.int("axis", 0)?;
                let split = r.usizes_opt("split")?;
                let num_outputs = match (&split, r.int_opt("num_outputs")?) {
                    (Some(s), Some(n)) if n as usize != s.len() => {
                        return Err(format!("Split has {} 'split' sizes but num_outputs = {n}", s.len()));
                    }
                    (Some(s), _) => s.len(),
                    (None, Some(n)) if n >= 1 => n as usize,
                    (None, Some(n)) => return Err(format!("Split's num_outputs must be ≥ 1, got {n}")),
                    (None, None) => return Err("Split needs 'split' sizes or 'num_outputs'".into()),
                };
                Op::Split { axis, split, num_outputs }
            }
            "Slice" => {
                let starts = r.ints_required("starts")?;
                let ends = r.ints_required("ends")?;
                Op::Slice { starts, ends, axes: r.ints_opt("axes")?, steps: r.ints_opt("steps")? }
            }
            "Gather" => Op::Gather { axis: r.int("axis", 0)? },
            "ArgMax" | "ArgMin" => Op::ArgReduce {
                max: name == "ArgMax",
                axis: r.int("axis", 0)?,
                keepdims: r.bool("keepdims", true)?,
                select_last_index: r.bool("select_last_index", false)?,
            },
            "CumSum" => Op::CumSum {
                axis: r.int_required("axis")?,
                exclusive: r.bool("exclusive", false)?,
                reverse: r.bool("reverse", false)?,
            },
            "TopK" => Op::TopK {
                k: positive(name, "k", r.usize("k", 0)?)?,
                axis: r.int("axis", -1)?,
                largest: r.bool("largest", true)?,
                sorted: r.bool("sorted", true)?,
            },
            "Tile" => {
                let repeats = r.usizes_opt("repeats")?.ok_or("Tile needs 'repeats'")?;
                if repeats.contains(&0) {
                    return Err(format!("Tile's repeats {repeats:?} contain 0; kiln needs every dimension ≥ 1"));
                }
                Op::Tile { repeats }
            }
            "GatherElements" => Op::GatherElements { axis: r.int("axis", 0)? },
            "GatherND" => Op::GatherND { batch_dims: r.usize("batch_dims", 0)? },
            "ScatterND" => {
                Op::ScatterND { reduction: ScatterReduction::from_name(name, &r.string("reduction", "none")?)? }
            }
            "ScatterElements" => Op::ScatterElements {
                axis: r.int("axis", 0)?,
                reduction: ScatterReduction::from_name(name, &r.string("reduction", "none")?)?,
            },
            "Unsqueeze" => Op::Unsqueeze { axes: r.ints_required("axes")? },
            "Squeeze" => Op::Squeeze { axes: r.ints_opt("axes")? },
            "Expand" => Op::Expand { shape: r.ints_required("shape")? },
            "Flatten" => Op::Flatten { axis: r.int("axis", 1)? },
            "Resize" => {
                let mode = r.string("mode", "nearest")?;
                if r.int("antialias", 0)? != 0 {
                    return Err("Resize with antialias = 1 is not supported".into());
                }
                let coordinate_transformation_mode =
                    match r.string("coordinate_transformation_mode", "half_pixel")?.as_str() {
                        "half_pixel" => CoordTransform::HalfPixel,
                        "asymmetric" => CoordTransform::Asymmetric,
                        "align_corners" => CoordTransform::AlignCorners,
                        "pytorch_half_pixel" => CoordTransform::PytorchHalfPixel,
                        "half_pixel_symmetric" => CoordTransform::HalfPixelSymmetric,
                        "tf_crop_and_resize" if mode != "nearest" => CoordTransform::TfCropAndResize,
                        other => {
                            return Err(format!(
                                "Resize's coordinate_transformation_mode {other:?} is not supported in mode {mode:?}"
                            ));
                        }
                    };
                let scales = r.floats_opt("scales")?;
                let sizes = r.usizes_opt("sizes")?;
                let mode = match mode.as_str() {
                    "nearest" => None,
                    "linear" => Some(InterpMode::Linear),
                    "cubic" => Some(InterpMode::Cubic {
                        a: r.float("cubic_coeff_a", -0.75)?,
                        exclude_outside: r.bool("exclude_outside", false)?,
                    }),
                    other => return Err(format!("Resize's mode must be nearest, linear or cubic, got {other:?}")),
                };
                match mode {
                    None => {
                        let nearest_mode = match r.string("nearest_mode", "round_prefer_floor")?.as_str() {
                            "round_prefer_floor" => NearestMode::RoundPreferFloor,
                            "round_prefer_ceil" => NearestMode::RoundPreferCeil,
                            "floor" => NearestMode::Floor,
                            "ceil" => NearestMode::Ceil,
                            other => return Err(format!("Resize's nearest_mode {other:?} is not supported")),
                        };
                        if scales.is_none() && sizes.is_none() {
                            return Err("Resize needs 'scales' or 'sizes'".into());
                        }
                        Op::Resize { scales, sizes, coordinate_transformation_mode, nearest_mode }
                    }
                    Some(mode) => {
                        // nearest_mode only rounds nearest coordinates.
                        r.ignore("nearest_mode");
                        if scales.is_none() && sizes.is_none() {
                            return Err("Resize needs 'scales' or 'sizes'".into());
                        }
                        Op::ResizeInterp {
                            mode,
                            scales,
                            sizes,
                            coordinate_transformation_mode,
                            roi: r.floats_opt("roi")?,
                            extrapolation_value: r.float("extrapolation_value", 0.0)?,
                        }
                    }
                }
            }
            "UnifiedNorm" => Op::UnifiedNorm { axis: r.int("axis", -1)?, epsilon: r.float("epsilon", 1e-5)? },
            "PowerNorm" => Op::PowerNorm {
                groups: positive(name, "groups", r.usize("groups", 1)?)?,
                epsilon: r.float("epsilon", 1e-5)?,
                group_epsilon: r.float("group_epsilon", 1e-5)?,
            },
            "EvoNormS0" => Op::EvoNormS0 {
                groups: positive(name, "groups", r.usize("groups", 32)?)?,
                epsilon: r.float("epsilon", 1e-5)?,
            },
            "EvoNormB0" => Op::EvoNormB0 { epsilon: r.float("epsilon", 1e-3)? },
            "RegionNorm" => Op::RegionNorm { epsilon: r.float("epsilon", 1e-5)? },
            "MaskedSoftmax" => Op::MaskedSoftmax,
            "Attention" => Op::Attention { scale: r.float("scale", 1.0)?, nan_to_zero: r.bool("nan_to_zero", false)? },
            "CRMSNormalization" => Op::CrmsNormalization {
                epsilon: r.float("epsilon", 1e-5)?,
                d: {
                    let d = r.int_required("d")?;
                    usize::try_from(d)
                        .ok()
                        .filter(|&d| d >= 2)
                        .ok_or_else(|| format!("CRMSNormalization's 'd' (the full width) must be ≥ 2, got {d}"))?
                },
            },
            _ => {
                let hint = crate::suggest::nearest(name, OP_NAMES.iter().copied())
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
                return Err(format!("unknown op '{name}'{hint}"));
            }
        };
        r.finish()?;
        Ok(op)
    }

    /// The op's name and its attributes in generic form, defaults left out;
    /// `Op::from_parts(name, &attrs)` gives the op back.
    pub fn to_parts(&self) -> (&'static str, Attrs) {
        let mut w = AttrWriter::default();
        match self {
            Op::Unary(UnaryOp::LeakyRelu { alpha }) => w.float("alpha", *alpha, 0.01),
            Op::Unary(UnaryOp::Selu { alpha, gamma }) => {
                w.float("alpha", *alpha, SELU_ALPHA);
                w.float("gamma", *gamma, SELU_GAMMA);
            }
            Op::Unary(UnaryOp::Gelu { tanh }) => w.string("approximate", if *tanh { "tanh" } else { "none" }, "none"),
            Op::Unary(UnaryOp::Clip { min, max }) => {
                if let Some(v) = min {
                    w.float("min", *v, f32::NAN);
                }
                if let Some(v) = max {
                    w.float("max", *v, f32::NAN);
                }
            }
            // Elementwise ops of issue 12.
            Op::Binary(BinaryOp::Mod { fmod }) => w.int("fmod", *fmod as i64, 0),
            Op::Unary(UnaryOp::HardSigmoid { alpha, beta }) => {
                w.float("alpha", *alpha, 0.2);
                w.float("beta", *beta, 0.5);
            }
            Op::Unary(UnaryOp::Elu { alpha } | UnaryOp::Celu { alpha } | UnaryOp::ThresholdedRelu { alpha }) => {
                w.float("alpha", *alpha, 1.0)
            }
            Op::Unary(UnaryOp::Shrink { bias, lambd }) => {
                w.float("bias", *bias, 0.0);
                w.float("lambd", *lambd, 0.5);
            }
            Op::Unary(UnaryOp::IsInf { positive, negative }) => {
                w.int("detect_positive", *positive as i64, 1);
                w.int("detect_negative", *negative as i64, 1);
            }
            Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Identity | Op::MatMul => {}
            Op::Cast { to } => w.string("to", to.name(), ""),
            Op::Gemm { alpha, beta, trans_a, trans_b } => {
                w.float("alpha", *alpha, 1.0);
                w.float("beta", *beta, 1.0);
                w.int("transA", *trans_a as i64, 0);
                w.int("transB", *trans_b as i64, 0);
            }
            Op::Conv { strides, dilations, pads, group } => {
                if strides != &[1, 1] {
                    w.usizes("strides", strides);
                }
                if dilations != &[1, 1] {
                    w.usizes("dilations", dilations);
                }
                if pads != &[0; 4] {
                    w.usizes("pads", pads);
                }
                w.int("group", *group as i64, 1);
            }
            Op::ConvTranspose { strides, dilations, pads, output_padding, group } => {
                if strides != &[1, 1] {
                    w.usizes("strides", strides);
                }
                if dilations != &[1, 1] {
                    w.usizes("dilations", dilations);
                }
                if pads != &[0; 4] {
                    w.usizes("pads", pads);
                }
                if output_padding != &[0, 0] {
                    w.usizes("output_padding", output_padding);
                }
                w.int("group", *group as i64, 1);
            }
            Op::MaxPool(window) => pool_window_parts(&mut w, window),
            Op::AveragePool { window, count_include_pad } => {
                pool_window_parts(&mut w, window);
                w.int("count_include_pad", *count_include_pad as i64, 0);
            }
            Op::LpPool { window, p } => {
                pool_window_parts(&mut w, window);
                w.int("p", *p as i64, 2);
            }
            Op::Pad { mode, pads, value } => {
                let mode = match mode {
                    PadMode::Constant => "constant",
                    PadMode::Reflect => "reflect",
                    PadMode::Edge => "edge",
                };
                w.string("mode", mode, "constant");
                w.ints("pads", pads);
                w.float("value", *value, 0.0);
            }
            Op::BatchNormalization { epsilon } | Op::InstanceNormalization { epsilon } => {
                w.float("epsilon", *epsilon, 1e-5)
            }
            Op::LayerNormalization { axis, epsilon }
            | Op::RmsNormalization { axis, epsilon }
            | Op::UnifiedNorm { axis, epsilon } => {
                w.int("axis", *axis, -1);
                w.float("epsilon", *epsilon, 1e-5);
            }
            Op::GroupNormalization { num_groups, epsilon } => {
                w.int_always("num_groups", *num_groups as i64);
                w.float("epsilon", *epsilon, 1e-5);
            }
            Op::Softmax { axis } | Op::LogSoftmax { axis } => w.int("axis", *axis, -1),
            Op::Reduce { kind: _, axes, keepdims, noop_with_empty_axes } => {
                if let Some(axes) = axes {
                    w.ints("axes", axes);
                }
                w.int("keepdims", *keepdims as i64, 1);
                w.int("noop_with_empty_axes", *noop_with_empty_axes as i64, 0);
            }
            Op::Reshape { shape, allowzero } => {
                w.ints("shape", shape);
                w.int("allowzero", *allowzero as i64, 0);
            }
            Op::Transpose { perm } => {
                if let Some(perm) = perm {
                    w.usizes("perm", perm);
                }
            }
            Op::Concat { axis } => w.int_always("axis", *axis),
            Op::Split { axis, split, num_outputs } => {
                w.int("axis", *axis, 0);
                match split {
                    Some(split) => w.usizes("split", split),
                    None => w.int_always("num_outputs", *num_outputs as i64),
                }
            }
            Op::Slice { starts, ends, axes, steps } => {
                w.ints("starts", starts);
                w.ints("ends", ends);
                if let Some(axes) = axes {
                    w.ints("axes", axes);
                }
                if let Some(steps) = steps {
                    w.ints("steps", steps);
                }
            }
            Op::Gather { axis } | Op::GatherElements { axis } => w.int("axis", *axis, 0),
            Op::ArgReduce { max: _, axis, keepdims, select_last_index } => {
                w.int("axis", *axis, 0);
                w.int("keepdims", *keepdims as i64, 1);
                w.int("select_last_index", *select_last_index as i64, 0);
            }
            Op::CumSum { axis, exclusive, reverse } => {
                w.int_always("axis", *axis);
                w.int("exclusive", *exclusive as i64, 0);
                w.int("reverse", *reverse as i64, 0);
            }
            Op::TopK { k, axis, largest, sorted } => {
                w.int_always("k", *k as i64);
                w.int("axis", *axis, -1);
                w.int("largest", *largest as i64, 1);
                w.int("sorted", *sorted as i64, 1);
            }
            Op::Tile { repeats } => w.usizes("repeats", repeats),
            Op::GatherND { batch_dims } => w.int("batch_dims", *batch_dims as i64, 0),
            Op::ScatterND { reduction } => w.string("reduction", reduction.name(), "none"),
            Op::ScatterElements { axis, reduction } => {
                w.int("axis", *axis, 0);
                w.string("reduction", reduction.name(), "none");
            }
            Op::Unsqueeze { axes } => w.ints("axes", axes),
            Op::Squeeze { axes } => {
                if let Some(axes) = axes {
                    w.ints("axes", axes);
                }
            }
            Op::Expand { shape } => w.ints("shape", shape),
            Op::Flatten { axis } => w.int("axis", *axis, 1),
            Op::Resize { scales, sizes, coordinate_transformation_mode, nearest_mode } => {
                if let Some(scales) = scales {
                    w.floats("scales", scales);
                }
                if let Some(sizes) = sizes {
                    w.usizes("sizes", sizes);
                }
                w.string("coordinate_transformation_mode", coordinate_transformation_mode.name(), "half_pixel");
                let nm = match nearest_mode {
                    NearestMode::RoundPreferFloor => "round_prefer_floor",
                    NearestMode::RoundPreferCeil => "round_prefer_ceil",
                    NearestMode::Floor => "floor",
                    NearestMode::Ceil => "ceil",
                };
                w.string("nearest_mode", nm, "round_prefer_floor");
            }
            Op::ResizeInterp { mode, scales, sizes, coordinate_transformation_mode, roi, extrapolation_value } => {
                match mode {
                    InterpMode::Linear => w.string("mode", "linear", ""),
                    InterpMode::Cubic { a, exclude_outside } => {
                        w.string("mode", "cubic", "");
                        w.float("cubic_coeff_a", *a, -0.75);
                        w.int("exclude_outside", *exclude_outside as i64, 0);
                    }
                }
                if let Some(scales) = scales {
                    w.floats("scales", scales);
                }
                if let Some(sizes) = sizes {
                    w.usizes("sizes", sizes);
                }
                w.string("coordinate_transformation_mode", coordinate_transformation_mode.name(), "half_pixel");
                if let Some(roi) = roi {
                    w.floats("roi", roi);
                }
                w.float("extrapolation_value", *extrapolation_value, 0.0);
            }
            Op::PowerNorm { groups, epsilon, group_epsilon } => {
                w.int("groups", *groups as i64, 1);
                w.float("epsilon", *epsilon, 1e-5);
                w.float("group_epsilon", *group_epsilon, 1e-5);
            }
            Op::EvoNormS0 { groups, epsilon } => {
                w.int("groups", *groups as i64, 32);
                w.float("epsilon", *epsilon, 1e-5);
            }
            Op::EvoNormB0 { epsilon } => w.float("epsilon", *epsilon, 1e-3),
            Op::RegionNorm { epsilon } => w.float("epsilon", *epsilon, 1e-5),
            Op::MaskedSoftmax => {}
            Op::Attention { scale, nan_to_zero } => {
                w.float("scale", *scale, 1.0);
                w.int("nan_to_zero", *nan_to_zero as i64, 0);
            }
            Op::CrmsNormalization { epsilon, d } => {
                w.float("epsilon", *epsilon, 1e-5);
                w.int_always("d", *d as i64);
            }
        }
        (self.name(), w.attrs)
    }
}

fn pair(op: &str, attr: &str, value: Option<Vec<usize>>, default: usize) -> Result<[usize; 2], String> {
    match value {
        None => Ok([default; 2]),
        Some(v) if v.len() == 2 => Ok([v[0], v[1]]),
        Some(v) => Err(format!("{op}'s '{attr}' must have 2 values for 2-D, got {}", v.len())),
    }
}

/// The window attributes every pooling op shares; `kernel_shape` fixes the spatial rank and the
/// others default to it.
fn pool_window(op: &str, r: &mut AttrReader<'_>) -> Result<PoolWindow, String> {
    let auto_pad = r.string("auto_pad", "NOTSET")?;
    if auto_pad != "NOTSET" {
        return Err(format!("{op}'s auto_pad {auto_pad:?} must be resolved to explicit 'pads' by the frontend"));
    }
    let kernel_shape = r.usizes_opt("kernel_shape")?.ok_or_else(|| format!("{op} needs 'kernel_shape'"))?;
    let rank = kernel_shape.len();
    if rank == 0 || kernel_shape.contains(&0) {
        return Err(format!("{op}'s kernel_shape must be one or more positive sizes, got {kernel_shape:?}"));
    }
    let mut per_axis = |attr: &'static str, count: usize, default: usize| -> Result<Vec<usize>, String> {
        match r.usizes_opt(attr)? {
            None => Ok(vec![default; count]),
            Some(v) if v.len() == count => Ok(v),
            Some(v) => {
                Err(format!("{op}'s '{attr}' must have {count} values for a {rank}-D kernel_shape, got {}", v.len()))
            }
        }
    };
    let strides = per_axis("strides", rank, 1)?;
    let pads = per_axis("pads", 2 * rank, 0)?;
    let dilations = per_axis("dilations", rank, 1)?;
    if strides.contains(&0) || dilations.contains(&0) {
        return Err(format!("{op}'s strides and dilations must be ≥ 1"));
    }
    let ceil_mode = r.bool("ceil_mode", false)?;
    Ok(PoolWindow { kernel_shape, strides, pads, dilations, ceil_mode })
}

fn pool_window_parts(w: &mut AttrWriter, window: &PoolWindow) {
    let PoolWindow { kernel_shape, strides, pads, dilations, ceil_mode } = window;
    w.usizes("kernel_shape", kernel_shape);
    if strides.iter().any(|&s| s != 1) {
        w.usizes("strides", strides);
    }
    if pads.iter().any(|&p| p != 0) {
        w.usizes("pads", pads);
    }
    if dilations.iter().any(|&d| d != 1) {
        w.usizes("dilations", dilations);
    }
    w.int("ceil_mode", *ceil_mode as i64, 0);
}

fn positive(op: &str, attr: &str, value: usize) -> Result<usize, String> {
    if value == 0 { Err(format!("{op}'s '{attr}' must be ≥ 1")) } else { Ok(value) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attr;

    #[test]
    fn every_name_round_trips_through_parts() {
        for &name in OP_NAMES {
            let mut attrs = Attrs::new();
            // The smallest attributes that make each op valid.
            match name {
                "Cast" => {
                    attrs.insert("to".into(), Attr::Str("f32".into()));
                }
                "Pad" => {
                    attrs.insert("pads".into(), Attr::Ints(vec![0, 1, 0, 1]));
                }
                "GroupNormalization" => {
                    attrs.insert("num_groups".into(), Attr::Int(2));
                }
                "Reshape" | "Expand" => {
                    attrs.insert("shape".into(), Attr::Ints(vec![2, -1]));
                }
                "Concat" => {
                    attrs.insert("axis".into(), Attr::Int(1));
                }
                "Split" => {
                    attrs.insert("num_outputs".into(), Attr::Int(2));
                }
                "Slice" => {
                    attrs.insert("starts".into(), Attr::Ints(vec![0]));
                    attrs.insert("ends".into(), Attr::Ints(vec![1]));
                }
                "Unsqueeze" => {
                    attrs.insert("axes".into(), Attr::Ints(vec![0]));
                }
                "Resize" => {
                    attrs.insert("scales".into(), Attr::Floats(vec![1.0, 1.0, 2.0, 2.0]));
                }
                "CumSum" => {
                    attrs.insert("axis".into(), Attr::Int(0));
                }
                "TopK" => {
                    attrs.insert("k".into(), Attr::Int(2));
                }
                "Tile" => {
                    attrs.insert("repeats".into(), Attr::Ints(vec![1, 2]));
                }
                "CRMSNormalization" => {
                    attrs.insert("d".into(), Attr::Int(8));
                }
                "MaxPool" | "AveragePool" | "LpPool" => {
                    attrs.insert("kernel_shape".into(), Attr::Ints(vec![3, 3]));
                    attrs.insert("strides".into(), Attr::Ints(vec![2, 2]));
                    attrs.insert("pads".into(), Attr::Ints(vec![1, 1, 1, 1]));
                    attrs.insert("ceil_mode".into(), Attr::Int(1));
                }
                _ => {}
            }
            let op = Op::from_parts(name, &attrs).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(op.name(), name);
            let (back_name, back_attrs) = op.to_parts();
            assert_eq!(Op::from_parts(back_name, &back_attrs), Ok(op), "{name}");
        }
    }

    #[test]
    fn unknown_names_get_suggestions() {
        let err = Op::from_parts("Sofmax", &Attrs::new()).unwrap_err();
        assert_eq!(err, "unknown op 'Sofmax' (did you mean 'Softmax'?)");
        let mut attrs = Attrs::new();
        attrs.insert("axsi".into(), Attr::Int(1));
        let err = Op::from_parts("Softmax", &attrs).unwrap_err();
        assert_eq!(err, "Softmax has no attribute 'axsi' (did you mean 'axis'?)");
        attrs.clear();
        attrs.insert("transB".into(), Attr::Str("yes".into()));
        let err = Op::from_parts("Gemm", &attrs).unwrap_err();
        assert!(err.contains("'transB' of Gemm must be an int"), "{err}");
    }
}
