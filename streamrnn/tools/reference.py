"""Reference pages generated from the code itself, so the docs cannot drift: every setting (from the pydantic
settings model) and every metric (from the daemon's registry). ``streamrnn reference config|metrics`` prints them;
docs/configuration.md and docs/metrics.md are their output, checked by a test.

Owns: rendering only. Reads the settings classes and a throw-away metrics registry; touches no I/O.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, SecretStr


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return (str(annotation) if text in ("Optional", "Union", "Literal") else text).replace("typing.", "") \
        .replace("pathlib.", "").replace("pydantic.types.", "").replace("NoneType", "None")


def _default_text(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if isinstance(value, SecretStr):
        return "(hidden)"
    if value is None:
        return "unset"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def config_reference() -> str:
    from streamrnn.config.settings import ENV_PREFIX, Settings

    lines = [
        "# Configuration reference",
        "",
        "Generated from `streamrnn/config/settings.py` by `streamrnn reference config`; do not edit by hand.",
        "Every key can be set in the TOML file (`[section]` / `key = value`) or by the environment variable shown.",
        "Unknown keys are errors. [configs/default.toml](../configs/default.toml) is the same, with comments.",
        "",
    ]
    for section_name, section_field in Settings.model_fields.items():
        section_cls: type[BaseModel] = section_field.annotation  # type: ignore[assignment]
        lines += [f"## [{section_name}]", ""]
        doc = (section_cls.__doc__ or "").strip().splitlines()
        if doc and not doc[0].startswith("!!"):
            lines += [doc[0], ""]
        lines += ["| key | type | default | environment | meaning |", "|---|---|---|---|---|"]
        for key, field in section_cls.model_fields.items():
            env = f"{ENV_PREFIX}{section_name.upper()}__{key.upper()}"
            meaning = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{key}` | `{_type_name(field.annotation)}` | `{_default_text(field)}` | `{env}` | "
                         f"{meaning} |")
        lines.append("")
    return "\n".join(lines)


def example_registry() -> Any:
    """A registry holding every metric the daemon and the trainer export, the scrape-time collectors with one
    sample each."""
    from prometheus_client import CollectorRegistry

    from streamrnn.runtime.metrics import TOP_K_CAP, DaemonMetrics, LagCollector, TopEventsCollector, TrainerMetrics

    registry = CollectorRegistry()
    DaemonMetrics(registry)
    TrainerMetrics(registry)  # served by the trainer process; one registry here for the reference
    registry.register(LagCollector(lambda: [("topic", 0, 1, 0)]))
    registry.register(TopEventsCollector(lambda k: [("stream", "spike", 1.0)], TOP_K_CAP))
    return registry


def metrics_reference() -> str:
    from streamrnn.runtime.metrics import TOP_K_CAP

    registry = example_registry()
    lines = [
        "# Metrics reference",
        "",
        "Generated from `streamrnn/runtime/metrics.py` by `streamrnn reference metrics`; do not edit by hand.",
        "Served on `/metrics` (`daemon.http_port`). Labels are bounded vocabularies (reasons, kinds, actions,",
        "outcomes, partitions); `streamrnn_open_event_peak_score` is the only per-stream metric, opt-in",
        f"(`daemon.top_k_streams`) and capped at {TOP_K_CAP} series.",
        "",
        "| name | type | labels | help |",
        "|---|---|---|---|",
    ]
    for family in sorted(registry.collect(), key=lambda f: f.name):
        name = family.name + {"counter": "_total", "info": "_info"}.get(family.type, "")
        labels = sorted({k for s in family.samples for k in s.labels if k != "le"})
        lines.append(f"| `{name}` | {family.type} | {', '.join(f'`{x}`' for x in labels) or '-'} | "
                     f"{family.documentation} |")
    lines.append("")
    return "\n".join(lines)
