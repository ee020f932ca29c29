"""Gradient-inversion attacks (DLG, iDLG, Inverting Gradients, FedAvg unrolling) and metrics.

Pure PyTorch, no simulation: an attack receives an :class:`Observation` (observed tensors plus
a :class:`ForwardModel` that simulates them for a candidate input) and returns an
:class:`AttackResult`.  Scheme adapters (FedPAQ, KeyNet, ENN) only add forward models.
"""

from fedsim.attacks.defences import Defence, GaussianNoise, Pruning, relative_error
from fedsim.attacks.dlg import DLG, IDLG, DlgConfig, dlg_attack
from fedsim.attacks.inverting import (
    IG_FEDAVG_SINGLE,
    IG_LIBRARY_DEFAULT,
    IG_PAPER_LENET,
    InvertingConfig,
    inverting_attack,
)
from fedsim.attacks.labels import bias_sign_labels, idlg_label, infer_labels
from fedsim.attacks.metrics import (
    ReconstructionMetrics,
    evaluate,
    label_accuracy,
    lpips_distance,
    match_order,
    psnr,
    ssim,
)
from fedsim.attacks.observation import (
    ForwardModel,
    GradientForwardModel,
    Normalization,
    Observation,
    UnrolledFedAvgForwardModel,
    observe,
)
from fedsim.attacks.plotting import save_reconstruction_grid
from fedsim.attacks.result import AttackResult
from fedsim.attacks.trial import gradient_trial

__all__ = [
    "DLG",
    "IDLG",
    "IG_FEDAVG_SINGLE",
    "IG_LIBRARY_DEFAULT",
    "IG_PAPER_LENET",
    "AttackResult",
    "Defence",
    "DlgConfig",
    "ForwardModel",
    "GaussianNoise",
    "GradientForwardModel",
    "InvertingConfig",
    "Normalization",
    "Observation",
    "Pruning",
    "ReconstructionMetrics",
    "UnrolledFedAvgForwardModel",
    "bias_sign_labels",
    "dlg_attack",
    "evaluate",
    "gradient_trial",
    "idlg_label",
    "infer_labels",
    "inverting_attack",
    "label_accuracy",
    "lpips_distance",
    "match_order",
    "observe",
    "psnr",
    "relative_error",
    "save_reconstruction_grid",
    "ssim",
]
