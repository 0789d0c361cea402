"""Reading Prometheus' text format in tests: one sample's value."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` whose labels include `labels` (their
    sum when several match); 0 when none does."""
    return sum(
        found.value
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == name and labels.items() <= found.labels.items()
    )


def label_values(text: str, name: str, label: str) -> set[str]:
    """Every value `label` takes among the samples named `name`."""
    return {
        found.labels[label]
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == name and label in found.labels
    }
