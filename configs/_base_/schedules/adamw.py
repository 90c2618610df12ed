# AdamW in a plain mmengine OptimWrapper, gradients clipped (LLM training habit), norms and biases without
# weight decay. fused: one kernel for all parameters instead of a loop over them (cheaper on CPU).
# bypass_duplicate: an LLM with tied input and output embeddings (SmolLM2, `tie_word_embeddings=True`) shares
# one matrix between two modules; it joins the optimizer once.
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=3e-4, weight_decay=0.05, betas=(0.9, 0.95), fused=True),
    clip_grad=dict(max_norm=1.0, norm_type=2),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, bypass_duplicate=True),
)
auto_scale_lr = dict(enable=False, base_batch_size=8)
