"""One line per ticket outcome, after it is committed, so that a ticket id is found in the log.

A rejection is INFO: it is the operator's work list (the data must be fixed or the
ticket requeued), and rejections are a small share of the traffic. A processed or
duplicate ticket is DEBUG: at a thousand tickets a second an INFO line each would be
most of the log and tell nothing that GET /tickets/{id} and the counters do not.
"""

from __future__ import annotations

import logging

from ..core.domain import TicketOutcome

log = logging.getLogger("myticket.worker.loop")


def log_outcome(outcome: TicketOutcome) -> None:
    extra = {"ticket_id": outcome.id}
    if outcome.status == "rejected":
        log.info("ticket %s rejected: %s", outcome.id, outcome.error, extra=extra)
    elif log.isEnabledFor(logging.DEBUG):
        if outcome.status == "duplicate":
            log.debug("ticket %s duplicate of %s", outcome.id, outcome.duplicate_of, extra=extra)
        else:
            log.debug("ticket %s %s", outcome.id, outcome.status, extra=extra)

