"""``ferry mount``: an NFS export as a local directory through FUSE (pyfuse3), a client face.

``mount.py`` owns a mount's life (start, signals, stuck requests, unmount), ``ops.py`` holds
the FUSE request handlers over the asyncio client. Importing this package loads nothing;
its modules need pyfuse3 (the ``fuse`` extra).
"""
