"""What only scripts/ uses: the demo and the refresh summary printer."""
