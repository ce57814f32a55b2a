"""Training loop: learning beats the naive baseline, early stopping, reproducibility, masked loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamrnn.model.network import ForecastNet, NetworkConfig
from streamrnn.training.trainer import _impute_masked, TrainConfig, masked_mse, train
from streamrnn.training.windows import split_windows

T = np.arange(1200, dtype=np.float32)
SINE = np.sin(2 * np.pi * T / 25).astype(np.float32)
FAST = dict(window=32, stride=4, batch_size=32, lr=1e-2)


def test_trained_gru_beats_naive_on_seasonal_series():
    series = SINE + 0.5 * np.sin(2 * np.pi * T / 7.3).astype(np.float32)
    records = []
    res = train([series], NetworkConfig(hidden_size=16), TrainConfig(max_epochs=8, **FAST), log=records.append)
    m = res.metrics
    assert m["val_mae"] < 0.6 * m["naive_val_mae"], m
    assert m["val_mse"] < m["naive_val_mse"]
    assert m["device"] == "cpu" and m["epochs_run"] == len(res.history) == len(records) == 8
    assert m["n_train_windows"] == 232 and m["n_val_windows"] == 52 and m["n_val_targets"] == 52 * 32
    assert records[-1]["val_mse"] < records[0]["val_mse"] and m["wall_s"] > 0
    # the returned model is the best epoch's, on CPU, in eval mode; its val error is the reported one
    assert not res.model.training and res.model.head.weight.device.type == "cpu"
    assert m["val_mse"] == pytest.approx(min(r["val_mse"] for r in res.history))
    card = res.card(parent=None)
    assert card["train"]["window"] == 32 and card["metrics"]["val_mae"] == m["val_mae"] and card["parent"] is None


def test_naive_baseline_is_same_as_last_value_on_the_same_targets():
    series = np.cumsum(np.random.default_rng(0).normal(size=600)).astype(np.float32)
    h = 3
    res = train([series], NetworkConfig(hidden_size=4, horizon=h),
                TrainConfig(window=16, horizon=h, stride=5, max_epochs=1, val_fraction=0.25))
    va = split_windows([series], 16, h, 5, (0,), 0.25)["val"]
    direct = np.abs(va.X[:, :, 0] - va.Y[:, :, 0]).mean()  # forecast y[t+h] by y[t]
    lo = 450 + np.arange(0, 150 - 16 - h + 1, 5)  # the validation windows' starts, cut inside [450, 600)
    by_hand = np.mean([np.abs(series[s + h:s + 16 + h] - series[s:s + 16]).mean() for s in lo])
    assert res.metrics["naive_val_mae"] == pytest.approx(direct, rel=1e-6) == pytest.approx(by_hand, rel=1e-5)


def test_early_stopping_when_validation_stalls():
    # lr=0: the weights never change, so validation never improves after epoch 1
    res = train([SINE], NetworkConfig(hidden_size=8), TrainConfig(max_epochs=30, patience=3, **{**FAST, "lr": 0.0}))
    m = res.metrics
    assert m["epochs_run"] == 4 and m["best_epoch"] == 1 and m["stopped_early"]
    assert len({r["val_mse"] for r in res.history}) == 1


def test_best_weights_are_restored():
    res = train([SINE], NetworkConfig(hidden_size=8), TrainConfig(max_epochs=6, patience=6, **{**FAST, "lr": 0.3}))
    best = min(res.history, key=lambda r: r["val_mse"])
    assert res.metrics["best_epoch"] == best["epoch"]
    assert res.metrics["val_mse"] == pytest.approx(best["val_mse"], rel=1e-6)


def test_reproducible_with_same_seed_and_leaves_caller_rng_alone():
    net = NetworkConfig(hidden_size=8, input_dropout=0.2, recurrent_dropout=0.1)
    cfg = TrainConfig(max_epochs=2, **FAST)
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    a = train([SINE], net, cfg)
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's RNG stream is untouched
    assert torch.get_num_threads() == threads
    b = train([SINE], net, cfg)
    c = train([SINE], net, TrainConfig(max_epochs=2, seed=1, **FAST))
    assert a.history == [{**r, "seconds": x["seconds"]} for r, x in zip(b.history, a.history)]
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert not torch.equal(a.model.head.weight, c.model.head.weight)


def test_masked_mse_equals_the_loss_on_the_unmasked_subset():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(8, 16, 2, generator=g), torch.randn(8, 16, 2, generator=g)
    mask = torch.rand(8, 16, 2, generator=g) < 0.3
    direct = ((pred[mask] - target[mask]) ** 2).mean()
    torch.testing.assert_close(masked_mse(pred, target, mask), direct)
    # garbage at masked positions changes nothing
    target2 = torch.where(mask, target, torch.full_like(target, 1e6))
    torch.testing.assert_close(masked_mse(pred, target2, mask), direct)
    assert masked_mse(pred, target, torch.zeros_like(mask)).item() == 0.0


def test_masked_targets_do_not_enter_training_loss_or_metrics():
    series = SINE.copy()
    mask = np.ones(len(series), dtype=bool)
    mask[::3] = False
    series[~mask] = 1e3  # masked values are absurd: not in the loss, and replaced by the last usable value as inputs
    res = train([series], NetworkConfig(hidden_size=8), TrainConfig(max_epochs=1, **{**FAST, "lr": 0.0}),
                masks=[mask])
    imputed = _impute_masked(series, mask, (0,))
    assert imputed[1:].max() < 2.0 and imputed[3] == series[2]  # row 0 has nothing before it
    sets = split_windows([imputed], 32, 1, 4, (0,), 0.2, masks=[mask])
    with torch.inference_mode():
        for name, key in (("train", "train_loss"), ("val", "val_mse")):
            ws = sets[name]
            out, _ = res.model(torch.from_numpy(ws.X))
            direct = ((out.numpy()[ws.M] - ws.Y[ws.M]) ** 2).mean()  # the unmasked targets only
            assert res.history[0][key] == pytest.approx(direct, rel=1e-5), name
    assert res.metrics["n_val_targets"] == int(sets["val"].M.sum()) < sets["val"].M.size


def test_mask_over_injected_spikes_keeps_the_model_good_on_normal_data():
    spiky = SINE.copy()
    pos = np.random.default_rng(1).choice(900, 40, replace=False)  # all in the training range [0, 960)
    spiky[pos] += 8.0
    mask = np.ones(len(spiky), dtype=bool)
    mask[pos] = False
    cfg = TrainConfig(max_epochs=5, **FAST)
    masked = train([spiky], NetworkConfig(hidden_size=16), cfg, masks=[mask]).metrics["val_mae"]
    unmasked = train([spiky], NetworkConfig(hidden_size=16), cfg).metrics["val_mae"]
    assert masked < 0.5 * unmasked  # measured: 0.06-0.08 vs 0.29-0.36 over seeds 0-2


def test_warm_start_copies_init_and_checks_config():
    cfg = NetworkConfig(hidden_size=8)
    init = ForecastNet(cfg)
    before = {k: v.clone() for k, v in init.state_dict().items()}
    lr0 = train([SINE], cfg, TrainConfig(max_epochs=1, **{**FAST, "lr": 0.0}), init=init)
    assert all(torch.equal(before[k], v) for k, v in lr0.model.state_dict().items())  # it started from init
    train([SINE], cfg, TrainConfig(max_epochs=1, **FAST), init=init)
    assert all(torch.equal(before[k], v) for k, v in init.state_dict().items())  # init itself untouched
    with pytest.raises(ValueError, match="^init:"):
        train([SINE], NetworkConfig(hidden_size=4), TrainConfig(max_epochs=1, **FAST), init=init)


def test_max_windows_and_input_errors():
    res = train([SINE, SINE[:500]], NetworkConfig(hidden_size=4), TrainConfig(max_epochs=1, max_windows=50, **FAST))
    assert res.metrics["n_train_windows"] == 50 and res.metrics["n_series"] == 2
    with pytest.raises(ValueError, match="^horizon:"):
        train([SINE], NetworkConfig(horizon=2), TrainConfig(**FAST))
    with pytest.raises(ValueError, match="no validation windows"):
        train([SINE[:150]], NetworkConfig(hidden_size=4), TrainConfig(**FAST))
    with pytest.raises(ValueError, match="features"):
        train([np.zeros((500, 2), np.float32)], NetworkConfig(hidden_size=4), TrainConfig(**FAST))
    for bad, field in (({"window": 0}, "window"), ({"val_fraction": 0.0}, "val_fraction"), ({"lr": -1.0}, "lr"),
                       ({"max_windows": 0}, "max_windows"), ({"device": "tpu9"}, "device")):
        with pytest.raises(ValueError, match=f"^{field}:"):
            TrainConfig(**bad)
    assert TrainConfig.from_dict(TrainConfig(window=9).to_dict()) == TrainConfig(window=9)
