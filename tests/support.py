"""Test helpers: a fake clock, an event-loop portal, and the sync/async harness."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, field_validator

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

T = TypeVar("T")


class FakeClock:
    """A clock tests move by hand; thread-safe."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


class Portal:
    """An asyncio loop on a background thread that sync code can call into."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="portal")
        self._thread.start()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        future = asyncio.run_coroutine_threadsafe(_await(fn(*args, **kwargs)), self.loop)
        return future.result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


class AsyncAdapter:
    """Presents an async checkpointer through the sync API by calling into the portal loop."""

    def __init__(self, portal: Portal, inner: Any) -> None:
        self._portal = portal
        self.inner = inner

    @property
    def namespace(self) -> str:
        return str(self.inner.namespace)

    @property
    def ttl(self) -> Any:
        return self.inner.ttl

    def restore_checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        return self._portal.call(self.inner.restore_checkpoint, *args, **kwargs)

    def save_state(self, *args: Any, **kwargs: Any) -> Any:
        return self._portal.call(self.inner.save_state, *args, **kwargs)

    def load_state(self, *args: Any) -> Any:
        return self._portal.call(self.inner.load_state, *args)

    def load_checkpoint(self, *args: Any) -> Any:
        return self._portal.call(self.inner.load_checkpoint, *args)

    def delete_thread(self, *args: Any) -> Any:
        return self._portal.call(self.inner.delete_thread, *args)

    def list_threads(self, **kwargs: Any) -> Any:
        return self._portal.call(self.inner.list_threads, **kwargs)

    def iter_threads(self, **kwargs: Any) -> Iterator[Any]:
        iterator = self.inner.iter_threads(**kwargs)
        while True:
            try:
                yield self._portal.call(iterator.__anext__)
            except StopAsyncIteration:
                return

    def refresh_thread(self, *args: Any, **kwargs: Any) -> Any:
        return self._portal.call(self.inner.refresh_thread, *args, **kwargs)

    def purge_expired(self) -> Any:
        return self._portal.call(self.inner.purge_expired)

    def close(self) -> None:
        self._portal.call(self.inner.close)


class Harness:
    """One store in one mode (sync or async) for one test, isolated by its own namespace."""

    def __init__(self, kit: Any, mode: str, portal: Portal, namespace: str) -> None:
        self.kit = kit
        self.mode = mode
        self.portal = portal
        self.namespace = namespace
        self._opened: list[Any] = []

    def make(self, *, namespace: str | None = None, **options: Any) -> Any:
        """A checkpointer on this kit and mode (default: the test's namespace)."""
        ns = self.namespace if namespace is None else namespace
        if self.mode == "sync":
            cp = self.kit.make(namespace=ns, **options)
        else:
            cp = AsyncAdapter(
                self.portal, self.portal.call(self.kit.make_async, namespace=ns, **options)
            )
        self._opened.append(cp)
        return cp

    def make_unreachable(self) -> Any:
        if self.mode == "sync":
            cp = self.kit.make_unreachable(namespace=self.namespace)
        else:
            cp = AsyncAdapter(
                self.portal,
                self.portal.call(self.kit.make_unreachable_async, namespace=self.namespace),
            )
        self._opened.append(cp)
        return cp

    def race(self, workers: int, fn: Callable[[int], T]) -> list[T]:
        """Run ``fn(i)`` for i in range(workers) at once on threads.

        In async mode each call a thread makes becomes a task on the shared loop, so the
        checkpointer sees ``workers`` concurrent tasks.
        """
        barrier = threading.Barrier(workers)

        def run(i: int) -> T:
            barrier.wait()
            return fn(i)

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(run, range(workers)))

    def close(self) -> None:
        for cp in reversed(self._opened):
            with contextlib.suppress(Exception):
                cp.close()


def exception_texts(exc: BaseException) -> list[str]:
    """Every text an exception shows: its message, str and repr, and those of its causes."""
    out: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        out += [str(seen), repr(seen), *map(str, seen.args)]
        seen = seen.__cause__ or seen.__context__
    return out


class GuardedState(BaseModel):
    """A state whose validator quotes the refused value in its message (as apps' often do)."""

    api_key: str

    @field_validator("api_key")
    @classmethod
    def _prefixed(cls, value: str) -> str:
        if not value.startswith("sk-test-"):
            raise ValueError(f"unexpected key {value}")
        return value
