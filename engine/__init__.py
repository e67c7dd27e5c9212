"""The numpy language model: tokenizer, model, optimizer, training, checkpoints, generation."""
