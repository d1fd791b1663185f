//! `kiln._kiln`: the compiled half of the `kiln` Python package. The Python half (`kiln/`) defines
//! the exception classes and re-exports these classes; see `kiln/__init__.pyi` for the API.
//!
//! Every call that compiles or runs releases the GIL; the wrapped `kiln::CompiledModel` is
//! `Send + Sync`, so one session serves many Python threads at once.

use kiln::{Backend, CompiledModel, DType, ErrorKind, OptLevel, Options, Tensor, TensorData, TensorType};
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{IntoPyArray, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyType};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A kiln error as the exception class of its kind (defined in `kiln/__init__.py`), with the CLI's
/// message (one `location: message` line per problem), and `.kind` and `.diagnostics` attributes.
fn to_py_err(py: Python<'_>, error: kiln::Error) -> PyErr {
    let class = match error.kind() {
        ErrorKind::UnsupportedOp => "UnsupportedOpError",
        ErrorKind::Input => "InputError",
        ErrorKind::Io => "KilnIOError",
        ErrorKind::ResourceLimit => "ResourceLimitError",
        _ => "ModelError",
    };
    let message = error.to_string();
    let found = py.import("kiln").and_then(|m| m.getattr(class)).and_then(|c| Ok(c.cast_into::<PyType>()?));
    let err = match found {
        Ok(class) => PyErr::from_type(class, message),
        // The package is always imported first; this is only for `kiln._kiln` loaded on its own.
        Err(_) => PyValueError::new_err(message),
    };
    let value = err.value(py);
    let diagnostics: Vec<String> = error.diagnostics().iter().map(|d| d.to_string()).collect();
    // Attributes are a convenience; the message already says everything.
    let _ = value.setattr("kind", error.kind().as_str());
    let _ = value.setattr("diagnostics", diagnostics);
    err
}

trait OrRaise<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrRaise<T> for Result<T, kiln::Error> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py_err(py, e))
    }
}

/// onnxruntime's type string for an element type (`tensor(float)`, …).
fn ort_type(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "tensor(float)",
        DType::I64 => "tensor(int64)",
        DType::Bool => "tensor(bool)",
    }
}

/// The numpy dtype name of an element type.
fn numpy_dtype(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float32",
        DType::I64 => "int64",
        DType::Bool => "bool",
    }
}

/// A model input or output as onnxruntime's `NodeArg`: `.name`, `.shape` (a list of ints: kiln's
/// shapes are static), `.type` (`"tensor(float)"`, `"tensor(int64)"` or `"tensor(bool)"`).
#[pyclass(frozen, module = "kiln", name = "NodeArg")]
struct NodeArg {
    #[pyo3(get)]
    name: String,
    #[pyo3(get)]
    shape: Vec<usize>,
    #[pyo3(get, name = "type")]
    type_: &'static str,
    /// The numpy dtype name (`"float32"`, `"int64"` or `"bool"`).
    #[pyo3(get)]
    dtype: &'static str,
}

#[pymethods]
impl NodeArg {
    fn __repr__(&self) -> String {
        format!("NodeArg(name={:?}, type={:?}, shape={:?})", self.name, self.type_, self.shape)
    }
}

fn node_arg(name: &str, ty: &TensorType) -> NodeArg {
    NodeArg { name: name.to_string(), shape: ty.shape.clone(), type_: ort_type(ty.dtype), dtype: numpy_dtype(ty.dtype) }
}

/// Converts one input value to a tensor of the expected element type. A C-contiguous array of that
/// type is read directly; another array (or a list, a scalar) is converted by numpy when the cast is
/// "same_kind" (float64 → float32, int32 → int64), and refused with a TypeError otherwise. The shape
/// is checked by kiln itself when the model runs (an InputError with the CLI's message).
fn input_tensor(py: Python<'_>, name: &str, value: &Bound<'_, PyAny>, expected: Option<DType>) -> PyResult<Tensor> {
    if let Some(tensor) = read_array(value, expected)? {
        return Ok(tensor);
    }
    let np = py.import("numpy")?;
    let array = np.call_method1("asarray", (value,))?;
    let given_dtype = array.getattr("dtype")?;
    let given_shape = array.getattr("shape")?;
    let target = match expected {
        Some(dtype) => numpy_dtype(dtype),
        // Not a model input: kiln reports that by name when it runs. Any of kiln's types will do.
        None => "float32",
    };
    let castable = np.call_method1("can_cast", (&given_dtype, target, "same_kind"))?.is_truthy()?;
    if !castable {
        return Err(PyTypeError::new_err(format!(
            "input '{name}': expected a numpy array of dtype {target}, but was given dtype {given_dtype} with shape \
             {given_shape} (kiln converts only same-kind casts such as float64 to float32)"
        )));
    }
    let converted = np.call_method1("ascontiguousarray", (&array, target))?;
    read_array(&converted, expected)?.ok_or_else(|| {
        PyTypeError::new_err(format!("input '{name}': cannot convert dtype {given_dtype} to {target}"))
    })
}

/// The tensor of a C-contiguous numpy array of the expected element type (any of kiln's when
/// `expected` is `None`); `None` if the value is not such an array.
fn read_array(value: &Bound<'_, PyAny>, expected: Option<DType>) -> PyResult<Option<Tensor>> {
    let Ok(array) = value.cast::<PyUntypedArray>() else {
        return Ok(None);
    };
    if !array.is_c_contiguous() {
        return Ok(None);
    }
    let want = |dtype: DType| expected.is_none_or(|e| e == dtype);
    let shape = array.shape().to_vec();
    // One copy into kiln's own tensor, made while the GIL still guards the array.
    let data = if want(DType::F32)
        && let Ok(a) = value.extract::<PyReadonlyArrayDyn<'_, f32>>()
    {
        TensorData::F32(a.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?.to_vec())
    } else if want(DType::I64)
        && let Ok(a) = value.extract::<PyReadonlyArrayDyn<'_, i64>>()
    {
        TensorData::I64(a.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?.to_vec())
    } else if want(DType::Bool)
        && let Ok(a) = value.extract::<PyReadonlyArrayDyn<'_, bool>>()
    {
        TensorData::Bool(a.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?.to_vec())
    } else {
        return Ok(None);
    };
    Tensor::new(shape, data).map(Some).map_err(PyValueError::new_err)
}

/// A numpy array that owns the tensor's buffer (moved, not copied).
fn to_numpy<'py>(py: Python<'py>, tensor: Tensor) -> PyResult<Bound<'py, PyAny>> {
    let shape = IxDyn(tensor.shape());
    let bad = |e: numpy::ndarray::ShapeError| PyValueError::new_err(e.to_string());
    Ok(match tensor.into_data() {
        TensorData::F32(v) => ArrayD::from_shape_vec(shape, v).map_err(bad)?.into_pyarray(py).into_any(),
        TensorData::I64(v) => ArrayD::from_shape_vec(shape, v).map_err(bad)?.into_pyarray(py).into_any(),
        TensorData::Bool(v) => ArrayD::from_shape_vec(shape, v).map_err(bad)?.into_pyarray(py).into_any(),
    })
}

/// Compile options from the Python keywords, checked.
fn options(threads: Option<usize>, opt_level: u8, backend: &str, memory_cap: Option<&Bound<'_, PyAny>>) -> PyResult<Options> {
    let opt_level = match opt_level {
        0 => OptLevel::O0,
        1 => OptLevel::O1,
        2 => OptLevel::O2,
        other => return Err(PyValueError::new_err(format!("opt_level must be 0, 1 or 2, got {other}"))),
    };
    let backend = match backend {
        "jit" => Backend::Jit,
        "interp" => Backend::Interp,
        other => return Err(PyValueError::new_err(format!("backend must be \"jit\" or \"interp\", got {other:?}"))),
    };
    if threads == Some(0) {
        return Err(PyValueError::new_err("threads must be at least 1 (or None for all cores)"));
    }
    Ok(Options { backend, opt_level, threads, memory_cap: memory_cap_bytes(memory_cap)?.unwrap_or(kiln::ir::DEFAULT_MEMORY_CAP) })
}

/// `memory_cap` as bytes: an int, or a string such as "16GiB" (as `kiln --memory-cap`).
fn memory_cap_bytes(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    if let Ok(bytes) = value.extract::<u64>() {
        return Ok(Some(bytes));
    }
    let text: String =
        value.extract().map_err(|_| PyTypeError::new_err("memory_cap must be an int (bytes) or a str such as \"16GiB\""))?;
    kiln::parse_memory_size(&text).map(Some).map_err(|e| PyValueError::new_err(format!("memory_cap: {e}")))
}

/// `shapes` ({name: [d0, d1, ...]}) as the loader's fixed dimensions.
fn fixed_dims(shapes: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, Vec<usize>)>> {
    let mut dims = Vec::new();
    if let Some(shapes) = shapes {
        for (name, shape) in shapes.iter() {
            let name: String = name.extract().map_err(|_| PyTypeError::new_err("shapes: keys must be input names (str)"))?;
            let shape: Vec<usize> = shape.extract().map_err(|_| {
                PyTypeError::new_err(format!("shapes['{name}']: expected a sequence of non-negative ints"))
            })?;
            dims.push((name, shape));
        }
    }
    Ok(dims)
}

fn load_model(py: Python<'_>, path: PathBuf, shapes: Option<&Bound<'_, PyDict>>, memory_cap: Option<u64>) -> PyResult<kiln::Model> {
    let load = kiln::LoadOptions { fixed_dims: fixed_dims(shapes)?, memory_cap, ..Default::default() };
    py.detach(|| kiln::load_with(&path, &load)).or_raise(py)
}

/// A model as loaded from its file, before compilation: `kiln.load(path)`. Pass it to
/// `kiln.compile`, which takes its weights (a model compiles once).
#[pyclass(frozen, module = "kiln", name = "Model")]
struct PyModel {
    model: Mutex<Option<kiln::Model>>,
    name: String,
}

#[pymethods]
impl PyModel {
    /// The graph's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The graph in kiln's IR text form (as `kiln compile --emit ir -O0`).
    fn ir(&self) -> PyResult<String> {
        let guard = self.model.lock().map_err(|_| PyValueError::new_err("the model's lock is poisoned"))?;
        let model = guard.as_ref().ok_or_else(compiled_already)?;
        Ok(kiln::ir::text::print(&model.graph))
    }

    fn __repr__(&self) -> String {
        format!("<kiln.Model '{}'>", self.name)
    }
}

fn compiled_already() -> PyErr {
    PyValueError::new_err("this kiln.Model was compiled already (compiling takes its weights): load it again")
}

/// A compiled model, from `kiln.compile`: `run({name: array}) -> {name: array}`.
#[pyclass(frozen, module = "kiln", name = "CompiledModel")]
struct PyCompiledModel {
    compiled: Arc<CompiledModel>,
}

/// Runs `compiled` on a dict of inputs with the GIL released; the outputs in model order.
fn run_dict(py: Python<'_>, compiled: &CompiledModel, inputs: &Bound<'_, PyDict>) -> PyResult<Vec<(String, Tensor)>> {
    let declared = compiled.input_types();
    let mut tensors = Vec::with_capacity(inputs.len());
    for (name, value) in inputs.iter() {
        let name: String =
            name.extract().map_err(|_| PyTypeError::new_err("inputs: keys must be input names (str)"))?;
        let expected = declared.iter().find(|(n, _)| *n == name).map(|(_, ty)| ty.dtype);
        let tensor = input_tensor(py, &name, &value, expected)?;
        tensors.push((name, tensor));
    }
    py.detach(|| compiled.run(&tensors)).or_raise(py)
}

fn output_types(compiled: &CompiledModel) -> Vec<(String, TensorType)> {
    let graph = compiled.graph();
    graph.outputs().iter().map(|&v| (graph.value_name(v).to_string(), graph.value_type(v).clone())).collect()
}

#[pymethods]
impl PyCompiledModel {
    /// Runs the model: `inputs` maps each input name to a numpy array; returns {output name: array}
    /// in the model's output order.
    fn run<'py>(&self, py: Python<'py>, inputs: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
        let outputs = run_dict(py, &self.compiled, inputs)?;
        let dict = PyDict::new(py);
        for (name, tensor) in outputs {
            dict.set_item(name, to_numpy(py, tensor)?)?;
        }
        Ok(dict)
    }

    /// The inputs, as `InferenceSession.get_inputs()`.
    fn get_inputs(&self) -> Vec<NodeArg> {
        self.compiled.input_types().iter().map(|(n, ty)| node_arg(n, ty)).collect()
    }

    /// The outputs, as `InferenceSession.get_outputs()`.
    fn get_outputs(&self) -> Vec<NodeArg> {
        output_types(&self.compiled).iter().map(|(n, ty)| node_arg(n, ty)).collect()
    }

    /// The optimised graph in kiln's IR text form (`kiln compile --emit ir`).
    fn ir(&self) -> String {
        kiln::ir::text::print(self.compiled.graph())
    }

    /// The optimised graph as Graphviz text (`kiln compile --emit dot`).
    fn dot(&self) -> String {
        kiln::dot::to_dot(self.compiled.graph())
    }

    /// What compilation did, as a dict (`kiln compile --emit stats`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("json")?.call_method1("loads", (self.compiled.stats().to_json().to_string(),))
    }

    /// Seeded inputs, as `kiln run` uses for inputs it is not given: f32 inputs standard-normal
    /// (input i in declaration order uses seed i), int64 zeros, bool false.
    fn default_inputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let inputs = kiln::default_inputs(self.compiled.graph()).or_raise(py)?;
        let dict = PyDict::new(py);
        for (name, tensor) in inputs {
            dict.set_item(name, to_numpy(py, tensor)?)?;
        }
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        format!("<kiln.CompiledModel '{}'>", self.compiled.graph().name())
    }
}

/// Loads a model file (`.onnx`, `.json` or `.kir`). `shapes` fixes dynamic input dimensions of an
/// ONNX model ({name: [d0, ...]}); `memory_cap` (bytes or "16GiB") bounds the weights read.
#[pyfunction]
#[pyo3(signature = (path, *, shapes = None, memory_cap = None))]
fn load(py: Python<'_>, path: PathBuf, shapes: Option<&Bound<'_, PyDict>>, memory_cap: Option<&Bound<'_, PyAny>>) -> PyResult<PyModel> {
    let model = load_model(py, path, shapes, memory_cap_bytes(memory_cap)?)?;
    let name = model.graph.name().to_string();
    Ok(PyModel { model: Mutex::new(Some(model)), name })
}

/// Compiles a model (a `kiln.Model` from `kiln.load`, or a path) with the GIL released.
/// `opt_level` 0, 1 or 2 (as -O); `backend` "jit" (native code) or "interp" (the reference
/// interpreter); `threads` None for all cores; `memory_cap` bytes or "16GiB" (default 4 GiB).
#[pyfunction]
#[pyo3(signature = (model, *, threads = None, opt_level = 2, backend = "jit", shapes = None, memory_cap = None))]
fn compile(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    threads: Option<usize>,
    opt_level: u8,
    backend: &str,
    shapes: Option<&Bound<'_, PyDict>>,
    memory_cap: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyCompiledModel> {
    let options = options(threads, opt_level, backend, memory_cap)?;
    let model = if let Ok(model) = model.cast::<PyModel>() {
        let taken = model.get().model.lock().map_err(|_| PyValueError::new_err("the model's lock is poisoned"))?.take();
        taken.ok_or_else(compiled_already)?
    } else {
        let path: PathBuf = model
            .extract()
            .map_err(|_| PyTypeError::new_err("compile: expected a kiln.Model or a path to a model file"))?;
        load_model(py, path, shapes, Some(options.memory_cap))?
    };
    let compiled = py.detach(|| kiln::compile(model, &options)).or_raise(py)?;
    Ok(PyCompiledModel { compiled: Arc::new(compiled) })
}

/// A drop-in for `onnxruntime.InferenceSession`: loads and compiles the model once, then
/// `run(output_names, input_feed)` returns a list of numpy arrays.
///
/// `sess_options` and `providers` are accepted for compatibility and ignored (kiln runs on the
/// CPU). Keywords: `threads` (None: all cores), `opt_level` (0, 1, 2), `backend` ("jit" or
/// "interp"), `shapes` ({input: [dims]} for dynamic ONNX dimensions), `memory_cap` (bytes or
/// "16GiB"). Errors raise `kiln.ModelError`, `kiln.UnsupportedOpError`, `kiln.InputError`
/// (ValueError subclasses), `kiln.KilnIOError` (an OSError) or `kiln.ResourceLimitError`, with the
/// messages of the `kiln` command. One session may be used from many threads at once.
#[pyclass(frozen, module = "kiln", name = "InferenceSession")]
struct InferenceSession {
    compiled: Arc<CompiledModel>,
    inputs: Vec<(String, TensorType)>,
    outputs: Vec<(String, TensorType)>,
}

#[pymethods]
impl InferenceSession {
    #[new]
    #[pyo3(signature = (path, sess_options = None, providers = None, *, threads = None, opt_level = 2, backend = "jit", shapes = None, memory_cap = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        sess_options: Option<&Bound<'_, PyAny>>,
        providers: Option<&Bound<'_, PyAny>>,
        threads: Option<usize>,
        opt_level: u8,
        backend: &str,
        shapes: Option<&Bound<'_, PyDict>>,
        memory_cap: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<InferenceSession> {
        let _ = (sess_options, providers);
        let options = options(threads, opt_level, backend, memory_cap)?;
        let model = load_model(py, path, shapes, Some(options.memory_cap))?;
        let compiled = py.detach(|| kiln::compile(model, &options)).or_raise(py)?;
        let inputs = compiled.input_types();
        let outputs = output_types(&compiled);
        Ok(InferenceSession { compiled: Arc::new(compiled), inputs, outputs })
    }

    /// Runs the model. `output_names`: the outputs to return, in that order (None: all, in model
    /// order); `input_feed`: {input name: numpy array}. Returns a list of numpy arrays.
    #[pyo3(signature = (output_names, input_feed, run_options = None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        output_names: Option<Vec<String>>,
        input_feed: &Bound<'py, PyDict>,
        run_options: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let _ = run_options;
        // Wanted outputs are checked before running: a typo costs no run.
        let picks: Option<Vec<usize>> = match &output_names {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|name| {
                        self.outputs.iter().position(|(n, _)| n == name).ok_or_else(|| {
                            let known: Vec<&str> = self.outputs.iter().map(|(n, _)| n.as_str()).collect();
                            to_py_err(
                                py,
                                kiln::Error::new(
                                    format!("output '{name}'"),
                                    format!("is not an output of the model (outputs: {})", known.join(", ")),
                                )
                                .with_kind(ErrorKind::Input),
                            )
                        })
                    })
                    .collect::<PyResult<_>>()?,
            ),
        };
        let outputs = run_dict(py, &self.compiled, input_feed)?;
        let list = PyList::empty(py);
        match picks {
            None => {
                for (_, tensor) in outputs {
                    list.append(to_numpy(py, tensor)?)?;
                }
            }
            Some(picks) => {
                let mut slots: Vec<Option<Tensor>> = outputs.into_iter().map(|(_, t)| Some(t)).collect();
                for &i in &picks {
                    // The same output asked twice: the second is a copy.
                    let tensor = match slots[i].take() {
                        Some(t) => {
                            if picks.iter().filter(|&&j| j == i).count() > 1 {
                                slots[i] = Some(t.clone());
                            }
                            t
                        }
                        None => return Err(PyValueError::new_err("internal error: output taken twice")),
                    };
                    list.append(to_numpy(py, tensor)?)?;
                }
            }
        }
        Ok(list)
    }

    /// The model's inputs: objects with `.name`, `.shape`, `.type` (as onnxruntime's NodeArg).
    fn get_inputs(&self) -> Vec<NodeArg> {
        self.inputs.iter().map(|(n, ty)| node_arg(n, ty)).collect()
    }

    /// The model's outputs: objects with `.name`, `.shape`, `.type` (as onnxruntime's NodeArg).
    fn get_outputs(&self) -> Vec<NodeArg> {
        self.outputs.iter().map(|(n, ty)| node_arg(n, ty)).collect()
    }

    /// Always `["CPUExecutionProvider"]`, for scripts that ask.
    fn get_providers(&self) -> Vec<&'static str> {
        vec!["CPUExecutionProvider"]
    }

    /// The compiled model behind the session (for `ir()`, `dot()`, `stats()`).
    #[getter]
    fn compiled(&self) -> PyCompiledModel {
        PyCompiledModel { compiled: Arc::clone(&self.compiled) }
    }

    fn __repr__(&self) -> String {
        format!("<kiln.InferenceSession '{}'>", self.compiled.graph().name())
    }
}

/// Reads an input tensor file as `kiln run --input` does (`.npy`, or `.pb`: one ONNX TensorProto).
#[pyfunction]
fn read_tensor_file<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
    let tensor = kiln::read_tensor_file(&path).or_raise(py)?;
    to_numpy(py, tensor)
}

/// `kiln run`'s line for one output: `NAME f32[d0,d1] mean=… std=… min=… max=…`.
#[pyfunction]
fn summary_line(py: Python<'_>, name: &str, array: &Bound<'_, PyAny>) -> PyResult<String> {
    let tensor = input_tensor(py, name, array, None)?;
    Ok(kiln::summary_line(name, &tensor))
}

#[pymodule]
fn _kiln(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<InferenceSession>()?;
    m.add_class::<NodeArg>()?;
    m.add_class::<PyModel>()?;
    m.add_class::<PyCompiledModel>()?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(read_tensor_file, m)?)?;
    m.add_function(wrap_pyfunction!(summary_line, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
