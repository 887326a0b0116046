"""The event classes behave as ``@dataclass(frozen=True)`` makes them, although :class:`~torrentcore.events.Event`
supplies ``__repr__``, ``__eq__`` and ``__hash__`` for all of them (start-up cost: torrentcore/events.py)."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from torrentcore import events

CLASSES = [getattr(events, name) for name in events.__all__
           if isinstance(getattr(events, name), type) and dataclasses.is_dataclass(getattr(events, name))]


def _reference(cls: type) -> type:
    """A plain ``@dataclass(frozen=True)`` with ``cls``'s name and fields (the generated methods)."""
    specs = [(f.name, f.type, dataclasses.field(default=f.default, default_factory=f.default_factory,
                                                compare=f.compare, repr=f.repr))
             for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__qualname__, specs, frozen=True)


def _values(cls: type, seed: int) -> dict:
    samples = {"str": f"text {seed}", "int": seed, "bool": bool(seed % 2), "tuple": (seed, "x"),
               "Any": ("snapshot", seed)}
    values = {"info_hash": bytes([seed]) * 20, "name": f"torrent {seed}", "at": 1000.0 + seed}
    for f in dataclasses.fields(cls)[3:]:
        values[f.name] = samples[f.type]
    return values


def test_every_event_class_is_covered():
    assert len(CLASSES) == 14 and events.Event in CLASSES and events.PieceVerified in CLASSES


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_event_behaves_as_a_generated_frozen_dataclass(cls):
    ref = _reference(cls)
    assert cls.__dataclass_params__.frozen and cls.__match_args__ == ref.__match_args__
    one, same_but_later, other = _values(cls, 1), {**_values(cls, 1), "at": 5.0}, _values(cls, 2)
    for values in (one, other):
        assert repr(cls(**values)) == repr(ref(**values))
        assert hash(cls(**values)) == hash(ref(**values))
    assert cls(**one) == cls(**same_but_later) and hash(cls(**one)) == hash(cls(**same_but_later))  # `at` aside
    assert (cls(**one) == cls(**other)) is (ref(**one) == ref(**other)) is False
    assert cls(**one).__eq__(ref(**one)) is NotImplemented  # another class is never equal
    event = cls(**one)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.name = "changed"
    with pytest.raises(dataclasses.FrozenInstanceError):
        del event.info_hash
    assert dataclasses.asdict(event) == dataclasses.asdict(ref(**one))
    assert pickle.loads(pickle.dumps(event)) == event == copy.deepcopy(event)
    assert dataclasses.replace(event, name="renamed").name == "renamed"


def test_subclasses_are_not_equal_to_their_base():
    assert events.Event(b"h" * 20, "t") != events.TorrentAdded(b"h" * 20, "t")
    assert events.Event(b"h" * 20, "t") == events.Event(b"h" * 20, "t", at=1.0)


def test_recursive_repr_is_cut_as_dataclasses_do():
    box: list = []
    event = events.Progress(b"h" * 20, "t", at=1.0, snapshot=box)
    box.append(event)
    assert repr(event) == "Progress(info_hash=b'hhhhhhhhhhhhhhhhhhhh', name='t', at=1.0, snapshot=[...])"
