"""Deployment: the detector as one graph of one image (`graph`), its ONNX export and
onnxruntime runner (`onnx`), and the operators whose ONNX forms carry its semantics (`ops`)."""
