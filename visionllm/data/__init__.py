"""Datasets for VisionLLM: the embedded synthetic shapes set and converters into COCO JSON."""
