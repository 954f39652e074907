"""The Celery side of the throughput comparison: one task that does
nothing. The Go harness (main.go) preloads the queue and starts

    celery -A noop_tasks worker -P prefork|threads -c N -Q QUEUE

Environment: CELERY_BROKER_URL; CELERY_BROKER_TRANSPORT_OPTIONS, a JSON
object of kombu transport options (global_keyprefix on Redis);
CELERY_WORKER_PREFETCH_MULTIPLIER, when set, worker_prefetch_multiplier.
"""
import json
import os

from celery import Celery

app = Celery("noop_tasks", broker=os.environ["CELERY_BROKER_URL"])
app.conf.update(
    broker_connection_retry_on_startup=True,
    broker_transport_options=json.loads(
        os.environ.get("CELERY_BROKER_TRANSPORT_OPTIONS") or "{}"),
)
if os.environ.get("CELERY_WORKER_PREFETCH_MULTIPLIER"):
    app.conf.worker_prefetch_multiplier = int(
        os.environ["CELERY_WORKER_PREFETCH_MULTIPLIER"])


@app.task(name="bench.noop")
def noop():
    return None
