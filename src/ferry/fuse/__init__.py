"""``ferry mount``: an NFS export as a local directory through FUSE (pyfuse3), a client face.

``options.py`` holds what a mount can be told, ``mount.py`` a mount's life (start, signals,
stuck requests, unmount), ``ops.py`` the FUSE request handlers over the asyncio client; the
imports run options <- ops <- mount, no cycle. Importing this package loads nothing; its
modules need pyfuse3 (the ``fuse`` extra).
"""
