"""What people see: the per-event table, the totals, the attackers and the verdict (rich)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

COLUMNS = ("requests", "lost", "closed", "refused", "reset", "timeout", "unsent", "wrong", "p99 ms", "max ms", "recovery s")


def _ms(us) -> str:
    return "-" if us is None else f"{us / 1000:,.1f}"


def _recovery(row) -> str:
    if row.at_s is None:
        return ""
    return "not recovered" if row.recovery_s is None else f"{row.recovery_s:.1f}"


def render(result) -> Table:
    spec = result.spec
    table = Table(title=f"multiserve drill: {result.target} (port {result.port}), {spec.rate:,.0f} req/s over "
                        f"{spec.connections} connections for {spec.duration:g} s")
    table.add_column("event")
    table.add_column("at s", justify="right")
    for name in COLUMNS:
        table.add_column(name, justify="right")
    for row in result.rows:
        e = row.errors
        table.add_row(row.label, "" if row.at_s is None else f"{row.at_s:.2f}", f"{row.requests:,}",
                      *(str(e.get(k, 0)) for k in ("lost", "closed", "refused", "reset", "timeout", "unsent")),
                      str(row.mismatches), _ms(row.p99_us), _ms(row.max_us), _recovery(row))
    t = result.total
    e, lat = t["errors"], t["latency_us"]
    table.add_row("total", "", f"{t['requests']:,}", *(str(e[k]) for k in ("lost", "closed", "refused", "reset", "timeout", "unsent")),
                  str(t["mismatches"]), _ms(lat["p99"]), _ms(lat["max"]), "", style="bold")
    return table


def print_result(result, console: Console | None = None) -> None:
    console = console or Console()
    console.print(render(result))
    t = result.total
    lat = t["latency_us"]
    console.print(f"latency (from the intended send time): p50 {_ms(lat['p50'])} ms, p99 {_ms(lat['p99'])} ms, "
                  f"p99.9 {_ms(lat['p999'])} ms, max {_ms(lat['max'])} ms", markup=False)
    if t["unanswered_at_end"]:
        console.print(f"{t['unanswered_at_end']:,} requests were still unanswered (sent, or due and waiting) when the load "
                      f"ended (up to one per connection, {result.spec.connections}, is in flight by chance)", markup=False)
    if any(t["after_term"].values()):
        console.print(f"after the term (expected, not counted against the drill): {t['after_term']['refused']} refused, "
                      f"{t['after_term']['unsent']} unsent", markup=False)
    if t["other_errors"]:
        console.print("other errors: " + ", ".join(f"{k}={v}" for k, v in sorted(t["other_errors"].items())), markup=False)
    for event in result.spec.events:
        if event.detail.get("worker_connections") is not None:
            console.print(f"{event.label}: worker {event.detail['pid']} held {event.detail['worker_connections']} "
                          "load/attack connections when signalled", markup=False)
    for attack in result.spec.attacks:
        console.print(f"attack {attack.kind}:{attack.n}: {attack.opened} connections opened, "
                      f"{attack.closed_by_server} closed by the server, {attack.connect_errors} connect errors", markup=False)
    exit_text = "killed" if result.server_exit is None else f"exit status {result.server_exit}"
    console.print(f"server: {exit_text}", markup=False)
    if result.handoffs is not None:
        h = result.handoffs
        console.print(f"server's hand-off: {h['workers']} retiring workers moved {h['moved']} connections "
                      f"to other workers and closed {h['closed']}", markup=False)
    if result.exit_code == 0:
        console.print("verdict: ok: nothing lost, timed out or wrong; nothing refused", markup=False)
    else:
        console.print("verdict: FAILED: " + "; ".join(result.reasons), markup=False)
