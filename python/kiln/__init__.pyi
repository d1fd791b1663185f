"""Type stubs for kiln (the compiled part lives in kiln._kiln)."""

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

_Path = Union[str, "os.PathLike[str]"]
_Cap = Union[int, str, None]

__version__: str

class KilnError(Exception):
    kind: str
    diagnostics: Sequence[str]

class ModelError(KilnError, ValueError): ...
class UnsupportedOpError(ModelError): ...
class InputError(KilnError, ValueError): ...
class KilnIOError(KilnError, OSError): ...
class ResourceLimitError(KilnError, MemoryError): ...

class NodeArg:
    """An input or output: ``name``, ``shape`` (ints; a dynamic ONNX dimension is its name, or None),
    ``type`` ("tensor(float)", "tensor(int64)",
    "tensor(bool)") and ``dtype`` (the numpy dtype name)."""

    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> List[Union[int, str, None]]: ...
    @property
    def type(self) -> str: ...
    @property
    def dtype(self) -> str: ...

class CompiledModel:
    """A compiled model: ``run({name: array}) -> {name: array}``."""

    def run(self, inputs: Mapping[str, Any]) -> Dict[str, np.ndarray]: ...
    def get_inputs(self) -> List[NodeArg]: ...
    def get_outputs(self) -> List[NodeArg]: ...
    def ir(self) -> str: ...
    def dot(self) -> str: ...
    def stats(self) -> Dict[str, Any]: ...
    def default_inputs(self) -> Dict[str, np.ndarray]: ...

class Model:
    """A loaded model; ``kiln.compile`` takes its weights."""

    @property
    def name(self) -> str: ...
    def ir(self) -> str: ...

class InferenceSession:
    """A drop-in for ``onnxruntime.InferenceSession``. A model with dynamic dimensions compiles on
    the first run with each distinct set of input shapes (up to 8 kept, least recently used dropped)."""

    def __init__(
        self,
        path: _Path,
        sess_options: Any = None,
        providers: Any = None,
        *,
        threads: Optional[int] = None,
        opt_level: int = 2,
        backend: str = "jit",
        shapes: Optional[Mapping[str, Sequence[int]]] = None,
        memory_cap: _Cap = None,
    ) -> None: ...
    def run(
        self, output_names: Optional[Sequence[str]], input_feed: Mapping[str, Any], run_options: Any = None
    ) -> List[np.ndarray]: ...
    def get_inputs(self) -> List[NodeArg]: ...
    def get_outputs(self) -> List[NodeArg]: ...
    def get_providers(self) -> List[str]: ...
    @property
    def compiled(self) -> CompiledModel: ...

def load(path: _Path, *, shapes: Optional[Mapping[str, Sequence[int]]] = None, memory_cap: _Cap = None) -> Model: ...
def compile(
    model: Union[Model, _Path],
    *,
    threads: Optional[int] = None,
    opt_level: int = 2,
    backend: str = "jit",
    shapes: Optional[Mapping[str, Sequence[int]]] = None,
    memory_cap: _Cap = None,
) -> CompiledModel: ...
def read_tensor_file(path: _Path) -> np.ndarray: ...
