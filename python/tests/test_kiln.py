"""The kiln Python package: the zoo against its goldens, the ONNX twins against onnxruntime through
both APIs, every error path, input conversion, threads, the drop-in script and ``python -m kiln``.

Tolerance: max|kiln - reference| <= 1e-4 * max(1, |reference|), the zoo's tolerance in
tests/zoo_golden.rs (goldens are float64 numpy rounded once to f32; kiln and onnxruntime reach
<= 2.3e-5 on these files, a wrong formula or axis moves outputs by >= 1e-2).
"""

import concurrent.futures
import os
import subprocess
import sys

import numpy as np
import pytest

import kiln

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(REPO, "models")
HERE = os.path.dirname(__file__)
TOLERANCE = 1e-4


def scaled_error(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    if got.size == 0:
        return 0.0
    err = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    return float(np.nan_to_num(err, nan=np.inf).max())


def zoo_models():
    return sorted(
        name for name in os.listdir(MODELS)
        if os.path.isdir(os.path.join(MODELS, name, "golden")) and os.path.isfile(os.path.join(MODELS, name + ".json"))
    )


def zoo_inputs(name, names):
    return {n: np.load(os.path.join(MODELS, name, "inputs", n + ".npy")) for n in names}


def onnx_twins():
    """The ONNX files with a zoo twin (inputs in models/NAME/inputs); dynamic_batch.onnx has its own test."""
    return sorted(
        f[: -len(".onnx")] for f in os.listdir(os.path.join(MODELS, "onnx"))
        if f.endswith(".onnx") and os.path.isdir(os.path.join(MODELS, f[: -len(".onnx")], "inputs"))
    )


# --- the zoo and the ONNX twins ---------------------------------------------------------------


@pytest.mark.parametrize("name", zoo_models())
def test_zoo_model_matches_its_goldens(name):
    compiled = kiln.compile(os.path.join(MODELS, name + ".json"), threads=2)
    inputs = zoo_inputs(name, [a.name for a in compiled.get_inputs()])
    outputs = compiled.run(inputs)
    assert list(outputs) == [a.name for a in compiled.get_outputs()]
    for out_name, got in outputs.items():
        want = np.load(os.path.join(MODELS, name, "golden", out_name + ".npy"))
        assert got.dtype == want.dtype
        assert scaled_error(got, want) <= TOLERANCE, out_name


@pytest.mark.parametrize("name", onnx_twins())
def test_onnx_twin_matches_onnxruntime_through_both_apis(name):
    ort = pytest.importorskip("onnxruntime")
    path = os.path.join(MODELS, "onnx", name + ".onnx")
    reference = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = zoo_inputs(name, [a.name for a in reference.get_inputs()])
    want = reference.run(None, feed)

    session = kiln.InferenceSession(path, threads=1)
    assert [a.name for a in session.get_inputs()] == [a.name for a in reference.get_inputs()]
    assert [a.name for a in session.get_outputs()] == [a.name for a in reference.get_outputs()]
    for ours, theirs in zip(session.get_inputs() + session.get_outputs(), reference.get_inputs() + reference.get_outputs()):
        assert ours.type == theirs.type
        assert ours.shape == theirs.shape
    got = session.run(None, feed)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        assert scaled_error(g, w) <= TOLERANCE

    compiled = kiln.compile(kiln.load(path), threads=2, opt_level=0)
    by_name = compiled.run(feed)
    for w, arg in zip(want, reference.get_outputs()):
        assert scaled_error(by_name[arg.name], w) <= TOLERANCE


DYNAMIC = os.path.join(MODELS, "onnx", "dynamic_batch.onnx")
DYNAMIC_DATA = os.path.join(REPO, "tests", "dynamic_batch")


@pytest.mark.parametrize("threads", [1, 2])
def test_one_session_runs_a_dynamic_batch_model_at_batch_1_4_and_32(threads):
    # Goldens from onnxruntime (tests/dynamic_batch); the tolerance of src/session.rs's test.
    session = kiln.InferenceSession(DYNAMIC, threads=threads)
    (arg,) = session.get_inputs()
    assert arg.name == "x" and arg.type == "tensor(float)" and isinstance(arg.shape[0], str)
    for batch in [1, 4, 32, 4]:
        x = np.load(os.path.join(DYNAMIC_DATA, f"x_{batch}.npy"))
        want = np.load(os.path.join(DYNAMIC_DATA, f"y_{batch}.npy"))
        (y,) = session.run(None, {"x": x})
        assert y.shape == want.shape
        assert np.abs(y - want).max() <= 1e-5, batch
    assert session.compiled.get_inputs()[0].shape == [4, 3, 4]  # the shapes run last


def test_a_dynamic_session_declares_what_onnxruntime_declares_and_checks_inputs():
    ort = pytest.importorskip("onnxruntime")
    reference = ort.InferenceSession(DYNAMIC, providers=["CPUExecutionProvider"])
    session = kiln.InferenceSession(DYNAMIC)
    for ours, theirs in zip(session.get_inputs() + session.get_outputs(), reference.get_inputs() + reference.get_outputs()):
        assert (ours.name, ours.type, ours.shape) == (theirs.name, theirs.type, theirs.shape)
    with pytest.raises(kiln.InputError, match="run it first"):
        session.compiled
    with pytest.raises(kiln.InputError, match=r"^input 'x': expected f32\[\w+,3,4\] but was given f32\[2,4,3\]$"):
        session.run(None, {"x": np.zeros((2, 4, 3), np.float32)})
    with pytest.raises(kiln.InputError, match=r"^input 'x': is not given"):
        session.run(None, {})
    fixed = kiln.InferenceSession(DYNAMIC, shapes={"x": [2, 3, 4]})
    assert fixed.get_inputs()[0].shape == [2, 3, 4]
    (y,) = fixed.run(None, {"x": np.ones((2, 3, 4), np.float32)})
    (want,) = reference.run(None, {"x": np.ones((2, 3, 4), np.float32)})
    assert np.abs(y - want).max() <= 1e-5


def test_inputs_are_read_in_place_and_left_unchanged():
    session = kiln.InferenceSession(os.path.join(MODELS, "mlp_bn.json"))
    x = np.random.default_rng(3).standard_normal((8, 16)).astype(np.float32)
    x.flags.writeable = False  # a read-only array is enough: kiln only reads it
    copy = x.copy()
    (a,) = session.run(None, {"x": x})
    (b,) = session.run(None, {"x": copy})
    assert np.array_equal(x, copy) and np.array_equal(a, b)
    assert a.flags.owndata and a.flags.writeable


def test_interpreter_backend_and_output_selection():
    path = os.path.join(MODELS, "graph_transformer.json")
    jit = kiln.InferenceSession(path)
    interp = kiln.InferenceSession(path, backend="interp", opt_level=0)
    feed = zoo_inputs("graph_transformer", [a.name for a in jit.get_inputs()])
    names = [a.name for a in jit.get_outputs()]
    reversed_names = list(reversed(names))
    got = jit.run(reversed_names, feed)
    want = interp.run(None, feed)
    for g, name in zip(got, reversed_names):
        assert scaled_error(g, want[names.index(name)]) <= TOLERANCE
    twice = jit.run([names[0], names[0]], feed)
    assert np.array_equal(twice[0], twice[1]) and twice[0] is not twice[1]


def test_outputs_own_their_buffer_and_are_writable():
    session = kiln.InferenceSession(os.path.join(MODELS, "mlp_bn.json"))
    (y,) = session.run(None, {"x": np.ones((8, 16), np.float32)})
    assert y.shape == (8, 10) and y.dtype == np.float32 and y.flags.c_contiguous
    assert y.flags.owndata  # numpy's own allocation, written by kiln: no copy after the run
    y[...] = 0  # a fresh buffer per call, not a view into kiln's arena
    (again,) = session.run(None, {"x": np.ones((8, 16), np.float32)})
    assert np.abs(again).sum() > 0


def test_inputs_are_converted_when_numpy_can_cast_them_same_kind():
    session = kiln.InferenceSession(os.path.join(MODELS, "mlp_bn.json"))
    x = np.random.default_rng(1).standard_normal((16, 8))
    (from_f32,) = session.run(None, {"x": np.ascontiguousarray(x.T, dtype=np.float32)})
    (from_f64_view,) = session.run(None, {"x": x.T})  # float64 and not C-contiguous
    (from_list,) = session.run(None, {"x": x.T.astype(np.float32).tolist()})
    assert np.array_equal(from_f32, from_f64_view)
    assert np.array_equal(from_f32, from_list)


def test_compiled_model_inspection():
    compiled = kiln.compile(kiln.load(os.path.join(MODELS, "mlp_bn.json")))
    assert "graph" in compiled.ir() or "%" in compiled.ir()
    assert compiled.dot().startswith("digraph")
    stats = compiled.stats()
    assert set(stats) >= {"ops_before", "ops_after", "compile_ms", "optimizer"}
    assert "x" in compiled.default_inputs()
    assert repr(kiln.InferenceSession(os.path.join(MODELS, "mlp_bn.json")).get_inputs()[0]).startswith("NodeArg(")


def test_explain_as_text_and_json():
    compiled = kiln.compile(kiln.load(os.path.join(MODELS, "mlp_bn.json")), explain=True)
    text = compiled.explain()
    assert "bn0" in text and "batchnorm" in text, text
    data = compiled.explain(json=True)
    assert data["schema"] == "kiln-explain/1"
    assert any(c["node"] == "bn0" for c in data["changed"]), data
    with pytest.raises(ValueError, match="explain=True"):
        kiln.compile(kiln.load(os.path.join(MODELS, "mlp_bn.json"))).explain()


def test_help_is_useful():
    assert "onnxruntime" in kiln.InferenceSession.__doc__
    assert "output_names" in kiln.InferenceSession.run.__doc__
    assert "memory_cap" in kiln.compile.__doc__


# --- errors -----------------------------------------------------------------------------------


def test_missing_file_is_an_io_error(tmp_path):
    missing = str(tmp_path / "nope.onnx")
    with pytest.raises(kiln.KilnIOError) as e:
        kiln.InferenceSession(missing)
    assert isinstance(e.value, OSError) and isinstance(e.value, kiln.KilnError)
    assert e.value.kind == "I/O"
    assert str(e.value).startswith(missing + ": cannot read")


def test_unknown_format_is_an_io_error(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text("hello")
    with pytest.raises(kiln.KilnIOError, match="unknown model format"):
        kiln.load(str(path))


def test_invalid_model_is_a_model_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"format": "kiln", "version": 1, "nodes": [}')
    with pytest.raises(kiln.ModelError) as e:
        kiln.load(str(path))
    assert isinstance(e.value, ValueError) and e.value.kind == "model"
    assert e.value.diagnostics and all(d.startswith(str(path)) for d in e.value.diagnostics)


def test_unsupported_op_is_its_own_error(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Unique", ["x"], ["y"], name="uniq")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
    )
    path = str(tmp_path / "unique.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(kiln.UnsupportedOpError, match="Unique ×1 \\(nodes 'uniq'\\)") as e:
        kiln.InferenceSession(path)
    assert isinstance(e.value, kiln.ModelError) and e.value.kind == "unsupported op"


def test_input_errors_carry_the_cli_messages():
    session = kiln.InferenceSession(os.path.join(MODELS, "mlp_bn.json"))
    with pytest.raises(kiln.InputError, match=r"^input 'x': expected f32\[8,16\] but was given f32\[4,16\]$") as e:
        session.run(None, {"x": np.zeros((4, 16), np.float32)})
    assert isinstance(e.value, ValueError) and e.value.kind == "input"
    with pytest.raises(kiln.InputError, match=r"^input 'x': is missing \(expected f32\[8,16\]\)$"):
        session.run(None, {})
    with pytest.raises(kiln.InputError, match=r"^input 'z': is not an input of the model \(inputs: x\)$"):
        session.run(None, {"x": np.zeros((8, 16), np.float32), "z": np.zeros(1, np.float32)})
    with pytest.raises(kiln.InputError, match=r"^output 'nope': is not an output of the model \(outputs: y\)$"):
        session.run(["nope"], {"x": np.zeros((8, 16), np.float32)})


def test_an_uncastable_dtype_is_a_type_error_naming_the_input():
    session = kiln.InferenceSession(os.path.join(MODELS, "mlp_bn.json"))
    with pytest.raises(TypeError, match=r"input 'x': expected a numpy array of dtype float32, but was given dtype <U1 with shape \(8, 16\)"):
        session.run(None, {"x": np.full((8, 16), "a")})
    with pytest.raises(TypeError, match="input 'x'.*complex128"):
        session.run(None, {"x": np.zeros((8, 16), np.complex128)})


def test_memory_cap_is_a_resource_limit_error():
    path = os.path.join(MODELS, "mlp_bn.json")
    with pytest.raises(kiln.ResourceLimitError, match="memory cap") as e:
        kiln.InferenceSession(path, memory_cap=4096)  # the file (2.6 KiB) reads, its weights do not fit
    assert e.value.kind == "resource limit" and isinstance(e.value, MemoryError)
    with pytest.raises(kiln.ResourceLimitError, match="memory cap"):
        kiln.compile(path, memory_cap="4KiB", backend="interp")


def test_bad_options_are_value_errors():
    path = os.path.join(MODELS, "mlp_bn.json")
    with pytest.raises(ValueError, match="opt_level must be 0, 1 or 2"):
        kiln.InferenceSession(path, opt_level=3)
    with pytest.raises(ValueError, match='backend must be "jit" or "interp"'):
        kiln.InferenceSession(path, backend="gpu")
    with pytest.raises(ValueError, match="threads must be at least 1"):
        kiln.InferenceSession(path, threads=0)
    with pytest.raises(ValueError, match="memory_cap: expected a size"):
        kiln.InferenceSession(path, memory_cap="lots")
    model = kiln.load(path)
    kiln.compile(model)
    with pytest.raises(ValueError, match="compiled already"):
        kiln.compile(model)


# --- threads ----------------------------------------------------------------------------------


def test_one_session_serves_many_python_threads():
    session = kiln.InferenceSession(os.path.join(MODELS, "graph_transformer.json"), threads=2)
    rng = np.random.default_rng(7)
    base = zoo_inputs("graph_transformer", [a.name for a in session.get_inputs()])
    feeds = []
    for _ in range(8):
        feed = dict(base)
        feed["lap"] = (base["lap"] + rng.standard_normal(base["lap"].shape)).astype(np.float32)
        feeds.append(feed)
    serial = [session.run(None, f) for f in feeds]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda f: session.run(None, f), feeds * 4))
    for i, got in enumerate(parallel):
        for g, w in zip(got, serial[i % len(feeds)]):
            assert np.array_equal(g, w)


# --- drop-in and the command line -------------------------------------------------------------


def test_dropin_script_gives_the_same_outputs_with_onnxruntime_and_kiln(tmp_path):
    pytest.importorskip("onnxruntime")
    script = os.path.join(HERE, "dropin_script.py")
    # The zoo's inputs: on random ones this model's pooled output cancels (onnxruntime and onnx's
    # own reference evaluator then differ by 5e-4 relative), so the zoo tolerance would not hold.
    model = os.path.join(MODELS, "onnx", "graph_transformer.onnx")
    inputs = os.path.join(MODELS, "graph_transformer", "inputs")
    with_ort, with_kiln = str(tmp_path / "ort.npz"), str(tmp_path / "kiln.npz")
    subprocess.run([sys.executable, script, model, inputs, with_ort], check=True)
    # The whole change: `onnxruntime` is kiln.
    shim = "import sys, runpy, kiln; sys.modules['onnxruntime'] = kiln; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    subprocess.run([sys.executable, "-c", shim, script, model, inputs, with_kiln], check=True)
    a, b = np.load(with_ort), np.load(with_kiln)
    assert sorted(a.files) == sorted(b.files) and a.files
    for name in a.files:
        assert scaled_error(b[name], a[name]) <= TOLERANCE, name


def run_module(*args):
    return subprocess.run([sys.executable, "-m", "kiln", *args], capture_output=True, text=True, cwd=REPO)


def test_python_m_kiln_prints_what_kiln_run_prints(tmp_path):
    out = run_module("models/mlp_bn.json", "--output-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("y f32[8,10] mean=")
    assert np.load(tmp_path / "y.npy").shape == (8, 10)
    binary = os.path.join(REPO, "target", "release", "kiln")
    if os.path.exists(binary):
        cli = subprocess.run([binary, "run", "models/mlp_bn.json"], capture_output=True, text=True, cwd=REPO)
        assert cli.stdout == out.stdout


def test_python_m_kiln_reads_inputs_and_reports_errors_like_the_cli(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.full((8, 16), 0.5, np.float32))
    out = run_module("models/mlp_bn.json", "--input", f"x={x}")
    assert out.returncode == 0, out.stderr
    compiled = kiln.compile(os.path.join(MODELS, "mlp_bn.json"))
    (y,) = compiled.run({"x": np.load(x)}).values()
    assert out.stdout.startswith("y f32[8,10] mean=%.6f" % float(np.mean(y.astype(np.float64))))

    missing = run_module("models/nope.json")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: models/nope.json: cannot read the model file")
    bad_input = run_module("models/mlp_bn.json", "--input", f"x={tmp_path / 'none.npy'}")
    assert bad_input.returncode == 1 and bad_input.stderr.startswith("error: --input x: ")
    usage = run_module("models/mlp_bn.json", "-O", "7")
    assert usage.returncode == 2
