//! Dense row-major tensors with owned data.

use crate::dtype::{DType, ShapeDisplay, TensorType};
use std::fmt;

/// The element storage of a tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::I64(_) => DType::I64,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A dense, row-major tensor. The invariant `data.len() == product(shape)` holds for every value
/// built through [`Tensor::new`].
#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// Builds a tensor, checking that the data length matches the shape.
    pub fn new(shape: impl Into<Vec<usize>>, data: TensorData) -> Result<Tensor, String> {
        let shape = shape.into();
        let expected = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        match expected {
            Some(n) if n == data.len() => Ok(Tensor { shape, data }),
            Some(n) => Err(format!("data has {} elements but shape {} needs {n}", data.len(), ShapeDisplay(&shape))),
            None => Err(format!("shape {} overflows", ShapeDisplay(&shape))),
        }
    }

    pub fn from_f32(shape: impl Into<Vec<usize>>, data: Vec<f32>) -> Result<Tensor, String> {
        Tensor::new(shape, TensorData::F32(data))
    }

    pub fn from_i64(shape: impl Into<Vec<usize>>, data: Vec<i64>) -> Result<Tensor, String> {
        Tensor::new(shape, TensorData::I64(data))
    }

    pub fn from_bool(shape: impl Into<Vec<usize>>, data: Vec<bool>) -> Result<Tensor, String> {
        Tensor::new(shape, TensorData::Bool(data))
    }

    /// A tensor of the given type filled with zeros (false for bool).
    pub fn zeros(ty: &TensorType) -> Tensor {
        let n = ty.num_elements();
        let data = match ty.dtype {
            DType::F32 => TensorData::F32(vec![0.0; n]),
            DType::I64 => TensorData::I64(vec![0; n]),
            DType::Bool => TensorData::Bool(vec![false; n]),
        };
        Tensor { shape: ty.shape.clone(), data }
    }

    pub fn scalar_f32(value: f32) -> Tensor {
        Tensor { shape: vec![], data: TensorData::F32(vec![value]) }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype(), self.shape.clone())
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn into_data(self) -> TensorData {
        self.data
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<&[bool]> {
        match &self.data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// Same data, new shape of the same element count.
    pub fn reshaped(self, shape: impl Into<Vec<usize>>) -> Result<Tensor, String> {
        Tensor::new(shape, self.data)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({}{}, ", self.dtype(), ShapeDisplay(&self.shape))?;
        const SHOWN: usize = 8;
        match &self.data {
            TensorData::F32(v) => write!(f, "{:?}", &v[..v.len().min(SHOWN)])?,
            TensorData::I64(v) => write!(f, "{:?}", &v[..v.len().min(SHOWN)])?,
            TensorData::Bool(v) => write!(f, "{:?}", &v[..v.len().min(SHOWN)])?,
        }
        if self.len() > SHOWN {
            write!(f, "…")?;
        }
        write!(f, ")")
    }
}

/// Row-major strides of a shape, in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_length() {
        assert!(Tensor::from_f32([2, 2], vec![1.0; 4]).is_ok());
        let err = Tensor::from_f32([2, 3], vec![1.0; 4]).unwrap_err();
        assert_eq!(err, "data has 4 elements but shape [2,3] needs 6");
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
    }
}
