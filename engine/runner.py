"""The effect runner: executes effects at the edge, off the ingestion path.

Effects wait in a bounded queue; a fixed pool of workers delivers them with
timeouts and retries (exponential backoff with full jitter). A full queue
never blocks ingestion: the effect is dropped, counted and logged.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Awaitable, Callable, Mapping

import attrs
import httpx
import trio

from .effects import Effect, Notify
from .metrics import Metrics

__all__ = ["DeliveryError", "EffectRunner", "RetryPolicy", "NotifyExecutor"]

log = logging.getLogger("herald.effects")

Executor = Callable[[Any], Awaitable[None]]


class DeliveryError(Exception):
    """An effect could not be delivered; ``retryable`` says whether to try again."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@attrs.frozen
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits U(0, min(cap, base·2ⁿ))."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, rng: random.Random = random._inst) -> float:  # type: ignore[attr-defined]
        return rng.uniform(0, min(self.cap, self.base * 2**attempt))


_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class NotifyExecutor:
    """Delivers :class:`Notify` effects as JSON POSTs with an Idempotency-Key."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def __call__(self, effect: Notify) -> None:
        try:
            response = await self.client.post(
                effect.url,
                json=effect.payload,
                headers={"Idempotency-Key": effect.idempotency_key},
            )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        if response.is_success:
            return
        raise DeliveryError(
            f"{effect.url} answered {response.status_code}",
            retryable=response.status_code in _RETRY_STATUS,
        )


class EffectRunner:
    """Bounded queue plus worker pool; ``submit`` never blocks."""

    def __init__(
        self,
        executors: Mapping[type, Executor],
        *,
        metrics: Metrics | None = None,
        capacity: int = 10_000,
        workers: int = 16,
        timeout: float = 5.0,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.executors = dict(executors)
        self.metrics = metrics or Metrics()
        self.workers = workers
        self.timeout = timeout
        self.retry = retry
        self._send, self._receive = trio.open_memory_channel[Effect](capacity)
        self._in_flight = 0
        self.metrics.effects_queued.set_function(lambda: self._send.statistics().current_buffer_used)

    @property
    def pending(self) -> int:
        """Effects queued or being delivered."""
        return self._send.statistics().current_buffer_used + self._in_flight

    def submit(self, effect: Effect) -> bool:
        """Queue an effect for delivery; False (counted, logged) if the queue is full."""
        name = type(effect).__name__
        if type(effect) not in self.executors:
            self.metrics.effects_dropped.labels(name, "no_executor").inc()
            log.error("no executor for effect %s; dropped: %r", name, effect)
            return False
        try:
            self._send.send_nowait(effect)
        except trio.WouldBlock:
            self.metrics.effects_dropped.labels(name, "queue_full").inc()
            log.error("effect queue full (%d); dropped %r", self._send.statistics().max_buffer_size, effect)
            return False
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self.workers):
                    nursery.start_soon(self._worker)
                task_status.started()
        finally:
            left = self._send.statistics().current_buffer_used
            if left:
                log.warning("shutting down with %d undelivered effects", left)

    async def _worker(self) -> None:
        async for effect in self._receive:
            self._in_flight += 1
            try:
                await self.deliver(effect)
            finally:
                self._in_flight -= 1

    async def deliver(self, effect: Effect) -> bool:
        """Deliver one effect, retrying transient failures; True once delivered."""
        name = type(effect).__name__
        execute = self.executors[type(effect)]
        attempt = 0
        while True:
            try:
                with trio.fail_after(self.timeout):
                    await execute(effect)
            except (DeliveryError, trio.TooSlowError) as exc:
                retryable = isinstance(exc, trio.TooSlowError) or exc.retryable
                attempt += 1
                if not retryable or attempt >= self.retry.attempts:
                    reason = "attempts" if retryable else "rejected"
                    self.metrics.effects_failed.labels(name, reason).inc()
                    log.error("giving up on %s after %d attempt(s): %s", name, attempt, exc or "timeout")
                    return False
                self.metrics.effects_retried.labels(name).inc()
                await trio.sleep(self.retry.delay(attempt - 1))
            except Exception:
                self.metrics.effects_failed.labels(name, "error").inc()
                log.exception("executor for %s crashed", name)
                return False
            else:
                self.metrics.effects_sent.labels(name).inc()
                return True
