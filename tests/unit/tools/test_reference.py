"""docs/configuration.md and docs/metrics.md are exactly what the code generates (regenerate with
`streamrnn reference config > docs/configuration.md` and `streamrnn reference metrics > docs/metrics.md`)."""

from pathlib import Path

from streamrnn.tools.reference import config_reference, metrics_reference
from streamrnn.config.settings import Settings

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_configuration_reference_is_up_to_date_and_lists_every_key():
    text = config_reference()
    assert (DOCS / "configuration.md").read_text() == text
    for section, field in Settings.model_fields.items():
        assert f"## [{section}]" in text
        for key in field.annotation.model_fields:
            assert f"`STREAMRNN_{section.upper()}__{key.upper()}`" in text


def test_metrics_reference_is_up_to_date_and_follows_naming_conventions():
    text = metrics_reference()
    assert (DOCS / "metrics.md").read_text() == text
    rows = [line for line in text.splitlines() if line.startswith("| `streamrnn_")]
    assert len(rows) >= 30
    for row in rows:
        name, kind = row.split("|")[1].strip(" `"), row.split("|")[2].strip()
        assert name.endswith("_total") == (kind == "counter"), row
        if kind == "histogram" and "duration" in name or "latency" in name:
            assert name.endswith("_seconds"), row
        assert "stream`" not in row.split("|")[3] or name == "streamrnn_open_event_peak_score", row
