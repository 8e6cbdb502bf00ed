"""The ``ferry`` command line, a face over the client, the server and the tools.

``main.py`` parses the command line and runs ``ferry serve``; each other module adds its
commands: ``client.py`` (ls, cat, stat, ...), ``transfer.py`` (get, put, cp), ``mount.py``,
``proxy.py``, ``bench.py``; ``common.py``, ``paths.py`` and ``retry.py`` are what they share.
"""
