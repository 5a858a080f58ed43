"""The Snowflake engine: its reader, dialect and state store, profile fields (``connection``), types.

The connector probes cloud metadata addresses (169.254.169.254, metadata.google.internal)
when it connects, to report which platform it runs on, unless
SNOWFLAKE_DISABLE_PLATFORM_DETECTION is true in the environment when it is imported. heap-dbt
needs nothing from that probe, and on a machine outside a cloud it only costs time, so the
variable is set here, before any module of this package imports the connector; a value the
user set is kept.
"""

import os

os.environ.setdefault("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")
