"""A module holding exactly a given state dict, built without initialising (or allocating) its weights."""

from __future__ import annotations

from collections.abc import Callable

from accelerate import init_empty_weights
from torch import nn


def build_holding(build: Callable[[], nn.Module], state_dict: dict, *, what: str = "the checkpoint",
                  error: type[Exception] = ValueError) -> nn.Module:  # fmt: skip
    """`build()` with its parameters on the meta device (buffers stay real), then `state_dict`'s tensors assigned as they are (no random init, no
    second copy). Strict: a missing, unexpected or mis-shaped tensor raises `error` naming them, never a
    silent partial load. Returns the module in eval mode (callers that train call `.train()`)."""
    with init_empty_weights():
        module = build()
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
    shapes = [f"{k} {list(state_dict[k].shape)} vs {list(expected[k].shape)}" for k in sorted(set(expected) & set(state_dict))
              if state_dict[k].shape != expected[k].shape]  # fmt: skip
    if missing or unexpected or shapes:
        raise error(f"{what}: the tensors do not fit {type(module).__name__}: missing {missing[:6]} ({len(missing)}), unexpected "
                    f"{unexpected[:6]} ({len(unexpected)}), shapes (given vs model) {shapes[:4]}")  # fmt: skip
    module.load_state_dict(state_dict, strict=True, assign=True)
    return module.eval()
