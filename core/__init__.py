"""The bottom layer: what every package may use, importing none of them.

Errors, progress, logging, the home layout, atomic files, locks, database connections, the
loading of configuration, and the shard format (schema, writer, catalog).
"""
