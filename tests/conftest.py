"""Shared test set-up: one PyTorch thread (the test machine's cores are shared)."""

import torch

torch.set_num_threads(1)
