"""The model shipped in the package: a .onnx and its model card (.json) of the same name."""
