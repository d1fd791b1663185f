#!/usr/bin/env python3
"""Check kiln against ONNX Runtime on the models export.py wrote.

For every case (`<model>.<exporter>/` with a meta.json) and every configuration (-O0/-O2 × 1/2
threads) it runs `kiln run MODEL --input NAME=FILE.npy ... --output-dir D -O L --threads T` and
compares each output with ONNX Runtime's: an element agrees when |kiln − ort| ≤ 1e-3·max(1, |ort|)
(the issue's tolerance). The error printed is the largest |kiln − ort| / max(1, |ort|) over all
outputs, so PASS means it is at most 1e-3. One line per (case, -O, threads):

    PASS (max err) | FAIL(max err or what differs) | LOAD-ERROR: first line of `kiln check` | ERROR: first line

then a summary. With --bench it also records kiln's compile time (`kiln bench --json`, -O0 and
-O2, 1 thread). --docs writes the table of docs/models.md.

The expectation file (expected.txt) says per case `pass` or `xfail: <reason>`. The exit status is
non-zero when a case expected to pass does not pass in every configuration (or was not exported),
so CI goes red on a regression while cases kiln cannot run yet are listed with their reason. A case
that passes while marked xfail is reported as XPASS (update the file) but does not fail the run.

With --count it runs nothing but `kiln compile MODEL --emit ir -O2` per case and prints, per case,
the fused norms and activations in the optimised graph and the LayerNorm/RMSNorm/GELU/attention
patterns left in primitives (a Sqrt of `mean + ε`; an Erf; a Tanh of a scaled `x + k·x³`; a Softmax
of MatMul scores feeding a MatMul), and exits non-zero if a case has more left than
patterns_left.txt allows it (with its reason; none for an unlisted case) or does not compile.

Usage: python check.py OUT_DIR [--kiln target/release/kiln] [--expected FILE] [--bench] [--docs FILE]
       python check.py OUT_DIR --count [--only CASES]
"""

from __future__ import annotations

import argparse
import re
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOL = 1e-3
CONFIGS = [(0, 1), (0, 2), (2, 1), (2, 2)]


def first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line
    return "(no message)"


def read_expected(path: str) -> dict[str, str]:
    """case → 'pass' or 'xfail: reason'. Blank lines and # comments are skipped."""
    expected = {}
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            case, _, verdict = line.partition(" ")
            verdict = verdict.strip()
            if verdict != "pass" and not verdict.startswith("xfail:"):
                raise SystemExit(f"{path}:{lineno}: expected 'CASE pass' or 'CASE xfail: reason', got {line!r}")
            expected[case] = verdict
    return expected


def max_error(case_dir: str, out_dir: str, meta: dict) -> tuple[float | None, str]:
    """The largest normalised error over all outputs, or None with what went wrong."""
    worst = 0.0
    for name, files in meta["outputs"].items():
        ref = np.load(os.path.join(case_dir, files["ref"]))
        path = os.path.join(out_dir, files["kiln"])
        if not os.path.exists(path):
            return None, f"no output '{name}'"
        got = np.load(path)
        if got.shape != ref.shape:
            return None, f"output '{name}' has shape {got.shape}, ORT {ref.shape}"
        if ref.dtype.kind in "biu":
            if not np.array_equal(got.astype(ref.dtype), ref):
                return None, f"output '{name}' ({ref.dtype}) differs in {int(np.sum(got != ref))} element(s)"
            continue
        ref64 = ref.astype(np.float64)
        got64 = got.astype(np.float64)
        both_nan = np.isnan(ref64) & np.isnan(got64)
        same_inf = np.isinf(ref64) & (ref64 == got64)
        with np.errstate(invalid="ignore"):
            err = np.abs(got64 - ref64) / np.maximum(1.0, np.abs(ref64))
        err = np.where(both_nan | same_inf, 0.0, err)
        if err.size and np.isnan(err).any():
            return float("nan"), f"output '{name}': NaN where ORT has a number (or the reverse)"
        if err.size:
            worst = max(worst, float(err.max()))
    return worst, ""


def run_kiln(kiln: str, case_dir: str, meta: dict, opt: int, threads: int, timeout: int):
    """Run one configuration: ('PASS'|'FAIL'|'ERROR', max err or None, message)."""
    model = os.path.join(case_dir, "model.onnx")
    with tempfile.TemporaryDirectory() as out_dir:
        cmd = [kiln, "run", model, "--output-dir", out_dir, f"-O{opt}", "--threads", str(threads)]
        for name, f in meta["inputs"].items():
            cmd += ["--input", f"{name}={os.path.join(case_dir, f)}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "ERROR", None, f"timed out after {timeout} s"
        if proc.returncode != 0:
            return "ERROR", None, first_line(proc.stderr or proc.stdout)
        err, why = max_error(case_dir, out_dir, meta)
        if err is None or not err <= TOL:
            return "FAIL", err, why
        return "PASS", err, ""


def bench_compile_ms(kiln: str, case_dir: str, meta: dict, opt: int, timeout: int) -> float | None:
    cmd = [kiln, "bench", os.path.join(case_dir, "model.onnx"), "--json", "--iters", "1", f"-O{opt}",
           "--threads", "1"]
    for name, f in meta["inputs"].items():
        cmd += ["--input", f"{name}={os.path.join(case_dir, f)}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    try:
        return float(json.loads(proc.stdout.strip().splitlines()[-1])["compile_ms"])
    except (ValueError, KeyError):
        return None


def check_case(kiln: str, case: str, case_dir: str, args) -> dict:
    with open(os.path.join(case_dir, "meta.json")) as fh:
        meta = json.load(fh)
    result = {"case": case, "opset": meta.get("opset"), "nodes": meta.get("nodes"), "ops": meta.get("ops", {}),
              "configs": {}, "compile_ms": {},
              "ref_absmax": max((o.get("absmax", 0.0) for o in meta["outputs"].values()), default=0.0)}
    # A shipped light model also carries the ONNX package's expected output: ORT must agree with
    # it, or the reference itself is in doubt.
    shipped = os.path.join(case_dir, "shipped_0.npy")
    if os.path.exists(shipped):
        ref = np.load(os.path.join(case_dir, next(iter(meta["outputs"].values()))["ref"]))
        exp = np.load(shipped)
        dev = float(np.max(np.abs(ref.astype(np.float64) - exp) / np.maximum(1.0, np.abs(exp))))
        result["ort_vs_shipped"] = dev
    proc = subprocess.run([kiln, "check", os.path.join(case_dir, "model.onnx")], capture_output=True, text=True,
                          timeout=args.timeout)
    if proc.returncode != 0:
        msg = first_line(proc.stderr or proc.stdout)
        # kiln names the file at the start of its message; the case already says which.
        msg = msg.removeprefix("error: ").replace(os.path.join(case_dir, "model.onnx") + ": ", "")
        result["load_error"] = msg
        for opt, threads in CONFIGS:
            result["configs"][f"O{opt}t{threads}"] = {"status": "LOAD-ERROR", "err": None, "msg": msg}
        return result
    for opt, threads in CONFIGS:
        start = time.time()
        status, err, msg = run_kiln(kiln, case_dir, meta, opt, threads, args.timeout)
        result["configs"][f"O{opt}t{threads}"] = {"status": status, "err": err, "msg": msg,
                                                  "wall_s": round(time.time() - start, 2)}
    if args.bench:
        for opt in (0, 2):
            result["compile_ms"][f"O{opt}"] = bench_compile_ms(kiln, case_dir, meta, opt, args.timeout)
    return result


def parse_kir_nodes(text: str) -> dict[str, tuple[str, list[str]]]:
    """output name → (op, input names) for every `node NAME = Op(a, b) {…} -> out: type` line."""
    nodes = {}
    for line in text.splitlines():
        if not line.startswith("node "):
            continue
        try:
            rhs = line.split(" = ", 1)[1]
            op, rest = rhs.split("(", 1)
            args = [a.strip() for a in rest.split(")", 1)[0].split(",") if a.strip()]
            # `-> a: f32[2,3], "b c": i64[4]`: the types hold commas, so split on the names.
            for out in re.findall(r'("[^"]*"|[^\s,:]+):\s*\w+\[', line.rsplit("-> ", 1)[1]):
                nodes[out] = (op.strip(), args)
        except IndexError:
            continue
    return nodes


FUSED = ["LayerNormalization", "RMSNormalization", "Gelu", "Silu", "HardSwish", "Mish", "Attention", "EvoNormS0"]


def count_patterns(kiln: str, case_dir: str, timeout: int) -> dict:
    """Fused ops and primitive-spelled patterns left in the -O2 graph of one case."""
    cmd = [kiln, "compile", os.path.join(case_dir, "model.onnx"), "--emit", "ir", "-O2"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        return {"error": first_line(proc.stderr or proc.stdout)}
    nodes = parse_kir_nodes(proc.stdout)
    op_of = lambda name: nodes.get(name, ("", []))[0]
    counts = {op: sum(1 for o, _ in nodes.values() if o == op) for op in FUSED}
    norms = gelus = 0
    for op, args in set((o, tuple(a)) for o, a in nodes.values()):
        # (A keepdims=0 mean reshaped back, as torch's dynamo exporter writes var(keepdim=True).)
        mean = lambda a: op_of(a) == "ReduceMean" or (op_of(a) == "Reshape" and op_of(nodes[a][1][0]) == "ReduceMean")
        if op == "Sqrt" and args and op_of(args[0]) == "Add" and any(mean(a) for a in nodes[args[0]][1]):
            norms += 1
        if op == "Erf":
            gelus += 1
        if op == "Tanh" and args and op_of(args[0]) == "Mul" and any(
                op_of(a) == "Add" for a in nodes[args[0]][1]):
            gelus += 1
    # Attention left in primitives: a Softmax over scores that come from a MatMul (through
    # scaling, bias adds and reshapes) whose probabilities (through a NaN guard) feed a MatMul.
    consumers = {}
    for out, (op, args) in nodes.items():
        for a in args:
            consumers.setdefault(a, []).append((out, op))
    attention = 0
    for out, (op, args) in nodes.items():
        if op != "Softmax" or not args:
            continue
        src, hops = args[0], 0
        while op_of(src) in ("Add", "Mul", "Div", "Reshape") and hops < 6:
            src, hops = nodes[src][1][0], hops + 1
        if op_of(src) != "MatMul":
            continue
        uses = [out] + [o for o, op in consumers.get(out, []) if op == "Where"]
        if any(op == "MatMul" for u in uses for _, op in consumers.get(u, [])):
            attention += 1
    counts["norm_left"] = norms
    counts["gelu_left"] = gelus
    counts["attention_left"] = attention
    counts["ops"] = len(nodes)
    return counts


def config_line(case: str, key: str, c: dict) -> str:
    if c["status"] == "PASS":
        return f"{case:32} {key}  PASS ({c['err']:.1e})"
    if c["status"] == "FAIL":
        err = "?" if c["err"] is None else f"{c['err']:.1e}"
        return f"{case:32} {key}  FAIL({err}) {c['msg'][:300]}".rstrip()
    return f"{case:32} {key}  {c['status']}: {c['msg'][:300]}"


def passed(result: dict) -> bool:
    return bool(result["configs"]) and all(c["status"] == "PASS" for c in result["configs"].values())


def fmt_err(result: dict) -> str:
    errs = [c["err"] for c in result["configs"].values() if c["err"] is not None]
    return f"{max(errs):.1e}" if errs else ""


def status_cell(result: dict) -> str:
    if "export_error" in result:
        return "export error: " + result["export_error"].replace("|", "\\|")[:160]
    if "load_error" in result:
        ops = missing_ops(result["load_error"])
        if ops:
            return "load error: kiln lacks " + ", ".join(ops)
        return "load error: " + result["load_error"].replace("|", "\\|")[:200]
    statuses = {c["status"] for c in result["configs"].values()}
    if statuses == {"PASS"}:
        return "PASS"
    parts = []
    for key, c in result["configs"].items():
        if c["status"] != "PASS":
            parts.append(f"{key} {c['status']} {c['msg']}".strip().replace("|", "\\|")[:200])
    return "; ".join(parts)


MISSING = "kiln does not implement, in "


def missing_ops(load_error: str) -> list[str]:
    """The op types of kiln's "the model uses N op type(s) kiln does not implement, in M node(s):
    A ×k (nodes ...); B ×l (nodes ...)" message."""
    if MISSING not in load_error:
        return []
    tail = load_error.split(MISSING, 1)[1].split(":", 1)[-1]
    ops = []
    for part in tail.split(");"):
        head = part.strip().split(" ", 1)[0]
        if head and "×" not in head:
            ops.append(head)
    return ops


def missing_tally(results: list[dict]) -> list[tuple[str, list[str]]]:
    """Each op kiln refuses, with the cases it blocks, most-blocking first."""
    blocks: dict[str, list[str]] = {}
    for r in results:
        for op in missing_ops(r.get("load_error", "")):
            blocks.setdefault(op, []).append(r["case"])
    return sorted(blocks.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def write_docs(path: str, results: list[dict], expected: dict[str, str], kiln_version: str):
    lines = [
        "# Real models",
        "",
        "<!-- Generated by tools/real_models/check.py --docs; edit the intro there, not here. -->",
        "",
        "Models from torchvision, timm, transformers and diffusers, built from those libraries' own",
        "code with random weights (fixed seed, no downloads, small configurations of unchanged",
        "architectures, static shapes, batch 1), exported with both torch exporters (`ts`: TorchScript,",
        "`dynamo=False`; `dynamo`: the dynamo exporter), plus the ONNX package's nine light CNNs (opset",
        "9) as they ship. kiln's JIT at -O0 and -O2, 1 and 2 threads, is compared with ONNX Runtime:",
        "an output element agrees when |kiln − ort| ≤ 1e-3·max(1, |ort|); *max err* is the largest",
        "|kiln − ort| / max(1, |ort|) over all outputs and configurations that ran. *compile* is",
        "`kiln bench --json`'s compile_ms at -O0 / -O2 (1 thread). The expectation of each case",
        "(`pass` or `xfail: reason`) is in tools/real_models/expected.txt; CI (`.ci/real-models`)",
        "fails when a case expected to pass does not.",
        "",
        "An export that fails would show as *export error*; with the pinned versions none does, with",
        "either exporter. The TorchScript exporter cannot write `aten::diff`, which transformers uses to",
        "look for packed sequences when GPT-2 or Llama get no attention mask, so those two are exported",
        "with an all-ones mask, as for generation.",
        "",
        "Regenerate (the venv and exports are cached under ~/.cache/kiln-real-models and",
        "target/real-models):",
        "",
        "```sh",
        "bash .ci/real-models            # venv, export, release build, check; writes nothing in docs/",
        "KILN_REAL_MODELS_DOCS=1 bash .ci/real-models   # the same, and rewrites this page",
        "```",
        "",
        f"Last generated with {kiln_version}. Versions of the exporting libraries: tools/real_models/requirements.txt.",
        "",
        "*max \\|ort\\|* is the largest magnitude of ONNX Runtime's outputs: export.py gives constant-",
        "initialised tensors seeded noise and calibrates BatchNorm statistics so that outputs are of order",
        "one (library initialisations gave 0 or 1e-14, which any answer matches). The light CNNs keep the",
        "constant weights they ship with, so every element of their output is the same value (a uniform",
        "softmax, 0.001, for seven of them): for them the check is mostly that kiln loads and runs them.",
        "",
        "| case | opset | nodes | result | max err | max \\|ort\\| | compile -O0 / -O2 (ms) | expected |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        comp = r.get("compile_ms", {})
        c0, c2 = comp.get("O0"), comp.get("O2")
        compile_cell = f"{c0:.0f} / {c2:.0f}" if c0 is not None and c2 is not None else ""
        exp = expected.get(r["case"], "(not listed)").replace("|", "\\|")
        lines.append(f"| {r['case']} | {r.get('opset') or ''} | {r.get('nodes') or ''} | {status_cell(r)} | "
                     f"{fmt_err(r)} | {r.get('ref_absmax', 0.0):.2g} | {compile_cell} | {exp} |")
    lines += ["", "## Op counts", "", "| case | ops (type ×count) |", "| --- | --- |"]
    for r in results:
        ops = ", ".join(f"{k} ×{v}" for k, v in sorted(r.get("ops", {}).items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"| {r['case']} | {ops} |")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="export.py's output directory")
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    ap.add_argument("--expected", default=os.path.join(HERE, "expected.txt"))
    ap.add_argument("--only", default="", help="comma-separated cases or model names")
    ap.add_argument("--bench", action="store_true", help="record compile times (kiln bench --json)")
    ap.add_argument("--docs", default="", help="write the docs/models.md table to this file")
    ap.add_argument("--json", default="", help="write every result to this file")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per kiln command")
    ap.add_argument("--count", action="store_true",
                    help="only count fused ops and patterns left in primitives after -O2")
    args = ap.parse_args()

    expected = read_expected(args.expected) if os.path.exists(args.expected) else {}
    status_path = os.path.join(args.out, "export_status.json")
    export_status = {}
    if os.path.exists(status_path):
        with open(status_path) as fh:
            export_status = json.load(fh)
    only = {n for n in args.only.split(",") if n}

    cases = sorted(set(export_status) | {d for d in os.listdir(args.out) if os.path.isdir(os.path.join(args.out, d))})
    results = []
    for case in cases:
        if only and case not in only and case.split(".")[0] not in only:
            continue
        case_dir = os.path.join(args.out, case)
        status = export_status.get(case, "ok")
        if status != "ok" or not os.path.exists(os.path.join(case_dir, "meta.json")):
            msg = status.removeprefix("export-error: ") if status != "ok" else "no meta.json"
            results.append({"case": case, "export_error": msg, "configs": {}})
            print(f"{case:32} --    EXPORT-ERROR: {msg}", flush=True)
            continue
        if args.count:
            c = count_patterns(args.kiln, case_dir, args.timeout)
            results.append({"case": case, "counts": c})
            if "error" in c:
                print(f"{case:32} ERROR: {c['error'][:200]}", flush=True)
            else:
                fused = " ".join(f"{op}={c[op]}" for op in FUSED if c[op])
                print(f"{case:32} ops={c['ops']:5} norm_left={c['norm_left']} gelu_left={c['gelu_left']} "
                      f"attention_left={c['attention_left']}  {fused}",
                      flush=True)
            continue
        result = check_case(args.kiln, case, case_dir, args)
        results.append(result)
        for key, c in result["configs"].items():
            print(config_line(case, key, c), flush=True)
        if result.get("ort_vs_shipped", 0.0) > TOL:
            print(f"{case:32} note: ORT differs from the shipped output by {result['ort_vs_shipped']:.1e}")

    if args.count:
        left = sum(r["counts"].get(k, 0) for r in results for k in ("norm_left", "gelu_left", "attention_left"))
        errors = [r["case"] for r in results if "error" in r["counts"]]
        print(f"\npatterns left in primitives over {len(results)} cases: {left}; compile errors: {len(errors)}")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=1)
        # Issue 14: no normalization, GELU or attention left in primitives on any case, except the
        # ones patterns_left.txt lists with their reason (at most that many).
        allowed = {}
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "patterns_left.txt")) as fh:
            for line in fh:
                if line.strip() and not line.startswith("#"):
                    case, most, reason = line.split(maxsplit=2)
                    allowed[case] = (int(most), reason.strip())
        over = []
        for r in results:
            n = sum(r["counts"].get(k, 0) for k in ("norm_left", "gelu_left", "attention_left"))
            most, reason = allowed.get(r["case"], (0, ""))
            if n > most:
                over.append(f"{r['case']}: {n} left, {most} allowed")
            elif n:
                print(f"{r['case']}: {n} left, allowed ({reason})")
            if n < most:
                print(f"{r['case']}: {n} left, fewer than the {most} patterns_left.txt allows: lower it")
        for o in over:
            print(f"REGRESSION {o}")
        return 1 if over or errors else 0
    # Summary and the verdict against the expectations.
    regressions, xpass, unlisted = [], [], []
    for r in results:
        verdict = expected.get(r["case"])
        ok = passed(r)
        if verdict is None:
            unlisted.append(r["case"])
        elif verdict == "pass" and not ok:
            regressions.append(r["case"])
        elif verdict.startswith("xfail") and ok:
            xpass.append(r["case"])
    n_pass = sum(passed(r) for r in results)
    lines = [c for r in results for c in r["configs"].values()]
    print()
    print(f"cases: {len(results)}; passing in every configuration: {n_pass}; "
          f"load errors: {sum('load_error' in r for r in results)}; "
          f"export errors: {sum('export_error' in r for r in results)}")
    print(f"configurations: {sum(c['status'] == 'PASS' for c in lines)} PASS, "
          f"{sum(c['status'] == 'FAIL' for c in lines)} FAIL, {sum(c['status'] == 'ERROR' for c in lines)} ERROR, "
          f"{sum(c['status'] == 'LOAD-ERROR' for c in lines)} LOAD-ERROR")
    tally = missing_tally(results)
    if tally:
        print("ops kiln refuses (cases blocked): " + ", ".join(f"{op} {len(cs)}" for op, cs in tally))
    for case in xpass:
        print(f"XPASS {case}: passes but expected.txt says {expected[case]!r}; mark it pass")
    for case in unlisted:
        print(f"UNLISTED {case}: not in {os.path.relpath(args.expected)}")
    for case in regressions:
        print(f"REGRESSION {case}: expected to pass")

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    if args.docs:
        version = subprocess.run([args.kiln, "--version"], capture_output=True, text=True).stdout.strip()
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        if commit:
            version = f"{version} (built from {commit})"
        write_docs(args.docs, results, expected, version or "kiln")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
