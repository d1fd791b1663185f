#!/bin/sh
# OptimizeSlow: optimizing took 45.9 s
# seed 711; run from this folder. Compare the outputs of these runs.
cd "$(dirname "$0")"
kiln run model.json --input 'x1'=input0.npy --input 'x4'=input1.npy --input 'x5'=input2.npy --input 'x6'=input3.npy --input 'x9'=input4.npy --input 'x16'=input5.npy --input 'x23'=input6.npy --input 'x26'=input7.npy --input 'x27'=input8.npy --backend interp -O0 --output-dir out_interp
kiln run model.json --input 'x1'=input0.npy --input 'x4'=input1.npy --input 'x5'=input2.npy --input 'x6'=input3.npy --input 'x9'=input4.npy --input 'x16'=input5.npy --input 'x23'=input6.npy --input 'x26'=input7.npy --input 'x27'=input8.npy -O0 --threads 1 --output-dir out_jit_O0_t1
kiln run model.json --input 'x1'=input0.npy --input 'x4'=input1.npy --input 'x5'=input2.npy --input 'x6'=input3.npy --input 'x9'=input4.npy --input 'x16'=input5.npy --input 'x23'=input6.npy --input 'x26'=input7.npy --input 'x27'=input8.npy -O0 --threads 2 --output-dir out_jit_O0_t2
kiln run model.json --input 'x1'=input0.npy --input 'x4'=input1.npy --input 'x5'=input2.npy --input 'x6'=input3.npy --input 'x9'=input4.npy --input 'x16'=input5.npy --input 'x23'=input6.npy --input 'x26'=input7.npy --input 'x27'=input8.npy -O2 --threads 1 --output-dir out_jit_O2_t1
kiln run model.json --input 'x1'=input0.npy --input 'x4'=input1.npy --input 'x5'=input2.npy --input 'x6'=input3.npy --input 'x9'=input4.npy --input 'x16'=input5.npy --input 'x23'=input6.npy --input 'x26'=input7.npy --input 'x27'=input8.npy -O2 --threads 2 --output-dir out_jit_O2_t2
