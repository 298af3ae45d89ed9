"""Evidence: compare policies, inspect a run, plots."""
