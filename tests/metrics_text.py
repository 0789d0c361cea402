"""Reading Prometheus' text format in tests: one sample's value.

Only the lines of the sample asked for are parsed: a whole exposition late in
a test session runs to thousands of lines, and parsing it all blocks the event
loop (and the in-process services on it) for about a second."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def _samples(text: str, name: str) -> Iterator[Sample]:
    """The samples named `name` in an exposition."""
    lines = "\n".join(line for line in text.splitlines() if line.startswith((f"{name}{{", f"{name} ")))
    for family in text_string_to_metric_families(lines + "\n"):
        yield from (found for found in family.samples if found.name == name)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` whose labels include `labels` (their
    sum when several match); 0 when none does."""
    return sum(found.value for found in _samples(text, name) if labels.items() <= found.labels.items())


def label_values(text: str, name: str, label: str) -> set[str]:
    """Every value `label` takes among the samples named `name`."""
    return {found.labels[label] for found in _samples(text, name) if label in found.labels}
