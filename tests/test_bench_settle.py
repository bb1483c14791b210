"""`foley bench` ends without Prefect's shutdown tracebacks: before the process exits (and
Prefect stops its temporary server), `flows.bench.settle_prefect` waits until the server has
recorded every task run the flows reported. A tiny flow of 40 tasks on a temporary server of
its own (PREFECT_API_URL removed) in a child process: without the wait its server is usually
stopped while it still writes task-run events ("Error flushing 1 events", CancelledError)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent('''
    import datetime as dt
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner
    from flows.bench import settle_prefect

    @task
    def t(i):
        return i

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def many(n=40):
        return sum(f.result() for f in [t.submit(i) for i in range(n)])

    since = dt.datetime.now(dt.timezone.utc)
    assert many() == 780
    assert settle_prefect(since) is True
    from prefect.client.orchestration import get_client
    with get_client(sync_client=True) as c:
        print(len(c.read_task_runs()))
''')


def test_the_temporary_server_is_stopped_once_it_has_recorded_the_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_LOGGING_LEVEL="WARNING",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["40"]  # every task run recorded
    assert "Traceback" not in done.stderr and "Error flushing" not in done.stderr, done.stderr
