"""`python -m heap_dbt` runs the command line."""

from heap_dbt.cli import main

main()
