"""The naive "same as last value" forecaster, with the stepping interface of a ForecastNet.

It is the baseline every trained model must beat, and the model of last resort when no trained one fits the
configured inputs (the pipeline then still scores residuals of a sensible forecast).

>>> import torch
>>> net = persistence_net(n_inputs=3, targets=(0,), horizon=1)
>>> f, s = net.step(torch.tensor([[0.5, 1.0, 0.0]]), net.initial_state(1))
>>> f.tolist()
[[0.5]]
"""

from __future__ import annotations

import torch

from streamrnn.model.network import ForecastNet, NetworkConfig


class PersistenceNet(ForecastNet):
    """Forecast = the current input's target features; the (one-wide) state is unused."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__(config)
        self.register_buffer("_targets", torch.tensor(config.targets, dtype=torch.long), persistent=False)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x_t.index_select(1, self._targets), state

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None, fused: bool | None = None):
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        return x.index_select(2, self._targets), state


def persistence_net(n_inputs: int, targets: tuple[int, ...], horizon: int) -> PersistenceNet:
    config = NetworkConfig(cell="rnn", n_features=n_inputs, hidden_size=1, targets=tuple(targets), horizon=horizon)
    return PersistenceNet(config).eval()
