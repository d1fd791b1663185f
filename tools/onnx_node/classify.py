#!/usr/bin/env python3
"""Drafts tests/onnx_node/allowlist.txt from a survey of every generated case.

    KILN_ONNX_NODE_SURVEY=/tmp/onnx_node_all KILN_ONNX_NODE_SURVEY_OUT=/tmp/survey.tsv \\
        cargo test --test onnx_node survey
    python3 tools/onnx_node/classify.py /tmp/survey.tsv tests/onnx_node/cases.txt > tests/onnx_node/allowlist.txt

Passing cases become `run`; failing ones `skip` with a one-line reason taken from kiln's own error.
Wrong results and run-time errors are marked `kiln bug?:` and must be reviewed by hand (named after
the op at fault, e.g. `kiln bug: Conv ...`), as must anything in OVERRIDES below.
"""
import re
import sys

# Reasons written by hand, for cases whose kiln error alone would not say why.
OVERRIDES = {
    "test_pow_types_int64_float32": "kiln op limitation: Pow takes one element type; ONNX allows an int64 base with a float exponent",
}


def reason(msg: str) -> str:
    first = msg.split(" | ")[0]
    m = re.search(r"element type (\w+) is not supported", first)
    if m:
        return f"element type {m.group(1)} (kiln has float, int64 and bool)"
    if "kiln needs every dimension" in first:
        return "zero-sized tensor (kiln needs every dimension >= 1)"
    m = re.search(r"kiln does not implement, in \d+ node\(s\): (.*)", first)
    if m:
        ops = [part.split(" ×")[0] for part in m.group(1).split("; ")]
        return "uses ops kiln does not implement: " + ", ".join(ops)
    m = re.search(r"opset (\d+) is older than", first)
    if m:
        return f"opset {m.group(1)}, older than the oldest kiln reads (13)"
    if "segmented tensors" in first or "sequences, maps and optionals" in first:
        return "sequence/optional types (kiln has tensors only)"
    if first.startswith("load: "):
        # "load: PATH: LOCATION: message" -> the message after the last location.
        text = re.sub(r"^load: \S+model\.onnx: ", "", first)
        text = re.sub(r"^node '[^']*' \(#\d+, \w+\): ", "", text)
        text = re.sub(r"^node '[^']*' \(\w+\) with inputs [^:]*: ", "", text)
        return text[:160]
    return "kiln bug?: " + first[:160]


def main() -> int:
    survey, cases_path = sys.argv[1], sys.argv[2]
    results = {}
    with open(survey) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            results[parts[0]] = parts[1:]
    with open(cases_path) as f:
        cases = [c.strip() for c in f if c.strip() and not c.startswith("#")]
    print("# ONNX backend node tests kiln runs (`run`) and those it does not (`skip`, with the reason).")
    print("# Checked by tests/onnx_node.rs; drafted by tools/onnx_node/classify.py, reviewed by hand.")
    print("# Tolerance: rtol=1e-3 atol=1e-7 (the ONNX suite's) unless a line says otherwise.")
    for c in cases:
        r = results.get(c)
        if c in OVERRIDES:
            print(f"skip {c}  {OVERRIDES[c]}")
        elif r is None:
            print(f"skip {c}  not surveyed")
        elif r[0] == "pass":
            print(f"run  {c}")
        else:
            print(f"skip {c}  {reason(r[1] if len(r) > 1 else '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
