"""What POST /ticket leans on: the byte budget, group commit, the durable store and its spool."""
