"""Where a warehouse lives: a folder (warehouse/store.py, lock.py) or object storage (warehouse/object_store.py,
object_lock.py). The one place that picks the implementation; both have the same interface."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from enrich.settings import is_object_url
from enrich.warehouse import lock as folder_lock
from enrich.warehouse import store as folder_store


def open_warehouse(location: str | Path, guard: Callable[[], None] | None = None):
    """The warehouse at `location`: `Warehouse` (a folder) or `ObjectWarehouse` (s3://, gs:// or az:// bucket/prefix)."""
    if is_object_url(location):
        from enrich.warehouse.object_store import ObjectWarehouse

        return ObjectWarehouse(str(location), guard=guard)
    return folder_store.Warehouse(location, guard=guard)


def warehouse_lock(location: str | Path, purpose: str = "enrich run"):
    """The run lock: an flock()ed file in a folder, a lock object on object storage."""
    if is_object_url(location):
        from enrich.warehouse.object_lock import ObjectLock

        return ObjectLock(str(location), purpose)
    return folder_lock.WarehouseLock(location, purpose)


def is_locked(location: str | Path) -> bool:
    if is_object_url(location):
        from enrich.warehouse.object_lock import is_locked as object_is_locked

        return object_is_locked(str(location))
    return folder_lock.is_locked(location)


def refuse_if_locked(location: str | Path) -> None:
    if is_object_url(location):
        from enrich.warehouse.object_lock import refuse_if_locked as object_refuse

        return object_refuse(str(location))
    return folder_lock.refuse_if_locked(location)


def check_readable(location: str | Path) -> None:
    """For readers (`query`, `runs`): the warehouse exists and can be read."""
    if is_object_url(location):
        from enrich.warehouse.object_store import check_readable as object_check

        return object_check(str(location))
    return folder_store.check_readable(location)


def check_writable(location: str | Path) -> None:
    """For writers, before anything starts: the warehouse can be written (a folder) or reached (a bucket)."""
    if is_object_url(location):
        from enrich.warehouse.object_store import check_writable as object_check

        return object_check(str(location))
    return folder_store.check_writable(location)
