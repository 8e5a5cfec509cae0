"""Agents' status reports, written to the database together.

After a revision every agent applies it and reports within the same second: 100
nodes, 100 reports. Each written on its own cost a thread and a transaction (~1 ms
of the controller's CPU each, on the path of the next change); here the reports that
arrive while one batch is being written make the next batch, written in one
transaction (store/nodes.py `report_many`). No timer: a lone report is written at
once, and under load a batch is as large as the reports that queued meanwhile.

A report is answered only once its batch is committed (what the agent was told is
stored is stored). A batch that fails is written again report by report, so that
one bad report fails alone and the others are still stored.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.concurrency import run_in_threadpool

from .store.nodes import NodeReport, NodeStore

log = logging.getLogger("zonewall.controller.status")


class StatusReports:
    """One per app (its event loop): the reports waiting for the next batch."""

    def __init__(self, nodes: NodeStore) -> None:
        self._nodes = nodes
        self._queued: list[tuple[NodeReport, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # batches written (tests and the bench read it)

    async def report(self, report: NodeReport) -> None:
        """Store `report`; returns when it is committed, raises what writing it raised."""
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((report, stored))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_queued())
        await stored

    async def _write_queued(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                self.batches += 1
                try:
                    await run_in_threadpool(self._nodes.report_many, [report for report, _ in batch])
                except Exception:  # noqa: BLE001 - each report is tried alone below, and fails with its own error
                    await self._write_one_by_one(batch)
                    continue
                for _, stored in batch:
                    if not stored.done():  # its request may have gone (the client hung up)
                        stored.set_result(None)
        finally:
            self._writer = None

    async def _write_one_by_one(self, batch: list[tuple[NodeReport, asyncio.Future[None]]]) -> None:
        for report, stored in batch:
            try:
                await run_in_threadpool(self._nodes.report_many, [report])
            except Exception as exc:  # noqa: BLE001 - handed to the report's own request
                log.warning("status report of %s not stored: %s", report.node, exc)
                if not stored.done():
                    stored.set_exception(exc)
            else:
                if not stored.done():
                    stored.set_result(None)
