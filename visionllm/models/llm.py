"""The LLM decoder: any transformers causal LM with the task vocabulary added.

    token ids (B,T) --embed--> (B,T,D); <image> positions are overwritten with visual tokens
    --decoder layers--> hidden (B,T,D)
    --task head--> logits over the task tokens only (B,T,V_task)        (objects)
    --LM head--> logits over the tokenizer's words (B,T,V)              (answers in words)

The task head is the LM head restricted to the contiguous block of task-token rows: an object answer is
task tokens only, so the full-vocabulary head (49k-152k rows) is computed only for answers in words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def keep_first_layers(llm: PreTrainedModel, num_layers: int) -> None:
    """Drop every decoder layer after the first ``num_layers`` (the embeddings, final norm and head stay)."""
    decoder = llm.get_decoder()
    if not 0 < num_layers <= len(decoder.layers):
        raise ValueError(f"llm.num_layers must be in [1, {len(decoder.layers)}], got {num_layers}")
    decoder.layers = decoder.layers[:num_layers]
    llm.config.num_hidden_layers = num_layers
    if getattr(llm.config, "layer_types", None):
        llm.config.layer_types = llm.config.layer_types[:num_layers]


class LanguageModel(nn.Module):
    """A causal LM + tokenizer + task vocabulary, optionally with LoRA adapters.

    Args:
        path: local directory of a pretrained causal LM (weights, config, tokenizer); ``'smollm2'`` = the
            packaged SmolLM2-135M-Instruct (converted once into a cache: ``pretrained.smollm2_dir``).
        config: architecture for a randomly initialised LM when ``path`` is None, e.g.
            ``dict(model_type='llama', hidden_size=128, num_hidden_layers=2, ...)``.
        tokenizer_path: tokenizer directory when it differs from ``path`` (``'minilm'`` = packaged one).
        num_bins / max_classes: size of the task vocabulary (location bins, class references).
        lora: ``peft.LoraConfig`` keyword arguments; the task-token rows stay trainable through
            peft's trainable tokens, everything else in the LM is frozen.
        gradient_checkpointing: recompute decoder activations in backward (memory for compute).
        dtype: ``'float32'`` | ``'bfloat16'`` | ``'float16'`` for the LM weights.
        num_layers: keep only the first ``num_layers`` decoder layers of the LM (None: all): a shallower
            pretrained LM costs proportionally less per token, for training on a laptop.
        init_bins_sinusoidal: start the location-bin rows (input and output) as sinusoidal encodings
            of the bin position, so that neighbouring bins start out similar: coordinates then begin
            ordinal instead of as unrelated classes, and are learnt much faster.
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
        init_bins_sinusoidal: bool = True,
        num_layers: int | None = None,
    ) -> None:
        super().__init__()
        self.path = path
        if path is None and tokenizer_path is None:
            raise ValueError("llm: set `path` (a local model directory) or `tokenizer_path`")
        tokenizer_dir = resolve_local_path(
            tokenizer_path or path, "llm.tokenizer_path" if tokenizer_path else "llm.path"
        )
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        self.vocab = TaskVocab(tokenizer, num_bins=num_bins, max_classes=max_classes)
        llm = build_causal_lm(path, config, dtype)
        if num_layers is not None:
            keep_first_layers(llm, num_layers)
        llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        if init_bins_sinusoidal:
            self._init_bin_rows(llm)
        if gradient_checkpointing:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        dims = llm.config.hidden_size
        pointer_dims = min(dims, 256)  # a matching space, not a model width: keeps 7B heads small
        self.class_query = nn.Linear(dims, pointer_dims)
        self.class_key = nn.Linear(dims, pointer_dims)
        if lora is not None:
            llm = self._add_lora(llm, lora)
        self.llm = llm

    def pretrained_frozen_keys(self) -> list[str]:
        """State-dict keys (relative to this module) of the frozen weights that building it loads again
        from ``path``: the LM's base weights under LoRA. Checkpoints may leave them out."""
        if self.path is None:
            return []
        # every name of a shared tensor: a tied LM head is its own state-dict key
        return [name for name, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad]

    @property
    def decoder(self) -> nn.Module:
        """The transformer without its LM head (through any peft wrapper)."""
        return self.llm.get_decoder()

    @property
    def context_length(self) -> int | None:
        """How many positions the LM was built for (None when its config does not say)."""
        return getattr(self.decoder.config, "max_position_embeddings", None)

    @torch.no_grad()
    def _init_bin_rows(self, llm: PreTrainedModel) -> None:
        first, num_bins = self.vocab.first_id, self.vocab.num_bins  # bins are the first task tokens
        dims = llm.config.hidden_size
        position = (torch.arange(num_bins) + 0.5) / num_bins  # bin centres in [0, 1]
        # geometric frequencies: the slowest spans the canvas once, the fastest tells single bins apart
        frequencies = torch.logspace(math.log10(0.5), math.log10(num_bins / 2), dims // 2)
        angles = 2 * math.pi * position[:, None] * frequencies  # (num_bins, dims/2)
        encoding = torch.cat([angles.sin(), angles.cos()], 1)[:, :dims] * math.sqrt(2.0)  # unit variance
        for layer in {id(m): m for m in (llm.get_input_embeddings(), llm.get_output_embeddings())}.values():
            rows = layer.weight[first : first + num_bins]
            # keep the rows' scale; on the rows' device, which is meta when built empty (accelerate)
            rows.copy_(encoding.to(rows.device) * rows.float().std().clamp(min=1e-3))

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

    def text_logits(self, hidden: Tensor) -> Tensor:
        """(P,D) hidden states -> (P,V) logits over the tokenizer's own words (answers in words): the
        full LM head, with the task-token block ruled out."""
        logits = self.llm.get_output_embeddings()(hidden).float()
        task_block = slice(self.vocab.first_id, self.vocab.first_id + self.vocab.num_tokens)
        logits[..., task_block] = float("-inf")
        return logits

    def task_logits(self, hidden: Sequence[Tensor], class_keys: Sequence[Tensor | None]) -> list[Tensor]:
        """Per sequence, (P_i,D) hidden states -> (P_i,V_task) logits over the task tokens (local ids).

        ``class_keys[i]`` (n_i,D) describe sequence i's ``<c0>…<c{n-1}>`` (``LLMQuery.class_keys``), or
        None: each class reference's logit gains a pointer score (scaled dot product of the projected
        state and key), so ``<ck>`` is chosen by reading which class name the instruction bound to it.
        The task rows are read from the head once for the whole batch: with tied embeddings every read
        of them makes a vocabulary-sized gradient in backward (one read per image cost ~7% of the tiny
        model's training step).
        """
        head = self.llm.get_output_embeddings()
        rows = slice(self.vocab.first_id, self.vocab.first_id + self.vocab.num_tokens)
        adapter = getattr(head, "token_adapter", None)  # peft trainable tokens: its delta *is* the task rows
        if adapter is not None:
            weight = adapter.trainable_tokens_delta[adapter.active_adapters[0]]
        else:
            weight = head.weight[rows]
        bias = head.bias[rows] if getattr(head, "bias", None) is not None else None
        states = torch.cat(list(hidden))
        logits = F.linear(states.to(weight.dtype), weight, bias).float().split([len(h) for h in hidden])
        return [self._point_to_classes(l, h, k) for l, h, k in zip(logits, hidden, class_keys)]

    def _point_to_classes(self, logits: Tensor, hidden: Tensor, class_keys: Tensor | None) -> Tensor:
        """Add the class pointer's scores (P,n) to the class-reference columns of ``logits`` (P,V_task)."""
        if class_keys is None or class_keys.shape[0] == 0:
            return logits
        dtype = self.class_query.weight.dtype  # fp32 beside a bf16 LLM; bf16 when DeepSpeed casts it all
        pointer = (
            self.class_query(hidden.to(dtype)) @ self.class_key(class_keys.to(dtype)).T
        ).float()  # (P,n)
        columns = self.vocab.class_local_ids(class_keys.shape[0]).to(logits.device)
        return logits.index_add(1, columns, pointer / math.sqrt(self.class_key.out_features))
