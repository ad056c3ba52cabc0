"""Reading the server's synchronous replication state (sql/durability.sql) for /ready
and the gauge; the decision is myticket.core.durability's."""

from __future__ import annotations

from ..core.durability import SynchronousReplication, synchronous_replication
from .repository import Repository


async def read_synchronous_replication(repository: Repository) -> SynchronousReplication:
    """One statement on the repository's pool; DatabaseUnavailable when it fails."""
    row = await repository.synchronous_replication()
    return synchronous_replication(
        standby_names=row["standby_names"], synchronous_commit=row["synchronous_commit"],
        in_recovery=row["in_recovery"], synchronous_standbys=row["synchronous_standbys"], readable=row["readable"],
    )
