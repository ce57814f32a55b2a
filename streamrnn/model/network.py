"""The forecasting network: a stacked stateful RNN (Elman/GRU/LSTM) with a linear forecast head.

This module owns the network definition (:class:`NetworkConfig`, :class:`ForecastNet`) and the flat per-stream
state layout. It must not touch streams, rows, normalization, files or threads: batching rows of the state table,
saving weights and training loops live elsewhere (``model.stepper``, ``model.artifact``, ``training.trainer``).

State layout
------------
The recurrent state of one stream is ONE flat float vector of ``state_size = num_layers * hidden_size * k``
values (``k = 2`` for LSTM, else 1), so that all streams' states form one dense ``[streams, state_size]`` table.
Layer ``l`` owns columns ``[l*k*H, (l+1)*k*H)``; inside that block an LSTM keeps ``h`` first then ``c``::

    gru/rnn: [ h_0 | h_1 | ... | h_{L-1} ]
    lstm:    [ h_0 | c_0 | h_1 | c_1 | ... ]

``h`` is the raw cell output (before the optional LayerNorm, which only feeds the layer above and the head).

Dropout follows Gal & Ghahramani (variational RNN dropout): in training mode one input mask per layer (on that
layer's input) and one recurrent mask per layer (on ``h_{t-1}`` where it enters the hidden-to-hidden product) are
sampled once per :meth:`ForecastNet.forward` call and reused at every timestep. Eval mode applies no dropout.

>>> cfg = NetworkConfig(cell="gru", n_features=2, hidden_size=8, targets=(0,))
>>> net = ForecastNet(cfg).eval()
>>> x = torch.randn(3, 5, 2)
>>> y, state = net(x)
>>> tuple(y.shape), tuple(state.shape), net.state_size
((3, 5, 1), (3, 8), 8)
>>> s = net.initial_state(3)
>>> for t in range(5):
...     y_t, s = net.step(x[:, t], s)
>>> bool(torch.allclose(y_t, y[:, -1], atol=1e-5)) and bool(torch.allclose(s, state, atol=1e-5))
True
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Mapping

import torch
from torch import nn
from torch.nn import functional as F

CellKind = Literal["rnn", "gru", "lstm"]
_CELLS: dict[str, type[nn.Module]] = {"rnn": nn.RNNCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``'auto'`` → cuda when available, else cpu; anything else is passed to :class:`torch.device`.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of a :class:`ForecastNet`. ``targets`` are feature indices forecast ``horizon`` steps ahead.

    >>> NetworkConfig.from_dict(NetworkConfig(cell="lstm", num_layers=2).to_dict()).state_size
    256
    """

    cell: CellKind = "gru"
    n_features: int = 1
    hidden_size: int = 64
    num_layers: int = 1
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    layer_norm: bool = False
    targets: tuple[int, ...] = (0,)
    horizon: int = 1
    # Forecast = the current value of each target + the head's output: the network learns a correction to the
    # naive "same as last value" forecast instead of the level itself, which generalizes across streams.
    skip: bool = True

    def __post_init__(self) -> None:
        # Normalize list → tuple so that configs read from JSON compare equal to constructed ones.
        try:
            object.__setattr__(self, "targets", tuple(int(t) for t in self.targets))
        except (TypeError, ValueError) as e:
            raise ValueError(f"targets: must be a sequence of feature indices, got {self.targets!r}") from e
        if self.cell not in _CELLS:
            raise ValueError(f"cell: must be one of {sorted(_CELLS)}, got {self.cell!r}")
        for name in ("n_features", "hidden_size", "num_layers", "horizon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
            object.__setattr__(self, name, int(value))  # numpy ints → int, so to_dict stays JSON-ready
        for name in ("input_dropout", "recurrent_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name}: must be a probability in [0, 1), got {value!r}")
        if not isinstance(self.layer_norm, bool):
            raise ValueError(f"layer_norm: must be a bool, got {self.layer_norm!r}")
        if not self.targets:
            raise ValueError("targets: must name at least one feature index")
        if len(set(self.targets)) != len(self.targets) or not all(0 <= t < self.n_features for t in self.targets):
            raise ValueError(f"targets: must be distinct indices in [0, {self.n_features}), got {self.targets!r}")

    @property
    def state_size(self) -> int:
        return self.num_layers * self.hidden_size * (2 if self.cell == "lstm" else 1)

    @property
    def n_targets(self) -> int:
        return len(self.targets)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NetworkConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]}: unknown NetworkConfig field")
        return cls(**dict(d))


class ForecastNet(nn.Module):
    """Stacked RNN forecaster over a flat per-stream state; see the module docstring for the state layout.

    ``forward`` and ``step`` share the per-timestep code (``_step``), so stepping one value at a time reproduces
    ``forward``. On CUDA, ``forward`` takes a fused path (torch's whole-sequence RNN kernels, i.e. cuDNN, run one
    layer at a time on the cells' own parameters) whenever no recurrent dropout is active; ``fused=True/False``
    forces either path (the tests check both give the same outputs).
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        cell_cls = _CELLS[config.cell]
        h = config.hidden_size
        # The cells are parameter containers (standard names and init); the math calls torch's functional cells.
        self.cells = nn.ModuleList(
            cell_cls(config.n_features if i == 0 else h, h) for i in range(config.num_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(config.num_layers)) if config.layer_norm else None
        self.head = nn.Linear(h, config.n_targets)
        self.register_buffer("_target_index", torch.tensor(config.targets, dtype=torch.long), persistent=False)
        self._k = 2 if config.cell == "lstm" else 1

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def state_size(self) -> int:
        return self.config.state_size

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        p = self.head.weight
        return torch.zeros(batch, self.state_size, device=p.device if device is None else device, dtype=p.dtype)

    def _unpack(self, state: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        h, k = self.config.hidden_size, self._k
        hs = [state[:, l * k * h : l * k * h + h] for l in range(self.config.num_layers)]
        cs = [state[:, l * k * h + h : (l + 1) * k * h] for l in range(self.config.num_layers)] if k == 2 else []
        return hs, cs

    def _pack(self, hs: list[torch.Tensor], cs: list[torch.Tensor]) -> torch.Tensor:
        if not cs and len(hs) == 1:
            return hs[0]  # the common case allocates nothing beyond the cell's own output
        parts = [t for pair in zip(hs, cs) for t in pair] if cs else hs
        return torch.cat(parts, dim=1)

    # -- dropout masks ---------------------------------------------------------------------------------------
    def _sample_masks(self, batch: int, ref: torch.Tensor) -> tuple[list | None, list | None]:
        """One input and one recurrent mask per layer (inverted dropout scaling), or None when inactive."""
        cfg = self.config
        if not self.training:
            return None, None

        def bern(p: float, width: int) -> torch.Tensor:
            return torch.empty(batch, width, device=ref.device, dtype=ref.dtype).bernoulli_(1.0 - p) / (1.0 - p)

        in_masks = rec_masks = None
        if cfg.input_dropout > 0:
            in_masks = [bern(cfg.input_dropout, cfg.n_features if l == 0 else cfg.hidden_size)
                        for l in range(cfg.num_layers)]
        if cfg.recurrent_dropout > 0:
            rec_masks = [bern(cfg.recurrent_dropout, cfg.hidden_size) for _ in range(cfg.num_layers)]
        return in_masks, rec_masks

    # -- one timestep (shared by forward's loop path and step) ------------------------------------------------
    def _step(self, x: torch.Tensor, hs: list[torch.Tensor], cs: list[torch.Tensor],
              in_masks: list | None, rec_masks: list | None) -> tuple[torch.Tensor, list, list]:
        """Advance every layer one step; returns the top layer's output (normalized if layer_norm)."""
        kind = self.config.cell
        new_h: list[torch.Tensor] = []
        new_c: list[torch.Tensor] = []
        for l, cell in enumerate(self.cells):
            if in_masks is not None:
                x = x * in_masks[l]
            h = hs[l]
            if kind == "gru":
                if rec_masks is None:
                    h = torch.gru_cell(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
                else:
                    # Gal: drop h only inside the hidden-to-hidden product, not in GRU's (1-z)*n + z*h blend.
                    gi = F.linear(x, cell.weight_ih, cell.bias_ih)
                    gh = F.linear(h * rec_masks[l], cell.weight_hh, cell.bias_hh)
                    i_r, i_z, i_n = gi.chunk(3, 1)
                    h_r, h_z, h_n = gh.chunk(3, 1)
                    r = torch.sigmoid(i_r + h_r)
                    z = torch.sigmoid(i_z + h_z)
                    n = torch.tanh(i_n + r * h_n)
                    h = n + z * (h - n)
            elif kind == "lstm":
                hin = h if rec_masks is None else h * rec_masks[l]
                h, c = torch.lstm_cell(x, (hin, cs[l]), cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
                new_c.append(c)
            else:
                hin = h if rec_masks is None else h * rec_masks[l]
                h = torch.rnn_tanh_cell(x, hin, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
            new_h.append(h)
            x = h if self.norms is None else self.norms[l](h)
        return x, new_h, new_c

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One timestep for a batch of streams: ``x_t [B, F]``, ``state [B, S]`` → ``(forecast [B, n_targets], state)``.

        Meant for inference (wrap calls in ``torch.inference_mode()``). In training mode each call is a sequence of
        length one, so dropout masks are resampled per call; train with :meth:`forward` instead.
        """
        hs, cs = self._unpack(state)
        in_masks, rec_masks = self._sample_masks(x_t.shape[0], x_t)
        top, hs, cs = self._step(x_t, hs, cs, in_masks, rec_masks)
        forecast = F.linear(top, self.head.weight, self.head.bias)
        if self.config.skip:
            forecast = forecast + x_t.index_select(1, self._target_index)
        return forecast, self._pack(hs, cs)

    # -- whole sequences -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None,
                fused: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, T, F]``, ``state [B, S]`` or None (zeros) → ``(forecast [B, T, n_targets], final state [B, S])``.

        ``fused=None`` picks the fused whole-sequence kernels on CUDA when they apply (no recurrent dropout in
        training); ``fused=False`` forces the per-step loop; ``fused=True`` forces the fused kernels (on any device)
        and raises if they cannot apply.
        """
        if x.dim() != 3 or x.shape[2] != self.config.n_features:
            raise ValueError(f"x: expected [batch, time, {self.config.n_features}], got {tuple(x.shape)}")
        batch = x.shape[0]
        if state is None:
            state = self.initial_state(batch, x.device)
        elif state.shape != (batch, self.state_size):
            raise ValueError(f"state: expected {(batch, self.state_size)}, got {tuple(state.shape)}")
        in_masks, rec_masks = self._sample_masks(batch, x)
        can_fuse = rec_masks is None
        if fused and not can_fuse:
            raise ValueError("fused=True: the fused path cannot apply recurrent dropout in training mode")
        hs, cs = self._unpack(state)
        if fused is None:
            # Measured on CPU (1 thread, GRU H=64, T=64, B=256): torch's CPU sequence kernel is no faster than the
            # step loop, so the fused path is taken by default only on CUDA, where it is one cuDNN call per layer.
            fused = can_fuse and x.is_cuda
        if fused:
            top, hs, cs = self._forward_fused(x, hs, cs, in_masks)
        else:
            outs = []
            for t in range(x.shape[1]):
                out, hs, cs = self._step(x[:, t], hs, cs, in_masks, rec_masks)
                outs.append(out)
            top = torch.stack(outs, dim=1)
        forecast = F.linear(top, self.head.weight, self.head.bias)
        if self.config.skip:
            forecast = forecast + x.index_select(2, self._target_index)
        return forecast, self._pack(hs, cs)

    def _forward_fused(self, x: torch.Tensor, hs: list, cs: list, in_masks: list | None):
        """Layer by layer over the whole sequence with torch's RNN kernels on the cells' own parameters."""
        if x.is_cuda:
            # cuDNN warns that the cells' separate weight tensors are not one flat buffer (it packs them per call,
            # cheap beside the sequence); the warning says nothing actionable here.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
                return self._forward_fused_layers(x, hs, cs, in_masks)
        return self._forward_fused_layers(x, hs, cs, in_masks)

    def _forward_fused_layers(self, x: torch.Tensor, hs: list, cs: list, in_masks: list | None):
        kind = self.config.cell
        new_h, new_c = [], []
        for l, cell in enumerate(self.cells):
            if in_masks is not None:
                x = x * in_masks[l].unsqueeze(1)  # the same mask at every timestep
            params = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
            h0 = hs[l].unsqueeze(0).contiguous()
            # args: input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first
            if kind == "gru":
                x, h = torch._VF.gru(x, h0, params, True, 1, 0.0, self.training, False, True)
            elif kind == "lstm":
                x, h, c = torch._VF.lstm(x, (h0, cs[l].unsqueeze(0).contiguous()), params, True, 1, 0.0,
                                         self.training, False, True)
                new_c.append(c[0])
            else:
                x, h = torch._VF.rnn_tanh(x, h0, params, True, 1, 0.0, self.training, False, True)
            new_h.append(h[0])
            if self.norms is not None:
                x = self.norms[l](x)
        return x, new_h, new_c
