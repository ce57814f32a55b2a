"""ForecastNet (cells, state layout, step/forward equivalence, variational dropout) and model artifacts."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from streamrnn.lifecycle.artifact import ArtifactError, latest_artifact, load_artifact, save_artifact
from streamrnn.model.network import ForecastNet, NetworkConfig, resolve_device

CASES = list(itertools.product(["rnn", "gru", "lstm"], [1, 2], [False, True]))


def make_net(cell="gru", layers=1, layer_norm=False, hidden=12, n_features=3, seed=0, **kw) -> ForecastNet:
    torch.manual_seed(seed)
    net = ForecastNet(NetworkConfig(cell=cell, n_features=n_features, hidden_size=hidden, num_layers=layers,
                                    layer_norm=layer_norm, targets=(0, 2), **kw))
    if layer_norm:  # non-trivial affine parameters, so that a skipped or misplaced norm shows
        with torch.no_grad():
            for norm in net.norms:
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.5, 0.5)
    return net


# -- config ---------------------------------------------------------------------------------------------------

def test_config_round_trip_and_state_size():
    cfg = NetworkConfig(cell="lstm", n_features=4, hidden_size=16, num_layers=3, input_dropout=0.1,
                        recurrent_dropout=0.2, layer_norm=True, targets=(1, 3), horizon=5)
    d = json.loads(json.dumps(cfg.to_dict()))  # through JSON: targets become a list
    assert NetworkConfig.from_dict(d) == cfg
    assert cfg.state_size == 3 * 16 * 2 and cfg.n_targets == 2
    assert NetworkConfig(cell="gru", hidden_size=16, num_layers=3).state_size == 48


@pytest.mark.parametrize("kwargs, field", [
    ({"cell": "transformer"}, "cell"),
    ({"hidden_size": 0}, "hidden_size"),
    ({"num_layers": 1.5}, "num_layers"),
    ({"n_features": 2, "targets": (2,)}, "targets"),
    ({"n_features": 2, "targets": (0, 0)}, "targets"),
    ({"targets": ()}, "targets"),
    ({"targets": 0}, "targets"),
    ({"input_dropout": 1.0}, "input_dropout"),
    ({"recurrent_dropout": -0.1}, "recurrent_dropout"),
    ({"horizon": 0}, "horizon"),
    ({"layer_norm": "yes"}, "layer_norm"),
])
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        NetworkConfig(**kwargs)
    with pytest.raises(ValueError, match="^bogus:"):
        NetworkConfig.from_dict({"bogus": 1})


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


# -- shapes, state layout -------------------------------------------------------------------------------------

def test_shapes_and_initial_state():
    net = make_net("lstm", layers=2, hidden=5).eval()
    s0 = net.initial_state(4)
    assert s0.shape == (4, 20) and s0.dtype == torch.float32 and not s0.any()
    y, s = net(torch.randn(4, 7, 3))
    assert y.shape == (4, 7, 2) and s.shape == (4, 20)
    y1, s1 = net.step(torch.randn(4, 3), s)
    assert y1.shape == (4, 2) and s1.shape == (4, 20)
    with pytest.raises(ValueError, match="x:"):
        net(torch.randn(4, 7, 2))
    with pytest.raises(ValueError, match="state:"):
        net(torch.randn(4, 7, 3), torch.zeros(4, 19))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_matches_torch_reference_rnn_and_documented_layout(cell):
    """Same weights in torch's nn.RNN/GRU/LSTM give the same top outputs; state blocks are [h_l (| c_l)] per layer."""
    net = make_net(cell, layers=2, hidden=6).eval()
    ref_cls = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
    ref = ref_cls(3, 6, num_layers=2, batch_first=True)
    with torch.no_grad():
        for l, c in enumerate(net.cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{l}").copy_(getattr(c, name))
    x = torch.randn(5, 9, 3)
    with torch.no_grad():
        y, state = net(x, fused=False)
        out, hn = ref(x)
    h_ref, c_ref = hn if cell == "lstm" else (hn, None)
    # skip connection: the forecast is the current target value plus the head's correction
    naive = x[:, :, list(net.config.targets)]
    torch.testing.assert_close(y, net.head(out) + naive, atol=1e-5, rtol=1e-5)
    k = 2 if cell == "lstm" else 1
    for l in range(2):
        block = state[:, l * k * 6:(l + 1) * k * 6]
        torch.testing.assert_close(block[:, :6], h_ref[l], atol=1e-5, rtol=1e-5)
        if cell == "lstm":
            torch.testing.assert_close(block[:, 6:], c_ref[l], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell, layers, layer_norm", CASES)
def test_step_by_step_equals_forward_and_fused(cell, layers, layer_norm):
    net = make_net(cell, layers, layer_norm).eval()
    x = torch.randn(4, 15, 3)
    s0 = torch.randn(4, net.state_size) * 0.5
    with torch.inference_mode():
        y_loop, s_loop = net(x, s0, fused=False)
        y_fused, s_fused = net(x, s0, fused=True)
        y_auto, s_auto = net(x, s0)
        s, ys = s0, []
        for t in range(x.shape[1]):
            y_t, s = net.step(x[:, t], s)
            ys.append(y_t)
        y_step = torch.stack(ys, dim=1)
    for y, st in ((y_fused, s_fused), (y_step, s), (y_auto, s_auto)):
        assert (y - y_loop).abs().max() <= 1e-5
        assert (st - s_loop).abs().max() <= 1e-5
    # continuing from a returned state equals one longer call (the state carries everything)
    with torch.inference_mode():
        y_a, s_a = net(x[:, :6], s0)
        y_b, s_b = net(x[:, 6:], s_a)
    assert (torch.cat([y_a, y_b], 1) - y_loop).abs().max() <= 1e-5 and (s_b - s_loop).abs().max() <= 1e-5


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_fused_training_gradients_match_loop(cell):
    net = make_net(cell, layers=2, layer_norm=True).train()
    x, target = torch.randn(3, 8, 3), torch.randn(3, 8, 2)
    grads = []
    for fused in (False, True):
        net.zero_grad()
        y, _ = net(x, fused=fused)
        ((y - target) ** 2).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


# -- variational dropout --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fused", [False, True])
def test_input_dropout_mask_is_fixed_over_time_and_resampled_per_call(fused):
    net = make_net("gru", n_features=8, input_dropout=0.5).train()
    patterns = []
    for _ in range(2):
        x = torch.randn(16, 10, 8, requires_grad=True)
        y, _ = net(x, fused=fused)
        y.sum().backward()
        dropped = x.grad == 0  # a dropped input feature has no influence at all
        # the same features are dropped at every timestep of a sequence ...
        assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))
        # ... and the rate is about right (16 * 8 draws at p=0.5)
        assert 0.25 < dropped[:, 0].float().mean() < 0.75
        patterns.append(dropped[:, 0])
    assert not torch.equal(patterns[0], patterns[1])  # new masks per call


def test_recurrent_mask_sampled_once_per_forward_and_reused_each_step():
    net = make_net("lstm", layers=2, recurrent_dropout=0.5, input_dropout=0.2).train()
    sampled, seen = [], []
    orig_sample, orig_step = net._sample_masks, net._step

    def sample(*a):
        masks = orig_sample(*a)
        sampled.append(masks)
        return masks

    def step(x, hs, cs, in_masks, rec_masks):
        seen.append((in_masks, rec_masks))
        return orig_step(x, hs, cs, in_masks, rec_masks)

    net._sample_masks, net._step = sample, step
    net(torch.randn(4, 6, 3))
    assert len(sampled) == 1 and len(seen) == 6
    in_m, rec_m = sampled[0]
    assert len(rec_m) == 2 and rec_m[0].shape == (4, 12) and in_m[0].shape == (4, 3) and in_m[1].shape == (4, 12)
    assert all(a is in_m and b is rec_m for a, b in seen)
    assert set(rec_m[0].unique().tolist()) == {0.0, 2.0}  # inverted dropout: kept units scaled by 1/(1-p)


def test_gal_gru_recurrent_path_matches_gru_cell_when_nothing_is_dropped():
    """The hand-written GRU used under recurrent dropout is torch's GRU when the mask keeps everything."""
    net = make_net("gru", layers=2).eval()
    x, s = torch.randn(5, 3), torch.randn(5, net.state_size)
    hs, cs = net._unpack(s)
    ones = [torch.ones(5, 12), torch.ones(5, 12)]
    top_a, h_a, _ = net._step(x, hs, cs, None, None)
    top_b, h_b, _ = net._step(x, hs, cs, None, ones)
    torch.testing.assert_close(top_a, top_b, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(net._pack(h_a, []), net._pack(h_b, []), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_dropout_only_in_training_and_eval_is_deterministic(cell):
    net = make_net(cell, input_dropout=0.3, recurrent_dropout=0.3)
    plain = ForecastNet(NetworkConfig(cell=cell, n_features=3, hidden_size=12, targets=(0, 2)))
    plain.load_state_dict(net.state_dict())
    x = torch.randn(4, 8, 3)
    net.train()
    assert not torch.allclose(net(x)[0], net(x)[0])
    net.eval()
    y1, y2 = net(x)[0], net(x)[0]
    assert torch.equal(y1, y2)
    torch.testing.assert_close(y1, plain.eval()(x)[0])


# -- artifacts ------------------------------------------------------------------------------------------------

CARD = {"train": {"window": 64}, "data": {"start": "2024-01-01T00:00:00Z", "end": "2024-02-01T00:00:00Z"},
        "metrics": {"val_mae": 0.25}, "parent": None}


def test_artifact_round_trip_gives_identical_outputs(tmp_path):
    net = make_net("lstm", layers=2, layer_norm=True).eval()
    path = save_artifact(tmp_path, net, CARD)
    loaded, card = load_artifact(path)
    assert not loaded.training and loaded.config == net.config
    x = torch.randn(3, 11, 3)
    with torch.inference_mode():
        assert torch.equal(loaded(x)[0], net(x)[0])
    assert card["metrics"] == CARD["metrics"] and card["data"] == CARD["data"] and card["version"] == path.name
    assert card["torch_version"] == torch.__version__ and card["network"]["cell"] == "lstm" and card["created"]
    assert sorted(os.listdir(path)) == ["card.json", "weights.pt"]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary directory left behind


def test_versions_increase_and_sort(tmp_path):
    net = make_net(hidden=4)
    paths = [save_artifact(tmp_path, net, {"parent": None}) for _ in range(3)]
    assert [p.name[:7] for p in paths] == ["v000001", "v000002", "v000003"]
    assert sorted(p.name for p in paths) == [p.name for p in paths]
    assert latest_artifact(tmp_path) == paths[-1]
    assert latest_artifact(tmp_path / "nothing-here") is None


def test_crash_leftovers_are_ignored(tmp_path):
    good = save_artifact(tmp_path, make_net(hidden=4), CARD)
    # a crash before the rename: a complete-looking temporary directory
    crashed = tmp_path / ".tmp-deadbeef"
    crashed.mkdir()
    for f in good.iterdir():
        (crashed / f.name).write_bytes(f.read_bytes())
    # a newer version directory without its weights (e.g. copied by hand, or damaged)
    (tmp_path / "v000009-20990101T000000000000Z").mkdir()
    (tmp_path / "v000009-20990101T000000000000Z" / "card.json").write_text((good / "card.json").read_text())
    assert latest_artifact(tmp_path) == good
    # the next save does not reuse a number below the highest present
    assert save_artifact(tmp_path, make_net(hidden=4), CARD).name.startswith("v000010-")


def test_missing_or_corrupt_files_give_clear_errors(tmp_path):
    path = save_artifact(tmp_path, make_net(hidden=4), CARD)
    weights = (path / "weights.pt").read_bytes()
    (path / "weights.pt").write_bytes(weights[:-10])
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(path)
    (path / "weights.pt").unlink()
    with pytest.raises(ArtifactError, match="missing weights.pt"):
        load_artifact(path)
    (path / "card.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable card"):
        load_artifact(path)
    with pytest.raises(ArtifactError, match="no such artifact directory"):
        load_artifact(tmp_path / "v999999-x")


def test_weights_that_do_not_fit_the_card_are_rejected(tmp_path):
    path = save_artifact(tmp_path, make_net(hidden=4), CARD)
    card = json.loads((path / "card.json").read_text())
    card["network"]["hidden_size"] = 5
    (path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match="shapes do not match"):
        load_artifact(path)
    card["network"]["num_layers"] = 2
    (path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match="missing .*cells.1"):
        load_artifact(path)


def _payload(marker: str) -> None:  # what a malicious pickle would run on load
    Path(marker).write_text("pwned")


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_payload, (self.marker,))


def test_loading_never_executes_pickled_code(tmp_path):
    path = save_artifact(tmp_path, make_net(hidden=4), CARD)
    marker = tmp_path / "marker"
    state = dict(make_net(hidden=4).state_dict())
    state["head.bias"] = _Evil(str(marker))
    torch.save(state, path / "weights.pt")
    card = json.loads((path / "card.json").read_text())
    card.pop("weights_sha256")  # the checksum must not be what saves us
    (path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match="cannot load weights safely"):
        load_artifact(path)
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    torch.load(path / "weights.pt", weights_only=False)
    assert marker.read_text() == "pwned"
