"""The Ray Data graph of a job or an evaluation: the stages, their actors and tasks, and how they are sized."""
