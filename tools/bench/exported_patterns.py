#!/usr/bin/env python3
"""Subgraph speed of the exporter spellings issue 14 recognises, against the fused op they become.

Writes one .kir per pattern into OUT_DIR, in two forms: `<name>.kir` as exporters spell it in
primitives and `<name>_fused.kir` as the optimizer rewrites it (LayerNormalization, RMSNormalization,
Gelu, x·x), runs `kiln bench --json -O2 --threads 1` on both with `--kiln` (a release binary) and
prints the median latencies: with a binary that predates the recognition rules (which runs the
primitives as written) that is the subgraph speedup the rewrite buys. `--check NEW` also prints
the op counts NEW's -O2 leaves of the primitive form (`kiln compile --emit stats`): 1 when it was
recognised.

Usage: python tools/bench/exported_patterns.py OUT_DIR --kiln RELEASE_KILN [--check NEW_KILN] [--rows 128] [--cols 768]
"""

import argparse
import json
import os
import subprocess

import numpy as np


def vec(name, n, rng, lo=-1.0, hi=1.0):
    vals = ", ".join(f"{v:.6f}" for v in rng.uniform(lo, hi, n))
    return f"weight {name}: f32[{n}] = [{vals}]"


def patterns(r, c, rng):
    x = f"input x: f32[{r},{c}]"
    g, b = vec("g", c, rng, 0.5, 1.5), vec("b", c, rng)
    ln = f"""kir 1
graph layernorm_pow
{x}
weight two: f32[] = [2.0]
weight eps: f32[] = [1e-5]
{g}
{b}
node mean = ReduceMean(x) {{axes=[-1]}} -> mu
node sub = Sub(x, mu) -> d
node pow = Pow(d, two) -> d2
node var = ReduceMean(d2) {{axes=[-1]}} -> v
node addeps = Add(v, eps) -> ve
node sqrt = Sqrt(ve) -> sd
node div = Div(d, sd) -> n
node scale = Mul(n, g) -> ng
node shift = Add(ng, b) -> y
output y
"""
    ln_f = f"""kir 1
graph layernorm_fused
{x}
{g}
{b}
node ln = LayerNormalization(x, g, b) -> y
output y
"""
    rms = f"""kir 1
graph rmsnorm_t5
{x}
weight two: f32[] = [2.0]
weight eps: f32[] = [1e-6]
{g}
node pow = Pow(x, two) -> x2
node var = ReduceMean(x2) {{axes=[-1]}} -> v
node addeps = Add(v, eps) -> ve
node sqrt = Sqrt(ve) -> sd
node rcp = Reciprocal(sd) -> rr
node norm = Mul(x, rr) -> n
node scale = Mul(g, n) -> y
output y
"""
    rms_f = f"""kir 1
graph rmsnorm_fused
{x}
{g}
node rms = RMSNormalization(x, g) {{epsilon=1e-6}} -> y
output y
"""
    gelu_tanh = f"""kir 1
graph gelu_tanh
{x}
weight half: f32[] = [0.5]
weight three: f32[] = [3.0]
weight k: f32[] = [0.044715]
weight s: f32[] = [0.7978846]
weight one: f32[] = [1.0]
node h = Mul(half, x) -> hx
node cube = Pow(x, three) -> x3
node kx3 = Mul(k, x3) -> a
node inner = Add(x, a) -> bb
node scaled = Mul(s, bb) -> cc
node tanh = Tanh(cc) -> t
node onep = Add(one, t) -> p
node out = Mul(hx, p) -> y
output y
"""
    gelu_tanh_f = f"""kir 1
graph gelu_tanh_fused
{x}
node gelu = Gelu(x) {{approximate="tanh"}} -> y
output y
"""
    gelu_erf = f"""kir 1
graph gelu_erf
{x}
weight sqrt2: f32[] = [1.4142135]
weight one: f32[] = [1.0]
weight half: f32[] = [0.5]
node div = Div(x, sqrt2) -> a
node erf = Erf(a) -> e
node add = Add(e, one) -> p
node mul = Mul(x, p) -> q
node halfm = Mul(q, half) -> y
output y
"""
    gelu_erf_f = f"""kir 1
graph gelu_erf_fused
{x}
node gelu = Gelu(x) -> y
output y
"""
    pow2 = f"""kir 1
graph pow2
{x}
weight two: f32[] = [2.0]
node pow = Pow(x, two) -> y
output y
"""
    pow2_f = f"""kir 1
graph pow2_fused
{x}
node sq = Mul(x, x) -> y
output y
"""
    return {"layernorm_pow": (ln, ln_f), "rmsnorm_t5": (rms, rms_f), "gelu_tanh": (gelu_tanh, gelu_tanh_f),
            "gelu_erf": (gelu_erf, gelu_erf_f), "pow2": (pow2, pow2_f)}


def bench(kiln, path, iters):
    cmd = [kiln, "bench", path, "--json", "--iters", str(iters), "-O2", "--threads", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["median_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--check", default="")
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--cols", type=int, default=768)
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(14)
    print(f"| pattern ({args.rows}x{args.cols}) | primitives -O2 (ms) | fused op (ms) | speedup | ops after new -O2 |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, (prim, fused) in patterns(args.rows, args.cols, rng).items():
        p, f = os.path.join(args.out, name + ".kir"), os.path.join(args.out, name + "_fused.kir")
        open(p, "w").write(prim)
        open(f, "w").write(fused)
        prim_ms = bench(args.kiln, p, args.iters)
        fused_ms = bench(args.kiln, f, args.iters)
        ops = ""
        if args.check:
            out = subprocess.run([args.check, "compile", p, "--emit", "stats", "-O2"], capture_output=True, text=True,
                                 check=True).stdout
            ops = ", ".join(f"{k} x{v}" for k, v in json.loads(out)["ops_after"].items())
        print(f"| {name} | {prim_ms:.4f} | {fused_ms:.4f} | {prim_ms / fused_ms:.1f}x | {ops} |", flush=True)


if __name__ == "__main__":
    main()
