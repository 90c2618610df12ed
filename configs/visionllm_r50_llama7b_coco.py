# Full-scale VisionLLM (ResNet-50 + LLaMA-7B with LoRA) on COCO 2017 instance segmentation.
# Set model.llm.path to a local LLaMA-family directory first (see the model config), e.g.
#   python tools/train.py configs/visionllm_r50_llama7b_coco.py \
#       --cfg-options model.llm.path=/models/llama-7b
_base_ = ["_base_/models/visionllm_r50_llama7b.py", "_base_/runs/coco_full_scale.py"]
