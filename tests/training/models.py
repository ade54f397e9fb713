"""Small models shared by the training tests: a nested hand-written net, tiny GPT-2 and Llama."""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Block(nn.Module):
    """Pre-norm MLP block with a residual: LayerNorm -> Linear -> GELU -> Dropout -> Linear."""

    def __init__(self, dim: int = 16, hidden: int = 32, p: float = 0.0) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(p)
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(self.drop(self.act(self.fc(self.ln(x)))))


class Net(nn.Module):
    """Embedding -> blocks (optionally checkpointed) -> head; nested two levels deep."""

    def __init__(self, vocab: int = 50, dim: int = 16, blocks: int = 2,
                 checkpointing: bool = False, reentrant: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim) for _ in range(blocks))
        self.head = nn.Linear(dim, vocab)
        self.checkpointing = checkpointing
        self.reentrant = reentrant

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        for block in self.blocks:
            x = (checkpoint(block, x, use_reentrant=self.reentrant) if self.checkpointing
                 else block(x))
        return self.head(x)


def build(factory: Any, device: str) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings(), torch.device(device):
        warnings.simplefilter("ignore")
        return factory()


def gpt2() -> nn.Module:
    import transformers
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=64,
                                  bos_token_id=0, eos_token_id=0, attn_implementation="sdpa")
    return transformers.GPT2LMHeadModel(cfg)


def llama() -> nn.Module:
    import transformers
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                   bos_token_id=0, eos_token_id=0, attn_implementation="sdpa")
    return transformers.LlamaForCausalLM(cfg)
