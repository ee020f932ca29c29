"""ENN (Li & Han 2019): encoder/decoder network that compresses updates and decodes only their mean.

Pure PyTorch, no simpy. The uplink codec built on it is :class:`fedsim.codecs.enn.EnnCodec`.
The paper gives no layer sizes, chunk length or code length: every size in
:class:`~fedsim.enn.config.EnnConfig` is fedsim's own choice. On i.i.d. Gaussian data a trained
end-to-end ENN lands at the best-linear-code bound ``(1 - m/n) v / N``, not at the paper's much
lower MSEs (see ``benchmarks/enn_mse_table.py``).
"""

from fedsim.enn.cache import cache_dir, load_or_train
from fedsim.enn.config import EnnConfig
from fedsim.enn.metrics import (
    approximation_mse,
    average_fidelity,
    linear_bound_mse,
    zero_baseline_mse,
)
from fedsim.enn.network import EnnNet
from fedsim.enn.pretrain import PretrainResult, train_enn

__all__ = [
    "EnnConfig", "EnnNet", "PretrainResult", "approximation_mse", "average_fidelity",
    "cache_dir", "linear_bound_mse", "load_or_train", "train_enn", "zero_baseline_mse",
]
