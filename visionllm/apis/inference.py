"""Run a trained VisionLLM on images: :class:`Predictor` turns images and an instruction into
:class:`~visionllm.structures.Prediction` objects in original-image pixels (``VisionLLM.generate``'s).

    predictor = Predictor.from_checkpoint("configs/visionllm_tiny_synthetic.py", "iter_2000.pth")
    [prediction] = predictor.predict("kitchen.jpg", "find all the cups and knives")
    for obj in prediction.objects:
        print(obj.class_name, obj.score, obj.box)
    [answer] = predictor.predict("kitchen.jpg", "what is this?", regions=[(40, 60, 120, 200)])
    print(answer.text)

Region boxes (x1, y1, x2, y2) and points (x, y) are given in the image's own pixels; the Predictor
checks them against each image and maps them through the same resize as the pixels.

Images go through the config's test pipeline with its file loader swapped for mmdet's
``LoadImageFromNDArray``: every input is decoded to RGB pixels first (files the way ``LoadImageRGB``
reads them), so a path, a PIL image and an RGB array of the same picture give the same predictions.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
from mmdet.utils import get_test_pipeline_cfg
from mmdet.utils.misc import IMG_EXTENSIONS
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from PIL import Image, ImageOps

from visionllm.data.loading import UNREADABLE_IMAGE_ERRORS, read_rgb
from visionllm.engine.checkpoint import restore_pretrained_frozen
from visionllm.engine.launch import apply_options, config_from_checkpoint
from visionllm.fileio import checkpoint_classes, read_checkpoint
from visionllm.instructions import resolve_instruction
from visionllm.mmengine_private import _load_checkpoint_to_model
from visionllm.models.visionllm import VisionLLM
from visionllm.registry import MODELS, TRANSFORMS, register_all_modules
from visionllm.structures import ObjectPrediction, Prediction  # noqa: F401  (re-exported)
from visionllm.tasks.base import Request, check_inputs

#: A path (str or PathLike), a PIL image, or an (H, W, 3) uint8 RGB array.
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]
#: File loaders that the array loader can stand in for (both give BGR unless told otherwise).
_FILE_LOADERS = ("LoadImageRGB", "LoadImageFromFile", "mmdet.LoadImageFromFile")


class UnreadableImageError(ValueError):
    """An input image file that is missing, corrupt, truncated or too large to decode."""


def list_images(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """One input or a list of them -> a flat list, each folder replaced by its image files (sorted)."""
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
        images = [images]
    found: list[ImageInput] = []
    for image in images:
        if isinstance(image, (str, os.PathLike)) and Path(image).is_dir():
            files = sorted(p for p in Path(image).iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
            if not files:
                raise ValueError(f"no image files ({' '.join(IMG_EXTENSIONS)}) in the folder {image}")
            found.extend(str(p) for p in files)
        else:
            found.append(image)
    return found


def load_rgb(image: ImageInput) -> np.ndarray:
    """An image as (H, W, 3) uint8 RGB pixels: files are read as ``LoadImageRGB`` reads them, PIL
    images are turned upright per their EXIF orientation, arrays are taken as RGB."""
    if isinstance(image, (str, os.PathLike)):
        try:
            return read_rgb(str(image))
        except UNREADABLE_IMAGE_ERRORS as error:
            raise UnreadableImageError(f"{image}: not a readable image ({error})") from error
    if isinstance(image, Image.Image):
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"an image array must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        return image
    raise TypeError(f"expected a path, a PIL image or an RGB array, got {type(image).__name__}")


class Predictor:
    """A VisionLLM and its config's test pipeline, ready to answer instructions about images.

    Args:
        model: the model, with ``class_names`` set (they resolve "detect everything" and give labels).
        cfg: the config whose test pipeline prepares the images.
    """

    def __init__(self, model: VisionLLM, cfg: Config) -> None:
        register_all_modules()  # the pipeline's transforms are looked up in the visionllm scope
        self.model = model.eval()
        steps = copy.deepcopy(get_test_pipeline_cfg(cfg))
        loader = steps[0]
        if loader["type"] not in _FILE_LOADERS:
            raise ValueError(
                f"the test pipeline must start with one of {_FILE_LOADERS}, not {loader['type']}"
            )
        self.channel_order = loader.get("channel_order", "bgr")
        steps[0] = dict(type="LoadImageFromNDArray", to_float32=loader.get("to_float32", False))
        self.pipeline = Compose([TRANSFORMS.build(step) for step in steps])

    @classmethod
    def from_checkpoint(
        cls,
        config: str | os.PathLike | Config | None,
        checkpoint: str | os.PathLike,
        device: str = "cpu",
        cfg_options: dict | None = None,
    ) -> Predictor:
        """Build the model of ``config`` (None: the config saved in the checkpoint, ``meta.cfg``), load
        an mmengine checkpoint into it and take its class names from the checkpoint's
        ``meta.dataset_meta.classes`` (mmengine saves the dataset's there). ``cfg_options`` override
        config keys, as ``--cfg-options`` does."""
        loaded = read_checkpoint(checkpoint)  # first: a bad file fails before the model is built
        if config is None:
            cfg = config_from_checkpoint(loaded, checkpoint)
        else:
            cfg = config if isinstance(config, Config) else Config.fromfile(str(config))
        apply_options(cfg, cfg_options)
        register_all_modules()
        model = MODELS.build(cfg.model)
        # mmengine's load_checkpoint in its two steps, with the left-out frozen weights put back between
        restore_pretrained_frozen(model, loaded)
        _load_checkpoint_to_model(model, loaded, strict=True, logger="silent")
        classes = checkpoint_classes(loaded)
        if classes:
            model.class_names = classes
        return cls(model.to(device), cfg)

    def resolve(
        self,
        instruction: str | None = None,
        *,
        task: str | None = None,
        classes: Sequence[str] | None = None,
        phrase: str | None = None,
        regions: Sequence[Sequence[float]] = (),
        points: Sequence[Sequence[float]] = (),
    ) -> Request:
        """The request an instruction and/or explicit arguments make (see ``resolve_instruction``), its
        regions and points in original-image pixels. Without either, the model's evaluation task over all
        its classes (grounding with a phrase). Raises ValueError for an instruction that names no
        supported task or one the model lacks."""
        if instruction is None and task is None:
            task = "ground" if phrase else self.model.eval_task
        request = resolve_instruction(
            instruction,
            task=task,
            classes=classes,
            phrase=phrase,
            known_classes=self.model.class_names,
            max_classes=self.model.vocab.max_classes,
            regions=regions,
            points=points,
        )
        if request.task not in self.model.tasks:
            raise ValueError(
                f"the instruction asks for the task {request.task!r}, "
                f"but this model was trained for {sorted(self.model.tasks)}"
            )
        return request

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        instruction: str | Request | None = None,
        *,
        task: str | None = None,
        classes: Sequence[str] | None = None,
        phrase: str | None = None,
        regions: Sequence[Sequence[float]] = (),
        points: Sequence[Sequence[float]] = (),
        decode: str | None = None,
        score_thr: float = 0.0,
        batch_size: int = 1,
    ) -> list[Prediction]:
        """One :class:`Prediction` per image (folders expand to their images), for one request.

        ``instruction`` is free-form text or an already resolved :class:`Request` (regions and points in
        original-image pixels); ``task``, ``classes`` and ``phrase`` override what the text says;
        ``regions`` (x1, y1, x2, y2) and ``points`` (x, y), in each image's pixels, fill the ``<region>``
        / ``<point>`` placeholders of region and point questions ("what is this?"). ``decode`` is
        ``'parallel'`` or ``'autoregressive'`` (default: the model's). Objects scoring below
        ``score_thr`` are left out; answers in words are in ``Prediction.text``.
        """
        request = (
            instruction
            if isinstance(instruction, Request)
            else self.resolve(
                instruction, task=task, classes=classes, phrase=phrase, regions=regions, points=points
            )
        )
        decode_mode = decode or self.model.decode_mode
        inputs = list_images(images)
        predictions = []
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start : start + batch_size]
            packed = pseudo_collate([self._prepare(image) for image in batch])
            data = self.model.data_preprocessor(packed, False)
            metas = [sample.metainfo for sample in data["data_samples"]]
            requests = [self._in_model_pixels(request, meta, image) for meta, image in zip(metas, batch)]
            answers = self.model.generate(data["inputs"], requests, metas, decode_mode)
            for image, answer in zip(batch, answers):
                answer.file_name = str(image) if isinstance(image, (str, os.PathLike)) else None
                predictions.append(answer.above(score_thr))
        return predictions

    @staticmethod
    def _in_model_pixels(request: Request, meta: dict, image: ImageInput) -> Request:
        """``request`` with its regions and points checked against the image (original pixels) and mapped
        through the test pipeline's resize."""
        height, width = meta["ori_shape"]
        name = f"{image}" if isinstance(image, (str, os.PathLike)) else "the image"
        check_inputs(request.regions, request.points, (width, height), name)
        sx, sy = meta.get("scale_factor", (1.0, 1.0))
        return request.scaled(sx, sy)

    def _prepare(self, image: ImageInput) -> dict:
        """The test pipeline's packed inputs for one image."""
        pixels = load_rgb(image)
        if self.channel_order == "bgr":
            pixels = np.ascontiguousarray(pixels[..., ::-1])
        return self.pipeline(dict(img=pixels, img_id=0))
