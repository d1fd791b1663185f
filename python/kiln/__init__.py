"""kiln: a neural-network model compiler. A model file goes in, a function that runs it comes out.

Drop-in for onnxruntime::

    import kiln
    session = kiln.InferenceSession("model.onnx")
    outputs = session.run(None, {"x": x})

kiln's own API: ``kiln.load(path)``, ``kiln.compile(model)``, ``compiled.run({"x": x})`` (a dict of
outputs), ``compiled.ir()`` / ``dot()`` / ``stats()``. Errors raise the classes below, with the
messages of the ``kiln`` command.
"""


class KilnError(Exception):
    """Base of kiln's errors. ``.kind`` names the kind ("model", "unsupported op", "input", "I/O",
    "resource limit"); ``.diagnostics`` lists each problem as "location: message"."""

    kind = "model"
    diagnostics = ()


class ModelError(KilnError, ValueError):
    """The model is invalid: a bad graph, attribute, shape or weight."""


class UnsupportedOpError(ModelError):
    """The model uses an operator (or a form of one) kiln does not implement."""


class InputError(KilnError, ValueError):
    """The inputs of a run do not match the model: missing, repeated or unknown, or of the wrong
    element type or shape (a dtype numpy cannot cast raises TypeError instead)."""


class KilnIOError(KilnError, OSError):
    """A file could not be opened or read, or has an unknown format."""


class ResourceLimitError(KilnError, MemoryError):
    """A limit was reached: the memory cap (``memory_cap=``) or an optimizer budget."""


from ._kiln import (  # noqa: E402  (the exception classes must exist before the module raises them)
    CompiledModel,
    InferenceSession,
    Model,
    NodeArg,
    __version__,
    compile,
    load,
    read_tensor_file,
)

__all__ = [
    "CompiledModel",
    "InferenceSession",
    "InputError",
    "KilnError",
    "KilnIOError",
    "Model",
    "ModelError",
    "NodeArg",
    "ResourceLimitError",
    "UnsupportedOpError",
    "__version__",
    "compile",
    "load",
    "read_tensor_file",
]
