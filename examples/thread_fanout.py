"""Fan work out to threads and keep the task tree: ``taskscope.ThreadPoolExecutor``.

A plain ``concurrent.futures.ThreadPoolExecutor`` runs work in threads that start with an empty
context, so tasks started there would not know their parent. taskscope's drop-in copies the
submitter's context into each piece of work. Run with ``python examples/thread_fanout.py``.
"""

from __future__ import annotations

import time

import taskscope
from taskscope.exporters import InMemoryExporter


@taskscope.task("fetch-page")
def fetch_page(number: int) -> str:
    time.sleep(0.02 * (4 - number))  # the pages finish in reverse order
    return f"page {number}"


@taskscope.task("fan-out")
def fan_out(count: int) -> list[str]:
    with taskscope.ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(fetch_page, range(count)))


def main() -> None:
    memory = InMemoryExporter()
    client = taskscope.Client(exporters=[memory])
    with client.start_run(name="thread-fanout"):
        pages = fan_out(4)
    client.flush(timeout=5.0)

    parent = memory.task("fan-out")
    children = sorted(
        (t for t in memory.tasks if t.name == "fetch-page"), key=lambda t: t.input["number"]
    )
    print(f"fan-out returned {pages}")
    for child in children:
        relation = "fan-out" if child.parent_id == parent.id else "something else"
        print(f"fetch-page {child.input['number']}: {child.status}, parent is {relation}")
    same_run = all(child.run_id == parent.run_id for child in children)
    print(f"all {len(children)} children in the same run: {same_run}")
    client.shutdown()


if __name__ == "__main__":
    main()
