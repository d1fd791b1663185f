//! A model that runs at any input shape: [`Session`] compiles the model once per distinct set of
//! input shapes, on the first run with those shapes, and keeps the compiled models in a small LRU
//! cache, so a dynamic-batch ONNX model serves batch 1, 4 and 32 through one object.
//!
//! Only ONNX files have dynamic dimensions; a kiln JSON, `.kir` or `.kiln` model (or an ONNX model
//! whose inputs are all fixed) is compiled once, when the session is made, and every run uses it.
//! The cache holds at most [`Session::capacity`] compiled models ([`DEFAULT_CAPACITY`] unless
//! [`Session::with_capacity`] says otherwise); the least recently used is dropped when a new shape
//! set needs room, and is compiled again if it comes back. Each entry holds its own copy of the
//! weights and its own JIT code, so the bound is also a memory bound.

use crate::{CompiledModel, Error, LoadOptions, NamedTensors, Options, Tensor};
use kiln_frontends::onnx::{Dim, Signature};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How many compiled shape sets a [`Session`] keeps unless told otherwise.
pub const DEFAULT_CAPACITY: usize = 8;

/// Input shapes, by input name in declaration order: the cache key. Only inputs with a dynamic
/// dimension take part.
type ShapeKey = Vec<(String, Vec<usize>)>;

/// A model file that compiles itself for the input shapes it is run with. `Send + Sync`: many
/// threads may run one session at once (two threads meeting a new shape set at the same moment may
/// both compile it; the first result is kept).
pub struct Session {
    path: PathBuf,
    load: LoadOptions,
    options: Options,
    capacity: usize,
    /// The inputs with a dynamic dimension (ONNX only); empty means one compiled model serves all.
    dynamic: Vec<String>,
    /// Most recently used last.
    cache: Mutex<Vec<(ShapeKey, Arc<CompiledModel>)>>,
}

impl Session {
    /// A session for the model at `path`. `load` gives what loading needs besides the shapes
    /// (values of static-parameter inputs, the memory cap; its `fixed_dims` fix inputs for every
    /// run). A model without dynamic dimensions is loaded and compiled here, so that its errors
    /// come now; otherwise the file's declared inputs are read and compilation waits for the first
    /// run.
    pub fn new(path: impl AsRef<Path>, load: &LoadOptions, options: &Options) -> Result<Session, Error> {
        Session::with_capacity(path, load, options, DEFAULT_CAPACITY)
    }

    /// [`Session::new`] keeping at most `capacity` (≥ 1) compiled shape sets.
    pub fn with_capacity(
        path: impl AsRef<Path>,
        load: &LoadOptions,
        options: &Options,
        capacity: usize,
    ) -> Result<Session, Error> {
        let path = path.as_ref().to_path_buf();
        let dynamic = match signature(&path, load)? {
            Some(signature) => signature
                .inputs
                .iter()
                .filter(|p| p.dims.as_ref().is_none_or(|d| d.iter().any(|d| !matches!(d, Dim::Fixed(_)))))
                .filter(|p| !load.fixed_dims.iter().any(|(n, _)| *n == p.name))
                .map(|p| p.name.clone())
                .collect(),
            None => Vec::new(),
        };
        let session = Session {
            path,
            load: load.clone(),
            options: options.clone(),
            capacity: capacity.max(1),
            dynamic,
            cache: Mutex::new(Vec::new()),
        };
        if session.dynamic.is_empty() {
            session.compiled_for(&[])?;
        }
        Ok(session)
    }

    /// Runs the model on `inputs`, compiling it for their shapes first if no cached model has
    /// them. Inputs are checked as by [`CompiledModel::run`].
    pub fn run(&self, inputs: &[(String, Tensor)]) -> Result<NamedTensors, Error> {
        self.compiled_for(inputs)?.run(inputs)
    }

    /// The compiled model for these inputs' shapes (compiled now if not cached).
    pub fn compiled_for(&self, inputs: &[(String, Tensor)]) -> Result<Arc<CompiledModel>, Error> {
        let shapes: Vec<(&str, &[usize])> = inputs.iter().map(|(n, t)| (n.as_str(), t.shape())).collect();
        self.compiled_for_shapes(&shapes)
    }

    /// [`Session::compiled_for`] from the inputs' shapes alone, by name (for callers that hold
    /// borrowed data, such as [`CompiledModel::run_into`]'s).
    pub fn compiled_for_shapes(&self, shapes: &[(&str, &[usize])]) -> Result<Arc<CompiledModel>, Error> {
        let mut key = ShapeKey::new();
        for name in &self.dynamic {
            let shape = shapes.iter().find(|(n, _)| n == name).map(|(_, s)| *s).ok_or_else(|| {
                Error::new(
                    format!("input '{name}'"),
                    "is not given (it has dynamic dimensions, so its shape picks the compiled model)",
                )
                .with_kind(crate::ErrorKind::Input)
            })?;
            key.push((name.clone(), shape.to_vec()));
        }
        if let Some(hit) = self.lookup(&key) {
            return Ok(hit);
        }
        // Compiled without the lock: runs of cached shapes go on meanwhile.
        let mut load = self.load.clone();
        load.fixed_dims.extend(key.iter().cloned());
        let compiled = Arc::new(crate::compile(crate::load_with(&self.path, &load)?, &self.options)?);
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(i) = cache.iter().position(|(k, _)| *k == key) {
            return Ok(Arc::clone(&cache[i].1));
        }
        if cache.len() >= self.capacity {
            cache.remove(0);
        }
        cache.push((key, Arc::clone(&compiled)));
        Ok(compiled)
    }

    fn lookup(&self, key: &ShapeKey) -> Option<Arc<CompiledModel>> {
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let i = cache.iter().position(|(k, _)| k == key)?;
        let entry = cache.remove(i);
        let hit = Arc::clone(&entry.1);
        cache.push(entry);
        Some(hit)
    }

    /// The inputs with a dynamic dimension, whose shapes pick the compiled model (empty: one
    /// compiled model serves every run).
    pub fn dynamic_inputs(&self) -> &[String] {
        &self.dynamic
    }

    /// The most compiled shape sets kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The shape sets compiled and kept now, least recently used first.
    pub fn cached_shapes(&self) -> Vec<Vec<(String, Vec<usize>)>> {
        let cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.iter().map(|(k, _)| k.clone()).collect()
    }
}

/// The declared inputs and outputs of an ONNX file; `None` for other formats (static shapes).
fn signature(path: &Path, load: &LoadOptions) -> Result<Option<Signature>, Error> {
    if path.extension().is_none_or(|e| e != "onnx") {
        return Ok(None);
    }
    let mut limits = kiln_frontends::ReadLimits::default();
    if let Some(cap) = load.memory_cap {
        limits.memory_cap = cap;
    }
    kiln_frontends::onnx::read_signature(path, &limits).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// Tolerance |Δ| ≤ 1e-5: softmax outputs lie in [0, 1]; ONNX Runtime and kiln sum the 12- and
    /// 16-term dot products in different orders in f32 (≈ 16·2^-24·|terms| ≈ 1e-6), while a wrong
    /// row or batch stride moves outputs by ≥ 1e-2.
    #[test]
    fn one_session_runs_a_dynamic_batch_onnx_model_at_batch_1_4_and_32_as_onnx_runtime() {
        for (backend, threads) in [(crate::Backend::Jit, 1), (crate::Backend::Jit, 2), (crate::Backend::Interp, 1)] {
            let options = Options { backend, threads: Some(threads), ..Options::default() };
            let session =
                Session::new(root().join("models/onnx/dynamic_batch.onnx"), &LoadOptions::default(), &options).unwrap();
            assert!(session.cached_shapes().is_empty(), "nothing compiled before the first run");
            for batch in [1, 4, 32, 4] {
                let dir = root().join("tests/dynamic_batch");
                let x = crate::npy::read_npy(&dir.join(format!("x_{batch}.npy"))).unwrap();
                let want = crate::npy::read_npy(&dir.join(format!("y_{batch}.npy"))).unwrap();
                let out = session.run(&[("x".to_string(), x)]).unwrap();
                let got = &out[0].1;
                assert_eq!(got.shape(), want.shape(), "batch {batch}");
                for (a, b) in got.as_f32().unwrap().iter().zip(want.as_f32().unwrap()) {
                    assert!((a - b).abs() <= 1e-5, "batch {batch} {backend:?}: {a} vs ONNX Runtime {b}");
                }
            }
            let shapes: Vec<usize> = session.cached_shapes().iter().map(|k| k[0].1[0]).collect();
            assert_eq!(shapes, [1, 32, 4], "one compile per batch size, the last used last");
        }
    }

    #[test]
    fn the_cache_is_bounded_and_drops_the_least_recently_used() {
        let options = Options { backend: crate::Backend::Interp, opt_level: crate::OptLevel::O0, ..Options::default() };
        let session =
            Session::with_capacity(root().join("models/onnx/dynamic_batch.onnx"), &LoadOptions::default(), &options, 2)
                .unwrap();
        let run = |batch: usize| {
            let x = Tensor::from_f32([batch, 3, 4], vec![0.25; batch * 12]).unwrap();
            let out = session.run(&[("x".to_string(), x)]).unwrap();
            assert_eq!(out[0].1.shape(), &[batch, 5]);
        };
        run(1);
        run(2);
        run(1);
        run(3); // evicts 2, the least recently used
        let batches: Vec<usize> = session.cached_shapes().iter().map(|k| k[0].1[0]).collect();
        assert_eq!(batches, [1, 3]);
        assert_eq!(session.capacity(), 2);
        let err = session.run(&[]).unwrap_err().to_string();
        assert!(err.contains("input 'x'") && err.contains("dynamic"), "{err}");
        let err = session.run(&[("x".to_string(), Tensor::from_f32([2, 4, 3], vec![0.0; 24]).unwrap())]).unwrap_err();
        assert!(err.to_string().contains("does not match the declared shape"), "{err}");
    }

    #[test]
    fn a_static_model_compiles_once_when_the_session_is_made() {
        let session =
            Session::new(root().join("models/mlp_bn.json"), &LoadOptions::default(), &Options::default()).unwrap();
        assert_eq!(session.cached_shapes(), vec![Vec::new()]);
        let x = Tensor::from_f32([8, 16], vec![0.5; 128]).unwrap();
        assert_eq!(session.run(&[("x".to_string(), x)]).unwrap()[0].1.shape(), &[8, 10]);
        assert!(
            Session::new(root().join("models/missing.json"), &LoadOptions::default(), &Options::default()).is_err()
        );
    }

    #[test]
    fn session_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Session>();
    }
}
