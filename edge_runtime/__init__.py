"""On-device part of the package: image preprocessing and (later) inference, without TensorFlow.

Everything here depends only on numpy and OpenCV so that it runs on a small CPU box next to a line camera.
"""

from edge_runtime.errors import EdgeRuntimeError, ImageReadError
from edge_runtime.preprocessing import PreprocessConfig, load_image, preprocess, to_bgr8

__all__ = [
    "EdgeRuntimeError",
    "ImageReadError",
    "PreprocessConfig",
    "load_image",
    "preprocess",
    "to_bgr8",
]
