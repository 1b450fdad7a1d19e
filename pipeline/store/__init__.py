"""Storage and bookkeeping: reading inputs and writing parts, a job's identity, runs and statistics."""
