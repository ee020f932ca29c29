"""Where a run trains: its torch device, and the one way tensors and models get onto it.

Layer 1 (pure PyTorch). Everything model-side (the model, the training data, index batches) lives
on the run's device; everything wire-side (flat wire vectors, codecs, KeyNet ciphers, the attack
harness) lives on the host CPU, because it becomes bytes. The only way onto the device is a
:class:`Placement`: code never writes ``device=x.device`` for a tensor it creates, so the
``guard`` placement can emulate a separate accelerator on a CPU-only machine.

``compute.torch_device`` values:

* ``auto``: ``cuda`` when a GPU is visible, else ``cpu``;
* ``cpu``, ``cuda``, ``cuda:N``: that device (a CUDA request without a GPU is an error);
* ``guard``: a development check. Training runs on the CPU, but device-resident tensors are
  tagged (:class:`DeviceTensor`), and any operation that mixes a tagged tensor with an untagged
  host tensor of one or more dimensions raises, as CUDA would ("Expected all tensors to be on the
  same device"). It is stricter than CUDA in one way: a host index tensor that indexes a device
  tensor also raises, because on a GPU that is a hidden host-to-device copy (a stream sync) per
  step. Slow (a Python check per operation); results equal the ``cpu`` run's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?|guard)$"


class DeviceUnavailableError(RuntimeError):
    """The requested torch device does not exist on this machine."""


class Placement:
    """The run's torch device: moves host tensors and models onto it.

    Host tensors are pinned before a non-blocking copy to CUDA, so a copy never stalls the
    host thread behind queued kernels.
    """

    def __init__(self, device: torch.device):
        self.device = device

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def tensor(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on the run's device (``t`` itself when already there)."""
        if self.is_cuda and t.device.type == "cpu":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def module(self, model: nn.Module) -> nn.Module:
        """Move ``model``'s parameters and buffers onto the run's device (in place)."""
        return model.to(self.device)

    def kernel(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (a ``torch.func`` transform of device tensors) as it runs on the device."""
        return fn

    def info(self) -> dict[str, Any]:
        """For run_info: the device and, on CUDA, the GPU's name."""
        out: dict[str, Any] = {"torch_device": str(self.device)}
        if self.is_cuda:
            out["gpu_name"] = torch.cuda.get_device_name(self.device)
        return out


def resolve_placement(spec: str) -> Placement:
    """The :class:`Placement` for a ``compute.torch_device`` value.

    Raises
    ------
    ValueError
        ``spec`` is not one of ``auto | cpu | cuda | cuda:N | guard``.
    DeviceUnavailableError
        CUDA was asked for and is not available, or ``cuda:N`` does not exist.
    """
    if not re.match(DEVICE_PATTERN, spec):
        raise ValueError(f"unknown torch device {spec!r}; use auto, cpu, cuda, cuda:N or guard")
    if spec == "guard":
        return GuardedPlacement()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(f"torch device {spec!r}: no CUDA device is available "
                                         "(use auto or cpu)")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"torch device {spec!r}: only "
                                         f"{torch.cuda.device_count()} CUDA device(s)")
        # cuBLAS needs a fixed workspace for deterministic results (same seed, same tables)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return Placement(device)


# -- the guard: an emulated accelerator on the CPU ---------------------------------------------
_LEAVE_DEVICE = frozenset({
    torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.item, torch.Tensor.tolist,
    torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__, torch.Tensor.__index__,
})
#: Cross-device copies CUDA allows (the destination decides where the result lives).
_CROSS_DEVICE_OK = frozenset({torch.Tensor.copy_})


class DeviceTensor(torch.Tensor):
    """A CPU tensor tagged as living on the emulated device (see :class:`GuardedPlacement`)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _CROSS_DEVICE_OK:
            tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            if any(isinstance(t, DeviceTensor) for t in tensors):
                host = [tuple(t.shape) for t in tensors
                        if not isinstance(t, DeviceTensor) and t.dim() > 0]
                if host:
                    name = getattr(func, "__name__", str(func))
                    raise RuntimeError(f"device guard: {name} mixes device tensors with host "
                                       f"tensors of shape {host} (on CUDA this fails or syncs)")
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if func in _LEAVE_DEVICE:  # host values; ``cpu()`` of a CPU tensor returns itself: untag
            return out.as_subclass(torch.Tensor) if isinstance(out, torch.Tensor) else out
        return _tag(out)


def _tag(out: Any) -> Any:
    if isinstance(out, torch.Tensor) and not isinstance(out, DeviceTensor):
        return out.as_subclass(DeviceTensor)
    if isinstance(out, (tuple, list)):
        return type(out)(_tag(o) for o in out)
    return out


class GuardedPlacement(Placement):
    """``torch_device: guard``: CPU training where host/device mix-ups fail as they would on CUDA."""

    def __init__(self):
        super().__init__(torch.device("cpu"))

    def tensor(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().as_subclass(DeviceTensor)

    def module(self, model: nn.Module) -> nn.Module:
        for mod in model.modules():
            for name, p in mod._parameters.items():
                if p is not None and not isinstance(p, DeviceTensor):
                    mod._parameters[name] = nn.Parameter(p.detach().as_subclass(DeviceTensor),
                                                         requires_grad=p.requires_grad)
            for name, b in mod._buffers.items():
                if b is not None and not isinstance(b, DeviceTensor):
                    mod._buffers[name] = b.as_subclass(DeviceTensor)
        return model

    def kernel(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``torch.func`` transforms drop tensor subclasses: check ``fn``'s tensor inputs at the
        boundary (each must be on the device) and tag its outputs."""

        def guarded(*args: Any) -> Any:
            host = [tuple(t.shape) for t in tree_flatten(args)[0]
                    if isinstance(t, torch.Tensor) and not isinstance(t, DeviceTensor)]
            if host:
                raise RuntimeError(f"device guard: a device kernel got host tensors of shape "
                                   f"{host}")
            return tree_map(_tag, fn(*args))

        return guarded

    def info(self) -> dict[str, Any]:
        return {"torch_device": "guard"}


def on_device(t: torch.Tensor, placement: Placement) -> bool:
    """Whether ``t`` is where ``placement`` keeps model-side tensors."""
    if isinstance(placement, GuardedPlacement):
        return isinstance(t, DeviceTensor)
    return t.device == placement.device
