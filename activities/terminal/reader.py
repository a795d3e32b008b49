"""Reading a PTY: bytes to the monitor, the sink, the tail and the transcript, paused while
the sink is behind; the events the monitor finds, delivered in order."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import time

from activities.monitor import MonitorEvent
from activities.terminal.model import (
    BACKLOG_SLICE_S,
    MAX_QUEUED_EVENTS,
    PARKED_BYTES,
    PROCESS_BYTES,
    PROCESS_DELAY_S,
    READ_SIZE,
    READS_PER_WAKEUP,
    TAIL_BYTES,
    TAIL_SLACK,
    ManagerParts,
    Terminal,
)
from semo import hops

log = logging.getLogger(__name__)

#: how long a monitor event is retried when the workflow cannot be told (a server outage)
EVENT_DELIVERY_S = 600.0


class TerminalReader(ManagerParts):
    """SessionManager's part that reads terminals and delivers their events."""

    # --- reading ---------------------------------------------------------------------------

    def _start_reading(self, term: Terminal) -> None:
        if not (term.reading or term.paused or term.eof or term.closed):
            asyncio.get_running_loop().add_reader(term.fd, self._on_readable, term)
            term.reading = True

    def _stop_reading(self, term: Terminal) -> None:
        if term.reading:
            term.reading = False
            asyncio.get_running_loop().remove_reader(term.fd)

    def _on_readable(self, term: Terminal) -> None:
        """A terminal has output. One a person watches is read at once; the fleet's are read
        by `_read_backlog`, a slice of them per turn of the loop: with hundreds of agents
        writing at once, reading them all in one turn held everything else (the watched
        session's read and save too) for tens of milliseconds."""
        if self.sink.watched(term.session_id):
            self._read(term)
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(term.fd)  # `reading` stays: the backlog reads it, then listens again
        self._backlog.append(term)
        if self._backlog_reader is None:
            self._backlog_reader = self._spawn(self._read_backlog())

    async def _read_backlog(self) -> None:
        """Read the terminals waiting in the backlog, BACKLOG_SLICE_S of work per turn."""
        loop = asyncio.get_running_loop()
        backlog = self._backlog
        try:
            while backlog:
                began = time.perf_counter()
                while backlog and time.perf_counter() - began < BACKLOG_SLICE_S:
                    term = backlog.popleft()
                    if not term.reading or term.closed:
                        continue  # stopped meanwhile: whoever starts it listens again
                    try:
                        self._read(term)
                    except Exception:  # as a failed loop callback: logged, still listened to
                        log.exception("reading %s's terminal failed", term.session_id)
                    if term.reading and not term.closed:  # not paused or ended by the read
                        loop.add_reader(term.fd, self._on_readable, term)
                await asyncio.sleep(0)
        finally:
            self._backlog_reader = None
            while backlog:  # cancelled: those left are listened to again, not forgotten
                term = backlog.popleft()
                if term.reading and not term.closed:
                    loop.add_reader(term.fd, self._on_readable, term)

    def _read(self, term: Terminal) -> None:
        inbuf = term.inbuf
        for _ in range(READS_PER_WAKEUP):
            try:
                data = os.read(term.fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as err:  # EIO: every slave fd closed (Linux's EOF for a PTY)
                if err.errno not in (errno.EIO, errno.EBADF):
                    log.warning("read error on %s: %s", term.session_id, err)
                data = b""
            if not data:
                self._stop_reading(term)
                term.eof = True
                self._process(term)
                return
            inbuf += data
            if hops.on(term.session_id):
                hops.mark("read", term.session_id, term.offset + len(inbuf))
            if len(inbuf) >= PROCESS_BYTES:
                self._process(term)  # may pause reading
                return
        if inbuf and self.sink.watched(term.session_id):
            self._process(term)  # a person waits for it: not for more reads to gather
            return
        if inbuf and term.process_handle is None:
            term.process_handle = asyncio.get_running_loop().call_later(
                PROCESS_DELAY_S, self._process, term)
        if term.transcript is not None and len(inbuf) > term.transcribed:
            # at once, not when the batch is handed on: a worker killed meanwhile leaves
            # every byte it read in the transcript, for the next worker (kept.py)
            self._write_transcript(term, inbuf[term.transcribed:])
            term.transcribed = len(inbuf)

    def _process(self, term: Terminal) -> None:
        """Hand the gathered reads on: offsets, tail, transcript, sink, monitor."""
        if term.process_handle is not None:
            term.process_handle.cancel()
            term.process_handle = None
        data = term.inbuf
        if not data:
            return
        term.inbuf = bytearray()
        now = time.monotonic()
        start = term.offset
        term.offset += len(data)
        term.last_output_at = now
        tail = term.tail
        tail += data
        if len(tail) > TAIL_BYTES + TAIL_SLACK:
            del tail[: len(tail) - TAIL_BYTES]
        if term.transcript is not None and len(data) > term.transcribed:
            self._write_transcript(term, data[term.transcribed:])
        term.transcribed = 0
        self.sink.append(term.session_id, start, data)  # type: ignore[arg-type]
        if term.parked:
            term.unmonitored += data  # monitored once the session says which job runs
        else:
            self._monitor(term, data, now)
        term.output.set()
        if term.parked and len(term.unmonitored) >= PARKED_BYTES and not term.paused:
            term.paused = True  # resume_parked() reads on
            self._stop_reading(term)
        elif not term.paused and self.sink.congested(term.session_id):
            term.paused = True
            self._stop_reading(term)
            self._spawn(self._resume_when_drained(term))

    def _monitor(self, term: Terminal, data: bytes | bytearray, now: float) -> None:
        try:
            events = term.monitor.feed(data, now)  # type: ignore[arg-type]
        except Exception:  # a monitor bug must not stop the terminal
            log.exception("output monitor failed on %s", term.session_id)
            events = []
        for ev in events:
            self._queue_event(term, ev)

    async def _resume_when_drained(self, term: Terminal) -> None:
        while True:
            try:
                await self.sink.wait_drained(term.session_id)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("waiting for %s's output to be saved", term.session_id)
                await asyncio.sleep(1.0)
        term.paused = False
        self._start_reading(term)

    def _drain(self, term: Terminal) -> None:
        """Read what the agent wrote before it exited (bounded: a process that outlived the
        sweep could write forever)."""
        for _ in range(64):
            if term.eof or term.closed:
                break
            try:
                data = os.read(term.fd, READ_SIZE)
            except OSError:
                break
            if not data:
                break
            term.inbuf += data
        self._process(term)

    # --- events ------------------------------------------------------------------------------

    def _queue_event(self, term: Terminal, ev: MonitorEvent) -> None:
        if ev.kind in ("completion", "error"):
            term.busy = False
        elif ev.kind == "waiting_input":
            term.waiting = True
        if term.events.qsize() >= MAX_QUEUED_EVENTS:
            term.dropped_events += 1
            if term.dropped_events in (1, 100, 10_000):
                log.warning("%s: %d monitor events dropped (delivery is behind)",
                            term.session_id, term.dropped_events)
            return
        ev = dataclasses.replace(ev, offset=ev.offset + term.base_offset)
        term.events.put_nowait((term.job_id, ev))

    async def _deliver_events(self, term: Terminal) -> None:
        """Hand monitor events to the handler in order, after the output they refer to is saved."""
        while True:
            item = await term.events.get()
            if item is None:  # the terminal is gone
                return
            job_id, ev = item
            if self.on_event is None:
                continue
            if job_id is not None:
                ev = dataclasses.replace(ev, data={**ev.data, "job_id": job_id})
            for attempt in range(4):
                try:
                    await self.sink.flush(term.session_id)
                    break
                except Exception as err:  # deliver anyway in the end: the bytes come later
                    log.warning("saving output before %s of %s: %s", ev.kind, term.session_id, err)
                    await asyncio.sleep(0.5 * 2 ** attempt)
            # a server outage (Temporal down or frozen) must not lose a job's completion:
            # retried for as long as an outage may reasonably last, in order
            give_up = time.monotonic() + EVENT_DELIVERY_S
            attempt = 0
            while True:
                try:
                    await self.on_event(term, ev)
                    break
                except Exception as err:
                    attempt += 1
                    if time.monotonic() >= give_up:
                        log.exception("delivering %s for %s failed %d times: dropped",
                                      ev.kind, term.session_id, attempt)
                        break
                    log.warning("delivering %s for %s failed (attempt %d): %s", ev.kind,
                                term.session_id, attempt, err)
                    await asyncio.sleep(min(0.5 * 2 ** attempt, 5.0))
