"""Shared test set-up: one PyTorch thread (the test machine's cores are shared)."""

import torch

torch.set_num_threads(1)

from fedsim import plugins  # noqa: F401 (registers the built-in plug-ins before any config is validated)
