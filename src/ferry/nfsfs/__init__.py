"""``nfs://`` URLs in the Python data ecosystem, a client face over ``ferry.client``.

``filesystem.py`` is fsspec's ``nfs`` file system (``NfsFileSystem``, registered through the
``fsspec.specs`` entry point, so ``fsspec.filesystem("nfs")`` and ``fsspec.open("nfs://...")``
find it), ``path.py`` universal_pathlib's ``UPath("nfs://...")``, ``urlopen.py`` the urllib
handler that pandas reads through (``ferry.install_urlopen()``). The name follows fsspec's
implementations (s3fs, gcsfs, sshfs) and does not shadow the ``fsspec`` package itself.
Importing this package loads nothing.
"""
