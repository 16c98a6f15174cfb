"""The conditional Transformer decoder: a small GPT over the tokens of :mod:`personalize.generate.tokens`.

One file, read top to bottom: a config dataclass, causal self-attention with a key/value cache, the MLP,
a pre-norm block and the model. Attention may share each key/value head among several query heads
(``n_kv_head`` < ``n_head``, grouped-query attention): the cache a decoding step reads shrinks by that
factor, and on a CPU that read, not arithmetic, is what a step of batched decoding waits on. Conditioning is the control prefix at the start of every sequence, so the
model itself is a plain decoder. ``forward`` serves training (full sequences) and generation (one new
token per row, reusing the cache); sampling with the decoding grammar lives in
:mod:`personalize.generate.sample`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class TransformerConfig:
    vocab_size: int = 296
    block_size: int = 512  # longest sequence the position table covers
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 192
    dropout: float = 0.1
    # key/value heads, each shared by n_head / n_kv_head query heads; None: one per query head
    n_kv_head: int | None = None

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class KVCache:
    """Keys and values of every layer for a batch, preallocated to ``block_size`` positions."""

    def __init__(
        self, config: TransformerConfig, batch_size: int, dtype: torch.dtype = torch.float32
    ) -> None:
        hd = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.kv_heads, config.block_size, hd)
        self.k = torch.zeros(shape, dtype=dtype)
        self.v = torch.zeros(shape, dtype=dtype)
        self.length = 0  # positions filled, the same for every row


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0 and config.n_head % config.kv_heads == 0
        self.head_dim = config.n_embd // config.n_head
        self.n_kv_head = config.kv_heads
        self.qkv = nn.Linear(config.n_embd, config.n_embd + 2 * self.n_kv_head * self.head_dim)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        b, t, c = x.shape
        hd, kvh = self.head_dim, self.n_kv_head
        q, k, v = self.qkv(x).split((c, kvh * hd, kvh * hd), dim=2)
        q = q.view(b, t, self.n_head, hd).transpose(1, 2)
        k, v = (z.view(b, t, kvh, hd).transpose(1, 2) for z in (k, v))
        gqa = kvh != self.n_head
        if cache is None:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0, enable_gqa=gqa
            )
        else:
            start = cache.length
            cache.k[layer, :, :, start : start + t] = k
            cache.v[layer, :, :, start : start + t] = v
            k_all = cache.k[layer, :, :, : start + t]
            v_all = cache.v[layer, :, :, : start + t]
            if t == 1:
                # One new query per row: attend over the cache filled so far, rounded up to a multiple of
                # 128 positions with the unfilled tail masked. Whole 128-position buckets keep the matmuls
                # on their fast path; reading only the buckets in use instead of all `block_size` positions
                # took attention from 10.2 to 2.1 ms (100 filled) and 5.2 ms (400 filled) per layer and step
                # at batch 64, n_embd 256, block 1024 on one core (measured).
                # The query heads sharing a key/value head are rows of one matmul against it.
                filled = min(cache.k.size(3), -(-(start + 1) // 128) * 128)
                k_full, v_full = cache.k[layer, :, :, :filled], cache.v[layer, :, :, :filled]
                qg = q.reshape(b, kvh, self.n_head // kvh, hd)
                att = (qg @ k_full.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
                att[..., start + 1 :] = float("-inf")
                y = (torch.softmax(att, dim=-1) @ v_full).reshape(b, self.n_head, 1, hd)
            else:
                # A prefill of t tokens after `start` cached ones: causal within the new block.
                mask = torch.ones(t, start + t, dtype=torch.bool).tril(diagonal=start)
                y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, enable_gqa=gqa)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class MusicTransformer(nn.Module):
    """GPT-style decoder: token + position embeddings, ``n_layer`` blocks, a tied output head."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # weight tying: fewer parameters, better small-data fits
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # GPT-2's scaled init of residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for every position of ``idx`` (batch, time); with ``targets``, also the mean cross-entropy
        over targets that are not ``-100``. With ``cache``, ``idx`` continues the cached positions and the
        cache grows by ``idx.shape[1]``."""
        t = idx.shape[1]
        start = cache.length if cache is not None else 0
        if start + t > self.config.block_size:
            raise ValueError(f"sequence of {start + t} tokens exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.length += t
        logits = self.head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100)
        return logits, loss

    def new_cache(self, batch_size: int) -> KVCache:
        return KVCache(self.config, batch_size, dtype=self.wte.weight.dtype)
