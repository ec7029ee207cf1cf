"""The identity-keyed cache: same objects hit, equal copies miss, admission and size bounds."""

from __future__ import annotations

from sealrelay.smime.memo import cached_by_identity


def test_results_are_reused_for_the_same_objects_only():
    calls: list[tuple[bytes, ...]] = []

    @cached_by_identity(maxsize=8)
    def join(*parts: bytes) -> bytes:
        calls.append(parts)
        return b"".join(parts)

    first, second = bytes(range(4)), bytes(range(4))  # equal, not the same object
    assert first is not second
    assert join(first) == join(first) == join(second) == first
    assert calls == [(first,), (second,)]
    assert join(first, second) == first + second
    assert len(calls) == 3


def test_only_admitted_results_are_stored_and_the_oldest_goes_first():
    calls: list[object] = []

    @cached_by_identity(maxsize=2, admit=lambda item: item != "large")
    def echo(item: object) -> object:
        calls.append(item)
        return item

    for item in ("large", "large", "a", "b", "c", "c", "b", "a"):
        echo(item)
    # "large" is never stored; "a" is evicted by "c", the newest two stay.
    assert calls == ["large", "large", "a", "b", "c", "a"]
