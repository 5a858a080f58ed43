"""heap-dbt: sync dbt models to Heap's server-side APIs."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
