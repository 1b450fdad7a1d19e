"""``detpose bench``: measured numbers for docs/benchmarks.md, written to ``bench/results.json``.

``command``: the command line and the streaming-job / plain-loop / stage-ceiling benchmark.
``loop``: the plain-loop baseline, run as ``python -m jobs.bench.loop`` in a child process.
``probe``: memory and CPU of a process tree while a job runs. ``filter``: the filter
micro-benchmark. ``train``: training throughput (``--train``). ``driver``: the driver's peak
memory as the manifest grows (``--driver``). ``report``: Markdown tables from the results
(``python -m jobs.bench.report``).

Nothing is imported here: the baseline's child process imports only what it measures.
"""
