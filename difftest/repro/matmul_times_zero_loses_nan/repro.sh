#!/bin/sh
# Mismatch on interp -O2: output 't26' f32[2,3,17,1] element 44 (of 102; 1 differ): got 0e0, expected NaN
# seed 420; run from this folder. Compare the outputs of these runs.
cd "$(dirname "$0")"
kiln run model.json --input 'x19'=input0.npy --input 'x20'=input1.npy --backend interp -O0 --output-dir out_interp
kiln run model.json --input 'x19'=input0.npy --input 'x20'=input1.npy -O0 --threads 1 --output-dir out_jit_O0_t1
kiln run model.json --input 'x19'=input0.npy --input 'x20'=input1.npy -O0 --threads 2 --output-dir out_jit_O0_t2
kiln run model.json --input 'x19'=input0.npy --input 'x20'=input1.npy -O2 --threads 1 --output-dir out_jit_O2_t1
kiln run model.json --input 'x19'=input0.npy --input 'x20'=input1.npy -O2 --threads 2 --output-dir out_jit_O2_t2
