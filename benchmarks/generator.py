"""Realistic change-stream events for the benchmarks, generated once and replayed.

Generating an event costs about as much as writing it, so the harness builds a
*pool* of distinct events up front (deterministic for a seed) and replays it to
reach any volume. The events are raw change-stream documents as pymongo yields
them with its defaults: naive-UTC datetimes, a resume token ``{"_data": hex}``,
``ns``, ``documentKey``, ``fullDocument`` and, for updates, ``updateDescription``.

The pool is ordered by ``clusterTime`` over ``hours`` hours, as a change stream
is. Each replay cycle shifts ``clusterTime`` by the pool's span, so time keeps
moving forward and no object ever holds two copies of the same document (which
would flatter the compression ratios). Nothing else changes between cycles.

The documents mix what real collections hold: nested objects and arrays,
datetimes, 64-bit integers beyond 2**53, floats, ``Decimal`` prices (what
pymongo gives for Decimal128 with a codec), UUIDs, small binary values and
non-ASCII text. pymongo's ``bson`` package is not a dependency, so ObjectIds
are 24-character hex strings and BSON Timestamps appear as their Extended JSON
form ``{"$timestamp": {"t": ..., "i": ...}}``.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs

RawEvent = dict[str, Any]

START = datetime(2025, 3, 3, 6, 0, 0)
"""First event time of the pool (naive UTC, as pymongo decodes BSON dates)."""

DATABASE = "shop"
COLLECTIONS: dict[str, int] = {
    "orders": 35,
    "users": 25,
    "products": 20,
    "inventory": 12,
    "audit_log": 8,
}
"""Collections and their share of the traffic, in percent: real streams are skewed."""

OPERATIONS = (("insert", 50), ("update", 40), ("delete", 10))

_FIRST_NAMES = (
    "José", "Zoë", "Łukasz", "Siobhán", "Ørjan", "Aiko", "Nguyễn", "Чайковский",
    "Ana", "Mohammed", "Priya", "Olivia", "Kwame", "Søren", "Élodie", "Björk",
)  # fmt: skip
_LAST_NAMES = (
    "García", "Müller", "Dvořák", "O'Connor", "山田", "Kowalski", "Smith", "Nakamura",
    "Öztürk", "Ferreira", "Ivanova", "Lefèvre", "Johansson", "Håkansson", "Chen", "Ndiaye",
)  # fmt: skip
_CITIES = (
    ("München", "DE"), ("São Paulo", "BR"), ("Kraków", "PL"), ("東京", "JP"), ("Lyon", "FR"),
    ("Austin", "US"), ("Malmö", "SE"), ("Zürich", "CH"), ("Reykjavík", "IS"), ("Cork", "IE"),
)  # fmt: skip
_WORDS = (
    "organic", "cotton", "stainless", "ergonomic", "wireless", "compact", "vintage",
    "recycled", "premium", "lightweight", "waterproof", "handmade", "café", "naïve",
    "größe", "élan", "smörgås", "piñata", "crème", "fiancée", "déjà-vu", "façade",
)  # fmt: skip
_TAGS = ("new", "sale", "vip", "gift", "b2b", "returning", "mobile", "newsletter", "eu", "apac")
_STATUSES = ("pending", "paid", "packed", "shipped", "delivered", "cancelled", "refunded")
_WAREHOUSES = ("FRA-1", "AMS-2", "IAD-1", "NRT-3", "GRU-1")
_ACTIONS = ("login", "logout", "password_reset", "order_view", "refund_request", "export")
_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "shop-backend/3.14.1 python-requests/2.31",
)


@attrs.frozen
class EventPool:
    """Distinct events in ``clusterTime`` order, and what replaying them costs to read."""

    events: list[RawEvent]
    json_sizes: list[int]
    """Per event, the bytes of :func:`input_json` (the "input" every MB/s figure counts)."""
    span_seconds: int
    """How much ``clusterTime`` advances per replay cycle."""
    seed: int

    def input_bytes(self, count: int) -> int:
        """Input bytes of the first ``count`` replayed events (shifting keeps sizes equal)."""
        cycles, rest = divmod(count, len(self.events))
        return cycles * sum(self.json_sizes) + sum(self.json_sizes[:rest])

    def batches(self, count: int, batch_size: int) -> Iterator[list[RawEvent]]:
        """``count`` events in lists of ``batch_size``, cycling through the pool.

        The first cycle yields the pool's own objects; later cycles yield shallow
        copies with a shifted ``clusterTime`` (about 0.3 µs per event, paid by
        every writer under test alike).
        """
        size = len(self.events)
        produced = 0
        while produced < count:
            n = min(batch_size, count - produced)
            batch: list[RawEvent] = []
            while len(batch) < n:
                cycle, index = divmod(produced + len(batch), size)
                take = min(n - len(batch), size - index)
                chunk = self.events[index : index + take]
                batch.extend(chunk if cycle == 0 else _shifted(chunk, cycle * self.span_seconds))
            produced += n
            yield batch


def _shifted(events: list[RawEvent], seconds: int) -> list[RawEvent]:
    delta = timedelta(seconds=seconds)
    out: list[RawEvent] = []
    for event in events:
        when = event["clusterTime"]
        if isinstance(when, datetime):
            moved: Any = when + delta
        else:
            ts = when["$timestamp"]
            moved = {"$timestamp": {"t": ts["t"] + seconds, "i": ts["i"]}}
        out.append({**event, "clusterTime": moved})
    return out


def input_json(event: RawEvent) -> bytes:
    """The measure of input size: compact UTF-8 JSON, non-JSON values as ``str()``."""
    return json.dumps(event, default=str, ensure_ascii=False, separators=(",", ":")).encode()


def build_pool(size: int = 20_000, *, hours: int = 4, seed: int = 20250303) -> EventPool:
    """``size`` distinct events spread over ``hours`` hours, the same for the same seed."""
    rng = random.Random(seed)
    span = hours * 3600
    # Sorted uniform times: bursts and lulls like real traffic, strictly ordered.
    offsets = sorted(rng.random() * span for _ in range(size))
    collections = rng.choices(list(COLLECTIONS), weights=list(COLLECTIONS.values()), k=size)
    operations = rng.choices(
        [op for op, _ in OPERATIONS], weights=[w for _, w in OPERATIONS], k=size
    )
    events: list[RawEvent] = []
    last_second, increment = -1, 0
    for offset, collection, operation in zip(offsets, collections, operations, strict=True):
        when = START + timedelta(seconds=offset)
        second = int(offset)
        increment = increment + 1 if second == last_second else 1
        last_second = second
        events.append(_event(rng, collection, operation, when, increment))
    return EventPool(events, [len(input_json(e)) for e in events], span, seed)


def _event(
    rng: random.Random, collection: str, operation: str, when: datetime, increment: int
) -> RawEvent:
    epoch = int(when.replace(tzinfo=UTC).timestamp())
    doc_id = _object_id(rng, epoch)
    event: RawEvent = {
        "_id": {"_data": _resume_token(rng, epoch, increment, doc_id)},
        "operationType": operation,
        # pymongo yields a BSON Timestamp; half the events use its Extended JSON form,
        # half a datetime, so both accepted shapes are exercised.
        "clusterTime": (
            {"$timestamp": {"t": epoch, "i": increment}} if rng.random() < 0.5 else when
        ),
        "wallTime": when,
        "ns": {"db": DATABASE, "coll": collection},
        "documentKey": {"_id": doc_id},
    }
    document = _DOCUMENTS[collection](rng, doc_id, when)
    if operation == "insert":
        event["fullDocument"] = document
    elif operation == "update":
        event["updateDescription"] = _update_description(rng, document, when)
        if rng.random() < 0.7:  # watch(full_document="updateLookup") is common
            event["fullDocument"] = document
    return event


def _object_id(rng: random.Random, epoch: int) -> str:
    return f"{epoch:08x}{rng.getrandbits(64):016x}"


def _resume_token(rng: random.Random, epoch: int, increment: int, doc_id: str) -> str:
    # Shaped like a real v1 token: cluster time, increment, collection UUID, document key.
    return (
        f"82{epoch:08X}{increment:08X}2B022C0100296E5A1004"
        f"{rng.getrandbits(128):032X}46645F696400643C{doc_id.upper()}0004"
    )


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def _name(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"


def _past(rng: random.Random, when: datetime, days: int) -> datetime:
    return (when - timedelta(seconds=rng.randrange(days * 86400))).replace(microsecond=0)


def _user(rng: random.Random, doc_id: str, when: datetime) -> dict[str, Any]:
    city, country = rng.choice(_CITIES)
    name = _name(rng)
    doc: dict[str, Any] = {
        "_id": doc_id,
        "name": name,
        "email": f"user{rng.randrange(10**7)}@example.{country.lower()}",
        "created_at": _past(rng, when, 900),
        "last_login": when,
        "address": {
            "street": f"{rng.randrange(1, 300)} {rng.choice(_LAST_NAMES)}straße",
            "city": city,
            "postal_code": f"{rng.randrange(10000, 99999)}",
            "country": country,
            "geo": {"lat": rng.uniform(-60, 70), "lon": rng.uniform(-180, 180)},
        },
        "tags": rng.sample(_TAGS, rng.randrange(0, 4)),
        "preferences": {
            "language": rng.choice(("de", "pt-BR", "pl", "ja", "fr", "en")),
            "newsletter": rng.random() < 0.4,
            "theme": rng.choice(("dark", "light", None)),
        },
        "login_count": rng.randrange(1, 5000),
        "lifetime_value_micros": rng.randrange(10**9, 10**14),
        "external_id": rng.randrange(2**60, 2**63 - 1),  # snowflake-style, beyond 2**53
        "session_id": uuid.UUID(int=rng.getrandbits(128), version=4),
        "bio": _text(rng, rng.randrange(8, 24)),
    }
    if rng.random() < 0.2:
        doc["avatar_sha1"] = rng.randbytes(20)  # BSON Binary
    return doc


def _order(rng: random.Random, doc_id: str, when: datetime) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for _ in range(rng.randrange(1, 6)):
        price = round(rng.uniform(2, 400), 2)
        items.append(
            {
                "sku": f"SKU-{rng.randrange(10**6):06d}",
                "title": _text(rng, 3),
                "qty": rng.randrange(1, 6),
                "unit_price": price,
                "discounts": [{"code": "SPRING", "pct": 10.0}] if rng.random() < 0.2 else [],
            }
        )
    subtotal = round(sum(i["unit_price"] * i["qty"] for i in items), 2)
    city, country = rng.choice(_CITIES)
    return {
        "_id": doc_id,
        "order_number": 10**15 + rng.randrange(10**12),
        "customer_id": _object_id(rng, int(when.replace(tzinfo=UTC).timestamp()) - 86400),
        "status": rng.choice(_STATUSES),
        "placed_at": when,
        "items": items,
        "totals": {
            "subtotal": subtotal,
            "tax": round(subtotal * 0.19, 2),
            "shipping": rng.choice((0.0, 4.99, 9.99)),
            "currency": rng.choice(("EUR", "USD", "BRL", "JPY")),
        },
        "shipping": {"name": _name(rng), "city": city, "country": country},
        "note": _text(rng, rng.randrange(0, 12)) or None,
    }


def _product(rng: random.Random, doc_id: str, when: datetime) -> dict[str, Any]:
    return {
        "_id": doc_id,
        "sku": f"SKU-{rng.randrange(10**6):06d}",
        "title": _text(rng, 4).title(),
        "description": _text(rng, rng.randrange(25, 55)),
        "price": Decimal(f"{rng.randrange(199, 99999)}") / 100,  # Decimal128 in MongoDB
        "categories": [_text(rng, 1) for _ in range(rng.randrange(1, 4))],
        "attributes": {
            "color": rng.choice(("red", "blau", "vert", "黒", "white")),
            "weight_kg": round(rng.uniform(0.05, 30), 3),
            "dimensions_cm": [round(rng.uniform(1, 120), 1) for _ in range(3)],
        },
        "stock": rng.randrange(0, 10_000),
        "rating": {"avg": round(rng.uniform(1, 5), 2), "count": rng.randrange(0, 50_000)},
        "updated_at": when,
    }


def _inventory(rng: random.Random, doc_id: str, when: datetime) -> dict[str, Any]:
    return {
        "_id": doc_id,
        "sku": f"SKU-{rng.randrange(10**6):06d}",
        "warehouse": rng.choice(_WAREHOUSES),
        "on_hand": rng.randrange(0, 5000),
        "reserved": rng.randrange(0, 200),
        "history": [
            {"at": _past(rng, when, 30), "delta": rng.randrange(-50, 200), "by": _name(rng)}
            for _ in range(rng.randrange(3, 8))
        ],
        "bin": {"aisle": rng.randrange(1, 40), "shelf": rng.choice("ABCDEFG")},
        "version": rng.randrange(1, 10**6),
    }


def _audit(rng: random.Random, doc_id: str, when: datetime) -> dict[str, Any]:
    return {
        "_id": doc_id,
        "at": when,
        "actor": {"id": _object_id(rng, 1_700_000_000), "name": _name(rng)},
        "action": rng.choice(_ACTIONS),
        "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
        "user_agent": rng.choice(_AGENTS),
        "request_id": uuid.UUID(int=rng.getrandbits(128), version=4),
        "latency_ms": round(rng.expovariate(1 / 80), 3),
        "details": {
            "fields": rng.sample(_TAGS, 3),
            "ok": rng.random() < 0.95,
            "message": _text(rng, rng.randrange(3, 12)),
            "timings_ms": [round(rng.uniform(0.1, 40), 2) for _ in range(rng.randrange(2, 6))],
        },
        "sequence": rng.randrange(2**62, 2**63 - 1),
    }


_DOCUMENTS: dict[str, Callable[[random.Random, str, datetime], dict[str, Any]]] = {
    "users": _user,
    "orders": _order,
    "products": _product,
    "inventory": _inventory,
    "audit_log": _audit,
}


def _update_description(
    rng: random.Random, document: dict[str, Any], when: datetime
) -> dict[str, Any]:
    fields = [k for k in document if k != "_id"]
    changed = rng.sample(fields, min(len(fields), rng.randrange(1, 4)))
    updated: dict[str, Any] = {}
    for name in changed:
        value = document[name]
        if isinstance(value, dict) and value and rng.random() < 0.5:
            inner = rng.choice(list(value))  # a dotted path, as MongoDB reports $set of a subfield
            updated[f"{name}.{inner}"] = value[inner]
        else:
            updated[name] = value
    updated["updated_at"] = when
    removed = [rng.choice(fields)] if rng.random() < 0.1 else []
    return {"updatedFields": updated, "removedFields": removed, "truncatedArrays": []}
