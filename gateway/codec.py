"""Protobuf messages to and from the public JSON, read off their descriptors.

The JSON is proto JSON with the conventions the public API has always had:
proto field names, integers as JSON numbers, enum values as the lower-case
name without the enum's prefix (`PLAN_INTERVAL_MONTHLY` is "monthly", the
zero value null), timestamps as RFC 3339 (Unix seconds accepted), and
decimal strings (fields marked `(bxb.common.v1.decimal)`) accepting JSON numbers
exactly. How a dialect spells a message beyond that is a `View`
(gateway/dialects.py). Only the JSON's shape and types are checked here;
limits, patterns and required fields are the protos' rules, checked by the
service for every caller.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, cast

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from bxb.common.v1 import field_format_pb2
from gateway.errors import ApiError, invalid
from services.common.decimals import MAX_EXPONENT
from services.common.timestamps import EPOCH, LATEST, format_rfc3339, from_proto, parse_rfc3339, to_proto

if TYPE_CHECKING:
    from google.protobuf.descriptor_pb2 import FieldOptions
    from google.protobuf.internal.containers import RepeatedScalarFieldContainer
    from google.protobuf.internal.extension_dict import _ExtensionFieldDescriptor

TIMESTAMP = Timestamp.DESCRIPTOR.full_name
INTEGERS = {
    FieldDescriptor.TYPE_INT32: 32,
    FieldDescriptor.TYPE_SINT32: 32,
    FieldDescriptor.TYPE_SFIXED32: 32,
    FieldDescriptor.TYPE_INT64: 64,
    FieldDescriptor.TYPE_SINT64: 64,
    FieldDescriptor.TYPE_SFIXED64: 64,
}
# `google.api.field_behavior`, typed as what it holds (googleapis-common-protos'
# stubs type their extensions as plain FieldDescriptors).
FIELD_BEHAVIOR = cast(
    "_ExtensionFieldDescriptor[FieldOptions, RepeatedScalarFieldContainer[field_behavior_pb2.FieldBehavior]]",
    field_behavior_pb2.field_behavior,
)


@dataclass(frozen=True)
class View:
    """How one message is spelled in a dialect, beyond proto JSON.

    `names` renames proto fields (create_time -> created_at); `aliases` are
    further input spellings of a field (metric_key for code), which may be
    given instead of it but must agree with it; `copies` are output fields
    repeating another (external_id repeats id) or, by a dotted path through
    the rendered JSON, one of a message field's own (add_on_code repeats
    add_on.code; null when add_on is); `nulls` render empty as
    null (a proto3 `optional` scalar only when unset: its false or 0
    shows); `objects` render unset as their empty object instead of null;
    `hidden` fields are neither read nor shown; `inline` names message
    fields whose own fields are spelled at this level; `wrapped` fields are
    spelled as a one-key object, null when empty (minimum_commitment_cents
    as {"amount_cents": 100}); `keyed` repeated (key, value) messages as
    one object ({"region": ["eu"]}); `enums` respell an enum field's values
    (the first spelling is shown, any is read); `render` reshapes the
    finished JSON object (for a shape no declaration above can say).

    `alternatives` are input spellings of a field that exclude it (Lago's
    coupon_type for discount_type): giving both, even alike, is
    CONFLICTING_FIELDS naming the alternative. `groups` gather some of the
    message's fields in a JSON object of their own (applies_to holds
    plan_codes and billable_metric_codes), read and shown there. `switches`
    are JSON fields standing for one of several fields, chosen by the (proto)
    name of an enum field's value: discount_value is a percentage coupon's
    percentage and a fixed one's amount (read into the chosen field, ignored
    when the enum chooses none; shown as it, null when none).
    """

    names: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    copies: Mapping[str, str] = field(default_factory=dict)
    nulls: frozenset[str] = frozenset()
    objects: frozenset[str] = frozenset()
    hidden: frozenset[str] = frozenset()
    inline: tuple[str, ...] = ()
    wrapped: Mapping[str, str] = field(default_factory=dict)
    keyed: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    enums: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    render: Callable[[Message, dict[str, Any]], dict[str, Any]] | None = None
    alternatives: Mapping[str, str] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    switches: Mapping[str, tuple[str, Mapping[str, str]]] = field(default_factory=dict)

    def json_name(self, name: str) -> str:
        return self.names.get(name, name)

    def json_path(self, name: str) -> str:
        """A field's JSON name, within its group if it has one."""
        group = next((group for group, members in self.groups.items() if name in members), "")
        return _join(group, self.json_name(name))

    def chosen(self, message: Message, switch: str) -> str:
        """The field a switch stands for in `message` ("" when none)."""
        enum_field, targets = self.switches[switch]
        descriptor = descriptor_of(message).fields_by_name[enum_field]
        return targets.get(enum_name(enum_type(descriptor), getattr(message, enum_field)) or "", "")


PLAIN = View()
Views = Mapping[str, View]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _wrong_type(path: str, kind: str) -> ApiError:
    return invalid(f"{path or 'the body'} must be {kind}", path, "INVALID_TYPE")


def enum_name(enum: EnumDescriptor, number: int) -> str | None:
    """PLAN_INTERVAL_MONTHLY -> "monthly"; the zero value, or one unknown, -> None."""
    value = enum.values_by_number.get(number)
    if value is None or number == 0:
        return None
    return value.name.removeprefix(_prefix(enum)).lower()


def _prefix(enum: EnumDescriptor) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


@functools.cache
def output_only(descriptor: FieldDescriptor) -> bool:
    """Whether the server sets the field (`google.api.field_behavior`): a
    request never names it."""
    return field_behavior_pb2.OUTPUT_ONLY in descriptor.GetOptions().Extensions[FIELD_BEHAVIOR]


@functools.cache
def required(descriptor: FieldDescriptor) -> bool:
    """Whether a request must give the field (`google.api.field_behavior`)."""
    return field_behavior_pb2.REQUIRED in descriptor.GetOptions().Extensions[FIELD_BEHAVIOR]


def _required(names: dict[str, tuple[str, FieldDescriptor]]) -> dict[str, str]:
    """The REQUIRED fields among a message's spellings: proto path -> its
    first spelling."""
    found: dict[str, str] = {}
    for name, (proto_path, descriptor) in names.items():
        if required(descriptor):
            found.setdefault(proto_path, name)
    return found


@functools.cache
def is_decimal(descriptor: FieldDescriptor) -> bool:
    return descriptor.GetOptions().Extensions[field_format_pb2.decimal]


def descriptor_of(message: Message | type[Message]) -> Descriptor:
    """A message's descriptor: types-protobuf types `Message.DESCRIPTOR` as
    the pure-Python class or upb's, and upb's is an instance of the former."""
    return cast(Descriptor, message.DESCRIPTOR)


def message_type(descriptor: FieldDescriptor) -> Descriptor:
    """A message field's message."""
    assert descriptor.message_type is not None, f"{descriptor.full_name} is not a message field"
    return descriptor.message_type


def enum_type(descriptor: FieldDescriptor) -> EnumDescriptor:
    """An enum field's enum."""
    assert descriptor.enum_type is not None, f"{descriptor.full_name} is not an enum field"
    return descriptor.enum_type


def containing_type(descriptor: FieldDescriptor) -> Descriptor:
    """The message a field is declared in."""
    assert descriptor.containing_type is not None, f"{descriptor.full_name} is in no message"
    return descriptor.containing_type


@dataclass(frozen=True)
class Reading:
    """How one message is read, worked out once (descriptors never change):
    each spelling's (proto path, field), each field's own spelling, the
    aliases, and the REQUIRED fields by proto path."""

    names: dict[str, tuple[str, FieldDescriptor]]
    first: dict[str, str]
    aliases: set[str]
    required: dict[str, str]


class Decoder:
    """Builds request messages from parsed JSON (decimals as Decimal)."""

    def __init__(self, views: Views):
        self.views = views
        self._readings: dict[tuple[str, frozenset[str]], Reading] = {}

    def reading(self, descriptor: Descriptor, bound: frozenset[str] = frozenset()) -> Reading:
        """How `descriptor` is read (computed on first use: ingestion reads
        the same few messages for every event)."""
        key = (descriptor.full_name, bound)
        found = self._readings.get(key)
        if found is None:
            names = self.names(descriptor, bound)
            first: dict[str, str] = {}
            for name, (proto_path, _) in names.items():
                first.setdefault(proto_path, name)
            found = Reading(names, first, self.aliases(descriptor), _required(names))
            self._readings[key] = found
        return found

    def view(self, descriptor: Descriptor) -> View:
        return self.views.get(descriptor.full_name, PLAIN)

    def names(
        self, descriptor: Descriptor, bound: frozenset[str] = frozenset()
    ) -> dict[str, tuple[str, FieldDescriptor]]:
        """Every JSON spelling a message reads, to (proto path, field); an
        inlined field's own fields are read at this level; `bound` fields
        (a path's variables) are not."""
        view = self.view(descriptor)
        found: dict[str, tuple[str, FieldDescriptor]] = {}
        for proto in descriptor.fields:
            if proto.name in view.hidden or proto.name in bound or output_only(proto):
                continue
            if proto.name in view.inline:
                for name, (path, inner) in self.names(message_type(proto)).items():
                    found[name] = (f"{proto.name}.{path}", inner)
                continue
            found[view.json_path(proto.name)] = (proto.name, proto)
        for alias, name in {**view.aliases, **view.alternatives}.items():
            target = found.get(view.json_name(name))
            if target is not None:  # a bound field is not read under its aliases either
                found[alias] = target
        return found

    def aliases(self, descriptor: Descriptor) -> set[str]:
        """The aliases a message reads, an inlined field's too."""
        view = self.view(descriptor)
        inlined = (message_type(descriptor.fields_by_name[name]) for name in view.inline)
        return {*view.aliases, *(alias for inline in inlined for alias in self.aliases(inline))}

    def into(
        self,
        message: Message,
        value: Any,
        path: str = "",
        bound: frozenset[str] = frozenset(),
        spelled: dict[str, str] | None = None,
        partial: bool = False,
    ) -> None:
        """Fills `message` from a JSON object; `path` names it in errors;
        `bound` fields are not read (see names); `spelled`, when given, is
        told how each field given (null too) was spelled (proto path -> JSON
        path), for errors to name it so. A REQUIRED field
        (`google.api.field_behavior`) not given, or given null, is
        MISSING_FIELD, at any depth, unless the object is `partial` (an
        update's)."""
        if not isinstance(value, dict):
            raise _wrong_type(path, "an object")
        view = self.view(descriptor_of(message))
        reading = self.reading(descriptor_of(message), bound)
        names, first, aliases = reading.names, reading.first, reading.aliases
        given: dict[str, tuple[str, Any]] = {}
        switched = []
        for name, item in _entries(view, value, path):
            where = _join(path, name)
            if name in view.switches:
                switched.append((name, item, where))
                continue
            if name not in names:
                raise invalid(f"unknown field {where!r}", where, "UNKNOWN_FIELD")
            proto_path, descriptor = names[name]
            if spelled is not None:  # an alias agrees with its field: errors name the field
                named = _join(path, first[proto_path]) if name in aliases else where
                if descriptor.name in self.view(containing_type(descriptor)).wrapped:  # named inside its object
                    named = _join(named, self.view(containing_type(descriptor)).wrapped[descriptor.name])
                spelled.setdefault(proto_path, named)
            self._given(message, view, given, proto_path, descriptor, name, item, where)
        for name, item, where in switched:  # once the enum choosing their field is read
            chosen = view.chosen(message, name)
            if chosen:
                if spelled is not None:
                    spelled.setdefault(chosen, where)
                descriptor = descriptor_of(message).fields_by_name[chosen]
                self._given(message, view, given, chosen, descriptor, name, item, where)
        if not partial:
            for proto_path, name in reading.required.items():
                if proto_path not in given:
                    where = _join(path, name)
                    raise invalid(f"{where} is required", where, "MISSING_FIELD")

    def _given(
        self,
        message: Message,
        view: View,
        given: dict[str, tuple[str, Any]],
        proto_path: str,
        descriptor: FieldDescriptor,
        name: str,
        item: Any,
        where: str,
    ) -> None:
        """Reads one field given as `name`, unless null or given already."""
        if item is None:
            return
        if proto_path in given:
            before, earlier = given[proto_path]
            if name in view.switches or before in view.alternatives or name in view.alternatives:
                named = before if before in view.alternatives or name in view.switches else name
                where = where.removesuffix(name) + named
                raise invalid(f"give {before} or {name}, not both", where, "CONFLICTING_FIELDS")
            if earlier != item:
                raise invalid(f"{before} and {name} name the same thing and disagree", where)
            return
        given[proto_path] = (name, item)
        *outer, _ = proto_path.split(".")
        target = message
        for step in outer:
            target = getattr(target, step)
        self.field(target, descriptor, item, where)

    def field(self, message: Message, descriptor: FieldDescriptor, value: Any, path: str) -> None:
        view = self.view(descriptor_of(message))
        if descriptor.name in view.wrapped:
            value = _unwrapped(view.wrapped[descriptor.name], value, path)
        if descriptor.name in view.keyed:
            self._keyed(getattr(message, descriptor.name), view.keyed[descriptor.name], value, path)
            return
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            self._map(message, descriptor, value, path)
        elif descriptor.is_repeated:
            if not isinstance(value, list):
                raise _wrong_type(path, "an array")
            container = getattr(message, descriptor.name)
            for index, item in enumerate(value):
                where = f"{path}[{index}]"
                if item is None and required(descriptor):  # each of its items is required too
                    raise invalid(f"{where} is required", where, "MISSING_FIELD")
                if item is None:
                    raise _wrong_type(where, _kind(descriptor))
                if descriptor.message_type is not None:
                    self._message(container.add(), item, where)
                else:
                    container.append(self.scalar(descriptor, item, where))
        elif descriptor.message_type is not None:
            self._message(getattr(message, descriptor.name), value, path, message, descriptor)
        else:
            setattr(message, descriptor.name, self.scalar(descriptor, value, path))

    def _keyed(self, container: Any, names: tuple[str, str], value: Any, path: str) -> None:
        """Repeated (key, value) messages given as one JSON object ({"region": ["eu"]})."""
        if not isinstance(value, dict):
            raise _wrong_type(path, "an object")
        key, item = names
        for name, entry in value.items():
            added = container.add()
            setattr(added, key, name)
            where = _join(path, name)
            if entry is None:
                raise invalid(f"{where} is required", where, "MISSING_FIELD")
            self.field(added, added.DESCRIPTOR.fields_by_name[item], entry, where)

    def _message(
        self,
        target: Message,
        value: Any,
        path: str,
        parent: Message | None = None,
        descriptor: FieldDescriptor | None = None,
    ) -> None:
        if target.DESCRIPTOR.full_name == TIMESTAMP:
            target.CopyFrom(timestamp(value, path))
        else:
            self.into(target, value, path)
            if parent is not None and descriptor is not None and not value:
                getattr(parent, descriptor.name).SetInParent()

    def _map(self, message: Message, descriptor: FieldDescriptor, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise _wrong_type(path, "an object")
        container = getattr(message, descriptor.name)
        entry = message_type(descriptor).fields_by_name["value"]
        for key, item in value.items():
            where = _join(path, key)
            if entry.message_type is not None:
                if item is None:
                    raise _wrong_type(where, _kind(entry))
                self._message(container[key], item, where)
            elif item is not None:  # a property given as null is left out
                container[key] = (
                    text(item) if entry.type == FieldDescriptor.TYPE_STRING else self.scalar(entry, item, where)
                )

    def scalar(self, descriptor: FieldDescriptor, value: Any, path: str) -> Any:
        kind = descriptor.type
        if kind == FieldDescriptor.TYPE_STRING:
            if is_decimal(descriptor):
                return decimal(value, path)
            if not isinstance(value, str):
                raise _wrong_type(path, "a string")
            return value
        if kind == FieldDescriptor.TYPE_BOOL:
            if not isinstance(value, bool):
                raise _wrong_type(path, "a boolean")
            return value
        if kind == FieldDescriptor.TYPE_ENUM:
            return self._enum(descriptor, value, path)
        if kind in INTEGERS:
            return integer(value, INTEGERS[kind], path)
        raise _wrong_type(path, "a supported value")  # pragma: no cover - the protos use no other scalar

    def enum_names(self, descriptor: FieldDescriptor) -> dict[str, int]:
        """The names an enum field reads, to their numbers (the zero value has none)."""
        spelled = self.view(containing_type(descriptor)).enums.get(descriptor.name, {})
        enum = enum_type(descriptor)
        return {
            spelling: number
            for number in enum.values_by_number
            if (name := enum_name(enum, number))
            for spelling in spelled.get(name, (name,))
        }

    def _enum(self, descriptor: FieldDescriptor, value: Any, path: str) -> int:
        if not isinstance(value, str):
            raise _wrong_type(path, "a string")
        names = self.enum_names(descriptor)
        if value not in names:
            raise invalid(f"{path} must be one of: {', '.join(names)}", path, "INVALID_VALUE")
        return names[value]


def _unwrapped(inner: str, value: Any, path: str) -> Any:
    """The value of a field spelled as a one-key object ({"amount_cents": 100})."""
    if not isinstance(value, dict):
        raise _wrong_type(path, "an object")
    for name in value:
        if name != inner:
            where = _join(path, name)
            raise invalid(f"unknown field {where!r}", where, "UNKNOWN_FIELD")
    if value.get(inner) is None:
        where = _join(path, inner)
        raise invalid(f"{where} is required", where, "MISSING_FIELD")
    return value[inner]


def _entries(view: View, value: dict[str, Any], path: str) -> list[tuple[str, Any]]:
    """A JSON object's fields, a group's as `group.name`."""
    entries = []
    for name, item in value.items():
        if name not in view.groups:
            entries.append((name, item))
        elif item is not None:
            if not isinstance(item, dict):
                raise _wrong_type(_join(path, name), "an object")
            entries += [(f"{name}.{key}", inner) for key, inner in item.items()]
    return entries


def _kind(descriptor: FieldDescriptor) -> str:
    if descriptor.message_type is not None:
        return (
            "an RFC 3339 timestamp or Unix seconds" if descriptor.message_type.full_name == TIMESTAMP else "an object"
        )
    if descriptor.type == FieldDescriptor.TYPE_BOOL:
        return "a boolean"
    if descriptor.type in INTEGERS:
        return "an integer"
    return "a decimal number or a string holding one" if is_decimal(descriptor) else "a string"


def integer(value: Any, bits: int, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(path, "an integer")
    if abs(value) >= 2 ** (bits - 1):
        raise invalid(f"{path} is out of range", path, "INVALID_VALUE")
    return value


def decimal(value: Any, path: str) -> str:
    """A decimal given as a JSON number or a string, as exact text."""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise _wrong_type(path, "a decimal number or a string holding one")
    try:
        number = value if isinstance(value, Decimal) else Decimal(value)
    except InvalidOperation:
        raise invalid(f"{path} must be a decimal number, got {value!r}", path, "INVALID_VALUE") from None
    if not number.is_finite():
        raise invalid(f"{path} must be a finite number", path, "INVALID_VALUE")
    if number and abs(number.adjusted()) > MAX_EXPONENT:
        raise invalid(f"{path} is out of range", path, "INVALID_VALUE")
    return value if isinstance(value, str) else format(number, "f")


def timestamp(value: Any, path: str) -> Timestamp:
    """An RFC 3339 instant or Unix seconds (a JSON number)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise _wrong_type(path, "an RFC 3339 timestamp or Unix seconds")
    if isinstance(value, str):
        try:
            instant = parse_rfc3339(value)
        except OverflowError:  # a valid instant whose UTC form is before year 1 or after 9999
            raise _out_of_range(path) from None
        except ValueError:
            raise invalid(
                f"{path} must be an RFC 3339 timestamp such as 2026-01-01T00:00:00Z, got {value!r}",
                path,
                "INVALID_VALUE",
            ) from None
    else:
        try:
            instant = EPOCH + timedelta(microseconds=int(Decimal(value) * 1_000_000))
        except ArithmeticError:  # OverflowError, or decimal.Overflow for huge exponents
            raise _out_of_range(path) from None
    if instant >= LATEST:
        raise _out_of_range(path)
    stamp = to_proto(instant)
    assert stamp is not None
    return stamp


def _out_of_range(path: str) -> ApiError:
    return invalid(f"{path} is out of range: times must be before {format_rfc3339(LATEST)}", path, "INVALID_VALUE")


def text(value: Any) -> str:
    """A free-form property as exact text: numbers keep their JSON text,
    booleans are true/false, nested values are compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), default=str)


def _present(message: Message, descriptor: FieldDescriptor, value: Any) -> bool:
    """Whether a field is shown rather than null: a proto3 `optional` scalar
    when set (false and 0 included), any other field when not empty."""
    if descriptor.has_presence and descriptor.message_type is None:
        return message.HasField(descriptor.name)
    return bool(value)


class Encoder:
    """Renders messages as the public JSON."""

    def __init__(self, views: Views):
        self.views = views

    def message(self, message: Message) -> dict[str, Any]:
        view = self.views.get(message.DESCRIPTOR.full_name, PLAIN)
        shown: dict[str, Any] = {}
        for descriptor in descriptor_of(message).fields:
            name = descriptor.name
            if name in view.hidden:
                continue
            if name in view.inline:
                shown.update(self.message(getattr(message, name)))
                continue
            value = self.value(message, descriptor, view)
            if name in view.nulls and not _present(message, descriptor, value):
                value = None
            if name in view.wrapped:
                value = {view.wrapped[name]: value} if value else None
            if name in view.keyed:
                key, item = view.keyed[name]
                value = {entry[key]: entry[item] for entry in value}
            shown[view.json_name(name)] = value
        for name in view.switches:
            chosen = view.chosen(message, name)
            shown[name] = self.value(message, descriptor_of(message).fields_by_name[chosen], view) if chosen else None
        for group, members in view.groups.items():
            shown[group] = {view.json_name(member): shown.pop(view.json_name(member)) for member in members}
        for copy, source in view.copies.items():
            first, *rest = source.split(".")
            value = shown[view.json_name(first)]
            for key in rest:
                value = None if value is None else value[key]
            shown[copy] = value
        return view.render(message, shown) if view.render is not None else shown

    def value(self, message: Message, descriptor: FieldDescriptor, view: View = PLAIN) -> Any:
        raw = getattr(message, descriptor.name)
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            entry = descriptor.message_type.fields_by_name["value"]
            if entry.message_type is None:
                return dict(raw)
            return {key: self.message(item) for key, item in raw.items()}
        if descriptor.is_repeated:
            return [self._item(descriptor, item, view) for item in raw]
        if descriptor.message_type is not None and not message.HasField(descriptor.name):
            return self.message(raw) if descriptor.name in view.objects else None
        return self._item(descriptor, raw, view)

    def _item(self, descriptor: FieldDescriptor, value: Any, view: View) -> Any:
        if descriptor.message_type is not None:
            if descriptor.message_type.full_name == TIMESTAMP:
                return format_rfc3339(from_proto(value))
            return self.message(value)
        if descriptor.type == FieldDescriptor.TYPE_ENUM:
            name = enum_name(enum_type(descriptor), value)
            return view.enums.get(descriptor.name, {}).get(name, (name,))[0] if name else None
        return value
