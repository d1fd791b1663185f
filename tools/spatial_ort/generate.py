#!/usr/bin/env python3
"""Writes tests/spatial_ort/<case>/{model.onnx, x.npy, y.npy}: one-node models of the spatial ops
(pooling, LRN, Conv 1-D, ConvTranspose, DepthToSpace/SpaceToDepth, Resize linear/cubic) with
ONNX Runtime's outputs, for tests/spatial_ort.rs. Cases ONNX Runtime refuses are left out.

    /tmp/venv/bin/python tools/spatial_ort/generate.py [OUT_DIR]   # default tests/spatial_ort
"""
import sys
OUT = sys.argv[1] if len(sys.argv) > 1 else 'tests/spatial_ort'
import numpy as np, onnx, onnxruntime as ort, os, json, sys
from onnx import helper, TensorProto
rng = np.random.default_rng(0)
cases = []
def model(name, op, x_shape, attrs, extra_inputs=(), opset=19, y_count=1):
    x = rng.standard_normal(x_shape).astype(np.float32)
    inits = []
    in_names = ['x']
    for i, arr in enumerate(extra_inputs):
        if arr is None:
            in_names.append(''); continue
        n = f'p{i}'
        inits.append(onnx.numpy_helper.from_array(arr, n)); in_names.append(n)
    node = helper.make_node(op, in_names, ['y'], **attrs)
    g = helper.make_graph([node], name, [helper.make_tensor_value_info('x', TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid('', opset)])
    d = f'{OUT}/{name}'; os.makedirs(d, exist_ok=True)
    onnx.save(m, f'{d}/model.onnx')
    np.save(f'{d}/x.npy', x)
    try:
        y = ort.InferenceSession(f'{d}/model.onnx', providers=['CPUExecutionProvider']).run(None, {'x': x})[0]
        np.save(f'{d}/y.npy', y)
    except Exception as e:
        print(name, 'ORT fails:', str(e)[:200]); import shutil; shutil.rmtree(d); return
    cases.append(name)

P = lambda **k: k
for cm in [0, 1]:
  for name, xs, a in [
    ('mp2d_resnet', [1, 8, 16, 16], P(kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1])),
    ('mp2d_ceil', [1, 2, 7, 6], P(kernel_shape=[3,2], strides=[2,2], ceil_mode=1)),
    ('mp2d_ceil_pad', [1, 2, 7, 6], P(kernel_shape=[3,3], strides=[2,3], pads=[1,0,1,2], ceil_mode=1)),
    ('mp2d_dil', [2, 3, 9, 8], P(kernel_shape=[2,3], strides=[1,2], pads=[1,1,0,1], dilations=[2,2])),
    ('mp2d_same_upper', [1, 2, 7, 6], P(kernel_shape=[3,2], strides=[2,2], auto_pad='SAME_UPPER')),
    ('mp2d_same_lower', [1, 2, 7, 6], P(kernel_shape=[3,2], strides=[2,2], auto_pad='SAME_LOWER')),
    ('mp2d_valid', [1, 2, 7, 6], P(kernel_shape=[3,2], strides=[2,1], auto_pad='VALID')),
    ('mp1d', [2, 3, 11], P(kernel_shape=[3], strides=[2], pads=[1,2])),
    ('mp3d', [1, 2, 5, 4, 6], P(kernel_shape=[2,2,3], strides=[2,1,2], pads=[0,1,1,1,0,1])),
    ('mp1d_ceil_dil', [1, 2, 12], P(kernel_shape=[3], strides=[3], dilations=[2], pads=[1,1], ceil_mode=1)),
  ]:
    for op in ['MaxPool', 'AveragePool', 'LpPool']:
        attrs = dict(a)
        if op != 'MaxPool' and 'dilations' in attrs and op == 'LpPool' and False: pass
        if op == 'AveragePool': attrs['count_include_pad'] = cm
        elif cm: continue
        if op == 'LpPool': attrs['p'] = 3 if 'dil' in name else 2
        model(f'{op}_{name}_c{cm}', op, xs, attrs)
model('GlobalAveragePool', 'GlobalAveragePool', [2, 3, 5, 4], {})
model('GlobalMaxPool', 'GlobalMaxPool', [2, 3, 5, 4, 2], {})
model('GlobalLpPool', 'GlobalLpPool', [2, 3, 5], {})
model('LRN5', 'LRN', [2, 7, 3, 4], P(size=5, alpha=2e-2, beta=0.75, bias=2.0))
model('LRN2', 'LRN', [1, 6, 3, 3], P(size=2, alpha=1e-1, beta=0.5, bias=1.0))
model('LRN3_1d', 'LRN', [2, 5, 4], P(size=3))
w1 = rng.standard_normal([6, 2, 5]).astype(np.float32); b1 = rng.standard_normal([6]).astype(np.float32)
model('Conv1d', 'Conv', [2, 4, 20], P(group=2, strides=[2], pads=[2, 1], dilations=[2]), [w1, b1])
model('Conv1d_same', 'Conv', [2, 4, 19], P(group=2, strides=[3], auto_pad='SAME_UPPER'), [w1])
model('Conv1d_samelow', 'Conv', [2, 4, 19], P(group=2, strides=[2], auto_pad='SAME_LOWER'), [w1])
wt = rng.standard_normal([4, 3, 3, 2]).astype(np.float32); bt = rng.standard_normal([6]).astype(np.float32)
model('CT2d', 'ConvTranspose', [2, 4, 5, 4], P(group=2, strides=[2, 3], pads=[1, 0, 0, 1], output_padding=[1, 2]), [wt, bt])
model('CT2d_dil', 'ConvTranspose', [1, 4, 5, 4], P(strides=[2, 1], dilations=[2, 2], pads=[1, 1, 1, 0]), [rng.standard_normal([4, 2, 3, 3]).astype(np.float32)])
model('CT2d_oshape', 'ConvTranspose', [1, 4, 5, 4], P(strides=[2, 2], output_shape=[10, 9]), [wt[:, :, :, :]])
model('CT2d_oshape_big', 'ConvTranspose', [1, 4, 5, 4], P(strides=[3, 2], output_shape=[15, 10]), [wt])
model('CT2d_same_upper', 'ConvTranspose', [1, 4, 5, 4], P(strides=[2, 2], auto_pad='SAME_UPPER'), [wt])
model('CT2d_same_lower', 'ConvTranspose', [1, 4, 5, 4], P(strides=[2, 3], auto_pad='SAME_LOWER'), [wt])
model('CT1d', 'ConvTranspose', [2, 4, 7], P(strides=[3], pads=[1, 2], output_padding=[1]), [rng.standard_normal([4, 3, 4]).astype(np.float32)])
model('D2S_DCR', 'DepthToSpace', [2, 12, 3, 4], P(blocksize=2))
model('D2S_CRD', 'DepthToSpace', [2, 18, 3, 2], P(blocksize=3, mode='CRD'))
model('S2D', 'SpaceToDepth', [2, 3, 6, 4], P(blocksize=2))

rng = np.random.default_rng(1)
def resize_model(name, x_shape, attrs, roi=None, scales=None, sizes=None, opset=19):
    x = rng.standard_normal(x_shape).astype(np.float32)
    inits = []; names = ['x']
    for n, v, dt in [('roi', roi, np.float32), ('scales', scales, np.float32), ('sizes', sizes, np.int64)]:
        if v is None: names.append(''); continue
        inits.append(onnx.numpy_helper.from_array(np.array(v, dtype=dt), n)); names.append(n)
    while names[-1] == '': names.pop()
    node = helper.make_node('Resize', names, ['y'], **attrs)
    g = helper.make_graph([node], name, [helper.make_tensor_value_info('x', TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid('', opset)])
    d = f'{OUT}/{name}'; os.makedirs(d, exist_ok=True)
    onnx.save(m, f'{d}/model.onnx'); np.save(f'{d}/x.npy', x)
    try:
        y = ort.InferenceSession(f'{d}/model.onnx', providers=['CPUExecutionProvider']).run(None, {'x': x})[0]
        np.save(f'{d}/y.npy', y)
    except Exception as e:
        print(name, 'ORT fails:', str(e)[:300]); import shutil; shutil.rmtree(d); return
    if name not in cases: cases.append(name)
ctms = ['half_pixel', 'pytorch_half_pixel', 'align_corners', 'asymmetric', 'half_pixel_symmetric']
for mode in ['linear', 'cubic']:
    for ctm in ctms:
        resize_model(f'rs_{mode}_{ctm}_up', [1, 2, 5, 4], dict(mode=mode, coordinate_transformation_mode=ctm), scales=[1, 1, 2.5, 1.75])
        resize_model(f'rs_{mode}_{ctm}_down', [2, 1, 9, 7], dict(mode=mode, coordinate_transformation_mode=ctm), sizes=[2, 1, 4, 3])
        resize_model(f'rs_{mode}_{ctm}_to1', [1, 1, 5, 4], dict(mode=mode, coordinate_transformation_mode=ctm), sizes=[1, 1, 1, 3])
    resize_model(f'rs_{mode}_crop', [1, 2, 6, 5], dict(mode=mode, coordinate_transformation_mode='tf_crop_and_resize', extrapolation_value=-3.0),
          roi=[0, 0, 0.2, -0.3, 1, 1, 1.1, 0.9], sizes=[1, 2, 7, 4])
    resize_model(f'rs_{mode}_crop_axes', [1, 2, 6, 5], dict(mode=mode, coordinate_transformation_mode='tf_crop_and_resize', axes=[2, 3]),
          roi=[0.1, 0.3, 0.8, 0.7], sizes=[5, 6])
    resize_model(f'rs_{mode}_axes_scales', [1, 2, 6, 5], dict(mode=mode, axes=[-1, 2]), scales=[1.5, 0.5])
    resize_model(f'rs_{mode}_notlarger', [1, 2, 6, 5], dict(mode=mode, axes=[2, 3], keep_aspect_ratio_policy='not_larger'), sizes=[9, 12])
    resize_model(f'rs_{mode}_notsmaller', [1, 2, 6, 5], dict(mode=mode, axes=[2, 3], keep_aspect_ratio_policy='not_smaller'), sizes=[9, 12])
    resize_model(f'rs_{mode}_1d', [3, 7], dict(mode=mode), scales=[1, 1.6])
    resize_model(f'rs_{mode}_3d', [1, 1, 3, 4, 5], dict(mode=mode), scales=[1, 1, 2, 1.5, 0.6])
resize_model('rs_cubic_a5_excl', [1, 2, 5, 4], dict(mode='cubic', cubic_coeff_a=-0.5, exclude_outside=1), scales=[1, 1, 2.5, 0.75])
resize_model('rs_cubic_excl_asym', [1, 2, 5, 4], dict(mode='cubic', exclude_outside=1, coordinate_transformation_mode='asymmetric'), sizes=[1, 2, 11, 3])
resize_model('rs_nearest_hps', [1, 2, 5, 4], dict(mode='nearest', coordinate_transformation_mode='half_pixel_symmetric'), scales=[1, 1, 2.5, 0.6])
