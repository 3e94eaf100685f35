"""compare's CPU per cell: the window's CPU derived from timed readings (multiserve.compare.window).

The derivation is pure (readings in, a figure or None out), so its cases are written out: a
steady tree read around both boundaries, readings that came late or slow, a boundary with no
reading on one side. WindowCPU itself is run with a read function whose answer is a known
function of the clock, so what it derives can be checked exactly.
"""
from __future__ import annotations

import time

import pytest

from multiserve.compare.window import MAX_ERROR_SHARE, CpuReading, WindowCPU, timed, window_cpu


def steady(rate: float, *spans: tuple[float, float]) -> list[CpuReading]:
    """Readings of a tree using ``rate`` cores since time 0, each taking (began, ended)."""
    return [CpuReading(b, e, rate * (b + e) / 2) for b, e in spans]


def test_readings_around_both_boundaries_give_the_window_exactly():
    readings = steady(1.5, (9.98, 9.99), (10.001, 10.004), (10.2, 10.21), (10.99, 10.995), (11.002, 11.01))
    assert window_cpu(readings, 10.0, 11.0) == pytest.approx(1.5)


def test_the_nearest_bracket_is_used_whatever_the_order():
    readings = steady(1.0, (11.3, 11.4), (10.01, 10.02), (0.0, 0.1), (10.99, 10.995), (9.99, 9.995), (11.01, 11.02))
    assert window_cpu(list(reversed(readings)), 10.0, 11.0) == pytest.approx(1.0)


def test_readings_that_came_late_give_no_figure_not_zero():
    # the CI failure: the first reading before the load, both "boundary" readings after it, so the
    # two that followed the window read the same CPU (0.0 s apart) - neither brackets a boundary
    # closely; the figure is None
    readings = [CpuReading(9.0, 9.01, 3.0), CpuReading(11.5, 11.51, 5.0), CpuReading(11.52, 11.53, 5.0)]
    assert window_cpu(readings, 10.0, 11.0) is None


def test_a_boundary_without_a_reading_on_each_side_gives_no_figure():
    after_start = steady(1.0, (10.001, 10.002), (10.99, 10.995), (11.001, 11.002))
    assert window_cpu(after_start, 10.0, 11.0) is None  # nothing before the start
    before_end = steady(1.0, (9.99, 9.995), (10.001, 10.002), (10.99, 10.995))
    assert window_cpu(before_end, 10.0, 11.0) is None  # nothing after the end
    assert window_cpu([], 10.0, 11.0) is None


def test_a_reading_that_spans_a_boundary_brackets_nothing():
    # a slow reading (began before the start, ended after it) cannot say on which side its CPU was
    readings = steady(1.0, (9.99, 10.3), (10.99, 10.995), (11.001, 11.002))
    assert window_cpu(readings, 10.0, 11.0) is None
    readings.append(CpuReading(9.98, 9.985, 9.9825))
    assert window_cpu(readings, 10.0, 11.0) is None  # its bracket 9.985..10.99 holds ~100% of the figure


def test_a_figure_whose_worst_case_error_exceeds_the_share_is_dropped():
    # brackets of w seconds on each side of a 1 s window of one core: worst case 2w of 1 s
    def around(w):
        return steady(1.0, (10 - w, 10 - w), (10 + w, 10 + w), (11 - w, 11 - w), (11 + w, 11 + w))

    inside = MAX_ERROR_SHARE / 2 * 0.9  # each bracket is 2w wide: 4w in all
    assert window_cpu(around(inside / 2), 10.0, 11.0) == pytest.approx(1.0)
    outside = MAX_ERROR_SHARE / 4 * 1.2
    assert window_cpu(around(outside), 10.0, 11.0) is None


def test_an_idle_bracket_is_exact_even_when_wide():
    # a tree that used no CPU before the window (priming done, warm-up 0) and after it: the
    # brackets hold none of the figure's CPU, so their width does not matter
    readings = [CpuReading(5.0, 5.01, 2.0), CpuReading(10.0, 10.0, 2.0),  # began at the start: "after" it
                CpuReading(10.5, 10.51, 2.3), CpuReading(10.99, 10.995, 2.6), CpuReading(20.0, 20.01, 2.6)]
    assert window_cpu(readings, 10.0, 11.0) == pytest.approx(0.6)


def test_readings_that_step_back_count_as_error():
    # a thread engine's tree reads a few ms lower once a connection thread exits (its scheduler
    # time goes, its tick-sampled time stays): a small step is inside the share, a big one is not
    def window(step):
        return [CpuReading(9.99, 9.995, 2.0), CpuReading(10.001, 10.002, 2.0), CpuReading(10.99, 10.995, 3.0),
                CpuReading(11.001, 11.002, 3.0 - step)]

    assert window_cpu(window(0.002), 10.0, 11.0) == pytest.approx(1.0, abs=0.002)
    assert window_cpu(window(0.2), 10.0, 11.0) is None


@pytest.mark.timeout(30)
def test_window_cpu_reads_around_the_boundaries_the_load_start_fixes():
    # a "tree" that uses exactly one core: its CPU seconds are the clock's seconds
    # (1 s: its brackets, a few ms wide plus a late wake-up on a loaded machine, stay far
    # below MAX_ERROR_SHARE of it)
    window = WindowCPU(lambda: timed(time.monotonic), warmup=0.05, duration=1.0)
    t0 = time.monotonic() + 0.05
    window.on_start(t0)
    figure = window.seconds()
    assert window.boundaries() == (t0 + 0.05, t0 + 1.05)
    # a read of the clock is an instant: the derived figure is the window's length
    assert figure == pytest.approx(1.0, rel=1e-6)
    for at in window.boundaries():
        assert any(r.ended <= at for r in window.readings) and any(r.began >= at for r in window.readings)


@pytest.mark.timeout(30)
def test_window_cpu_with_readings_slower_than_the_window_gives_no_figure():
    # every reading takes longer than the whole window (what a starved reading thread looks like):
    # no reading begins before the end without spanning it, so there is no figure, not 0.0
    def slow_clock():
        began = time.monotonic()
        time.sleep(0.15)
        return (began + time.monotonic()) / 2

    window = WindowCPU(lambda: timed(slow_clock), warmup=0.0, duration=0.1)
    window.on_start(time.monotonic() + 0.05)
    assert window.seconds() is None


def test_window_cpu_before_the_load_started_has_no_figure():
    assert WindowCPU(lambda: timed(time.monotonic), warmup=0.1, duration=0.1).seconds() is None
