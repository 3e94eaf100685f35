"""The README's example service (examples/notes.py), served the way the README says."""
import os
import pathlib
import sys

import pytest

from multiserve.testing.server_process import running_server

REPO = pathlib.Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = pathlib.Path(sys.executable).parent / "multiserve"

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("engine", ["gevent", "asyncio", "process"])
def test_the_readme_example_is_served_by_the_console_script_from_the_project_directory(engine):
    # the console script, unlike python -m, does not put the current directory on sys.path:
    # --service examples.notes:Notes must still import, as gunicorn's module:app does
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with running_server("--engine", engine, "--port", "0", "--service", "examples.notes:Notes",
                        cwd=REPO, env=env, command=[str(CONSOLE_SCRIPT)]) as srv:
        first, second = srv.connect(), srv.connect()
        first.send(b"SET colour blue\nGET colour\nhello\n")
        assert [first.readline() for _ in range(3)] == [b"OK\n", b"blue\n", b"HELLO\n"]
        second.send(b"GET colour\n")
        assert second.readline() == b"\n"  # notes are per connection
        first.sock.close()
        second.sock.close()
        assert srv.stop(20) == 0


def test_the_async_example_is_served_by_a_thread_engine():
    with running_server("--engine", "thread", "--port", "0", "--service", "examples.notes:SlowUpper", cwd=REPO) as srv:
        client = srv.connect()
        client.send(b"caf\xc3\xa9\n")
        assert client.readline() == b"CAF\xc3\xa9\n"  # bytes.upper(): ASCII only, other bytes unchanged
        client.sock.close()
        assert srv.stop(20) == 0
