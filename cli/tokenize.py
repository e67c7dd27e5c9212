"""`cllm tokenize`: tokenizers on their own (train, encode, decode, statistics)."""

from __future__ import annotations

import sys
from pathlib import Path


def add(sub) -> None:
    p = sub.add_parser("tokenize", help="train a tokenizer; encode, decode, statistics")
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = tsub.add_parser("train", help="train a byte-level BPE tokenizer")
    t.add_argument("--data", nargs="+", required=True, metavar="PATH")
    t.add_argument("--out", required=True, metavar="FILE", help="where to write tokenizer.json")
    t.add_argument("--vocab-size", type=int, default=4096)
    e = tsub.add_parser("encode", help="print the token ids of a text")
    e.add_argument("--tokenizer", required=True, metavar="FILE")
    e.add_argument("text", nargs="?", help="the text (default: standard input)")
    d = tsub.add_parser("decode", help="print the text of token ids")
    d.add_argument("--tokenizer", required=True, metavar="FILE")
    d.add_argument("ids", nargs="*", type=int, help="the ids (default: standard input)")
    s = tsub.add_parser("stats", help="vocabulary size, tokens and bytes per token of a corpus")
    s.add_argument("--tokenizer", required=True, metavar="FILE")
    s.add_argument("--data", nargs="+", required=True, metavar="PATH")
    p.set_defaults(run=run)


def run(args, config) -> int:
    from engine.data import iter_documents
    from engine.tokenizer import Tokenizer

    if args.action == "train":
        tokenizer = Tokenizer.train(iter_documents([Path(p) for p in args.data]), args.vocab_size)
        tokenizer.save(Path(args.out))
        print(f"tokenizer written to {args.out}: {tokenizer.vocab_size} tokens, "
              f"sha256 {tokenizer.sha256}")
        return 0
    tokenizer = Tokenizer.load(Path(args.tokenizer))
    if args.action == "encode":
        text = args.text if args.text is not None else sys.stdin.read()
        print(" ".join(map(str, tokenizer.encode(text))))
    elif args.action == "decode":
        ids = args.ids or [int(t) for t in sys.stdin.read().split()]
        print(tokenizer.decode(ids))
    else:
        stats = tokenizer.stats(iter_documents([Path(p) for p in args.data]))
        for key, value in stats.items():
            print(f"{key}: {value}")
    return 0
