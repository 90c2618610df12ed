"""Transforms that carry task-language information through the mmdet pipeline."""

from __future__ import annotations

from mmcv.transforms import BaseTransform

from visionllm.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadInstanceAttributes(BaseTransform):
    """Collects each instance's ``attributes`` (colour, size, …) into ``results['instance_attributes']``.

    Aligned with the non-ignored instances, i.e. with ``gt_instances`` after ``PackDetInputs``, so
    grounding can phrase referring expressions. Put it after ``LoadAnnotations`` and list
    ``instance_attributes`` in ``PackDetInputs.meta_keys``; transforms that drop instances (crops,
    ``FilterAnnotations``) would break the alignment and must not follow it.
    """

    def transform(self, results: dict) -> dict:
        results["instance_attributes"] = [
            dict(instance.get("attributes", {}))
            for instance in results.get("instances", [])
            if not instance.get("ignore_flag", 0)
        ]
        return results
