"""Shared settings for the attack tests (one CPU thread: the machine is shared)."""

import torch

torch.set_num_threads(1)
