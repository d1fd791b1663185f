"""``python -m kiln MODEL``: the ``kiln run`` command from Python, with the same flags, output lines,
error messages and exit codes (0 success, 1 a problem with the model or the inputs, 2 usage)."""

import argparse
import os
import re
import sys

import numpy as np

import kiln
from kiln._kiln import summary_line


def _input_arg(text):
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy, got {text!r}")
    return name, path


def _shape_arg(text):
    name, sep, dims = text.partition("=")
    try:
        shape = [int(d) for d in dims.split(",")]
    except ValueError:
        shape = []
    if not sep or not name or not shape or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"expected NAME=d0,d1,... with dimensions ≥ 1, got {text!r}")
    return name, shape


def _opt_level(text):
    if text not in ("0", "1", "2"):
        raise argparse.ArgumentTypeError(f"expected 0, 1 or 2 (as in -O2), got {text!r}")
    return int(text)


def _parser():
    p = argparse.ArgumentParser(prog="python -m kiln", description="Compile and run a model, printing a summary line per output.")
    p.add_argument("model", help="The model file (.json, .onnx or .kir).")
    p.add_argument("--input", dest="inputs", action="append", default=[], type=_input_arg, metavar="NAME=FILE",
                   help="An input as NAME=FILE.npy or NAME=FILE.pb; repeat for each input. Inputs not given get seeded random values.")
    p.add_argument("--output-dir", metavar="DIR", help="Write each output to DIR/NAME.npy.")
    p.add_argument("--backend", choices=["interp", "jit"], default="jit")
    p.add_argument("-O", dest="opt_level", type=_opt_level, default=2, metavar="LEVEL")
    p.add_argument("--threads", type=int, metavar="N")
    p.add_argument("--memory-cap", metavar="SIZE")
    p.add_argument("--shape", dest="shapes", action="append", default=[], type=_shape_arg, metavar="NAME=DIMS")
    return p


def _file_name(name):
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".npy"


def run(args):
    given = {}
    for name, path in args.inputs:
        try:
            given[name] = kiln.read_tensor_file(path)
        except kiln.KilnError as e:
            # As the CLI: the flag names the place.
            e.diagnostics = [f"--input {name}: {d}" for d in e.diagnostics]
            raise
    shapes = dict(args.shapes)
    for name, array in given.items():
        shapes.setdefault(name, list(array.shape))
    model = kiln.load(args.model, shapes=shapes or None, memory_cap=args.memory_cap)
    compiled = kiln.compile(model, threads=args.threads, opt_level=args.opt_level, backend=args.backend,
                            memory_cap=args.memory_cap)
    inputs = compiled.default_inputs()
    declared = {arg.name: arg for arg in compiled.get_inputs()}
    for name, array in given.items():
        if name not in declared:
            if args.model.endswith(".onnx"):
                continue  # fed a static parameter and became a constant at load time
            names = ", ".join(declared)
            raise kiln.InputError(f"--input {name}: the model has no input '{name}' (its inputs: {names})")
        inputs[name] = array
    files = [_file_name(arg.name) for arg in compiled.get_outputs()]
    outputs = compiled.run(inputs)
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    for (name, array), file in zip(outputs.items(), files):
        print(summary_line(name, array), flush=True)
        if args.output_dir:
            np.save(os.path.join(args.output_dir, file), array)


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        run(args)
    except kiln.KilnError as e:
        for line in e.diagnostics or [str(e)]:
            print(f"error: {line}", file=sys.stderr)
        return 1
    except TypeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
