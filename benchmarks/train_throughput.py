"""Training throughput of the numpy engine against PyTorch eager, side by side.

For each thread count and each configuration, full training steps (forward, backward,
gradient clipping, AdamW) of the engine and of the same architecture in PyTorch
(benchmarks/torch_reference.py) alternate, `--repeats` times; the medians and their ratio
are reported, with model-FLOPs utilisation against the float32 matrix-multiply peak measured
in the same run. Generation speed is benchmarks/generation.py's.

    make bench   # installs torch==2.13.0 (CPU) into .venv
    .venv/bin/python benchmarks/train_throughput.py --threads 1 2

Tokens are random: speed does not depend on what they say.
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shapes import SHAPES  # noqa: E402
from torch_reference import GPT  # noqa: E402

from engine.model import init_params, loss_and_grads, ops  # noqa: E402
from engine.optim import AdamW, clip_grad_norm  # noqa: E402


def matmul_peak(seconds=1.0) -> float:
    """Best float32 GFLOP/s of a 1024^3 matrix multiply, numpy (OpenBLAS) or torch."""
    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    best = 0.0
    for mm, x in ((np.matmul, a), (torch.matmul, torch.from_numpy(a))):
        mm(x, x)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            mm(x, x)
            best = max(best, 2 * 1024**3 / (time.perf_counter() - t) / 1e9)
    return best


class NumpyRun:
    def __init__(self, config, batch):
        self.config, self.batch = config, batch
        self.params = init_params(config, seed=0)
        self.optimizer = AdamW(self.params, beta1=0.9, beta2=0.95, weight_decay=0.1)
        self.rng = np.random.default_rng(0)

    def step(self):
        c = self.config
        idx = self.rng.integers(0, c.vocab_size, (self.batch, c.block_size + 1))
        _, grads = loss_and_grads(self.params, c, idx[:, :-1], idx[:, 1:])
        clip_grad_norm(grads, 1.0)
        self.optimizer.step(self.params, grads, 1e-4)


class TorchRun:
    def __init__(self, config, batch):
        self.config, self.batch = config, batch
        c = config
        self.model = GPT(c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_embd)
        decay = [p for n, p in self.model.named_parameters() if p.dim() == 2 and "wte" not in n
                 and "wpe" not in n]
        rest = [p for n, p in self.model.named_parameters() if not any(p is d for d in decay)]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                            {"params": rest, "weight_decay": 0.0}],
                                           lr=1e-4, betas=(0.9, 0.95))

    def step(self, idx=None):
        """One training step on windows `idx` (batch, block_size + 1), random by default."""
        c = self.config
        if idx is None:
            idx = torch.randint(0, c.vocab_size, (self.batch, c.block_size + 1))
        _, loss = self.model(idx[:, :-1], idx[:, 1:])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()


def tokens_per_second(run, steps: int) -> float:
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        run.step()
        times.append(time.perf_counter() - t)
    return run.batch * run.config.block_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--configs", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=5, help="alternated runs of each engine")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run (median taken)")
    args = parser.parse_args()

    blas = [(i["internal_api"], i.get("architecture")) for i in threadpool_info()]
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__} {blas}, "
          f"torch {torch.__version__}; kernels: {ops.__name__}")
    print("| threads | config | numpy tokens/s | torch tokens/s | ratio | numpy MFU | torch MFU |"
          " peak GFLOP/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for threads in args.threads:
        torch.set_num_threads(threads)
        ops.set_threads(threads)
        with threadpool_limits(threads):
            peak = matmul_peak()
            for name in args.configs:
                config, batch = SHAPES[name]
                runs = {"numpy": NumpyRun(config, batch), "torch": TorchRun(config, batch)}
                for run in runs.values():  # warm up: compilation, allocator, caches
                    tokens_per_second(run, 3)
                rates = {k: [] for k in runs}
                for _ in range(args.repeats):
                    for key, run in runs.items():
                        rates[key].append(tokens_per_second(run, args.steps))
                ours, theirs = (statistics.median(rates[k]) for k in ("numpy", "torch"))
                mfu = lambda rate: rate * config.flops_per_token() / (peak * 1e9)  # noqa: E731
                print(f"| {threads} | {name} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f}x "
                      f"| {mfu(ours):.0%} | {mfu(theirs):.0%} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
