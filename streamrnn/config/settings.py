"""All of streamrnn's settings: one TOML file plus ``STREAMRNN_*`` environment variables.

Precedence (highest first): explicit overrides passed by the CLI, environment variables (``STREAMRNN_`` prefix,
``__`` between nested names, e.g. ``STREAMRNN_MODEL__HIDDEN_SIZE=32``), the TOML file (``--config`` or
``STREAMRNN_CONFIG``), then the defaults below. Unknown keys are errors, so a typo never silently falls back to a
default.

Settings are read once, at the edge (the CLI), and passed down as typed objects. This module imports neither torch
nor Kafka.

>>> s = load_settings(None, environ={"STREAMRNN_MODEL__HIDDEN_SIZE": "32"})
>>> s.model.hidden_size, s.model.cell
(32, 'gru')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from pydantic import SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from streamrnn.config.detection import (  # noqa: F401 - the sections are importable from here too
    ModelSettings,
    FeatureSettings,
    NormalizerSettings,
    StateSettings,
    ScoringSettings,
    ForecastSettings,
    EventSettings,
    TrainingSettings,
    ColdStartSettings,
    RetrainSettings,
    RegistrySettings,
    ReplaySettings,
)
from streamrnn.config.service import (  # noqa: F401
    InputSettings,
    KafkaSettings,
    CheckpointSettings,
    DaemonSettings,
    RemoteWriteSettings,
    LogSettings,
)

ENV_PREFIX = "STREAMRNN_"
CONFIG_ENV = "STREAMRNN_CONFIG"
# Variables with the prefix that belong to the tooling (scripts/bootstrap), not to the settings.
TOOLING_ENV = frozenset({CONFIG_ENV, "STREAMRNN_CACHE", "STREAMRNN_PYTHON", "STREAMRNN_VENV"})


class Settings(BaseSettings):
    """The whole configuration; see configs/default.toml for a documented example."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, nested_model_default_partial_update=True
    )

    model: ModelSettings = ModelSettings()
    features: FeatureSettings = FeatureSettings()
    normalizer: NormalizerSettings = NormalizerSettings()
    state: StateSettings = StateSettings()
    scoring: ScoringSettings = ScoringSettings()
    forecast: ForecastSettings = ForecastSettings()
    events: EventSettings = EventSettings()
    training: TrainingSettings = TrainingSettings()
    coldstart: ColdStartSettings = ColdStartSettings()
    retrain: RetrainSettings = RetrainSettings()
    registry: RegistrySettings = RegistrySettings()
    replay: ReplaySettings = ReplaySettings()
    input: InputSettings = InputSettings()
    kafka: KafkaSettings = KafkaSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()
    daemon: DaemonSettings = DaemonSettings()
    remote_write: RemoteWriteSettings = RemoteWriteSettings()
    log: LogSettings = LogSettings()

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.training.horizon != self.model.horizon:
            raise ValueError(
                f"training.horizon ({self.training.horizon}) must equal model.horizon ({self.model.horizon})"
            )
        n = self.features.n_values
        if self.input.value_names and len(self.input.value_names) != n:
            raise ValueError(
                f"input.value_names names {len(self.input.value_names)} values but features.n_values is {n}"
            )
        return self


class ConfigError(Exception):
    """Bad settings, with a message naming each field and its problem."""


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid settings ({source}):"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        got = item.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {where}: {item['msg']}{got_text}")
    return "\n".join(lines)


def load_settings(
    config_path: str | Path | None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from the TOML file, the environment and overrides; raise ConfigError when invalid.

    ``environ`` defaults to ``os.environ``; tests pass their own mapping so no global state leaks between them.
    """
    env = dict(os.environ if environ is None else environ)
    path = Path(config_path) if config_path else (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    if path is not None and not path.is_file():
        raise ConfigError(f"config file not found: {path}")

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, _MappingEnvSource(settings_cls, env)]
            if path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            return tuple(sources)

    _reject_unknown_env(env)
    source = f"file {path}" if path else "defaults"
    try:
        loaded = _Loaded(**dict(overrides or {}))
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source + " + environment")) from None
    except ValueError as error:  # a TOML syntax error surfaces as tomllib.TOMLDecodeError (a ValueError)
        raise ConfigError(f"cannot read config {path}: {error}") from None
    # Return the plain Settings type so callers never see the loader subclass.
    return Settings.model_construct(**{name: getattr(loaded, name) for name in Settings.model_fields})


class _MappingEnvSource(PydanticBaseSettingsSource):
    """Environment variables from an explicit mapping (the real environment by default)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in self._environ.items():
            if not key.startswith(ENV_PREFIX) or key in TOOLING_ENV:
                continue
            path = key[len(ENV_PREFIX) :].lower().split("__")
            node = result
            for part in path[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    break
            else:
                node[path[-1]] = _parse_env_value(value)
        return result


def _parse_env_value(value: str) -> Any:
    """Lists and dicts may be given as JSON (``[0, 1]``); everything else is left to pydantic's coercion."""
    text = value.strip()
    if text[:1] in "[{":
        import json

        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    return value


def _reject_unknown_env(environ: Mapping[str, str]) -> None:
    known_sections = set(Settings.model_fields)
    for key in environ:
        if not key.startswith(ENV_PREFIX) or key in TOOLING_ENV:
            continue
        section = key[len(ENV_PREFIX) :].lower().split("__")[0]
        if section not in known_sections:
            raise ConfigError(
                f"invalid settings (environment):\n  {key}: unknown setting "
                f"(sections are {', '.join(sorted(known_sections))})"
            )


def settings_as_toml(settings: Settings) -> str:
    """Render the effective settings as TOML (for ``streamrnn check-config``)."""
    data = settings.model_dump(mode="json")
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} is unset")
                continue
            if isinstance(getattr(getattr(settings, section), key), SecretStr):
                lines.append(f"# {key} is set (hidden)")  # secrets are never printed
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def read_secret(value: SecretStr | None, path: Path | None) -> str | None:
    """A secret given inline (env/config) or in a file (trailing newline stripped); None when neither is set."""
    if value is not None:
        return value.get_secret_value()
    if path is not None:
        return Path(path).read_text().rstrip("\r\n")
    return None


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot render {value!r} as TOML")
