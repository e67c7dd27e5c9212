"""The model shapes the benchmarks train and time (issue 15 names them): `baby`, the size of
nanoGPT's Shakespeare-character model, and `mid`, the pipeline's default model. Each with its
windows a step; `train_options` gives a shape as `cllm train` options."""

from engine.config import GPTConfig

SHAPES = {  # name: (model, windows a step)
    "baby": (GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128), 12),
    "mid": (GPTConfig(vocab_size=4096, block_size=128, n_layer=4, n_head=4, n_embd=256), 16),
}


def train_options(config: GPTConfig, batch: int) -> list[str]:
    return ["--n-layer", str(config.n_layer), "--n-head", str(config.n_head),
            "--n-embd", str(config.n_embd), "--seq-len", str(config.block_size),
            "--batch-size", str(batch), "--vocab-size", str(config.vocab_size)]
