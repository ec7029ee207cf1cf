"""The durable spool and delivery from it: a message is answered 250 only once it is here.

``store`` writes and claims spool entries (write, fsync, rename, fsync the directory);
``delivery`` sends them to the next hop with retries; ``dsn`` builds the bounces.
"""

from __future__ import annotations
