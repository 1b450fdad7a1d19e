"""Training on Ray: Ray Train workers (DDP) fed by a Ray Data stream of samples."""
