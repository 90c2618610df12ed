# Full-scale VisionLLM with a Swin-L image tokenizer (see visionllm_r50_llama7b.py for the local paths).
# timm's Swin returns NHWC features (TimmBackbone permutes them) and pads inputs to whole 12x12 windows;
# `img_size` must match the pipeline's padded input side.
_base_ = ["./visionllm_r50_llama7b.py"]

# strides 8, 16, 32
__backbone = dict(
    model_name="swin_large_patch4_window12_384", out_indices=(1, 2, 3), img_size=1024, checkpoint=None
)
model = dict(image_tokenizer=dict(backbone=dict(_delete_=True, **__backbone)))
