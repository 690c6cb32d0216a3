"""File names of an ONNX export (torch-free: the exporter and the runtime share them)."""

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
RUNTIME_FILE = "onnx.json"  # the graph's inputs, its parity with PyTorch, the preprocessing it expects
RUNTIME_FORMAT = "mitp-onnx-1"
TOKENIZER_FILE = "tokenizer/tokenizer.json"

__all__ = ["INT8_FILE", "ONNX_FILE", "RUNTIME_FILE", "RUNTIME_FORMAT", "TOKENIZER_FILE"]
