"""The LLM decoder: any transformers causal LM with the task vocabulary added.

    token ids (B,T) --embed--> (B,T,D); <image> positions are overwritten with visual tokens
    --decoder layers--> hidden (B,T,D)
    --task head--> logits over the task tokens only (B,T,V_task)

The task head is the LM head restricted to the contiguous block of task-token rows: every output
VisionLLM decodes is a task token, so the full-vocabulary head (49k-152k rows) is never computed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from visionllm.models.text_encoder import resolve_local_path
from visionllm.vocab import TaskVocab

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_causal_lm(path: str | None, config: dict | None, dtype: str) -> PreTrainedModel:
    """Load a causal LM from a local directory, or build a random one from a config dict."""
    if path is not None:
        return AutoModelForCausalLM.from_pretrained(
            resolve_local_path(path, "llm.path"), dtype=_DTYPES[dtype], local_files_only=True
        )
    if config is None:
        raise ValueError("llm: give `path` (a local model directory) or `config` (an architecture to build)")
    config = dict(config)
    hf_config = AutoConfig.for_model(config.pop("model_type", "llama"), **config)
    return AutoModelForCausalLM.from_config(hf_config, dtype=_DTYPES[dtype])


class LanguageModel(nn.Module):
    """A causal LM + tokenizer + task vocabulary, optionally with LoRA adapters.

    Args:
        path: local directory of a pretrained causal LM (weights, config, tokenizer).
        config: architecture for a randomly initialised LM when ``path`` is None, e.g.
            ``dict(model_type='llama', hidden_size=128, num_hidden_layers=2, ...)``.
        tokenizer_path: tokenizer directory when it differs from ``path`` (``'minilm'`` = packaged one).
        num_bins / max_classes: size of the task vocabulary (location bins, class references).
        lora: ``peft.LoraConfig`` keyword arguments; the task-token rows stay trainable through
            peft's trainable tokens, everything else in the LM is frozen.
        gradient_checkpointing: recompute decoder activations in backward (memory for compute).
        dtype: ``'float32'`` | ``'bfloat16'`` | ``'float16'`` for the LM weights.
    """

    def __init__(
        self,
        path: str | None = None,
        config: dict | None = None,
        tokenizer_path: str | None = None,
        num_bins: int = 512,
        max_classes: int = 100,
        lora: dict | None = None,
        gradient_checkpointing: bool = False,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        tokenizer_dir = resolve_local_path(tokenizer_path or path or "", "llm tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        self.vocab = TaskVocab(tokenizer, num_bins=num_bins, max_classes=max_classes)
        llm = build_causal_lm(path, config, dtype)
        llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        if gradient_checkpointing:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.decoder = llm.get_decoder()  # the transformer without its LM head
        if lora is not None:
            llm = self._add_lora(llm, lora)
        self.llm = llm

    def _add_lora(self, llm: PreTrainedModel, lora: dict) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        task_ids = list(range(self.vocab.first_id, self.vocab.first_id + self.vocab.num_tokens))
        targets = {"embed_tokens": task_ids}
        if not llm.config.tie_word_embeddings:
            targets["lm_head"] = task_ids
        return get_peft_model(llm, LoraConfig(**lora, trainable_token_indices=targets))

    @property
    def hidden_size(self) -> int:
        return self.decoder.config.hidden_size

    def embed(self, ids: Tensor) -> Tensor:
        """(B,T) token ids -> (B,T,D) input embeddings (through any peft trainable-token wrapper)."""
        return self.llm.get_input_embeddings()(ids)

    def forward(
        self, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None, cache=None
    ) -> tuple[Tensor, object]:
        """(B,T,D) embeddings -> final hidden states (B,T,D) and the KV cache (when ``cache`` is given)."""
        out = self.decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=cache is not None,
        )
        return out.last_hidden_state, out.cache

    def task_logits(self, hidden: Tensor) -> Tensor:
        """(…,D) hidden states -> (…,V_task) logits over the task tokens (local ids)."""
        head = self.llm.get_output_embeddings()
        rows = slice(self.vocab.first_id, self.vocab.first_id + self.vocab.num_tokens)
        adapter = getattr(head, "token_adapter", None)  # peft trainable tokens: its delta *is* the task rows
        if adapter is not None:
            weight = adapter.trainable_tokens_delta[adapter.active_adapters[0]]
        else:
            weight = head.weight[rows]
        bias = head.bias[rows] if getattr(head, "bias", None) is not None else None
        return F.linear(hidden.to(weight.dtype), weight, bias).float()
