"""The local SQLite store: schema, migrations, upserts and the reads behind the CLI.

One file, shared by ``LocalStore`` (which writes) and ``taskscope runs/show/export`` (which
read). Times are stored as integer nanoseconds since the epoch, exactly as the records carry
them; JSON values (input, output, error, metadata, tags, usage, payload) as JSON text.

Several processes may write one file at once: the file is in WAL mode, every batch is one
``BEGIN IMMEDIATE`` transaction (so a writer waits for the lock up front instead of failing
half-way), and a busy file is retried with backoff until ``BUSY_DEADLINE`` seconds pass.
A file that is not a taskscope store is never written to, let alone overwritten.

Three modules, one job each: ``_open`` (schema, migrations, opening a file safely), ``_write``
(batches as upserts) and ``_read`` (the CLI's queries). This package re-exports their names.
"""

from ._open import (
    APPLICATION_ID,
    BUSY_DEADLINE,
    BUSY_TIMEOUT_MS,
    DEFAULT_PATH,
    EVENT_COLUMNS,
    MIGRATIONS,
    RUN_COLUMNS,
    SCHEMA_VERSION,
    TASK_COLUMNS,
    connect,
    default_path,
    is_busy,
    retry_busy,
)
from ._read import RunSummary, StoredRun, count_runs, find_run_ids, list_runs, load_run
from ._write import _INSERT_EVENT as _INSERT_EVENT
from ._write import _UPSERT_RUN as _UPSERT_RUN
from ._write import _UPSERT_TASK as _UPSERT_TASK
from ._write import (
    StoreUnavailable,
    in_write_transaction,
    json_text,
    write_batch,
)

# The names this had when it was one module, for code that still reads them (benchmarks).
_RUN_COLUMNS = RUN_COLUMNS
_TASK_COLUMNS = TASK_COLUMNS
_EVENT_COLUMNS = EVENT_COLUMNS

__all__ = [
    "APPLICATION_ID",
    "BUSY_DEADLINE",
    "BUSY_TIMEOUT_MS",
    "DEFAULT_PATH",
    "EVENT_COLUMNS",
    "MIGRATIONS",
    "RUN_COLUMNS",
    "SCHEMA_VERSION",
    "TASK_COLUMNS",
    "RunSummary",
    "StoreUnavailable",
    "StoredRun",
    "connect",
    "count_runs",
    "default_path",
    "find_run_ids",
    "in_write_transaction",
    "is_busy",
    "json_text",
    "list_runs",
    "load_run",
    "retry_busy",
    "write_batch",
]
