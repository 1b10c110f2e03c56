"""Write commands both stores serve well (MongoDB in production, FerretDB v1 locally).

FerretDB v1 narrows a filter to an index only for `{_id: value}`; any other filter (a range on a
field, `$in`) reads and parses every document of the collection, under the write lock the local stack
adds, so every other write waits. Deleting by `_id`, one statement each, is a lookup on both stores.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymongo import DeleteOne
from pymongo.asynchronous.collection import AsyncCollection

# Statements per write command. FerretDB v1 holds one SQLite connection per statement of an update
# command until the command ends, from a pool of 100: a command of 100 or more statements deadlocks
# it (seen with bulks of 200). Small commands keep far below that even with a few instances writing at once.
STATEMENTS_PER_COMMAND = 16


async def delete_by_id(collection: AsyncCollection[Any], ids: Iterable[Any]) -> int:
    """Delete the documents with these `_id`s (missing ones are no error); returns how many were deleted."""
    ops = [DeleteOne({"_id": i}) for i in ids]
    deleted = 0
    for i in range(0, len(ops), STATEMENTS_PER_COMMAND):
        result = await collection.bulk_write(ops[i : i + STATEMENTS_PER_COMMAND], ordered=False)
        deleted += result.deleted_count
    return deleted
