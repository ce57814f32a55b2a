"""Versioned, atomically written model artifacts: ``<directory>/<version>/{weights.pt, card.json}``.

This module owns the on-disk format of one trained network and its card. It must not decide which version serves
(that is the registry's promotion logic), train, or touch the serving state.

Versions are ``v<6+ digit sequence>-<UTC time YYYYmmddTHHMMSSffffffZ>``, e.g. ``v000007-20240501T120000123456Z``:
the sequence is one more than the highest version present, so versions sort by plain string order (within a
million versions) and by creation order; the time is for people. Two writers racing for the same sequence number
cannot both win: the final ``rename`` fails for the loser (the target exists and is not empty), which then takes the
next number.

Atomicity: everything is written into ``<directory>/.tmp-<random>/``, each file fsynced, the temporary directory
fsynced, then renamed into place and ``directory`` fsynced. A crash leaves at most a ``.tmp-*`` directory, which
:func:`latest_artifact` ignores (and nothing ever loads). ``card.json`` records the sha256 of ``weights.pt``, so a
damaged weights file is reported instead of loaded. Weights are read with ``torch.load(weights_only=True)``, which
never runs pickled code.

>>> import shutil, tempfile
>>> from streamrnn.model.network import ForecastNet, NetworkConfig
>>> d = tempfile.mkdtemp()
>>> p = save_artifact(d, ForecastNet(NetworkConfig(hidden_size=4)), {"metrics": {"val_mae": 0.1}})
>>> p == latest_artifact(d), p.name.startswith("v000001-")
(True, True)
>>> net, card = load_artifact(p)
>>> card["network"]["hidden_size"], card["metrics"]["val_mae"], card["version"] == p.name
(4, 0.1, True)
>>> shutil.rmtree(d)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch

from streamrnn.model.network import ForecastNet, NetworkConfig

FORMAT = 1
WEIGHTS = "weights.pt"
CARD = "card.json"
_VERSION_RE = re.compile(r"^v(\d{6,})-(\d{8}T\d{12}Z)$")
_TMP_PREFIX = ".tmp-"


class ArtifactError(Exception):
    """A missing, incomplete or corrupt artifact (the message names the path and what is wrong)."""


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_default(o: Any) -> Any:
    # Cards often carry numpy scalars/arrays and paths from metrics and data ranges.
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (Path, datetime)):
        return str(o)
    raise TypeError(f"card: {type(o).__name__} is not JSON serializable")


def _versions(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    out = []
    for p in directory.iterdir():
        m = _VERSION_RE.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def save_artifact(directory: str | os.PathLike, model: ForecastNet, card: Mapping[str, Any]) -> Path:
    """Write ``model`` and ``card`` as a new version under ``directory``; returns the version's path.

    The stored card is ``card`` plus ``format``, ``version``, ``network`` (the model's config, overriding any
    given), ``created`` (UTC ISO time), ``torch_version`` and ``weights_sha256``. Callers add train config, data
    range, metrics and ``parent`` (version it was trained from) as they know them.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        weights = tmp / WEIGHTS
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        with open(weights, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        now = datetime.now(timezone.utc)
        body = dict(card)
        body.update(format=FORMAT, network=model.config.to_dict(), created=now.isoformat(),
                    torch_version=torch.__version__, weights_sha256=_sha256(weights))
        for _ in range(1000):
            existing = _versions(directory)
            seq = (existing[-1][0] + 1) if existing else 1
            version = f"v{seq:06d}-{now.strftime('%Y%m%dT%H%M%S%fZ')}"
            body["version"] = version
            with open(tmp / CARD, "w", encoding="utf-8") as f:
                json.dump(body, f, indent=2, sort_keys=True, default=_json_default)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            _fsync_path(tmp)
            final = directory / version
            try:
                # os.rename of a directory onto an existing non-empty directory fails: that is the race guard.
                os.rename(tmp, final)
            except OSError:
                if final.exists():
                    continue  # another writer took this number; take the next
                raise
            _fsync_path(directory)
            return final
        raise ArtifactError(f"{directory}: could not claim a version number")
    except BaseException:
        _remove_tree(tmp)
        raise


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def _read_card(path: Path) -> dict[str, Any]:
    card_path = path / CARD
    if not card_path.is_file():
        raise ArtifactError(f"{path}: no {CARD} (not an artifact directory, or an incomplete one)")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{card_path}: unreadable card ({e})") from e
    if not isinstance(card, dict) or "network" not in card:
        raise ArtifactError(f"{card_path}: card has no 'network' config")
    if card.get("format") != FORMAT:
        raise ArtifactError(f"{card_path}: unsupported artifact format {card.get('format')!r} (expected {FORMAT})")
    return card


def latest_artifact(directory: str | os.PathLike) -> Path | None:
    """The newest complete version under ``directory`` (both files present, card readable), or None.

    Temporary ``.tmp-*`` directories (an interrupted write) and other names are ignored.
    """
    for _, p in reversed(_versions(Path(directory))):
        if not (p / WEIGHTS).is_file():
            continue
        try:
            _read_card(p)
        except ArtifactError:
            continue
        return p
    return None


def load_artifact(path: str | os.PathLike,
                  map_location: str | torch.device = "cpu") -> tuple[ForecastNet, dict[str, Any]]:
    """Rebuild the network of the version directory ``path`` (eval mode) and return it with its card.

    Raises :class:`ArtifactError` on a missing/corrupt card or weights file, a checksum mismatch, weights that need
    code execution to unpickle, or weights whose keys/shapes do not match the card's network config.
    """
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such artifact directory (use latest_artifact(parent) to find one)")
    card = _read_card(path)
    try:
        config = NetworkConfig.from_dict(card["network"])
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{path / CARD}: invalid network config: {e}") from e
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{path}: missing {WEIGHTS}")
    expected = card.get("weights_sha256")
    if expected is not None and _sha256(weights) != expected:
        raise ArtifactError(f"{weights}: checksum mismatch with {CARD} (corrupt or replaced weights)")
    try:
        state = torch.load(weights, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise ArtifactError(f"{weights}: cannot load weights safely ({type(e).__name__}: {e})") from e
    model = ForecastNet(config)
    own = model.state_dict()
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(f"{weights}: not a state_dict of tensors")
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ArtifactError(f"{weights}: keys do not match the card's network (missing {missing}, "
                            f"unexpected {unexpected})")
    bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        raise ArtifactError(f"{weights}: shapes do not match the card's network for {bad}")
    model.load_state_dict(state)
    return model.to(map_location).eval(), card
