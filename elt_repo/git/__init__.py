"""Layer 3: the pipelines repo in Git. URL and ref checks, the runner, the mirror and worktrees."""
