"""What an operator reaches for (issue 15): --version, --help, packaging, --config/--print-config,
--bind (unix sockets, inherited descriptors), systemd socket activation (a repeated --bind:
tests/test_bind_many.py). Real servers, real clients; every per-engine item runs on every engine
of the registry."""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import multiserve
from multiserve.cli import COMMANDS, build_parser, subparsers
from multiserve.engines import ENGINES, unavailable
from multiserve.testing.server_process import running_server

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parent.parent
ENGINE_NAMES = list(ENGINES)


def cli(*args, timeout=60, **kwargs):
    return subprocess.run([sys.executable, "-m", "multiserve", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def assert_one_error_line(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], proc.stderr


def stop_clean(srv) -> str:
    assert srv.stop(30) == 0
    err = srv.stderr_text()
    assert "Traceback" not in err, err[-3000:]
    return err


# -- item 6: --version, --log-level, --help -------------------------------------------------------

def test_version_names_the_package_version():
    proc = cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"multiserve {multiserve.__version__}"
    from importlib.metadata import version

    assert version("multiserve") == multiserve.__version__  # pyproject and the package agree


def test_unknown_log_level_is_refused_on_the_command_line_and_in_a_file(tmp_path):
    proc = cli("serve", "--port", "0", "--log-level", "loud")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--log-level: must be one of debug, info, warning, error, got 'loud'" in proc.stderr
    config = tmp_path / "s.toml"
    config.write_text('log-level = "loud"\n')
    assert_one_error_line(cli("serve", "--config", str(config)), "log-level", "'loud'")


def test_log_level_in_any_case_is_accepted():
    proc = cli("serve", "--log-level", "WARNING", "--print-config")
    assert proc.returncode == 0, proc.stderr
    assert 'log_level = "warning"  # flag' in proc.stdout


def _all_parsers():
    for name in COMMANDS:
        yield from subparsers(build_parser(name))


def test_every_option_of_every_subcommand_has_a_help_line():
    missing = [(p.prog, a.option_strings or a.dest) for p in _all_parsers() for a in p._actions
               if not (a.help and a.help != argparse.SUPPRESS and a.help.strip())]
    assert missing == []


def test_help_shows_every_default():
    """An option with a default worth showing (not None, not an off flag) shows it in --help."""
    unshown = []
    for parser in _all_parsers():
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            default = action.default
            if default in (None, False, argparse.SUPPRESS) and parser.prog != "multiserve serve":
                continue
            helped = " ".join((parser._get_formatter()._expand_help(action) if action.help else "").split())
            if "default" not in helped.lower() and default not in (None, False, argparse.SUPPRESS):
                unshown.append((parser.prog, action.option_strings[0]))
            assert helped in text
    assert unshown == []
    serve_help = " ".join(cli("serve", "--help").stdout.split())
    for expected in ("(default: 1024)", "(default: asyncio)", "(default: 300.0)", "(default: none)"):
        assert expected in serve_help
    rush_help = " ".join(cli("tickets", "rush", "--help").stdout.split())
    assert "--buyers BUYERS how many buyers" in rush_help


# -- item 7: packaging hygiene --------------------------------------------------------------------

def test_license_is_an_spdx_string():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"


def test_baselines_module_runs_without_runpy_warning():
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "multiserve.compare.baselines",
                           "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" not in proc.stderr and "found in sys.modules" not in proc.stderr
    from multiserve.compare import LoadSettings, Options, run_compare  # the lazy names still import

    assert callable(run_compare) and LoadSettings and Options


# -- item 3: --config FILE.toml, --print-config ---------------------------------------------------

def test_config_file_serves_and_a_flag_wins_over_it(tmp_path):
    config = tmp_path / "multiserve.toml"
    config.write_text('service = "echo"\nmax-line = 16\nengine = "thread"\n')
    with running_server("--config", str(config), "--port", "0") as srv:
        with srv.connect() as c:
            assert c.request(b"from the file\n") == b"from the file\n"  # echo: the file's service
        with srv.connect() as c:
            c.send(b"x" * 40 + b"\n")  # past the file's max_line of 16
            assert c.read_all().startswith(b"ERR")
        stop_clean(srv)
    with running_server("--config", str(config), "--port", "0", "--service", "upper") as srv:
        with srv.connect() as c:
            assert c.request(b"the flag\n") == b"THE FLAG\n"
        stop_clean(srv)


def test_print_config_names_where_each_setting_came_from(tmp_path):
    config = tmp_path / "s.toml"
    config.write_text('max_conns = 50\nidle-timeout = 2.5\nno-uvloop = true\nbind = "unix:/tmp/x.sock"\n'
                      'unix-mode = "660"\n')
    proc = cli("serve", "--config", str(config), "--idle-timeout", "7", "--print-config")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "max_conns = 50  # file" in lines
    assert "idle_timeout = 7.0  # flag" in lines
    assert "uvloop = false  # file" in lines
    assert 'bind = ["unix:/tmp/x.sock"]  # file' in lines
    assert "unix_mode = 0o660  # file" in lines
    assert "backlog = 1024  # default" in lines
    # what it prints is a config file that reads back to the same settings
    again = tmp_path / "again.toml"
    again.write_text(proc.stdout)
    second = cli("serve", "--config", str(again), "--print-config")
    assert second.returncode == 0, second.stderr
    assert [line.split("  #")[0] for line in second.stdout.splitlines()] == [line.split("  #")[0] for line in lines]


def test_a_flag_equal_to_its_default_still_wins_over_the_file(tmp_path):
    config = tmp_path / "s.toml"
    config.write_text("backlog = 10\n")
    proc = cli("serve", "--config", str(config), "--backlog", "1024", "--print-config")
    assert "backlog = 1024  # flag" in proc.stdout.splitlines()


@pytest.mark.parametrize("body, fragments", [
    ("max_conns = -1\n", ["max_conns", "must be >= 0"]),
    ("nosuch = 1\n", ["unknown key 'nosuch'"]),
    ('engine = "warp"\n', ["engine", "unknown engine 'warp'"]),
    ("port = true\n", ["port", "whole number"]),
    ("max-line = 2.5\n", ["max-line", "whole number"]),
    ("no-uvloop = 1\n", ["no-uvloop", "true or false"]),
    ("grace = [1]\n", ["grace"]),
    ("bind = 'nowhere'\n", ["bind", "expected HOST:PORT"]),
    ("port = = 3\n", ["not valid TOML"]),
])
def test_a_bad_config_file_is_one_line_naming_the_key(tmp_path, body, fragments):
    config = tmp_path / "bad.toml"
    config.write_text(body)
    assert_one_error_line(cli("serve", "--config", str(config)), str(config), *fragments)


def test_a_missing_config_file_is_one_line(tmp_path):
    assert_one_error_line(cli("serve", "--config", str(tmp_path / "none.toml")), "none.toml", "No such file")


@pytest.mark.skipif(bool(unavailable("gevent")), reason=f"gevent unavailable here: {unavailable('gevent')}")
def test_gevent_chosen_in_the_config_file_is_patched_first(tmp_path):
    config = tmp_path / "g.toml"
    config.write_text('engine = "gevent"\n')
    with running_server("--config", str(config), "--port", "0") as srv:
        with srv.connect() as a, srv.connect() as b:
            assert a.request(b"one\n") == b"ONE\n" and b.request(b"two\n") == b"TWO\n"
        err = stop_clean(srv)
    assert "MonkeyPatchWarning" not in err, err[-2000:]  # patched before anything imported ssl or threading
    assert "stopped: connections=2 requests=2 errors=0" in err


# -- item 2: --bind, unix sockets, inherited descriptors, socket activation -----------------------

@pytest.fixture(params=ENGINE_NAMES)
def engine(request):
    return request.param


def short_path(tmp_path, name):
    """A unix socket path: sun_path holds 108 bytes, and pytest's tmp_path can be longer."""
    path = Path(f"/tmp/ms-{os.getpid()}-{name}.sock")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return path


def test_unix_socket_with_mode_removed_at_exit(engine, tmp_path):
    path = short_path(tmp_path, engine)
    with running_server("--engine", engine, "--bind", f"unix:{path}", "--unix-mode", "600") as srv:
        assert (srv.host, srv.port) == (f"unix:{path}", None)  # the ready line names the socket
        assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
        with srv.connect() as a, srv.connect() as b:
            assert a.request(b"over unix\n") == b"OVER UNIX\n"
            b.send(b"one\ntwo\n")
            assert (b.readline(), b.readline()) == (b"ONE\n", b"TWO\n")
        err = stop_clean(srv)
    assert "stopped: connections=2 requests=3 errors=0" in err, err[-2000:]
    assert not path.exists()


def test_a_stale_unix_socket_file_is_replaced_and_a_live_one_refused(tmp_path):
    path = short_path(tmp_path, "stale")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody accepts: a server that was killed
    with running_server("--engine", "thread", "--bind", f"unix:{path}") as srv:
        with srv.connect() as c:
            assert c.request(b"x\n") == b"X\n"
        second = cli("serve", "--bind", f"unix:{path}", timeout=30)
        assert_one_error_line(second, f"unix:{path}", "another server accepts there")
        stop_clean(srv)
    assert not path.exists()


def test_a_unix_path_that_is_not_a_socket_is_refused(tmp_path):
    path = short_path(tmp_path, "file")
    path.write_text("not a socket")
    try:
        assert_one_error_line(cli("serve", "--bind", f"unix:{path}"), f"unix:{path}")
        assert path.read_text() == "not a socket"
    finally:
        path.unlink()


def listening_socket(family=socket.AF_INET, host="127.0.0.1"):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(128)
    return sock


def test_bind_fd_serves_an_inherited_socket(engine):
    sock = listening_socket()
    port = sock.getsockname()[1]
    try:
        with running_server("--engine", engine, "--bind", f"fd://{sock.fileno()}",
                            pass_fds=(sock.fileno(),)) as srv:
            assert (srv.host, srv.port) == ("127.0.0.1", port)
            with srv.connect() as c:
                assert c.request(b"inherited\n") == b"INHERITED\n"
            stop_clean(srv)
    finally:
        sock.close()


# What systemd does before it execs a socket-activated service: the socket at descriptor 3,
# LISTEN_PID naming the process (the same pid after the exec), LISTEN_FDS=1.
ACTIVATE = [sys.executable, "-c", """
import os, sys
fd = int(os.environ.pop("MS_FD"))
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.executable, [sys.executable, "-m", "multiserve", *sys.argv[1:]])
"""]


def test_systemd_socket_activation_ignores_host_and_port(engine):
    sock = listening_socket()
    port = sock.getsockname()[1]
    env = {**os.environ, "MS_FD": str(sock.fileno())}
    try:
        # --port 1 could not be bound (not root): the passed socket is served instead
        with running_server("--engine", engine, "--port", "1", command=ACTIVATE, env=env,
                            pass_fds=(sock.fileno(),)) as srv:
            assert (srv.host, srv.port) == ("127.0.0.1", port)
            with srv.connect() as a, srv.connect() as b:
                assert a.request(b"activated\n") == b"ACTIVATED\n"
                assert b.request(b"again\n") == b"AGAIN\n"
            err = stop_clean(srv)
        assert "socket activation: serving 127.0.0.1:%d (fd 3)" % port in err
        assert "stopped: connections=2 requests=2 errors=0" in err, err[-2000:]
    finally:
        sock.close()


def test_listen_pid_of_another_process_is_not_ours():
    env = {**os.environ, "LISTEN_PID": "1", "LISTEN_FDS": "1"}
    with running_server("--engine", "thread", "--port", "0", env=env) as srv:
        assert srv.port != 0
        with srv.connect() as c:
            assert c.request(b"own socket\n") == b"OWN SOCKET\n"
        stop_clean(srv)


def test_ipv6_bind_in_brackets():
    try:
        listening_socket(socket.AF_INET6, "::1").close()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with running_server("--engine", "asyncio", "--bind", "[::1]:0") as srv:
        assert srv.host == "::1"
        with socket.create_connection(("::1", srv.port), timeout=10) as s:
            s.sendall(b"six\n")
            assert s.recv(100) == b"SIX\n"
        stop_clean(srv)


@pytest.mark.parametrize("args, fragments", [
    (["--bind", "unix:"], ["unix: needs a path"]),
    (["--bind", "localhost"], ["expected HOST:PORT"]),
    (["--bind", "::1:80"], ["in brackets"]),
    (["--bind", "fd://x"], ["fd:// needs a descriptor number"]),
    (["--bind", "fd://0"], ["fd://0"]),
    (["--unix-mode", "999"], ["octal"]),
    (["--engine", "hybrid", "--reuse-port", "--bind", "unix:/tmp/ms-never.sock"], ["--reuse-port", "unix:"]),
])
def test_a_bad_bind_is_one_line(args, fragments):
    proc = cli("serve", *args, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert all(f in proc.stderr for f in fragments), proc.stderr
    assert not os.path.exists("/tmp/ms-never.sock")
