#!/usr/bin/env python3
"""Neutral write ceilings for `scripts/bench.sh throughput`: the fastest ways a plain
Python client (pymongo, not leafsync's code) applies the same work to the same server,
with the job's write concern (w: majority, j: true) and unique index on `id`.

Usage: neutral_writes.py MONGO_URI EVENTS_JSONL BATCH
EVENTS_JSONL holds one {"plant": 0|1|2, "event": "<Image API JSON>"} per line, in the
order the job reads them. The events are decoded into the producer DB's BSON types first
(hex -> Binary, ISO dates -> datetime), untimed. Then, each on a fresh database, timed:

- creates: the events that are creates, by `insert_many(ordered=False)` (the `insert`
  command) in chunks of BATCH;
- updates: a newer version of each created image, guarded as the job guards
  (`updated_at` and `_updated_at_us` not newer), by `bulk_write` of `UpdateOne(upsert)`
  (the `update` command with many statements), in chunks of BATCH;
- mixed: every event, in order, as a plain upsert by `id` (`$set` of its fields), by the
  `update` command in chunks of BATCH: the least any client can do to apply the stream.

Prints one JSON object: {"creates": docs/s, "updates": docs/s, "mixed": docs/s, ...}.
"""

import datetime
import json
import sys
import time
import uuid

from bson import Binary
from pymongo import MongoClient, UpdateOne
from pymongo.write_concern import WriteConcern

COLLECTIONS = ["imagecolplantpotato", "imagecolplanttomato", "imagecolplantpepper"]


def parse_date(text):
    text = text.strip().replace(" ", "T")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    value = datetime.datetime.fromisoformat(text)
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value


def to_document(event):
    doc = {}
    for key, value in event.items():
        if key == "data" and isinstance(value, str):
            doc[key] = Binary(bytes.fromhex(value))
        elif key in ("created_at", "updated_at") and isinstance(value, str):
            doc[key] = parse_date(value)
        else:
            doc[key] = value
    return doc


def fresh(client):
    db = client.get_database(
        "bench_neutral_" + uuid.uuid4().hex[:12],
        write_concern=WriteConcern(w="majority", j=True),
    )
    for name in COLLECTIONS:
        db[name].create_index("id", unique=True)
    return db


def timed(label, n, run, results):
    started = time.perf_counter()
    run()
    secs = time.perf_counter() - started
    results[label] = n / secs
    results[label + "_seconds"] = secs


def main():
    uri, path, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    events = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            events.append((record["plant"], to_document(json.loads(record["event"]))))
    client = MongoClient(uri)
    results = {"client": "pymongo " + __import__("pymongo").version, "batch": batch}

    # The first create of each image (the mixed workload replays some).
    creates, seen = [], set()
    for p, d in events:
        if "created_at" in d and d.get("updated_at") is None and (p, d["id"]) not in seen:
            seen.add((p, d["id"]))
            creates.append((p, d))
    db = fresh(client)

    def insert_all():
        for plant, name in enumerate(COLLECTIONS):
            docs = [d for p, d in creates if p == plant]
            for i in range(0, len(docs), batch):
                db[name].insert_many(docs[i : i + batch], ordered=False)

    timed("creates", len(creates), insert_all, results)

    later = datetime.datetime(2030, 1, 1)

    def update_all():
        for plant, name in enumerate(COLLECTIONS):
            ids = [d["id"] for p, d in creates if p == plant]
            ops = [
                UpdateOne(
                    {
                        "id": i,
                        "updated_at": {"$not": {"$gt": later}},
                        "_updated_at_us": {"$not": {"$gt": 1893456000000000}},
                    },
                    {"$set": {"is_active": True, "updated_at": later, "_updated_at_us": 1893456000000000}},
                    upsert=True,
                )
                for i in ids
            ]
            for i in range(0, len(ops), batch):
                db[name].bulk_write(ops[i : i + batch], ordered=False)

    timed("updates", len(creates), update_all, results)

    db = fresh(client)

    def mixed():
        for i in range(0, len(events), batch):
            chunk = events[i : i + batch]
            for plant, name in enumerate(COLLECTIONS):
                ops = [
                    UpdateOne({"id": d["id"]}, {"$set": {k: v for k, v in d.items() if k != "_id"}}, upsert=True)
                    for p, d in chunk
                    if p == plant
                ]
                if ops:
                    db[name].bulk_write(ops, ordered=False)

    timed("mixed", len(events), mixed, results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
