"""Human review tools: the overlay gallery page and its drawings."""
