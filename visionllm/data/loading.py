"""Image loading that accepts any PIL-readable image and skips unreadable files instead of crashing."""

from __future__ import annotations

import io
import logging

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.fileio import get
from mmengine.logging import print_log
from PIL import Image, ImageOps

from visionllm.registry import TRANSFORMS

#: What PIL and mmengine's file backends raise for missing, corrupt or truncated files.
#: What reading a missing, corrupt, truncated or oversized image file raises.
UNREADABLE_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def read_rgb(path: str, backend_args: dict | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, whatever its mode, upright per its EXIF orientation.

    High-bit-depth integer images (``I;16`` and friends) keep their top 8 bits, as OpenCV does, instead of
    PIL's clipping to 255; every other mode (L, LA, P, RGBA, CMYK, ...) goes through PIL's RGB conversion.
    """
    with Image.open(io.BytesIO(get(path, backend_args=backend_args))) as image:
        image = ImageOps.exif_transpose(image)  # loads the pixels: truncation surfaces here
        if image.mode.startswith("I"):
            gray = (np.asarray(image).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=2)
        return np.asarray(image.convert("RGB"))


@TRANSFORMS.register_module()
class LoadImageRGB(BaseTransform):
    """Drop-in for mmdet's ``LoadImageFromFile`` (sets ``img``, ``img_shape``, ``ori_shape``; BGR by
    default, as mmdet's data preprocessors expect) that reads any image mode through PIL.

    A missing, corrupt or truncated file is logged as a warning naming it, and the transform returns None:
    mmengine's datasets then fetch another sample in training (in test mode they raise).

    Args:
        to_float32: return a float32 image instead of uint8.
        channel_order: ``'bgr'`` (mmdet's convention) or ``'rgb'``.
        backend_args: mmengine file backend arguments, as for ``LoadImageFromFile``.
    """

    def __init__(
        self, to_float32: bool = False, channel_order: str = "bgr", backend_args: dict | None = None
    ):
        if channel_order not in ("bgr", "rgb"):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        self.to_float32 = to_float32
        self.channel_order = channel_order
        self.backend_args = backend_args

    def transform(self, results: dict) -> dict | None:
        path = results["img_path"]
        try:
            img = read_rgb(path, self.backend_args)
        except UNREADABLE_IMAGE_ERRORS as error:
            print_log(f"skipping unreadable image {path}: {error!r}", logger="current", level=logging.WARNING)
            return None
        if self.channel_order == "bgr":
            img = np.ascontiguousarray(img[..., ::-1])
        if self.to_float32:
            img = img.astype(np.float32)
        results["img"] = img
        results["img_shape"] = img.shape[:2]
        results["ori_shape"] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(to_float32={self.to_float32}, channel_order={self.channel_order!r}, "
            f"backend_args={self.backend_args})"
        )
