"""Shape and counts of a store straight from its bytes, without building its objects.

msgspec decodes the store into types generated from the kind (schemas/): every container as a
map or list of raw, unparsed members, the rows behind each counter as objects holding only their
`id`. Skipping the rest is about six times faster than a full parse (0.14 s against 0.9 s for a
240 MB codex store) and builds almost nothing in memory. Verify uses this when a store's bytes
are the ones the manifest records; anything unusual (a null or mistyped container, a row that is
not an object) makes it return None, and the caller parses the store in full instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec

from store_migrate.core import transform
from store_migrate.core.stores import StoreKind, store_kind


@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]
    shape_problems: list[str]


class _IdOnly(msgspec.Struct):
    id: Any = None


@cache
def _root_type(kind_name: str) -> Any:
    kind = store_kind(kind_name)
    counted_rows = {c.rows_key for c in kind.counters}
    nested = {spec.key for spec in kind.counts if spec.method == "items_of_entries"}
    fields: list[Any] = []
    for key, container in kind.containers.items():
        member: Any = _IdOnly if key in counted_rows else (list[msgspec.Raw] if key in nested else msgspec.Raw)
        typed = dict[str, member] if container == "object" else list[member]
        fields.append((key, typed, msgspec.UNSET))
    fields += [(c.name, Any, msgspec.UNSET) for c in kind.counters]
    return msgspec.defstruct(f"{kind_name}_summary", fields, forbid_unknown_fields=False)


def summarize(kind: StoreKind, data: bytes | memoryview) -> Summary | None:
    """The counts and shape problems of a store, or None when it needs a full parse."""
    try:
        root = msgspec.json.decode(data, type=_root_type(kind.name))
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):  # too deep: the full parse says so
        return None
    # The rows behind counters stay `_IdOnly` structs: the transform reads a struct's id as it
    # reads a dict's (transform.row_id), so they need no copy as dicts (0.1 s for 180k rows).
    shallow = {f: getattr(root, f) for f in root.__struct_fields__ if getattr(root, f) is not msgspec.UNSET}
    return Summary(transform.counts(kind, shallow), transform.shape_problems(kind, shallow))
