"""`make demo`: train a small model on the shipped text with the real CLI, then generate.

Everything goes under CLLM_HOME (default ./var); each run trains a new model version
directory, so the demo can be run again and again.
"""

import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLLM = str(Path(sys.executable).with_name("cllm"))
PROMPTS = ["KING HENRY:", "To be, or not to be"]


def run(*args: str) -> subprocess.CompletedProcess:
    print(f"\n$ cllm {' '.join(args)}", flush=True)
    return subprocess.run([CLLM, *args], check=True, text=True, stdout=subprocess.PIPE)


def main() -> int:
    home = Path(os.environ.get("CLLM_HOME", ROOT / "var"))
    out = home / "demo" / datetime.now(timezone.utc).strftime("model-%Y%m%dT%H%M%SZ")
    started = time.monotonic()
    trained = run("train", "--data", str(ROOT / "data" / "text" / "shakespeare"), "--out", str(out),
                  "--steps", "300", "--n-layer", "4", "--n-head", "4", "--n-embd", "128",
                  "--seq-len", "64", "--batch-size", "16", "--vocab-size", "1024", "--lr", "3e-3")
    print(trained.stdout, end="")
    for prompt in PROMPTS:
        generated = run("generate", "--model", str(out), "--prompt", prompt, "--max-tokens", "80",
                        "--seed", "1")
        print(generated.stdout, end="")
    print(f"\nDemo done in {time.monotonic() - started:.0f} s. The model version is {out}; try\n"
          f"  .venv/bin/cllm generate --model {out} --interactive")
    return 0


if __name__ == "__main__":
    sys.exit(main())
