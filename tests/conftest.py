"""Settings shared by every test."""

import torch

# The tests run small tensors, for which one thread beats two: no fork/join per operation, and no stall when
# another process (a DataLoader worker, a torchrun rank) holds the second core.
torch.set_num_threads(1)
