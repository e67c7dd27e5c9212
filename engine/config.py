"""The `[model]` and `[train]` sections: plain dataclasses with no heavy imports, so the
configuration loads anywhere, an Airflow DAG file's parse included."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from core.errors import UserError


@dataclass
class GPTConfig:
    vocab_size: int = 4096
    block_size: int = 128  # the longest context the model sees
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise UserError(f"model setting {name}={value!r} must be a positive integer")
        if self.n_embd % self.n_head:
            raise UserError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                "choose a width that is a multiple of the number of heads"
            )

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def flops_per_token(self) -> float:
        """Training FLOPs of one token (PaLM, appendix B): 6 N + 12 L C T, N the matmul
        weights (the tied output layer included)."""
        n = 12 * self.n_layer * self.n_embd**2 + self.vocab_size * self.n_embd
        return 6 * n + 12 * self.n_layer * self.n_embd * self.block_size


@dataclass
class TrainConfig:
    steps: int = 1000  # the step to train up to
    batch_size: int = 16  # windows per step
    seq_len: int = 128  # tokens per window; a new model's context (block_size)
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-4  # where the cooldown ends
    warmup_steps: int = 100  # at most a tenth of the steps
    # the share of the steps after the warm-up that decay from lr to min_lr, the rest stay at
    # lr (warmup-stable-decay, engine/optim.py); 1: a cosine decay from the peak
    cooldown: float = 0.2
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # global gradient norm; 0 turns clipping off
    eval_every: int = 100  # steps between evaluations
    eval_batches: int = 4  # batches per evaluation, each split
    checkpoint_every: int = 200  # steps between checkpoints (and one at the end)
    val_fraction: float = 0.1  # held-out share of the data
    vocab_size: int = 4096  # of a newly trained tokenizer
    seed: int = 1337  # initialisation and the windows of every step
    threads: int = 0  # BLAS threads, 0 for all cores (one per worker with several workers)
    # disjoint slices of the data a step draws its windows from, one per level-1 group of
    # workers (0: as many as groups); set it to a distributed run's number of groups to make
    # one worker draw exactly that run's windows
    data_parts: int = 0
    # seconds a worker waits in a step's reduction for the others before the job is stopped
    # as hung (it covers the root's evaluation and checkpoint); 0: no limit
    step_timeout: float = 600.0
    # MPI worker processes, all hosts together; 0: one a host, or on this machine alone one
    # a core when the job is long enough to repay starting them (see
    # engine.launcher.default_workers), else 1 in-process. Every way the pipeline trains
    # (cllm train, update, --from-scratch, --retrain, the DAGs, the web application) runs this
    workers: int = 0
    # workers per level-1 group; 0: one group a machine (with hosts: one a host)
    group_size: int = 0
    # what the groups' leaders exchange across hosts: "float32" (exact) or "bfloat16" (half
    # the bytes on the slow link; each host's share of the sum rounded to 8 significant bits)
    link_precision: str = "float32"
    # hosts to train on, a comma list ("h1,h2"): mpiexec starts workers/len(hosts) workers on
    # each, one level-1 group per host; "" for this machine only
    hosts: str = ""
    # how mpiexec reaches a host: a program called like ssh (PROGRAM [-x] HOST COMMAND), as
    # hydra's -launcher-exec; "" for ssh
    launcher_exec: str = ""

    @property
    def host_list(self) -> list[str]:
        return [h.strip() for h in self.hosts.split(",")] if self.hosts.strip() else []

    def validate(self) -> None:
        positive = ["steps", "batch_size", "seq_len", "eval_every", "eval_batches",
                    "checkpoint_every", "vocab_size"]
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"training setting {name}={getattr(self, name)} must be at least 1")
        if not self.lr > 0 or not 0 <= self.min_lr <= self.lr:
            raise UserError(f"learning rates lr={self.lr}, min_lr={self.min_lr} must satisfy "
                            "0 <= min_lr <= lr and lr > 0")
        if not 0 < self.cooldown <= 1:
            raise UserError(f"cooldown={self.cooldown} must be above 0 and at most 1 (the "
                            "share of the steps after the warm-up that decay)")
        if not 0 < self.val_fraction < 1:
            raise UserError(f"val_fraction={self.val_fraction} must be between 0 and 1")
        if self.threads < 0:
            raise UserError(f"threads={self.threads} must be 0 (all cores) or more")
        if self.step_timeout < 0:
            raise UserError(f"step_timeout={self.step_timeout} must be 0 (no limit) or more")
        if self.workers < 0 or self.group_size < 0:
            raise UserError(f"workers={self.workers}, group_size={self.group_size} must be 0 "
                            "(the default) or more")
        if self.link_precision not in ("float32", "bfloat16"):
            raise UserError(f"link_precision={self.link_precision!r} must be float32 or "
                            "bfloat16")
        if self.data_parts < 0:
            raise UserError(f"data_parts={self.data_parts} must be 0 (one per group) or more")
        hosts = self.host_list
        if any(not h or " " in h for h in hosts) or len(set(hosts)) < len(hosts):
            raise UserError(f"hosts={self.hosts!r} must be distinct host names separated by "
                            "commas, such as h1,h2")
