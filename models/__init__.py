"""Online River models, their metrics and their versioned snapshots."""
