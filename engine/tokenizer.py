"""Byte-level BPE through Hugging Face `tokenizers`, with an end-of-text separator.

A tokenizer is the file `tokenizer.json`; its sha256 identifies it, so a model lineage can
check that it still encodes text the way its first version did.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from core.errors import UserError
from core.files import write_text

EOT = "<|endoftext|>"


class Tokenizer:
    def __init__(self, hf: HFTokenizer, json_text: str):
        self.hf = hf
        self.json_text = json_text
        self.eot_id = hf.token_to_id(EOT)
        if self.eot_id is None:
            raise UserError(f"tokenizer has no {EOT} token: train one with `cllm tokenize train`")

    @classmethod
    def train(cls, documents: Iterable[str], vocab_size: int = 4096) -> Tokenizer:
        if vocab_size < 257 + 1:
            raise UserError(f"vocab_size={vocab_size} is too small: byte-level BPE needs at least 258")
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        seen = False

        def counted():
            nonlocal seen
            for doc in documents:
                seen = seen or bool(doc.strip())
                yield doc

        hf.train_from_iterator(counted(), trainer=trainer)
        if not seen:
            raise UserError("no text to train a tokenizer on: the data holds no documents")
        return cls(hf, hf.to_str())

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        return cls(HFTokenizer.from_str(text), text)

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"tokenizer {path} does not exist") from None
        except UserError:
            raise
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise UserError(f"tokenizer {path} is not a valid tokenizer.json ({e}): "
                            "train a new one with `cllm tokenize train`") from None

    def save(self, path: Path) -> None:
        write_text(path, self.json_text)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.json_text.encode("utf-8")).hexdigest()

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    @property
    def dtype(self):
        """The smallest unsigned integer type that holds every token id."""
        return np.uint16 if self.vocab_size <= 2**16 else np.uint32

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def stats(self, documents: Iterable[str]) -> dict:
        docs = tokens = n_bytes = 0
        for doc in documents:
            docs += 1
            tokens += len(self.encode(doc))
            n_bytes += len(doc.encode("utf-8"))
        return {
            "vocab_size": self.vocab_size,
            "sha256": self.sha256,
            "documents": docs,
            "tokens": tokens,
            "bytes": n_bytes,
            "bytes_per_token": round(n_bytes / tokens, 3) if tokens else 0.0,
        }

    def stream_decode(self, ids: Iterable[int]) -> Iterator[str]:
        """Text pieces as tokens arrive; a piece waits until its UTF-8 bytes are complete.
        Only the tokens since the last piece are decoded (not all so far, each time): a
        piece ends with a whole character, so the bytes after it decode on their own."""
        pending: list[int] = []
        for token in ids:
            pending.append(token)
            text = self.decode(pending)
            if text.endswith("\ufffd"):
                continue
            yield text
            pending = []
