"""kiln's seed-model zoo generator: graphs (kiln JSON + ONNX twins), weights, inputs and numpy goldens."""
