"""Exact snapshots of trainable weights, so that a test-time tuner resets bit for bit and fast.

Kept apart from :mod:`._models` (loading models and attaching adapters): the snapshot is what
:class:`~qdrant_sift.finetune.TestTimeTuner` restores between prompts, whatever the model.
"""

from __future__ import annotations

import torch

__all__ = ["WeightSnapshot"]


class WeightSnapshot:
    """Exact saved copies of parameters, restored with one copy per (device, dtype) group.

    The parameters are re-pointed into contiguous flat buffers (``p.data`` becomes a view), so a
    restore is one memcpy instead of one kernel per tensor (hundreds of LoRA matrices, each an
    OpenMP barrier that stalls for a whole time slice on a busy CPU). Tensors that start at exactly
    +0.0 (LoRA's B) are restored by zero-filling, without a saved copy. If something re-allocates
    a parameter later (``model.to(...)``), restore notices and falls back to per-tensor copies.
    """

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self._params = list(params)
        self._groups: list[tuple[list[torch.nn.Parameter], torch.Tensor, torch.Tensor | None]] = []
        self._flatten()

    def _flatten(self) -> None:
        grouped: dict[tuple[torch.device, torch.dtype, bool], list[torch.nn.Parameter]] = {}
        for p in self._params:
            zero = not bool(p.detach().contiguous().view(torch.uint8).any())
            grouped.setdefault((p.device, p.dtype, zero), []).append(p)
        self._groups = []
        with torch.no_grad():
            for (device, dtype, zero), ps in grouped.items():
                live = torch.empty(sum(p.numel() for p in ps), dtype=dtype, device=device)
                offset = 0
                for p in ps:
                    view = live[offset : offset + p.numel()].view(p.shape)
                    view.copy_(p.detach())
                    p.data = view
                    offset += p.numel()
                self._groups.append((ps, live, None if zero else live.clone()))
        self._pointers = [p.data_ptr() for p in self._params]

    def _initial_views(self) -> list[tuple[torch.nn.Parameter, torch.Tensor | None]]:
        out: list[tuple[torch.nn.Parameter, torch.Tensor | None]] = []
        for ps, _, saved in self._groups:
            offset = 0
            for p in ps:
                n = p.numel()
                out.append((p, None if saved is None else saved[offset : offset + n]))
                offset += n
        return out

    def _intact(self) -> bool:
        return [p.data_ptr() for p in self._params] == self._pointers

    def restore(self) -> None:
        """Write the saved values back, bit for bit, and drop gradients."""
        with torch.no_grad():
            if self._intact():
                for _, live, saved in self._groups:
                    if saved is None:
                        live.zero_()
                    else:
                        live.copy_(saved)
            else:  # re-allocated parameters: copy one by one, then flatten again
                for p, saved in self._initial_views():
                    if saved is None:
                        p.zero_()
                    else:
                        p.copy_(saved.view(p.shape))
                self._flatten()
        for p in self._params:
            p.grad = None

    def matches(self) -> bool:
        """True when every parameter equals its saved value bit for bit."""
        for p, saved in self._initial_views():
            current = p.detach().contiguous()
            if saved is None:
                if current.view(torch.uint8).any():
                    return False
            elif not torch.equal(current, saved.view(p.shape).to(current.device)):
                return False
        return True
