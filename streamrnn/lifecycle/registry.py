"""The model registry: a directory of versioned artifacts plus which one serves (the champion) and why.

Layout (a local path or a volume shared by the trainer and scorer pods)::

    <registry>/v000001-.../{weights.pt, card.json}   one artifact per trained model (streamrnn.lifecycle.artifact)
    <registry>/champion.json                         {"champion", "history", "rolled_back", "changes"}
    <registry>/requests/<time>-<id>.json             retrain requests (drift seen by a daemon, or a person)
    <registry>/.lock                                 flock for read-modify-write of champion.json

Owns: publishing artifacts with their decision, the champion pointer, promotion and rollback, retrain requests. It
must not train, decide whether a challenger is good enough (:mod:`streamrnn.lifecycle.retrain`) or touch serving state.

Atomicity: artifacts are written by :func:`~streamrnn.lifecycle.artifact.save_artifact` (temporary directory, fsync,
rename). ``champion.json`` is replaced by write-temp, fsync, rename, fsync-directory, so a reader sees the old or
the new pointer, never half of one; a crash between the artifact and the pointer leaves an unreferenced artifact,
which never serves. The lock only orders writers (trainer, daemon rollback, CLI); readers never wait for it.

Containment: a version is a plain artifact name (``v<sequence>-<UTC time>``, :mod:`streamrnn.lifecycle.artifact`), never a
path. Every name read from ``champion.json`` or given by a caller is checked, and its directory must resolve inside the
registry, so a pointer edited to ``../elsewhere`` (or a version directory symlinked out) is a :class:`RegistryError`,
never a served model.

>>> import tempfile
>>> from streamrnn.model.network import ForecastNet, NetworkConfig
>>> reg = ModelRegistry(tempfile.mkdtemp())
>>> v1 = reg.publish(ForecastNet(NetworkConfig(hidden_size=4)), {}, Decision("promoted", "first model"))
>>> v2 = reg.publish(ForecastNet(NetworkConfig(hidden_size=4)), {}, Decision("promoted", "better"))
>>> reg.champion() == v2, reg.rollback("live error grew") == v1, reg.champion() == v1
(True, True, True)
>>> [(e["version"] == v2, e["status"]) for e in reg.versions()][-1]
(True, 'rolled_back')
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from streamrnn.lifecycle.artifact import (
    _VERSION_RE,
    ArtifactError,
    _fsync_path,
    _read_card,
    _versions,
    load_artifact,
    save_artifact,
)
from streamrnn.model.network import ForecastNet

CHAMPION = "champion.json"
REQUESTS = "requests"
_LOCK = ".lock"
_MAX_CHANGES = 200  # audit trail kept in champion.json
OUTCOMES = ("promoted", "rejected")


class RegistryError(Exception):
    """A registry operation that cannot be done (unknown version, nothing to roll back to...)."""


@dataclass(frozen=True)
class Decision:
    """What became of a trained model: ``promoted`` (it serves) or ``rejected``, and why, in words."""

    outcome: str
    reason: str

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome: one of {OUTCOMES}, got {self.outcome!r}")


def check_version(version: Any, where: str = "version") -> str:
    """``version`` if it is a plain version name (no path: no separator, no ``..``, not absolute), else
    :class:`RegistryError` naming ``where`` it came from."""
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise RegistryError(f"{where}: {version!r} is not a model version name "
                            f"(expected v<sequence>-<UTC time>, e.g. v000001-20240501T120000123456Z)")
    return version


def _checked_state(body: Any, where: Path) -> dict[str, Any]:
    """The pointer file's content with every version name in it checked (a hand-edited or planted entry must not
    point the daemons at a directory outside the registry)."""
    if not isinstance(body, dict):
        raise RegistryError(f"{where}: not a JSON object")
    champion, history, rolled_back = body.get("champion"), body.get("history", []), body.get("rolled_back", {})
    if not isinstance(history, list) or not isinstance(rolled_back, dict):
        raise RegistryError(f"{where}: 'history' must be a list and 'rolled_back' an object")
    if champion is not None:
        check_version(champion, f"{where}: champion")
    for version in history:
        check_version(version, f"{where}: history")
    for version in rolled_back:
        check_version(version, f"{where}: rolled_back")
    return {"champion": champion, "history": list(history), "rolled_back": dict(rolled_back),
            "changes": list(body.get("changes", []))}


def _write_json_atomic(path: Path, body: Mapping[str, Any]) -> None:
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            json.dump(body, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_path(path.parent)


class ModelRegistry:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    # -- reading -----------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The pointer file's content (empty registry: no champion, empty lists)."""
        try:
            body = json.loads((self.directory / CHAMPION).read_text(encoding="utf-8"))
        except FileNotFoundError:
            body = {}
        except (OSError, ValueError) as error:
            raise RegistryError(f"{self.directory / CHAMPION}: unreadable ({error})") from error
        return _checked_state(body, self.directory / CHAMPION)

    def champion(self) -> str | None:
        """The serving version: the pointer's, or for a registry without one (models copied in by hand) the newest
        artifact not rejected by its card."""
        return self._champion_of(self.state())

    def _champion_of(self, state: Mapping[str, Any]) -> str | None:
        """:meth:`champion` given the pointer file's content already read."""
        if state["champion"] is not None:
            return state["champion"]
        for _seq, path in reversed(_versions(self.directory)):
            try:
                card = _read_card(path)
            except ArtifactError:
                continue
            if (card.get("decision") or {}).get("outcome") != "rejected" and (path / "weights.pt").is_file():
                return path.name
        return None

    def _inside(self, version: str) -> Path:
        """The directory of a checked version name; it must resolve inside the registry (a symlink out does not)."""
        path = self.directory / check_version(version, str(self.directory))
        if not path.resolve().is_relative_to(self.directory.resolve()):
            raise RegistryError(f"{self.directory}: model version {version!r} resolves outside the registry")
        return path

    def path(self, version: str) -> Path:
        path = self._inside(version)
        if not (path / "card.json").is_file():
            raise RegistryError(f"{self.directory}: no model version {version!r}")
        return path

    def card(self, version: str) -> dict[str, Any]:
        try:
            return _read_card(self.path(version))
        except ArtifactError as error:
            raise RegistryError(str(error)) from error

    def load(self, version: str) -> tuple[ForecastNet, dict[str, Any]]:
        """The version's network and card (:class:`~streamrnn.lifecycle.artifact.ArtifactError` if damaged)."""
        return load_artifact(self.path(version))

    def versions(self) -> list[dict[str, Any]]:
        """Every complete version, oldest first, with its status: ``champion``, ``previous`` (a rollback target),
        ``rolled_back``, ``rejected``, ``retired`` (promoted once, no longer a rollback target) or ``unreviewed``."""
        state = self.state()
        champion = self._champion_of(state)
        out = []
        for _seq, path in _versions(self.directory):
            try:
                card = _read_card(path)
            except ArtifactError:
                continue
            version = path.name
            decision = card.get("decision") or {}
            if version == champion:
                status = "champion"
            elif version in state["rolled_back"]:
                status = "rolled_back"
            elif version in state["history"]:
                status = "previous"
            elif decision.get("outcome") == "rejected":
                status = "rejected"
            elif decision.get("outcome") == "promoted":
                status = "retired"
            else:
                status = "unreviewed"
            metrics = card.get("metrics") or {}
            out.append({
                "version": version, "status": status, "created": card.get("created"), "parent": card.get("parent"),
                "reason": state["rolled_back"].get(version) or decision.get("reason", ""),
                "val_mae": metrics.get("val_mae"), "champion_val_mae": metrics.get("champion_val_mae"),
                "naive_val_mae": metrics.get("naive_val_mae"),
            })
        return out

    # -- writing -----------------------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write of the pointer under the registry's lock; the yielded dict is written back."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / _LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self.state()
                before = json.dumps(state, sort_keys=True)
                yield state
                if json.dumps(state, sort_keys=True) != before:
                    _write_json_atomic(self.directory / CHAMPION, state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _log(state: dict[str, Any], action: str, version: str | None, reason: str) -> None:
        state["changes"] = (state["changes"] + [
            {"time": time.time(), "action": action, "version": version, "reason": reason}])[-_MAX_CHANGES:]

    def publish(self, model: ForecastNet, card: Mapping[str, Any], decision: Decision,
                expected_champion: str | None = None) -> str:
        """Store a trained model with its decision; a promoted one becomes the champion. With
        ``expected_champion``, promotion happens only if that is still the champion (the challenger was judged
        against it); otherwise the model is stored as rejected. Returns the new version."""
        with self._locked() as state:
            current = self._champion_of(state)
            if decision.outcome == "promoted" and expected_champion is not None and current != expected_champion:
                decision = Decision("rejected", f"the champion changed from {expected_champion} to {current} "
                                                f"during training")
            body = {**dict(card), "decision": {"outcome": decision.outcome, "reason": decision.reason}}
            version = save_artifact(self.directory, model, body).name
            if decision.outcome == "promoted":
                self._promote(state, version, current, decision.reason)
            else:
                self._log(state, "rejected", version, decision.reason)
        return version

    def _promote(self, state: dict[str, Any], version: str, current: str | None, reason: str) -> None:
        if current is not None and current != version:
            state["history"] = [v for v in state["history"] if v != version] + [current]
        state["champion"] = version
        state["rolled_back"].pop(version, None)
        self._log(state, "promoted", version, reason)

    def promote(self, version: str, reason: str = "promoted by hand") -> None:
        """Make ``version`` (any stored one, rejected included) the champion."""
        self.path(version)
        with self._locked() as state:
            current = self._champion_of(state)
            if current != version:
                self._promote(state, version, current, reason)

    def rollback(self, reason: str, expected_champion: str | None = None) -> str:
        """Put the previous champion back; the current one is marked ``rolled_back``. With ``expected_champion``
        nothing happens unless that is still the champion (two daemons judging the same swap roll back once).
        Returns the champion afterwards."""
        with self._locked() as state:
            current = self._champion_of(state)
            if expected_champion is not None and current != expected_champion:
                return current or ""
            if not state["history"]:
                raise RegistryError(f"{self.directory}: no previous version to roll back to")
            previous = state["history"].pop()
            if current is not None:
                state["rolled_back"][current] = reason
            state["champion"] = previous
            self._log(state, "rolled_back", current, reason)
            return previous

    # -- retrain requests ----------------------------------------------------------------------------------------
    def request_retrain(self, reason: str, source: str = "") -> Path:
        """Ask the trainer for a run (it takes the requests when it looks next)."""
        folder = self.directory / REQUESTS
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.time():.6f}-{uuid.uuid4().hex[:8]}.json"
        _write_json_atomic(path, {"time": time.time(), "reason": reason, "source": source})
        return path

    def take_requests(self) -> list[dict[str, Any]]:
        """The pending retrain requests, oldest first; they are removed."""
        folder = self.directory / REQUESTS
        if not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.glob("*.json")):
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                pass  # a request half-written by hand: drop it below rather than block the queue
            path.unlink(missing_ok=True)
        return out


def resolve_model_path(path: str | os.PathLike) -> Path | None:
    """``model.path`` may name one version directory or a registry: the version to load, or None if none."""
    path = Path(path)
    if (path / "card.json").is_file():
        return path
    registry = ModelRegistry(path)
    champion = registry.champion()
    return registry._inside(champion) if champion else None


__all__ = ["ModelRegistry", "Decision", "RegistryError", "check_version", "resolve_model_path", "CHAMPION",
           "OUTCOMES"]
