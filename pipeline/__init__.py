"""Configuration, the `cllm` command line and the continuous-learning steps."""
