# Full-scale VisionLLM with a ConvNeXt-L image tokenizer (see visionllm_r50_llama7b.py for the local paths).
_base_ = ["./visionllm_r50_llama7b.py"]

# strides 8, 16, 32
__backbone = dict(model_name="convnext_large", out_indices=(1, 2, 3), checkpoint=None)
model = dict(image_tokenizer=dict(backbone=dict(_delete_=True, **__backbone)))
