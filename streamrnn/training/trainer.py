"""Offline training of a :class:`~streamrnn.model.network.ForecastNet` on windows of history.

This module owns the training loop: windows per series (:mod:`streamrnn.training.windows`), seeded shuffling,
masked MSE, Adam with gradient clipping, early stopping on validation MSE (best weights restored) and the metrics
that go into a model card. It must not touch files, registries, Kafka or the serving state: saving is
:mod:`streamrnn.lifecycle.artifact`'s job, deciding when to train is the scheduler's.

Reproducibility: the run seeds its own fork of torch's RNG (the caller's RNG state is restored afterwards) and a
numpy Generator for shuffling; on CPU with the same ``threads`` the same inputs give the same weights.

>>> t = np.arange(600, dtype=np.float32)
>>> res = train([np.sin(2 * np.pi * t / 25)], NetworkConfig(hidden_size=8),
...             TrainConfig(window=32, stride=4, max_epochs=2, batch_size=64))
>>> res.metrics["epochs_run"], res.metrics["device"]
(2, 'cpu')
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from streamrnn.model.network import ForecastNet, NetworkConfig, resolve_device
from streamrnn.training.windows import WindowSet, split_windows


class NotEnoughData(ValueError):
    """The series are too short for one training and one validation window (the caller's data, not a bug)."""


@dataclass
class TrainConfig:
    """Training hyper-parameters. ``max_windows`` caps the training (and validation) windows by a seeded random
    subset; ``gap`` leaves values unused between train and validation (see ``windows``); ``clip_norm`` is the
    global gradient-norm clip."""

    window: int = 64
    horizon: int = 1
    stride: int = 8
    val_fraction: float = 0.2
    batch_size: int = 256
    max_epochs: int = 30
    patience: int = 4
    lr: float = 3e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    threads: int = 1
    max_windows: int | None = None
    clip_norm: float = 1.0
    gap: int = 0

    def __post_init__(self) -> None:
        for name in ("window", "horizon", "stride", "batch_size", "max_epochs", "patience", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {v!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: must be in (0, 1), got {self.val_fraction!r}")
        if self.lr < 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr: must be >= 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay!r}")
        if not self.clip_norm > 0:
            raise ValueError(f"clip_norm: must be > 0, got {self.clip_norm!r}")
        if self.max_windows is not None and (not isinstance(self.max_windows, int) or self.max_windows < 1):
            raise ValueError(f"max_windows: must be None or an integer >= 1, got {self.max_windows!r}")
        if not isinstance(self.gap, int) or self.gap < 0:
            raise ValueError(f"gap: must be an integer >= 0, got {self.gap!r}")
        try:
            resolve_device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device: {self.device!r} is not 'auto' or a torch device ({e})") from e

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]}: unknown TrainConfig field")
        return cls(**dict(d))


@dataclass
class TrainResult:
    """The trained model (best validation epoch, eval mode, on CPU), its metrics and the per-epoch history.

    metrics: ``train_mse`` (returned model on the training windows), ``val_mse``, ``val_mae``, ``naive_val_mae``
    and ``naive_val_mse`` (forecast y[t+h] = y[t] on exactly the same validation targets), ``best_epoch``,
    ``epochs_run``, ``stopped_early``, ``n_train_windows``, ``n_val_windows``, ``n_val_targets``, ``n_series``,
    ``device``, ``wall_s``.
    """

    model: ForecastNet
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    net_config: NetworkConfig | None = None
    train_config: TrainConfig | None = None

    def card(self, **extra: Any) -> dict[str, Any]:
        """A model card for :func:`streamrnn.lifecycle.artifact.save_artifact` (add data range, parent, ...)."""
        card: dict[str, Any] = {"metrics": dict(self.metrics)}
        if self.train_config is not None:
            card["train"] = self.train_config.to_dict()
        card.update(extra)
        return card


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries where ``mask`` is True (0 when none is).

    >>> masked_mse(torch.tensor([1.0, 5.0]), torch.tensor([0.0, 0.0]), torch.tensor([True, False]))
    tensor(1.)
    """
    m = mask.to(pred.dtype)
    return ((pred - target) ** 2 * m).sum() / m.sum().clamp(min=1.0)


def _usable(ws: WindowSet) -> WindowSet:
    # A window without a single usable target contributes nothing but cost.
    keep = ws.M.any(axis=(1, 2))
    return ws if keep.all() else WindowSet(ws.X[keep], ws.Y[keep], ws.M[keep])


def _cap(ws: WindowSet, n: int | None, rng: np.random.Generator) -> WindowSet:
    if n is None or ws.n <= n:
        return ws
    keep = np.sort(rng.choice(ws.n, size=n, replace=False))
    return WindowSet(ws.X[keep], ws.Y[keep], ws.M[keep])


def _evaluate(model: ForecastNet, X: torch.Tensor, Y: torch.Tensor, M: torch.Tensor,
              batch: int) -> dict[str, float]:
    model.eval()
    sq = torch.zeros((), dtype=torch.float64, device=X.device)
    ab = torch.zeros((), dtype=torch.float64, device=X.device)
    with torch.inference_mode():
        for s in range(0, X.shape[0], batch):
            out, _ = model(X[s:s + batch])
            err = (out - Y[s:s + batch]) * M[s:s + batch]
            sq += (err ** 2).sum(dtype=torch.float64)
            ab += err.abs().sum(dtype=torch.float64)
    n = max(float(M.sum().item()), 1.0)
    return {"mse": float(sq.item()) / n, "mae": float(ab.item()) / n}


def _impute_masked(x: np.ndarray, mask: np.ndarray | None, targets: Sequence[int]) -> np.ndarray:
    """Masked (anomalous) target values are replaced by the last usable one in the *inputs* too: with only the loss
    masked, an anomaly would still enter the model through its input (and through the skip connection) and the
    model would learn to follow it."""
    if mask is None:
        return x
    x = np.array(x, dtype=np.float32, copy=True)
    flat = x.reshape(len(x), -1)
    usable = np.asarray(mask, dtype=bool).reshape(len(x), -1).all(axis=1)
    if usable.all() or not usable.any():
        return x
    last_good = np.maximum.accumulate(np.where(usable, np.arange(len(x)), -1))
    fill = (~usable) & (last_good >= 0)
    for t in targets:
        flat[fill, t] = flat[last_good[fill], t]
    return x


def train(series: Sequence[np.ndarray], net_config: NetworkConfig, train_config: TrainConfig | None = None,
          masks: Sequence[np.ndarray | None] | None = None, init: ForecastNet | None = None,
          log: Callable[[dict[str, float]], None] | None = None,
          compare: Mapping[str, ForecastNet] | None = None) -> TrainResult:
    """Train a forecaster on ``series`` (each ``[T]`` or ``[T, n_features]``, already normalized).

    ``masks`` (one per series, ``[T]`` or ``[T, F]`` bool, True = usable, or None) remove targets from the loss and
    the metrics; ``init`` warm-starts from a copy of an existing network with the same config (not modified);
    ``log`` receives one dict per epoch (epoch, train_loss, val_mse, val_mae, seconds); each model of ``compare``
    (e.g. ``{"champion": net}``) is evaluated on exactly the same validation windows, as ``<name>_val_mae`` and
    ``<name>_val_mse`` in the metrics.
    """
    cfg = train_config or TrainConfig()
    if cfg.horizon != net_config.horizon:
        raise ValueError(f"horizon: TrainConfig.horizon={cfg.horizon} != NetworkConfig.horizon={net_config.horizon}")
    if init is not None and init.config != net_config:
        raise ValueError(f"init: its config {init.config} differs from net_config {net_config}")
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    rng = np.random.default_rng(cfg.seed)

    if masks is not None:
        series = [_impute_masked(x, m, net_config.targets) for x, m in zip(series, masks)]
    sets = split_windows(series, cfg.window, cfg.horizon, cfg.stride, net_config.targets, cfg.val_fraction,
                         masks=masks, gap=cfg.gap)
    tr, va = _cap(_usable(sets["train"]), cfg.max_windows, rng), _cap(_usable(sets["val"]), cfg.max_windows, rng)
    if tr.n and tr.X.shape[2] != net_config.n_features:
        raise ValueError(f"series: {tr.X.shape[2]} features, net_config.n_features={net_config.n_features}")
    need = math.ceil((cfg.window + cfg.horizon) / cfg.val_fraction)
    if tr.n == 0 or va.n == 0:
        raise NotEnoughData(f"series: no {'training' if tr.n == 0 else 'validation'} windows with a usable target; "
                         f"a series needs about {need}+ values for window={cfg.window}, horizon={cfg.horizon}, "
                         f"val_fraction={cfg.val_fraction}")

    # The naive forecast of y[t+h] is y[t]: the target features of the input at the same step.
    tgt = list(net_config.targets)
    naive_err = (va.X[:, :, tgt] - va.Y)[va.M]
    naive_mae = float(np.abs(naive_err, dtype=np.float64).mean())
    naive_mse = float(np.square(naive_err, dtype=np.float64).mean())

    def dev(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    Xt, Yt, Mt = dev(tr.X), dev(tr.Y), dev(tr.M)
    Xv, Yv, Mv = dev(va.X), dev(va.Y), dev(va.M)
    m_count = tr.M.reshape(tr.n, -1).sum(axis=1)  # per window, CPU side: no device sync per batch

    prev_threads = torch.get_num_threads()
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    history: list[dict[str, float]] = []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(cfg.seed)
        if device.type == "cpu":
            torch.set_num_threads(cfg.threads)
        try:
            model = copy.deepcopy(init) if init is not None else ForecastNet(net_config)
            model = model.to(device)
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            best = (math.inf, 0, copy.deepcopy(model.state_dict()))
            stopped_early = False
            for epoch in range(1, cfg.max_epochs + 1):
                t_epoch = time.perf_counter()
                model.train()
                perm = rng.permutation(tr.n)
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                for s in range(0, tr.n, cfg.batch_size):
                    idx_np = perm[s:s + cfg.batch_size]
                    idx = torch.from_numpy(idx_np).to(device)
                    out, _ = model(Xt[idx])
                    loss = masked_mse(out, Yt[idx], Mt[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
                    opt.step()
                    loss_sum += loss.detach().double() * float(m_count[idx_np].sum())
                val = _evaluate(model, Xv, Yv, Mv, cfg.batch_size)
                rec = {"epoch": epoch, "train_loss": float(loss_sum.item()) / float(m_count.sum()),
                       "val_mse": val["mse"], "val_mae": val["mae"], "seconds": time.perf_counter() - t_epoch}
                history.append(rec)
                if log is not None:
                    log(rec)
                if val["mse"] < best[0]:
                    best = (val["mse"], epoch, copy.deepcopy(model.state_dict()))
                elif epoch - best[1] >= cfg.patience:
                    stopped_early = epoch < cfg.max_epochs
                    break
            model.load_state_dict(best[2])
            final_val = _evaluate(model, Xv, Yv, Mv, cfg.batch_size)
            final_train = _evaluate(model, Xt, Yt, Mt, cfg.batch_size)
            compared = {}
            for name, other in (compare or {}).items():
                # A copy: the caller's (serving) network keeps its device and mode.
                result = _evaluate(copy.deepcopy(other).to(device), Xv, Yv, Mv, cfg.batch_size)
                compared[f"{name}_val_mae"], compared[f"{name}_val_mse"] = result["mae"], result["mse"]
        finally:
            if device.type == "cpu":
                torch.set_num_threads(prev_threads)

    metrics = {
        "train_mse": final_train["mse"], "val_mse": final_val["mse"], "val_mae": final_val["mae"],
        "naive_val_mae": naive_mae, "naive_val_mse": naive_mse, "best_epoch": best[1], "epochs_run": len(history),
        "stopped_early": stopped_early, "n_train_windows": tr.n, "n_val_windows": va.n,
        "n_val_targets": int(va.M.sum()), "n_series": len(series), "device": str(device),
        "wall_s": time.perf_counter() - t_start, **compared,
    }
    return TrainResult(model=model.cpu().eval(), metrics=metrics, history=history, net_config=net_config,
                       train_config=cfg)
