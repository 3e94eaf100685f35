"""What a run measured: :class:`LoadResult`, built by merging the workers' reports exactly."""
from __future__ import annotations

import dataclasses

from . import stats
from .spec import LoadSpec
from .errors import OUTCOMES


@dataclasses.dataclass
class LoadResult:
    """Counts are replies received inside the measured window (after warm-up), as the C
    reference client counts them. ``latency_us`` is measured from the intended send time (open
    loop: corrected for coordinated omission; closed loop: intended == actual). ``histogram`` is
    the merged HdrHistogram, for callers that want other percentiles."""

    spec: LoadSpec
    processes: int
    duration_s: float
    requests: int
    errors: dict[str, int]
    mismatches: int
    mismatch_examples: list[tuple[str, str]]
    latency_us: dict[str, int]
    latency_uncorrected_us: dict[str, int] | None
    timeline: list[dict]
    connect: dict
    loop: str
    histogram: object = dataclasses.field(repr=False, default=None)
    # One merged HdrHistogram per timeline bucket (``spec.timeline_interval`` s each), for callers
    # that need exact percentiles over any span of buckets (``multiserve drill``'s events).
    timeline_histograms: list = dataclasses.field(repr=False, default_factory=list)
    worker_failures: list[str] = dataclasses.field(default_factory=list)  # one line each
    # spec.prime: every connection's first reply, before the window ({"primed", "time_s",
    # "p50_us", "max_us"}: connections answered, the whole connect-and-prime phase, and the
    # first reply's latency from its send); None when not primed.
    prime: dict | None = None
    # CPU seconds each worker process spent inside the measured window (its share of a core is
    # cpu / duration_s: near 1.0, the load generator itself was the limit).
    worker_cpu_s: list[float] = dataclasses.field(default_factory=list)

    @property
    def client_cpu_share(self) -> float | None:
        """The busiest worker's CPU over the window, as a fraction of one core (None: no window)."""
        if not self.worker_cpu_s or self.duration_s <= 0:
            return None
        return max(self.worker_cpu_s) / self.duration_s
    # Requests sent and not answered, or due and not yet sent, when the window closed (neither
    # lost nor counted: a server that lags behind an open-loop rate shows here).
    unanswered: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def outcomes(self) -> dict[str, int]:
        """``{lost, closed, refused, reset, timeout, mismatches}``, every key present (what each counts:
        :mod:`multiserve.loadgen.worker`)."""
        return {**{kind: self.errors.get(kind, 0) for kind in OUTCOMES}, "mismatches": self.mismatches}

    @property
    def status_errors(self) -> dict[str, int]:
        """HTTP: the responses with a non-2xx status, by kind (``{"http_503": 12}``)."""
        return {kind: n for kind, n in self.errors.items() if kind.startswith("http_")}

    @property
    def ok(self) -> bool:
        """No wrong reply (HTTP: no non-2xx status either) and at least one right one: what
        ``multiserve bench`` exits 0 on."""
        return self.mismatches == 0 and self.requests > 0 and not self.status_errors

    @property
    def target(self) -> str:
        spec = self.spec
        host = f"[{spec.host}]" if ":" in spec.host else spec.host
        return f"{host}:{spec.port}" if spec.http is None else f"http://{host}:{spec.port}{spec.http.path}"

    def to_dict(self) -> dict:
        """The JSON object of ``multiserve bench --json``."""
        spec = self.spec
        out = {
            "target": self.target,
            "protocol": "line" if spec.http is None else "http",
            "mode": "open" if spec.open_loop else "closed",
            "connections": spec.connections,
            "pipeline": spec.pipeline,
            "processes": self.processes,
            "loop": self.loop,
            "request_bytes": spec.size,
            "expect": spec.expect if spec.http is None else (
                "status" if spec.http.expect_body is None else "status+body"),
            "warmup_s": spec.warmup,
            "duration_s": round(self.duration_s, 6),
            "requests": self.requests,
            "rps": round(self.rps, 1),
            "errors": dict(self.errors),
            "outcomes": self.outcomes,
            "unanswered_at_end": self.unanswered,
            "mismatches": self.mismatches,
            "mismatch_examples": [{"got": got, "expected": exp} for got, exp in self.mismatch_examples],
            "latency_us": dict(self.latency_us),
            "connect": dict(self.connect),
            "timeline": list(self.timeline),
            "worker_failures": list(self.worker_failures),
            "worker_cpu_s": [round(x, 6) for x in self.worker_cpu_s],
        }
        if self.prime is not None:
            out["prime"] = dict(self.prime)
        if spec.open_loop:
            out["rate_target"] = spec.rate
            out["rate_achieved"] = round(self.rps, 1)
            out["latency_uncorrected_us"] = dict(self.latency_uncorrected_us or {})
        return out


def merge_reports(spec: LoadSpec, ready: list[dict], done: list[dict], failures: list[str]) -> LoadResult:
    """One result from the workers' ``ready`` (connect) and ``done`` (run) reports."""
    errors: dict[str, int] = {}
    for report in [*ready, *done]:
        for kind, n in report.get("errors", {}).items():
            errors[kind] = errors.get(kind, 0) + n
    if failures:
        errors["worker"] = errors.get("worker", 0) + len(failures)
    hist = stats.merge(r["hist"] for r in done)
    raw = stats.merge(r["raw_hist"] for r in done) if spec.open_loop else None
    timeline, timeline_histograms = _merge_timelines(spec, done)
    examples = [e for r in [*ready, *done] for e in r.get("examples", ())][:5]
    connect_hist = stats.merge(r["hist"] for r in ready)
    connect = {
        "connected": sum(r["connected"] for r in ready),
        "failed": sum(r["failed"] for r in ready),
        "time_s": round(max((r["time_s"] for r in ready), default=0.0), 6),
        "p50_us": stats.summary(connect_hist)["p50"],
        "max_us": stats.summary(connect_hist)["max"],
    }
    return LoadResult(
        spec=spec,
        processes=len(ready),
        duration_s=max((r["duration_s"] for r in done), default=0.0),
        requests=sum(r["requests"] for r in done),
        errors=errors,
        mismatches=sum(r.get("mismatches", 0) for r in [*ready, *done]),
        mismatch_examples=examples,
        latency_us=stats.summary(hist),
        latency_uncorrected_us=stats.summary(raw) if raw is not None else None,
        timeline=timeline,
        connect=connect,
        loop=done[0]["loop"] if done else "",
        histogram=hist,
        timeline_histograms=timeline_histograms,
        worker_failures=list(failures),
        prime=_prime(spec, ready, connect["connected"]),
        worker_cpu_s=[r.get("cpu_s", 0.0) for r in done],
        unanswered=sum(r.get("unanswered", 0) for r in done),
    )


def _prime(spec: LoadSpec, ready: list[dict], connected: int) -> dict | None:
    if not spec.prime:
        return None
    summary = stats.summary(stats.merge(r["prime_hist"] for r in ready if r.get("prime_hist")))
    time_s = round(max((r["time_s"] for r in ready), default=0.0), 6)
    return {"primed": connected, "time_s": time_s, "p50_us": summary["p50"], "max_us": summary["max"]}


def _merge_timelines(spec: LoadSpec, done: list[dict]) -> tuple[list[dict], list]:
    """Bucket i of every worker covers the same instants (see Worker._open_window): merged, it is
    ``{second (its end, s from the window start), requests, p99_us, max_us, errors, mismatches}``."""
    interval = spec.timeline_interval
    buckets = max((len(r["timeline"]) for r in done), default=0)
    timeline, histograms = [], []
    for i in range(buckets):
        parts = [r["timeline"][i] for r in done if i < len(r["timeline"])]
        hist = stats.merge(blob for _, blob, _, _ in parts)
        errors: dict[str, int] = {}
        for _, _, errs, _ in parts:
            for kind, n in errs.items():
                errors[kind] = errors.get(kind, 0) + n
        summary = stats.summary(hist)
        first = spec.timeline_phase or interval
        end = i + 1 if (interval, first) == (1.0, 1.0) else round(first + i * interval, 6)
        timeline.append({
            "second": end, "requests": sum(p[0] for p in parts), "p99_us": summary["p99"],
            "max_us": summary["max"], "errors": errors, "mismatches": sum(p[3] for p in parts),
        })
        histograms.append(hist)
    return timeline, histograms
