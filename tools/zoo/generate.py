#!/usr/bin/env python3
"""Generates kiln's seed-model zoo into models/ (see README.md next to this file).

    python tools/zoo/generate.py            # (re)write every model
    python tools/zoo/generate.py --check    # regenerate into a temp dir; fail if a committed file would change
    python tools/zoo/generate.py --only gdwct selu_mlp
"""

import argparse
import filecmp
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from zoo import io as zio  # noqa: E402
from zoo.graph import check_onnx  # noqa: E402
from zoo.models import ALL  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# ONNX twins larger than this are validated and run through onnxruntime but only written with
# --all-onnx, to keep the committed zoo small (they hold every weight inline).
ONNX_COMMIT_LIMIT = 1_000_000
# ONNX Runtime computes in f32 with its own kernels; the golden is float64 numpy rounded to f32.
ORT_TOL = 1e-4


def files_of(model, onnx_bytes, all_onnx):
    """{relative path: bytes} that the model owns under models/."""
    g = model.graph
    files = {}
    st = {w: g.params.arrays[w] for w in g.used_weights() if g.params.in_safetensors(w)}
    files[f"{model.name}.json"] = g.to_kiln_json(f"{model.name}.safetensors" if st else None).encode()
    if st:
        files[f"{model.name}.safetensors"] = zio.safetensors_bytes(st)
    if not model.bench:
        for k, v in model.inputs.items():
            files[f"{model.name}/inputs/{k}.npy"] = zio.npy_bytes(v)
        for k, v in model.golden_values.items():
            files[f"{model.name}/golden/{k}.npy"] = zio.npy_bytes(v)
    if onnx_bytes is not None and (all_onnx or len(onnx_bytes) <= ONNX_COMMIT_LIMIT):
        files[f"onnx/{model.name}.onnx"] = onnx_bytes
    return files


def ort_check(model, onnx_bytes):
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime not installed: ONNX twin not executed"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, dict(model.inputs))
    worst = 0.0
    for name, v in zip(model.graph.outputs, got):
        ref = model.golden_values[name]
        err = np.abs(v - ref) / np.maximum(1.0, np.abs(ref))
        worst = max(worst, float(err.max()))
        if not err.max() <= ORT_TOL:
            raise SystemExit(f"{model.name}: ONNX Runtime output {name} differs from the numpy golden by {err.max():.3g}")
    return f"onnxruntime agrees (max scaled error {worst:.2g})"


def build(model, args):
    if not model.bench:
        model.golden_values = model.golden()
    shapes = None if model.bench else {k: v.shape for k, v in model.golden_values.items()}
    onnx_model = model.graph.to_onnx(shapes)
    onnx_bytes = onnx_model.SerializeToString()
    msg = ""
    if len(onnx_bytes) < 1_800_000_000:
        check_onnx(onnx_model)
        msg = "onnx.checker ok"
    if not model.bench and not args.no_ort:
        msg += "; " + ort_check(model, onnx_bytes)
    return files_of(model, onnx_bytes, args.all_onnx), msg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "models"))
    ap.add_argument("--check", action="store_true", help="regenerate into a temp dir and compare with --out")
    ap.add_argument("--only", nargs="*", help="model names")
    ap.add_argument("--all-onnx", action="store_true", help="also write ONNX twins above the size limit")
    ap.add_argument("--no-ort", action="store_true", help="skip the onnxruntime cross-check")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    names = [n for n, _ in ALL]
    if args.list:
        print("\n".join(names))
        return 0
    unknown = set(args.only or []) - set(names)
    if unknown:
        raise SystemExit(f"unknown model(s): {sorted(unknown)}")
    failures = []
    for name, make in ALL:
        if args.only and name not in args.only:
            continue
        model = make()
        assert model.name == name
        files, msg = build(model, args)
        total = sum(len(b) for b in files.values())
        print(f"{name}: {len(files)} files, {total / 1e3:.0f} kB; {msg}", flush=True)
        if args.check:
            failures += compare(files, args.out, name, args.all_onnx)
        else:
            write(files, args.out, name)
    if failures:
        print("\n".join(failures), file=sys.stderr)
        print(f"--check: {len(failures)} difference(s); rerun generate.py and commit", file=sys.stderr)
        return 1
    if args.check:
        print("--check: committed zoo is up to date")
    return 0


def owned(out, name):
    """Existing files under `out` that belong to model `name`."""
    found = set()
    for ext in ("json", "safetensors"):
        if os.path.exists(os.path.join(out, f"{name}.{ext}")):
            found.add(f"{name}.{ext}")
    if os.path.exists(os.path.join(out, "onnx", f"{name}.onnx")):
        found.add(f"onnx/{name}.onnx")
    for sub in ("inputs", "golden"):
        d = os.path.join(out, name, sub)
        if os.path.isdir(d):
            found.update(f"{name}/{sub}/{f}" for f in os.listdir(d))
    return found


def write(files, out, name):
    for rel in owned(out, name) - set(files):
        os.remove(os.path.join(out, rel))
    for rel, data in files.items():
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def compare(files, out, name, all_onnx):
    errs = []
    have = owned(out, name)
    for rel in sorted(have - set(files)):
        if rel.startswith("onnx/") and not all_onnx:
            continue
        errs.append(f"{rel}: committed but no longer generated")
    with tempfile.TemporaryDirectory() as tmp:
        for rel, data in sorted(files.items()):
            if rel not in have:
                errs.append(f"{rel}: generated but not committed")
                continue
            path = os.path.join(tmp, rel.replace("/", "_"))
            with open(path, "wb") as f:
                f.write(data)
            if filecmp.cmp(path, os.path.join(out, rel), shallow=False):
                continue
            if rel.endswith(".npy") and "/golden/" in rel:
                # Goldens may differ in the last bits across BLAS builds; structure must not.
                a, b = np.load(path), np.load(os.path.join(out, rel))
                if a.shape == b.shape and a.dtype == b.dtype and np.allclose(a, b, rtol=1e-5, atol=1e-6):
                    print(f"  note: {rel} differs only in rounding")
                    continue
            errs.append(f"{rel}: would change")
    return errs


if __name__ == "__main__":
    sys.exit(main())
