//! `kiln._kiln`: the compiled half of the `kiln` Python package. The Python half (`kiln/`) defines
//! the exception classes and re-exports these classes; see `kiln/__init__.pyi` for the API.
//!
//! Every call that compiles or runs releases the GIL; the wrapped `kiln::CompiledModel` is
//! `Send + Sync`, so one session serves many Python threads at once.

use kiln::frontends::onnx::{Dim, Port};
use kiln::{
    Backend, CompiledModel, DType, DataMut, DataRef, ErrorKind, OptLevel, Options, Session, Tensor, TensorData,
    TensorRef, TensorType,
};
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{
    IntoPyArray, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
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

/// One dimension of a declared shape: a number, or (ONNX dynamic dimensions) a name or unknown.
#[derive(Clone)]
enum ShapeDim {
    Fixed(usize),
    Named(String),
    Unknown,
}

/// A model input or output as onnxruntime's `NodeArg`: `.name`, `.shape` (a list: ints, and for a
/// dynamic ONNX dimension its name as a str, or None if it has none), `.type` (`"tensor(float)"`,
/// `"tensor(int64)"` or `"tensor(bool)"`).
#[pyclass(frozen, module = "kiln", name = "NodeArg")]
struct NodeArg {
    #[pyo3(get)]
    name: String,
    dims: Vec<ShapeDim>,
    #[pyo3(get, name = "type")]
    type_: String,
    /// The numpy dtype name (`"float32"`, `"int64"` or `"bool"`).
    #[pyo3(get)]
    dtype: String,
}

#[pymethods]
impl NodeArg {
    /// The shape: a list of ints, with a str (the dimension's name) or None for a dynamic one.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for d in &self.dims {
            match d {
                ShapeDim::Fixed(n) => list.append(n)?,
                ShapeDim::Named(s) => list.append(s)?,
                ShapeDim::Unknown => list.append(py.None())?,
            }
        }
        Ok(list)
    }

    fn __repr__(&self) -> String {
        let dims: Vec<String> = self
            .dims
            .iter()
            .map(|d| match d {
                ShapeDim::Fixed(n) => n.to_string(),
                ShapeDim::Named(s) => format!("{s:?}"),
                ShapeDim::Unknown => "None".to_string(),
            })
            .collect();
        format!("NodeArg(name={:?}, type={:?}, shape=[{}])", self.name, self.type_, dims.join(", "))
    }
}

fn node_arg(name: &str, ty: &TensorType) -> NodeArg {
    NodeArg {
        name: name.to_string(),
        dims: ty.shape.iter().map(|&n| ShapeDim::Fixed(n)).collect(),
        type_: ort_type(ty.dtype).to_string(),
        dtype: numpy_dtype(ty.dtype).to_string(),
    }
}

/// A declared ONNX input or output, with its dynamic dimensions as names (`kiln inspect`'s view).
fn port_arg(port: &Port) -> NodeArg {
    let (type_, dtype) = match &port.dtype {
        Ok(dtype) => (ort_type(*dtype).to_string(), numpy_dtype(*dtype).to_string()),
        Err(other) => (format!("tensor({other})"), other.clone()),
    };
    let dims = port
        .dims
        .iter()
        .flatten()
        .map(|d| match d {
            Dim::Fixed(n) => ShapeDim::Fixed(*n),
            Dim::Named(s) => ShapeDim::Named(s.clone()),
            Dim::Unknown => ShapeDim::Unknown,
        })
        .collect();
    NodeArg { name: port.name.clone(), dims, type_, dtype }
}

/// An input array held for one run: C-contiguous, of one of kiln's element types, borrowed
/// read-only (rust-numpy's borrow flag) for as long as kiln reads it with the GIL released.
enum Held<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    I64(PyReadonlyArrayDyn<'py, i64>),
    Bool(PyReadonlyArrayDyn<'py, bool>),
}

impl Held<'_> {
    /// The borrowed tensor: numpy's own buffer, not a copy.
    fn view(&self) -> PyResult<TensorRef<'_>> {
        let not_contiguous = |e: numpy::NotContiguousError| PyValueError::new_err(e.to_string());
        Ok(match self {
            Held::F32(a) => TensorRef { shape: a.shape(), data: DataRef::F32(a.as_slice().map_err(not_contiguous)?) },
            Held::I64(a) => TensorRef { shape: a.shape(), data: DataRef::I64(a.as_slice().map_err(not_contiguous)?) },
            Held::Bool(a) => TensorRef { shape: a.shape(), data: DataRef::Bool(a.as_slice().map_err(not_contiguous)?) },
        })
    }

    fn dtype(&self) -> DType {
        match self {
            Held::F32(_) => DType::F32,
            Held::I64(_) => DType::I64,
            Held::Bool(_) => DType::Bool,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Held::F32(a) => a.shape(),
            Held::I64(a) => a.shape(),
            Held::Bool(a) => a.shape(),
        }
    }
}

/// Takes one input value for a run. A C-contiguous numpy array of the expected element type is
/// borrowed as it is (no copy); another array (or a list, a scalar) is converted by numpy when the
/// cast is "same_kind" (float64 → float32, int32 → int64), and refused with a TypeError naming the
/// input, the expected and the given dtype and shape otherwise. The shape is checked by kiln when
/// the model runs (an InputError with the CLI's message).
fn hold<'py>(py: Python<'py>, name: &str, value: &Bound<'py, PyAny>, expected: Option<DType>) -> PyResult<Held<'py>> {
    if let Some(held) = borrow_array(value, expected)? {
        return Ok(held);
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
    borrow_array(&converted, Some(expected.unwrap_or(DType::F32)))?
        .ok_or_else(|| PyTypeError::new_err(format!("input '{name}': cannot convert dtype {given_dtype} to {target}")))
}

/// The read-only borrow of a C-contiguous numpy array of the expected element type (any of kiln's
/// when `expected` is `None`); `None` if the value is not such an array.
fn borrow_array<'py>(value: &Bound<'py, PyAny>, expected: Option<DType>) -> PyResult<Option<Held<'py>>> {
    let Ok(array) = value.cast::<PyUntypedArray>() else {
        return Ok(None);
    };
    if !array.is_c_contiguous() {
        return Ok(None);
    }
    let want = |dtype: DType| expected.is_none_or(|e| e == dtype);
    // `extract` checks the dtype and takes the shared borrow; a failure means another dtype (or an
    // array a Rust caller holds mutably), which the caller converts.
    Ok(
        if want(DType::F32)
            && let Ok(a) = value.extract::<PyReadonlyArrayDyn<'py, f32>>()
        {
            Some(Held::F32(a))
        } else if want(DType::I64)
            && let Ok(a) = value.extract::<PyReadonlyArrayDyn<'py, i64>>()
        {
            Some(Held::I64(a))
        } else if want(DType::Bool)
            && let Ok(a) = value.extract::<PyReadonlyArrayDyn<'py, bool>>()
        {
            Some(Held::Bool(a))
        } else {
            None
        },
    )
}

/// An owned copy of a held array (for `summary_line`, which is not on the run path).
fn owned_tensor(held: &Held<'_>) -> PyResult<Tensor> {
    let view = held.view()?;
    let data = match view.data {
        DataRef::F32(v) => TensorData::F32(v.to_vec()),
        DataRef::I64(v) => TensorData::I64(v.to_vec()),
        DataRef::Bool(v) => TensorData::Bool(v.to_vec()),
    };
    Tensor::new(view.shape.to_vec(), data).map_err(PyValueError::new_err)
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

/// An output array allocated by numpy (so it owns its buffer) and borrowed mutably while kiln
/// writes into it.
enum OutBuf<'py> {
    F32(PyReadwriteArrayDyn<'py, f32>),
    I64(PyReadwriteArrayDyn<'py, i64>),
    Bool(PyReadwriteArrayDyn<'py, bool>),
}

impl<'py> OutBuf<'py> {
    fn new(py: Python<'py>, ty: &TensorType) -> PyResult<(Bound<'py, PyAny>, OutBuf<'py>)> {
        let shape = IxDyn(&ty.shape);
        let busy = |e: numpy::BorrowError| PyValueError::new_err(e.to_string());
        Ok(match ty.dtype {
            DType::F32 => {
                let a = PyArrayDyn::<f32>::zeros(py, shape, false);
                (a.clone().into_any(), OutBuf::F32(a.try_readwrite().map_err(busy)?))
            }
            DType::I64 => {
                let a = PyArrayDyn::<i64>::zeros(py, shape, false);
                (a.clone().into_any(), OutBuf::I64(a.try_readwrite().map_err(busy)?))
            }
            DType::Bool => {
                let a = PyArrayDyn::<bool>::zeros(py, shape, false);
                (a.clone().into_any(), OutBuf::Bool(a.try_readwrite().map_err(busy)?))
            }
        })
    }

    fn data(&mut self) -> PyResult<DataMut<'_>> {
        let not_contiguous = |e: numpy::NotContiguousError| PyValueError::new_err(e.to_string());
        Ok(match self {
            OutBuf::F32(a) => DataMut::F32(a.as_slice_mut().map_err(not_contiguous)?),
            OutBuf::I64(a) => DataMut::I64(a.as_slice_mut().map_err(not_contiguous)?),
            OutBuf::Bool(a) => DataMut::Bool(a.as_slice_mut().map_err(not_contiguous)?),
        })
    }
}

/// The held inputs of one run, by name, with their expected element types from `declared`.
fn hold_feed<'py>(
    py: Python<'py>,
    feed: &Bound<'py, PyDict>,
    declared: &[(String, DType)],
) -> PyResult<Vec<(String, Held<'py>)>> {
    let mut held = Vec::with_capacity(feed.len());
    for (name, value) in feed.iter() {
        let name: String =
            name.extract().map_err(|_| PyTypeError::new_err("inputs: keys must be input names (str)"))?;
        let expected = declared.iter().find(|(n, _)| *n == name).map(|(_, dtype)| *dtype);
        let array = hold(py, &name, &value, expected)?;
        held.push((name, array));
    }
    Ok(held)
}

/// Runs `compiled` on held inputs with the GIL released, writing into numpy arrays it allocates
/// first; returns them in the model's output order.
fn run_held<'py>(
    py: Python<'py>,
    compiled: &CompiledModel,
    held: &[(String, Held<'py>)],
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let mut views = Vec::with_capacity(held.len());
    for (name, array) in held {
        views.push((name.as_str(), array.view()?));
    }
    let types = compiled.output_types();
    let mut arrays = Vec::with_capacity(types.len());
    let mut bufs = Vec::with_capacity(types.len());
    for (_, ty) in &types {
        let (array, buf) = OutBuf::new(py, ty)?;
        arrays.push(array);
        bufs.push(buf);
    }
    let mut data = Vec::with_capacity(bufs.len());
    for buf in &mut bufs {
        data.push(buf.data()?);
    }
    py.detach(|| compiled.run_into(&views, &mut data)).or_raise(py)?;
    Ok(arrays)
}

/// Compile options from the Python keywords, checked.
fn options(
    threads: Option<usize>,
    opt_level: u8,
    backend: &str,
    memory_cap: Option<&Bound<'_, PyAny>>,
) -> PyResult<Options> {
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
    Ok(Options {
        backend,
        opt_level,
        threads,
        memory_cap: memory_cap_bytes(memory_cap)?.unwrap_or(kiln::ir::DEFAULT_MEMORY_CAP),
        ..Options::default()
    })
}

/// `memory_cap` as bytes: an int, or a string such as "16GiB" (as `kiln --memory-cap`).
fn memory_cap_bytes(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    if let Ok(bytes) = value.extract::<u64>() {
        return Ok(Some(bytes));
    }
    let text: String = value
        .extract()
        .map_err(|_| PyTypeError::new_err("memory_cap must be an int (bytes) or a str such as \"16GiB\""))?;
    kiln::parse_memory_size(&text).map(Some).map_err(|e| PyValueError::new_err(format!("memory_cap: {e}")))
}

/// `shapes` ({name: [d0, d1, ...]}) as the loader's fixed dimensions.
fn fixed_dims(shapes: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, Vec<usize>)>> {
    let mut dims = Vec::new();
    if let Some(shapes) = shapes {
        for (name, shape) in shapes.iter() {
            let name: String =
                name.extract().map_err(|_| PyTypeError::new_err("shapes: keys must be input names (str)"))?;
            let shape: Vec<usize> = shape.extract().map_err(|_| {
                PyTypeError::new_err(format!("shapes['{name}']: expected a sequence of non-negative ints"))
            })?;
            dims.push((name, shape));
        }
    }
    Ok(dims)
}

fn load_model(
    py: Python<'_>,
    path: PathBuf,
    shapes: Option<&Bound<'_, PyDict>>,
    memory_cap: Option<u64>,
) -> PyResult<kiln::Model> {
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

/// The declared inputs' element types, by name.
fn declared_dtypes(compiled: &CompiledModel) -> Vec<(String, DType)> {
    compiled.input_types().into_iter().map(|(n, ty)| (n, ty.dtype)).collect()
}

#[pymethods]
impl PyCompiledModel {
    /// Runs the model: `inputs` maps each input name to a numpy array; returns {output name: array}
    /// in the model's output order.
    fn run<'py>(&self, py: Python<'py>, inputs: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
        let held = hold_feed(py, inputs, &declared_dtypes(&self.compiled))?;
        let arrays = run_held(py, &self.compiled, &held)?;
        let dict = PyDict::new(py);
        for ((name, _), array) in self.compiled.output_types().into_iter().zip(arrays) {
            dict.set_item(name, array)?;
        }
        Ok(dict)
    }

    /// The inputs, as `InferenceSession.get_inputs()`.
    fn get_inputs(&self) -> Vec<NodeArg> {
        self.compiled.input_types().iter().map(|(n, ty)| node_arg(n, ty)).collect()
    }

    /// The outputs, as `InferenceSession.get_outputs()`.
    fn get_outputs(&self) -> Vec<NodeArg> {
        self.compiled.output_types().iter().map(|(n, ty)| node_arg(n, ty)).collect()
    }

    /// The optimised graph in kiln's IR text form (`kiln compile --emit ir`).
    fn ir(&self) -> String {
        kiln::ir::text::print(self.compiled.graph())
    }

    /// The optimised graph as Graphviz text (`kiln compile --emit dot`).
    fn dot(&self) -> String {
        kiln::dot::to_dot(self.compiled.graph())
    }

    /// Why each node of the input graph that the optimizer changed changed (`kiln compile
    /// --explain`): the text, or with `json=True` the `kiln-explain/1` dict (`--explain --json`).
    /// Needs `kiln.compile(..., explain=True)`; raises ValueError otherwise.
    #[pyo3(signature = (json = false))]
    fn explain<'py>(&self, py: Python<'py>, json: bool) -> PyResult<Bound<'py, PyAny>> {
        let explanation = self.compiled.explanation().ok_or_else(|| {
            PyValueError::new_err("the model was compiled without explain=True: kiln.compile(model, explain=True)")
        })?;
        if json {
            py.import("json")?.call_method1("loads", (kiln::explanation_json(explanation).to_string(),))
        } else {
            Ok(pyo3::types::PyString::new(py, &explanation.to_string()).into_any())
        }
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
fn load(
    py: Python<'_>,
    path: PathBuf,
    shapes: Option<&Bound<'_, PyDict>>,
    memory_cap: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyModel> {
    let model = load_model(py, path, shapes, memory_cap_bytes(memory_cap)?)?;
    let name = model.graph.name().to_string();
    Ok(PyModel { model: Mutex::new(Some(model)), name })
}

/// Compiles a model (a `kiln.Model` from `kiln.load`, or a path) with the GIL released.
/// `opt_level` 0, 1 or 2 (as -O); `backend` "jit" (native code) or "interp" (the reference
/// interpreter); `threads` None for all cores; `memory_cap` bytes or "16GiB" (default 4 GiB);
/// `explain` keeps why each node changed, for `CompiledModel.explain()`.
#[pyfunction]
#[pyo3(signature = (model, *, threads = None, opt_level = 2, backend = "jit", shapes = None, memory_cap = None, explain = false))]
#[allow(clippy::too_many_arguments)]
fn compile(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    threads: Option<usize>,
    opt_level: u8,
    backend: &str,
    shapes: Option<&Bound<'_, PyDict>>,
    memory_cap: Option<&Bound<'_, PyAny>>,
    explain: bool,
) -> PyResult<PyCompiledModel> {
    let mut options = options(threads, opt_level, backend, memory_cap)?;
    options.optimizer.explain = explain;
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

/// A drop-in for `onnxruntime.InferenceSession`: loads and compiles the model, then
/// `run(output_names, input_feed)` returns a list of numpy arrays.
///
/// A model with dynamic dimensions (an ONNX input of shape ["N", 3, 224, 224]) is compiled on the
/// first run with each distinct set of input shapes, and up to 8 compiled shape sets are kept (the
/// least recently used is dropped); other models compile here, once.
///
/// `sess_options` and `providers` are accepted for compatibility and ignored (kiln runs on the
/// CPU). Keywords: `threads` (None: all cores), `opt_level` (0, 1, 2), `backend` ("jit" or
/// "interp"), `shapes` ({input: [dims]} fixes an ONNX input's dynamic dimensions once for all),
/// `memory_cap` (bytes or "16GiB"). Errors raise `kiln.ModelError`, `kiln.UnsupportedOpError`,
/// `kiln.InputError` (ValueError subclasses), `kiln.KilnIOError` (an OSError) or
/// `kiln.ResourceLimitError`, with the messages of the `kiln` command. Inputs that are C-contiguous
/// arrays of the model's dtype are read in place, without a copy; outputs are fresh arrays. One
/// session may be used from many threads at once; the GIL is released while it compiles and runs.
#[pyclass(frozen, module = "kiln", name = "InferenceSession")]
struct InferenceSession {
    session: Session,
    /// The one compiled model of a model without dynamic dimensions (no cache lookup per run).
    fixed: Option<Arc<CompiledModel>>,
    inputs: Vec<NodeArg>,
    outputs: Vec<NodeArg>,
    /// Declared input element types, by name.
    dtypes: Vec<(String, DType)>,
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
        let load = kiln::LoadOptions {
            fixed_dims: fixed_dims(shapes)?,
            memory_cap: Some(options.memory_cap),
            ..Default::default()
        };
        let session = py.detach(|| Session::new(&path, &load, &options)).or_raise(py)?;
        if session.dynamic_inputs().is_empty() {
            let compiled = py.detach(|| session.compiled_for_shapes(&[])).or_raise(py)?;
            let inputs: Vec<NodeArg> = compiled.input_types().iter().map(|(n, ty)| node_arg(n, ty)).collect();
            let outputs = compiled.output_types().iter().map(|(n, ty)| node_arg(n, ty)).collect();
            let dtypes = declared_dtypes(&compiled);
            return Ok(InferenceSession { session, fixed: Some(compiled), inputs, outputs, dtypes });
        }
        // Dynamic: the file's declared signature, with the dimensions `shapes` fixed filled in.
        let limits = kiln::frontends::ReadLimits { memory_cap: options.memory_cap, ..Default::default() };
        let signature = py.detach(|| kiln::frontends::onnx::read_signature(&path, &limits)).or_raise(py)?;
        let mut inputs: Vec<NodeArg> = signature.inputs.iter().map(port_arg).collect();
        for arg in &mut inputs {
            if let Some((_, shape)) = load.fixed_dims.iter().find(|(n, _)| *n == arg.name) {
                arg.dims = shape.iter().map(|&n| ShapeDim::Fixed(n)).collect();
            }
        }
        let outputs = signature.outputs.iter().map(port_arg).collect();
        let dtypes = signature.inputs.iter().filter_map(|p| Some((p.name.clone(), *p.dtype.as_ref().ok()?))).collect();
        Ok(InferenceSession { session, fixed: None, inputs, outputs, dtypes })
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
                        self.outputs.iter().position(|a| a.name == *name).ok_or_else(|| {
                            let known: Vec<&str> = self.outputs.iter().map(|a| a.name.as_str()).collect();
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
        let held = hold_feed(py, input_feed, &self.dtypes)?;
        let compiled = match &self.fixed {
            Some(compiled) => Arc::clone(compiled),
            None => {
                self.check_dynamic(py, &held)?;
                let shapes: Vec<(&str, &[usize])> = held.iter().map(|(n, a)| (n.as_str(), a.shape())).collect();
                py.detach(|| self.session.compiled_for_shapes(&shapes)).or_raise(py)?
            }
        };
        let arrays = run_held(py, &compiled, &held)?;
        let Some(picks) = picks else {
            return PyList::new(py, arrays);
        };
        let list = PyList::empty(py);
        for (k, &i) in picks.iter().enumerate() {
            // The same output asked twice: the later ones are copies, as separate arrays.
            if picks[..k].contains(&i) {
                list.append(arrays[i].call_method0("copy")?)?;
            } else {
                list.append(&arrays[i])?;
            }
        }
        Ok(list)
    }

    /// The model's inputs: objects with `.name`, `.shape`, `.type` (as onnxruntime's NodeArg).
    fn get_inputs(&self) -> Vec<NodeArg> {
        self.inputs.iter().map(NodeArg::clone_arg).collect()
    }

    /// The model's outputs: objects with `.name`, `.shape`, `.type` (as onnxruntime's NodeArg).
    fn get_outputs(&self) -> Vec<NodeArg> {
        self.outputs.iter().map(NodeArg::clone_arg).collect()
    }

    /// Always `["CPUExecutionProvider"]`, for scripts that ask.
    fn get_providers(&self) -> Vec<&'static str> {
        vec!["CPUExecutionProvider"]
    }

    /// The compiled model behind the session (for `ir()`, `dot()`, `stats()`). For a model with
    /// dynamic dimensions: the one compiled for the shapes run most recently (an InputError
    /// before the first run).
    #[getter]
    fn compiled(&self, py: Python<'_>) -> PyResult<PyCompiledModel> {
        if let Some(compiled) = &self.fixed {
            return Ok(PyCompiledModel { compiled: Arc::clone(compiled) });
        }
        let Some(shapes) = self.session.cached_shapes().pop() else {
            let names = self.session.dynamic_inputs().join(", ");
            return Err(to_py_err(
                py,
                kiln::Error::new(
                    "session",
                    format!("has dynamic input dimensions ({names}): it is compiled on the first run, run it first"),
                )
                .with_kind(ErrorKind::Input),
            ));
        };
        let shapes: Vec<(&str, &[usize])> = shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice())).collect();
        let compiled = py.detach(|| self.session.compiled_for_shapes(&shapes)).or_raise(py)?;
        Ok(PyCompiledModel { compiled })
    }

    fn __repr__(&self) -> String {
        format!("<kiln.InferenceSession inputs={:?}>", self.inputs.iter().map(|a| a.name.as_str()).collect::<Vec<_>>())
    }
}

impl InferenceSession {
    /// For a dynamic model, the inputs' element types and ranks and fixed dimensions against the
    /// declared signature, before a compile for their shapes is attempted: an InputError in the
    /// CLI's form (`input 'x': expected f32[N,3,4] but was given f32[2,4,3]`).
    fn check_dynamic(&self, py: Python<'_>, held: &[(String, Held<'_>)]) -> PyResult<()> {
        for (name, array) in held {
            let Some(arg) = self.inputs.iter().find(|a| a.name == *name) else {
                continue; // unknown names are reported by the run, with the list of inputs
            };
            let fits = arg.dtype == numpy_dtype(array.dtype())
                && arg.dims.len() == array.shape().len()
                && arg.dims.iter().zip(array.shape()).all(|(d, &n)| !matches!(d, ShapeDim::Fixed(m) if *m != n));
            if !fits {
                let declared: Vec<String> = arg
                    .dims
                    .iter()
                    .map(|d| match d {
                        ShapeDim::Fixed(n) => n.to_string(),
                        ShapeDim::Named(s) => s.clone(),
                        ShapeDim::Unknown => "?".to_string(),
                    })
                    .collect();
                let given = TensorType { dtype: array.dtype(), shape: array.shape().to_vec() };
                let expected_dtype = kiln_dtype_name(&arg.dtype);
                return Err(to_py_err(
                    py,
                    kiln::Error::new(
                        format!("input '{name}'"),
                        format!("expected {expected_dtype}[{}] but was given {given}", declared.join(",")),
                    )
                    .with_kind(ErrorKind::Input),
                ));
            }
        }
        Ok(())
    }
}

/// kiln's short name of a numpy dtype name (`float32` → `f32`), as in its type strings.
fn kiln_dtype_name(numpy: &str) -> &str {
    match numpy {
        "float32" => "f32",
        "int64" => "i64",
        "bool" => "bool",
        other => other,
    }
}

impl NodeArg {
    fn clone_arg(&self) -> NodeArg {
        NodeArg {
            name: self.name.clone(),
            dims: self.dims.clone(),
            type_: self.type_.clone(),
            dtype: self.dtype.clone(),
        }
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
    let tensor = owned_tensor(&hold(py, name, array, None)?)?;
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
