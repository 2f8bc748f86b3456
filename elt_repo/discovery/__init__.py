"""Layer 4: a worktree's pipeline folders turned into specs and errors, and the dlt inspectors."""
