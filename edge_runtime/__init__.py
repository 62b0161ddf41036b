"""On-device part of the package: image preprocessing and inference, without TensorFlow.

Everything here depends only on numpy and OpenCV, plus the inference engine a model needs, imported only
when such a model is loaded, so that it runs on a small CPU box next to a line camera. Three engines
(:data:`edge_runtime.backends.ENGINES`): LiteRT (``litert``, ai-edge-litert) for .tflite, ONNX Runtime
(``onnxruntime``) and OpenVINO (``openvino``) for .onnx, all three in ``pip install ".[edge]"``.
``--engine auto`` (edge-classify's default, ``Classifier.load(engine="auto")``) measures the engine/artifact
pairs that passed their export accuracy gates and caches the fastest per machine
(:mod:`edge_runtime.engine_select`); ``--engine litert|onnxruntime|openvino`` pins one.
"""

from edge_runtime.backends import load_backend
from edge_runtime.classifier import Classifier, Prediction
from edge_runtime.errors import (
    BackendUnavailableError,
    EdgeRuntimeError,
    ImageReadError,
    MetadataError,
    ModelLoadError,
    SourceError,
)
from edge_runtime.metadata import ModelMetadata, read_metadata
from edge_runtime.preprocessing import PreprocessConfig, load_image, preprocess, to_bgr8
from edge_runtime.shipped import default_model_path
from edge_runtime.sources import open_source
from edge_runtime.sources.base import Frame, SourceOptions

__all__ = [
    "BackendUnavailableError",
    "Classifier",
    "EdgeRuntimeError",
    "Frame",
    "ImageReadError",
    "MetadataError",
    "ModelLoadError",
    "ModelMetadata",
    "PreprocessConfig",
    "Prediction",
    "SourceError",
    "SourceOptions",
    "default_model_path",
    "load_backend",
    "load_image",
    "open_source",
    "preprocess",
    "read_metadata",
    "to_bgr8",
]
