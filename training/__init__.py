"""Training stages: the networks, losses and optimizers of each stage and its step (used by train.py and the
benchmark)."""
