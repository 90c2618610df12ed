"""The instruction reader of the image tokenizer: any transformers encoder (BERT family)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, BertModel

from visionllm.pretrained import minilm_dir, smollm2_dir

#: Names of packaged models, accepted wherever a local model directory is.
PACKAGED_MODELS = {"minilm": minilm_dir, "smollm2": smollm2_dir}


def resolve_local_path(path: str, what: str) -> Path:
    """A name in ``PACKAGED_MODELS`` (``'minilm'``, ``'smollm2'``) gives that packaged model's directory;
    anything else must be an existing local directory."""
    resolved = PACKAGED_MODELS[path]() if path in PACKAGED_MODELS else Path(path).expanduser()
    if not resolved.is_dir():
        raise FileNotFoundError(f"{what}: '{path}' is not a local directory (weights are never downloaded)")
    return resolved


class TextEncoder(nn.Module):
    """Encodes instructions to token features ``(B,L,H)`` and a padding mask ``(B,L)`` (True = pad).

    ``path`` loads pretrained weights from a local directory (``'minilm'`` = the packaged MiniLM);
    ``config`` instead builds a randomly initialised BERT (tiny test configs), or, when it names a
    ``model_type`` (a whole transformers config), that architecture. The tokenizer comes from
    ``tokenizer_path`` or ``path``. It reads plain words: callers pass
    ``Request.plain_text`` (the instruction without task tokens such as ``<c0>``).

    At inference (eval mode, no gradients) each distinct text is encoded once and its features are
    kept (up to ``cache_size`` texts, least recently used dropped first): an evaluation asks the same
    instruction and class names for every image. The cache is dropped whenever the weights may change:
    on ``train()`` / ``eval()``, a device or dtype move, and ``load_state_dict``.
    """

    def __init__(
        self,
        path: str | None = None,
        config: dict | None = None,
        tokenizer_path: str = "minilm",
        max_length: int = 96,
        frozen: bool = False,
        cache_size: int = 1024,
    ) -> None:
        super().__init__()
        if (path is None) == (config is None):
            raise ValueError(
                "text_encoder: give exactly one of `path` (pretrained) or `config` (random init)"
            )
        tokenizer_dir = resolve_local_path(
            path or tokenizer_path, "text_encoder.path" if path else "text_encoder.tokenizer_path"
        )
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        if path is not None:
            self.model = AutoModel.from_pretrained(
                resolve_local_path(path, "text_encoder.path"), local_files_only=True
            )
        elif "model_type" in config:  # a whole transformers config, e.g. the one save_pretrained stores
            self.model = AutoModel.from_config(AutoConfig.for_model(**config))
        else:
            self.model = BertModel(
                BertConfig(vocab_size=len(self.tokenizer), **config), add_pooling_layer=False
            )
        self.path = path
        self.max_length = max_length
        self.frozen = frozen
        if frozen:
            self.model.requires_grad_(False)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Tensor] = OrderedDict()  # text -> (length, H) features
        self.register_load_state_dict_post_hook(_drop_cache)

    def train(self, mode: bool = True) -> TextEncoder:
        self._cache.clear()
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True) -> TextEncoder:
        self._cache.clear()
        return super()._apply(fn, recurse)

    def pretrained_frozen_keys(self) -> list[str]:
        """State-dict keys (relative to this module) of weights that are frozen and loaded again from
        ``path`` when the encoder is built. Checkpoints may leave them out."""
        if self.path is None or not self.frozen:
            return []
        return [name for name, _ in self.named_parameters(remove_duplicate=False)]

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def forward(self, texts: list[str], device: torch.device) -> tuple[Tensor, Tensor]:
        if self.training or torch.is_grad_enabled() or self.cache_size == 0:
            return self._encode(texts, device)
        missing = [text for text in dict.fromkeys(texts) if text not in self._cache]
        if missing:
            hidden, padding = self._encode(missing, device)
            for text, features, pad in zip(missing, hidden, padding):
                self._cache[text] = features[~pad]
        for text in texts:
            self._cache.move_to_end(text)
        rows = [self._cache[text].to(device) for text in texts]
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        lengths = torch.tensor([len(row) for row in rows], device=device)
        padding = torch.arange(int(lengths.max()), device=device) >= lengths[:, None]
        return pad_sequence(rows, batch_first=True), padding

    def _encode(self, texts: list[str], device: torch.device) -> tuple[Tensor, Tensor]:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask
            ).last_hidden_state
        return hidden, batch.attention_mask == 0


def _drop_cache(module: TextEncoder, incompatible_keys) -> None:
    """After ``load_state_dict``: features cached from the old weights are stale."""
    module._cache.clear()
