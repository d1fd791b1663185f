//! Element types and tensor types (`f32[2,3]`).

use std::fmt;

/// Element type of a tensor. f32 carries data; i64 carries indices; bool is what comparisons produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    I64,
    Bool,
}

impl DType {
    pub const ALL: [DType; 3] = [DType::F32, DType::I64, DType::Bool];

    /// The spelling used by the text form and the JSON format.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
            DType::Bool => "bool",
        }
    }

    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::I64 => 8,
            DType::Bool => 1,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The largest tensor kiln agrees to describe: 2^31 elements (8 GiB of f32). Anything larger in a
/// model file is refused before a byte is allocated.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// The default memory cap, in bytes, for one model: its weights (as loaded or generated) plus the
/// arena its compiled plan needs. A model or plan above it is refused with an error naming the
/// model and the size, before anything of that size is allocated. 4 GiB holds every model of the
/// zoo and the real-model suite with room to spare (GPT-2 small is 0.5 GB of f32 weights); a user
/// with a larger model raises it (`Options::memory_cap`, `kiln --memory-cap`).
pub const DEFAULT_MEMORY_CAP: u64 = 4 << 30;

/// A static tensor type: element type and shape. A scalar has the empty shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: impl Into<Vec<usize>>) -> TensorType {
        TensorType { dtype, shape: shape.into() }
    }

    pub fn f32(shape: impl Into<Vec<usize>>) -> TensorType {
        TensorType::new(DType::F32, shape)
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements (1 for a scalar). Saturates instead of overflowing; see [`Self::check_size`].
    pub fn num_elements(&self) -> usize {
        self.shape.iter().fold(1usize, |acc, &d| acc.saturating_mul(d))
    }

    /// Validates a shape that came from outside: no zero dimension and no more than
    /// [`MAX_ELEMENTS`] elements.
    pub fn check_size(&self) -> Result<(), String> {
        if let Some(axis) = self.shape.iter().position(|&d| d == 0) {
            return Err(format!("dimension {axis} of {self} is zero; kiln needs every dimension ≥ 1"));
        }
        let mut total: u128 = 1;
        for &d in &self.shape {
            total = total.saturating_mul(d as u128);
        }
        if total > MAX_ELEMENTS as u128 {
            return Err(format!("{self} has {total} elements, more than the limit of {MAX_ELEMENTS}"));
        }
        Ok(())
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, ShapeDisplay(&self.shape))
    }
}

/// Displays a shape as `[d0,d1,...]`.
pub struct ShapeDisplay<'a>(pub &'a [usize]);

impl fmt::Display for ShapeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_size_checks() {
        assert_eq!(TensorType::f32([2, 3]).to_string(), "f32[2,3]");
        assert_eq!(TensorType::new(DType::I64, []).to_string(), "i64[]");
        assert!(TensorType::f32([1_000_000, 1_000_000]).check_size().unwrap_err().contains("more than"));
        assert!(TensorType::f32([3, 0]).check_size().unwrap_err().contains("dimension 1"));
        assert_eq!(DType::from_name("bool"), Some(DType::Bool));
        assert_eq!(DType::from_name("f16"), None);
    }
}
