"""Training: each stage's networks, losses, optimizers and step (stages.py, steps.py), and the parts of the loop
train.py runs them through (loop.py: resume, batches, budget, lr schedule, logging, checkpoints; nonfinite.py: the
NaN/inf policy)."""
