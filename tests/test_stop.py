"""multiserve.stop.Stop: a closed stop's pipe numbers are forgotten, so a late wake cannot write
into whatever file the kernel gave those numbers next (found: a NUL byte in a process engine
child's access log, written by a SIGTERM that reached the parent's restored handler)."""
import os

from multiserve.stop import Stop


def test_a_wake_after_close_writes_into_no_reused_descriptor(tmp_path):
    stop = Stop()
    write_fd = stop.wakeup_fd
    stop.close()
    path = tmp_path / "log"
    fds = [os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT) for _ in range(2)]  # takes the freed numbers
    try:
        assert write_fd in fds  # the kernel reuses the lowest free number: the premise of the defect
        stop.wake()
        stop.set("SIGTERM")
        stop.drain()
    finally:
        for fd in fds:
            os.close(fd)
    assert path.read_bytes() == b""
