"""nfs:// URL parsing and formatting (libnfs syntax) and the export candidates for MNT."""

from __future__ import annotations

import pytest

from ferry.client.url import NfsUrl, export_candidates, parse_url


def test_port_serves_both_programs() -> None:
    u = parse_url("nfs://127.0.0.1:2049/srv/data/f.txt")
    assert (u.host, u.path, u.nfs_port, u.mount_port) == (
        "127.0.0.1",
        "/srv/data/f.txt",
        2049,
        2049,
    )


def test_query_options_win() -> None:
    u = parse_url("nfs://h:1/x?version=3&nfsport=2049&mountport=20048&uid=5&gid=6")
    assert (u.nfs_port, u.mount_port, u.uid, u.gid) == (2049, 20048, 5, 6)
    assert parse_url("nfs://h/x").nfs_port is None  # portmap decides


def test_ipv6_and_round_trip() -> None:
    u = parse_url("nfs://[::1]:2049/a%20b//c/./?uid=0")
    assert (u.host, u.port, u.path) == ("::1", 2049, "/a b/c")
    assert parse_url(u.format()) == u
    assert parse_url(str(NfsUrl("h", "/x", nfsport=5))) == NfsUrl("h", "/x", nfsport=5)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h/x", "not an nfs:// url"),
        ("nfs:///x", "no host"),
        ("nfs://h:70000/x", "bad host or port"),
        ("nfs://h/x?nfsport=0", "out of range"),
        ("nfs://h/x?colour=red", "unknown option 'colour'"),
        ("nfs://h/x?version=4", "only 3 is supported"),
        ("nfs://h/x?uid=me", "uid is not a number"),
        ("nfs://h/a/../b", "may not contain '..'"),
    ],
)
def test_errors_name_the_problem(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(url)


def test_export_candidates_longest_first() -> None:
    assert export_candidates("/a/b") == [("/a/b", ""), ("/a", "b"), ("/", "a/b")]
    assert export_candidates("/") == [("/", "")]


def test_several_servers_in_the_authority() -> None:
    u = parse_url("nfs://h1:2049,[::1]:2050,h3/srv/x?uid=0")
    assert u.servers == (("h1", 2049), ("::1", 2050), ("h3", None))
    assert (u.host, u.port, u.path) == ("h1", 2049, "/srv/x")  # the first one, as before
    assert [u.nfs_port_of(p) for _, p in u.servers] == [2049, 2050, None]
    assert parse_url(u.format()) == u
    assert u.format().startswith("nfs://h1:2049,[::1]:2050,h3/srv/x?")
    forced = parse_url("nfs://h1:1,h2/x?nfsport=7&mountport=8")
    assert [(forced.nfs_port_of(p), forced.mount_port_of(p)) for _, p in forced.servers] == [
        (7, 8),
        (7, 8),
    ]


def test_one_server_url_is_unchanged() -> None:
    u = parse_url("nfs://127.0.0.1:2049/srv?version=3")
    assert u.servers == (("127.0.0.1", 2049),) and u.more == ()
    assert u.format() == "nfs://127.0.0.1:2049/srv?version=3"


@pytest.mark.parametrize(
    ("url", "message"),
    [("nfs://h1,/x", "no host"), ("nfs://h1,h2:0/x", "out of range"), ("nfs://h,h:x/y", "bad")],
)
def test_server_list_errors(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(url)


def test_with_servers_appends_failover_servers() -> None:
    u = parse_url("nfs://h1:2049/x").with_servers(["h2:2050", "[::1]", "h1:2049", "h2:2050"])
    assert u.servers == (("h1", 2049), ("h2", 2050), ("::1", None))  # no repeats
    assert u.with_servers("h3:1, h4") == NfsUrl(
        "h1", "/x", 2049, more=(*u.more, ("h3", 1), ("h4", None))
    )
    assert parse_url(u.format()) == u
    assert u.with_servers([]) == u
    with pytest.raises(ValueError, match="bad host or port"):
        u.with_servers(["h5:99999"])
