"""The same architecture as engine/model.py in PyTorch eager mode (after nanoGPT's model.py),
for side-by-side benchmarks and a cross-check of the numpy forward and backward pass.

Needs the `bench` extra (`make bench` installs torch==2.13.0, the CPU build).
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.fc_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.lnf = nn.LayerNorm(n_embd)
        for name, p in self.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if "proj" in name else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for block in self.blocks:
            x = block(x)
        logits = self.lnf(x) @ self.wte.weight.T  # tied output layer
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    def load_numpy(self, params: dict) -> None:
        """Copy engine parameters in (engine weights are (in, out), torch's (out, in))."""
        names = {"wte": "wte.weight", "wpe": "wpe.weight", "lnf.g": "lnf.weight", "lnf.b": "lnf.bias"}
        for i in range(len(self.blocks)):
            p, q = f"h.{i}.", f"blocks.{i}."
            names |= {p + "ln1.g": q + "ln1.weight", p + "ln1.b": q + "ln1.bias",
                      p + "attn.w_qkv": q + "qkv.weight", p + "attn.b_qkv": q + "qkv.bias",
                      p + "attn.w_proj": q + "proj.weight", p + "attn.b_proj": q + "proj.bias",
                      p + "ln2.g": q + "ln2.weight", p + "ln2.b": q + "ln2.bias",
                      p + "mlp.w_fc": q + "fc.weight", p + "mlp.b_fc": q + "fc.bias",
                      p + "mlp.w_proj": q + "fc_proj.weight", p + "mlp.b_proj": q + "fc_proj.bias"}
        state = {}
        for ours, theirs in names.items():
            value = np.asarray(params[ours])
            is_linear = ".w_" in ours
            state[theirs] = torch.from_numpy(np.ascontiguousarray(value.T if is_linear else value))
        self.load_state_dict(state)
