"""The same architecture as engine/model.py in PyTorch eager mode (after nanoGPT's model.py),
for side-by-side benchmarks and a cross-check of the numpy forward and backward pass.
`forward` and `generate` are nanoGPT's: without targets only the last position's logits, and
generation crops the context to block_size and runs the whole forward for every token.

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
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.lnf = nn.LayerNorm(n_embd)
        for name, p in self.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if "proj" in name else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets=None):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for block in self.blocks:
            x = block(x)
        x = self.lnf(x)
        if targets is None:  # inference: the tied output layer on the last position only
            return x[:, [-1], :] @ self.wte.weight.T, None
        logits = x @ self.wte.weight.T
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """nanoGPT's, line for line (its config.block_size is self.block_size here)."""
        for _ in range(max_new_tokens):
            # if the sequence context is growing too long we must crop it at block_size
            idx_cond = idx if idx.size(1) <= self.block_size else idx[:, -self.block_size:]
            # forward the model to get the logits for the index in the sequence
            logits, _ = self(idx_cond)
            # pluck the logits at the final step and scale by desired temperature
            logits = logits[:, -1, :] / temperature
            # optionally crop the logits to only the smallest top k options
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float('Inf')
            # apply softmax to convert logits to (normalized) probabilities
            probs = F.softmax(logits, dim=-1)
            # sample from the distribution
            idx_next = torch.multinomial(probs, num_samples=1)
            # append sampled index to the running sequence and continue
            idx = torch.cat((idx, idx_next), dim=1)

        return idx

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
