"""A reproducible throughput and memory benchmark of ``heap-dbt sync`` (``python -m benchmarks.run``)."""
