"""Analytic label recovery from the last layer's gradient (iDLG and bias-sign rules).

For one sample and cross-entropy, ``∂L/∂z_i = softmax_i − 1[i = c]`` is negative only at the
true class ``c``.  The last layer's weight-gradient row ``i`` is that scalar times the layer's
input; when the input is non-negative (after a sigmoid or ReLU) the true class is the only row
with a negative sum, and the bias gradient is negative only at ``c``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from fedsim.attacks.observation import Observation


def idlg_label(weight_grad: Tensor) -> int:
    """iDLG rule: the class whose last-layer weight-gradient row has the smallest sum.

    Parameters
    ----------
    weight_grad
        Gradient of the last Linear layer's weight, shape ``(num_classes, features)``.
    """
    return int(torch.argmin(weight_grad.sum(dim=-1)))


def bias_sign_labels(bias_grad: Tensor, batch_size: int) -> Tensor:
    """Bias-sign rule: the classes with negative last-layer bias gradient.

    Exact for one sample, and for a batch of distinct labels when every negative entry belongs
    to a present class.  If fewer than ``batch_size`` entries are negative (repeated labels),
    the most negative class fills the remaining slots; if more, the most negative are kept.

    Parameters
    ----------
    bias_grad
        Gradient of the last Linear layer's bias, shape ``(num_classes,)``.
    batch_size
        Number of labels to return.

    Returns
    -------
    Tensor
        Class indices, shape ``(batch_size,)``, ascending by bias gradient.
    """
    order = torch.argsort(bias_grad)
    negative = order[bias_grad[order] < 0][:batch_size]
    if negative.numel() == 0:
        negative = order[:1]
    fill = negative[:1].repeat(batch_size - negative.numel())
    return torch.cat([negative, fill])


def infer_labels(
    observation: Observation, rule: str, weight_index: int = -2, bias_index: int = -1
) -> Tensor:
    """Labels of the private batch from the observation's last-layer gradient.

    Parameters
    ----------
    observation
        Its forward model must expose gradients (:meth:`ForwardModel.as_gradients`).
    rule
        ``"idlg"`` (one sample only) or ``"bias"``.
    weight_index, bias_index
        Positions of the last layer's weight and bias in the observed tensor list.
    """
    grads: Sequence[Tensor] | None = observation.forward_model.as_gradients(observation.target)
    if grads is None:
        raise ValueError("this observation hides the gradients; analytic label rules do not apply")
    if rule == "idlg":
        if observation.batch_size != 1:
            raise ValueError('the "idlg" rule needs batch size 1; use "bias"')
        return torch.tensor([idlg_label(grads[weight_index])])
    if rule == "bias":
        return bias_sign_labels(grads[bias_index], observation.batch_size)
    raise ValueError(f'unknown label rule "{rule}"')
