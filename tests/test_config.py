"""Loading and validating the TOML config: good files load, every bad one is a ConfigError
whose message names the key (or section) at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.errors import ConfigError, NfsError
from ferry.nfs3.filehandle import HandleCodec
from ferry.server import config as cfgmod
from ferry.server.keys import load_key_file


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ferry.toml"
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        cfgmod.load(write(tmp_path, text))
    return str(info.value)


GOOD = """
[server]
bind = "0.0.0.0"
port = 12049
state_dir = "/var/lib/ferry-test"
portmapper = true
portmapper_port = 1111
max_record_size = 1048576
idle_timeout = 60
max_connections = 10
handle_key = "000102030405060708090a0b0c0d0e0f"

[[export]]
path = "/srv/a"
name = "/a"
read_only = true
clients = ["127.0.0.1", "10.0.0.0/8", "::1"]
root_squash = false
all_squash = true
anonuid = 1000
anongid = 1001
id = 7

[[export]]
path = "/mem"
backend = "memory"
"""


def test_good_config_loads(tmp_path: Path) -> None:
    cfg = cfgmod.load(write(tmp_path, GOOD))
    assert (cfg.bind, cfg.port, cfg.portmapper, cfg.portmapper_port) == (
        "0.0.0.0",
        12049,
        True,
        1111,
    )
    assert cfg.state_dir == Path("/var/lib/ferry-test")
    assert cfg.max_record_size == 1048576 and cfg.max_connections == 10
    assert cfg.idle_timeout == 60.0 and isinstance(cfg.idle_timeout, float)
    assert cfg.handle_key == bytes(range(16))
    a, mem = cfg.exports
    assert (a.path, a.mount_path, a.read_only, a.root_squash, a.all_squash) == (
        "/srv/a",
        "/a",
        True,
        False,
        True,
    )
    assert a.clients == ("127.0.0.1", "10.0.0.0/8", "::1")
    assert (a.anonuid, a.anongid, a.id) == (1000, 1001, 7)
    assert (mem.backend, mem.mount_path, mem.root_squash, mem.anonuid) == (
        "memory",
        "/mem",
        True,
        65534,
    )


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = cfgmod.load(write(tmp_path, '[[export]]\npath = "/x"\n'))
    assert (cfg.bind, cfg.port, cfg.portmapper) == ("127.0.0.1", 2049, False)
    assert cfg.state_dir is None and cfg.handle_key is None
    assert cfg.exports[0].mount_path == "/x"
    assert (cfg.exports[0].root_squash, cfg.exports[0].all_squash) == (True, False)
    # The default state dir lives under XDG_STATE_HOME and depends on the export set.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    state = cfg.resolved_state_dir()
    assert state.parent == tmp_path / "xdg" / "ferry"
    other = cfgmod.load(write(tmp_path, '[[export]]\npath = "/y"\n'))
    assert other.resolved_state_dir() != state


EXPORT = '[[export]]\npath = "/x"\n'


def test_handle_key_file_rotation(tmp_path: Path) -> None:
    """A key file: the first key signs handles, the next ones are still accepted, so a
    key can be replaced by a rolling restart without making every handle STALE."""
    old, new = bytes(range(32)), bytes(range(32, 64))
    keys = tmp_path / "handle.key"
    keys.write_text(f"# the key that signs\n{new.hex()}\n\n{old.hex()}  # still accepted\n")
    cfg = cfgmod.load(write(tmp_path, f'[server]\nhandle_key_file = "{keys}"\n' + EXPORT))
    assert cfg.handle_key_file == keys
    loaded = load_key_file(keys)
    assert loaded == [new, old]
    codec = HandleCodec(loaded[0], loaded[1:])
    from_old = HandleCodec(old).encode(1, 42, 7)
    assert codec.decode(from_old) == (1, 42, 7)  # a handle of the old key still opens
    assert codec.encode(1, 42, 7) == HandleCodec(new).encode(1, 42, 7)  # signed with new
    with pytest.raises(NfsError):
        HandleCodec(new).decode(from_old)  # once the old key is dropped: BADHANDLE


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", ["no key"]),
        ("abc\n", ["line 1", "hex key"]),
        ("# ok\n" + "00" * 32 + "\nzz" + "00" * 31 + "\n", ["line 3"]),
    ],
)
def test_handle_key_file_errors(tmp_path: Path, text: str, names: list[str]) -> None:
    keys = tmp_path / "handle.key"
    keys.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_key_file(keys)
    assert str(keys) in str(err.value)
    for name in names:
        assert name in str(err.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_key_file(tmp_path / "missing.key")
    both = f'[server]\nhandle_key = "{"00" * 16}"\nhandle_key_file = "{keys}"\n' + EXPORT
    with pytest.raises(ConfigError, match="not both"):
        cfgmod.load(write(tmp_path, both))


@pytest.mark.parametrize(
    ("text", "names"),
    [
        # unknown keys and sections
        ("[server]\nprot = 1\n" + EXPORT, ["[server]", "prot"]),
        ('[[export]]\npath = "/x"\nreadonly = true\n', ["[[export]] #1", "readonly"]),
        ('[[export]]\npath = "/x"\n[[export]]\npath = "/y"\nsquash = 1\n', ["#2", "squash"]),
        ("[servr]\nport = 1\n" + EXPORT, ["servr"]),
        # wrong types
        ('[server]\nport = "2049"\n' + EXPORT, ["server.port", "int"]),
        ("[server]\nport = true\n" + EXPORT, ["server.port"]),
        ("[server]\nportmapper = 1\n" + EXPORT, ["server.portmapper", "bool"]),
        ('[server]\nidle_timeout = "soon"\n' + EXPORT, ["server.idle_timeout"]),
        ("[server]\nstate_dir = 5\n" + EXPORT, ["server.state_dir"]),
        ('[server]\nhandle_key = "not hex"\n' + EXPORT, ["server.handle_key"]),
        ('[server]\nhandle_key = "0011"\n' + EXPORT, ["server.handle_key", "16 bytes"]),
        ("[[export]]\npath = 5\n", ["[[export]] #1.path"]),
        ('[[export]]\npath = "/x"\nread_only = "yes"\n', ["[[export]] #1.read_only", "bool"]),
        ('[[export]]\npath = "/x"\nanonuid = "nobody"\n', ["#1.anonuid"]),
        ('[[export]]\npath = "/x"\noptions = 3\n', ["#1.options"]),
        ('[[export]]\npath = "/x"\nclients = "10.0.0.0/8"\n', ["#1.clients", "list"]),
        ('[[export]]\npath = "/x"\nclients = [10]\n', ["#1.clients", "str"]),
        ("server = 1\n" + EXPORT, ["[server]"]),
        ('[export]\npath = "/x"\n', ["export", "[[export]]"]),
        ('export = ["/x"]\n', ["[[export]] #1", "table"]),
        # missing or empty path
        ('[[export]]\nname = "/x"\n', ["[[export]] #1", "'path' is required"]),
        ('[[export]]\npath = ""\n', ["#1.path", "empty"]),
        # bad client networks
        ('[[export]]\npath = "/x"\nclients = ["999.1.1.1"]\n', ["#1.clients", "999.1.1.1"]),
        ('[[export]]\npath = "/x"\nclients = ["10.0.0.0/33"]\n', ["#1.clients", "10.0.0.0/33"]),
        ('[[export]]\npath = "/x"\nclients = ["localhost"]\n', ["#1.clients", "localhost"]),
        # out of range values
        ("[server]\nport = 70000\n" + EXPORT, ["port", "70000"]),
        ("[server]\nport = -1\n" + EXPORT, ["port", "-1"]),
        ("[server]\nportmapper_port = 70000\n" + EXPORT, ["portmapper_port", "70000"]),
        ("[server]\nmax_record_size = 1000\n" + EXPORT, ["max_record_size"]),
        ("[server]\nmax_connections = 0\n" + EXPORT, ["max_connections"]),
        ('[[export]]\npath = "/x"\nanonuid = -1\n', ["#1.anonuid", "-1"]),
        ('[[export]]\npath = "/x"\nanongid = 4294967296\n', ["#1.anongid"]),
        ('[[export]]\npath = "/x"\nid = 65536\n', ["#1.id", "65536"]),
        # inconsistent exports
        ("", ["no export"]),
        ('[[export]]\npath = "/x"\n[[export]]\npath = "/x"\n', ["same name"]),
        (
            '[[export]]\npath = "/x"\nname = "/a"\n[[export]]\npath = "/y"\nname = "/a"\n',
            ["same name"],
        ),
        ('[[export]]\npath = "/x"\nid = 9\n[[export]]\npath = "/y"\nid = 9\n', ["same id"]),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, names: list[str]) -> None:
    message = load_error(tmp_path, text)
    assert str(tmp_path / "ferry.toml") in message
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"


def test_bad_toml(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[server\nport = 1\n")
    assert "invalid TOML" in message and "ferry.toml" in message
    message = load_error(tmp_path, '[[export]]\npath = "/x"\npath = "/y"\n')  # duplicate key
    assert "invalid TOML" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found.*nope.toml"):
        cfgmod.load(tmp_path / "nope.toml")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        cfgmod.load(tmp_path)  # a directory
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[[export]]\npath = "/caf\xe9"\n')
    with pytest.raises(ConfigError, match="latin1.toml"):
        cfgmod.load(bad)


def test_from_dict_uses_origin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^cli: \[server\]: unknown key\(s\): nope$"):
        cfgmod.from_dict({"server": {"nope": 1}, "export": [{"path": "/x"}]}, origin="cli")


def test_derived_export_ids_are_distinct_or_rejected() -> None:
    from ferry.nfs3.exports import export_id_for

    # Find two paths whose derived ids collide; the config must refuse them.
    seen: dict[int, str] = {}
    pair = None
    for i in range(100_000):
        path = f"/p{i}"
        eid = export_id_for(path)
        if eid in seen:
            pair = (seen[eid], path)
            break
        seen[eid] = path
    assert pair is not None
    with pytest.raises(ConfigError, match="same id"):
        cfgmod.from_dict({"export": [{"path": pair[0]}, {"path": pair[1]}]})
    # An explicit id resolves the clash.
    cfgmod.from_dict({"export": [{"path": pair[0]}, {"path": pair[1], "id": 1}]})
