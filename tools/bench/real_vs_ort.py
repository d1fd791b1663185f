#!/usr/bin/env python3
"""Quick side-by-side of two kiln binaries and ONNX Runtime on real-model cases.

For each case (a tools/real_models export: model.onnx, meta.json, in_*.npy) and thread count, two
interleaved rounds of `kiln bench --json --iters 20` for each binary and bench/peers/ort_runner.py
(20 timed runs after 2 warm-ups); a cell is the smaller of the two rounds' medians. Prints one
Markdown row per (case, threads): before ms, after ms, ORT ms, before/ORT, after/ORT.

    python tools/bench/real_vs_ort.py --base OLD_KILN --new target/release/kiln \
        --cases resnet18.ts,gpt2.ts --threads 1,2 [--real-dir target/real-models]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def kiln_median(binary, model, inputs, threads):
    """The median, and the threads its timed runs used (`threads_used`; binaries before session 12
    do not report it: their runs used `threads`)."""
    out = subprocess.run([binary, "bench", model, *inputs, "--threads", str(threads), "--iters", "20", "--json"],
                         capture_output=True, text=True)
    try:
        j = json.loads(out.stdout.strip().splitlines()[-1])
        return j["median_ms"], j.get("threads_used", threads)
    except (IndexError, ValueError, KeyError):
        print(f"{binary} on {model}: {out.stderr.strip()[-300:]}", file=sys.stderr)
        return float("nan"), None


def ort_median(model, inputs_dir, threads):
    cmd = [sys.executable, os.path.join(ROOT, "bench", "peers", "ort_runner.py"), "--threads", str(threads),
           "--iters", "20", "--warmup", "2", "--model", model, "--inputs", inputs_dir]
    out = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return statistics.median(json.loads(out.stdout.strip().splitlines()[-1])["iter_ms"])
    except (IndexError, ValueError, KeyError):
        print(f"ort on {model}: {out.stdout.strip()[-300:]}", file=sys.stderr)
        return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--real-dir", default=os.path.join(ROOT, "target", "real-models"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="real-vs-ort-")
    for case in args.cases.split(","):
        d = os.path.join(args.real_dir, case)
        with open(os.path.join(d, "meta.json")) as f:
            meta = json.load(f)
        if any("/" in n for n in meta["inputs"]):
            # ort_runner.py reads NAME.npy files from one folder: a name with a '/' (the ONNX
            # zoo's `gpu_0/data_0`) cannot be one.
            print(f"{case}: skipped, an input name holds '/' ({list(meta['inputs'])})", file=sys.stderr)
            continue
        inputs = [a for n, f in meta["inputs"].items() for a in ("--input", f"{n}={os.path.join(d, f)}")]
        idir = os.path.join(work, case)
        os.makedirs(idir)
        for n, f in meta["inputs"].items():
            os.symlink(os.path.abspath(os.path.join(d, f)), os.path.join(idir, f"{n}.npy"))
        model = os.path.join(d, "model.onnx")
        for t in [int(x) for x in args.threads.split(",")]:
            best = {"base": float("inf"), "new": float("inf"), "ort": float("inf")}
            used = set()
            for _ in range(2):
                best["base"] = min(best["base"], kiln_median(args.base, model, inputs, t)[0])
                ms, u = kiln_median(args.new, model, inputs, t)
                best["new"] = min(best["new"], ms)
                used.add(u)
                best["ort"] = min(best["ort"], ort_median(model, idir, t))
            b, n, o = best["base"], best["new"], best["ort"]
            # The last column: the threads the new binary's timed runs used (its first runs may
            # measure one thread faster), per round.
            u = "/".join(str(x) for x in sorted(used, key=str))
            print(f"| {case} | {t} | {b:.3f} | {n:.3f} | {o:.3f} | {b / o:.2f}× | {n / o:.2f}× | {u} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
