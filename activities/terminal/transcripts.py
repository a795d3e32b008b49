"""A transcript file per session, written as output is read and pruned by age."""

from __future__ import annotations

import logging
import os
import time

from activities.terminal.model import ManagerParts, Terminal

log = logging.getLogger(__name__)


class TerminalTranscripts(ManagerParts):
    """SessionManager's part that keeps transcripts."""

    def prune_transcripts(self, max_age_s: float, now: float | None = None) -> list[str]:
        """Delete the transcripts of sessions not live here that nothing has written to for
        `max_age_s`; returns their session ids. (A session resumed later starts a new one.)"""
        if self.transcripts_dir is None:
            return []
        cutoff = (time.time() if now is None else now) - max_age_s
        pruned = []
        try:
            entries = list(os.scandir(self.transcripts_dir))
        except FileNotFoundError:
            return []
        for entry in entries:
            session_id = entry.name.removesuffix(".log")
            if session_id == entry.name or session_id in self.terminals:
                continue
            try:
                if entry.is_file(follow_symlinks=False) and \
                        entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    pruned.append(session_id)
                    try:  # its mark for a next worker (kept.py)
                        os.unlink(os.path.join(self.transcripts_dir, f"{session_id}.at"))
                    except FileNotFoundError:
                        pass
            except FileNotFoundError:  # gone meanwhile
                pass
        return pruned

    def _write_transcript(self, term: Terminal, data: bytearray) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[term.transcript.write(view):]  # type: ignore[attr-defined]
        except OSError as err:  # disk full, ...: the database copy goes on
            log.warning("transcript of %s stopped: %s", term.session_id, err)
            term.transcript.close()  # type: ignore[attr-defined]
            term.transcript = None
