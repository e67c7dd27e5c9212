"""`cllm tokenize` through the real CLI, the tokenizer's streaming decode, and the config scheme."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from conftest import TEXT, run_cllm
from core.errors import UserError
from engine.tokenizer import EOT, Tokenizer
from pipeline.config import load_config


def test_tokenize_train_encode_decode_stats(home):
    out = home / "tokenizer.json"
    result = run_cllm("tokenize", "train", "--data", TEXT / "milton", "--out", out,
                      "--vocab-size", "600", home=home)
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"600 tokens, sha256 {sha}" in result.stdout
    text = "Of Man's first disobedience, and the fruit\nOf that forbidden tree — é"
    ids = run_cllm("tokenize", "encode", "--tokenizer", out, text, home=home).stdout.split()
    assert len(ids) < len(text.encode()) and all(0 <= int(i) < 600 for i in ids)
    decoded = run_cllm("tokenize", "decode", "--tokenizer", out, *ids, home=home).stdout
    assert decoded == text + "\n"
    stats = run_cllm("tokenize", "stats", "--tokenizer", out, "--data",
                     TEXT / "milton" / "comus.txt", home=home).stdout
    assert "documents: 1" in stats and "bytes_per_token:" in stats
    assert float(stats.split("bytes_per_token: ")[1].split()[0]) > 1.5  # BPE merges bytes


def test_end_of_text_is_one_token_and_streaming_waits_for_whole_characters():
    tokenizer = Tokenizer.train(["naïve café " * 50, "plain words " * 50], vocab_size=300)
    assert tokenizer.encode(EOT) == [tokenizer.eot_id]
    ids = tokenizer.encode("déjà vu ☃")
    pieces = list(tokenizer.stream_decode(ids))
    assert "".join(pieces) == "déjà vu ☃"
    assert all("\ufffd" not in piece for piece in pieces)
    assert len(pieces) > 1
    # any ids at all, bytes that are no UTF-8 among them: the pieces are the whole decode,
    # but for an unfinished character at the very end
    ids = np.random.default_rng(0).integers(0, tokenizer.vocab_size, 3000).tolist()
    whole = tokenizer.decode(ids)
    streamed = "".join(tokenizer.stream_decode(ids))
    assert whole.startswith(streamed) and (streamed == whole or whole.endswith("\ufffd"))
    assert len(whole) - len(streamed) < 10


def test_config_file_then_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cllm.toml").write_text('home = "/srv/cllm"\nregistry_attempts = 3\n[train]\n'
                                        'steps = 7\nlr = 0.01\n[model]\nn_layer = 3\n')
    config = load_config(environ={"CLLM_TRAIN_STEPS": "9", "CLLM_MODEL_N_HEAD": "8"})
    assert (config.home, config.registry_attempts) == (Path("/srv/cllm"), 3)
    assert (config.train.steps, config.train.lr) == (9, 0.01)
    assert (config.model.n_layer, config.model.n_head) == (3, 8)
    assert load_config(environ={"CLLM_REGISTRY_ATTEMPTS": "2"}).registry_attempts == 2
    assert load_config(environ={"CLLM_HOME": "/x"}).home == Path("/x")


@pytest.mark.parametrize("text, message", [
    ("[train]\nsteps = 'ten'\n", "must be int"),
    ("[train]\nsteps = 1.5\n", "must be int"),
    ("[nope]\nx = 1\n", "unknown setting 'nope'"),
    ("steps = [\n", "not valid TOML"),
    ("[model]\nn_embd = 30\nn_head = 4\n", "not divisible"),
    ("registry_attempts = 'five'\n", "setting registry_attempts in .* must be int"),
    ("registry_attempts = 0\n", "registry_attempts=0 must be at least 1"),
])
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_config(path, environ={})
