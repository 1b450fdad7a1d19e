"""The networks each model stage can run, one adapter per network, keyed by name.

``registry`` is the one list of them; ``base`` says what an adapter provides; ``resolve``
turns a job spec's stage into the resolved stage an actor runs.
"""
