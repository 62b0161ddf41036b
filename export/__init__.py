"""Model export to TFLite and ONNX with accuracy gates (arrives with the export issue)."""
