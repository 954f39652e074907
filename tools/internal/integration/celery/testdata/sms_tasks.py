"""The Celery side of the interop tests: the classic SMS task, a worker
that runs it, and a client that sends it. The Go tests drive it.

    celery -A sms_tasks worker -P solo -Q QUEUE       run the tasks
    python sms_tasks.py send QUEUE PHONE CODE         delay + apply_async
    python sms_tasks.py results QUEUE PHONE CODE      send two, print their results

Environment: CELERY_BROKER_URL; CELERY_BROKER_TRANSPORT_OPTIONS, a JSON
object of kombu transport options (global_keyprefix, visibility_timeout on
Redis); CELERY_RESULT_BACKEND for results; SMS_OUT, the file the task
appends a JSON line to for each run.
"""
import json
import os
import sys
import time

from celery import Celery

app = Celery("sms_tasks", broker=os.environ["CELERY_BROKER_URL"],
             backend=os.environ.get("CELERY_RESULT_BACKEND"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    broker_transport_options=json.loads(
        os.environ.get("CELERY_BROKER_TRANSPORT_OPTIONS") or "{}"),
)


@app.task(name="tasks.send_sms_code", bind=True)
def send_sms_code(self, phone, code, lang="en"):
    req = self.request
    record = {
        "id": req.id,
        "task": self.name,
        "phone": phone,
        "code": code,
        "lang": lang,
        "retries": req.retries,
        "eta": req.eta,
        "root_id": req.root_id,
        "parent_id": req.parent_id,
        "origin": req.origin,
        "ran_at": time.time(),
        "pid": os.getpid(),
    }
    with open(os.environ["SMS_OUT"], "a") as f:
        f.write(json.dumps(record) + "\n")
    if code == "hang":
        # For the tests that kill a worker while it runs a task.
        time.sleep(3600)
    return "sent %s to %s" % (code, phone)


def send(queue, phone, code):
    now = send_sms_code.apply_async((phone, code), queue=queue)
    later = send_sms_code.apply_async((phone, code), {"lang": "de"}, queue=queue, countdown=2)
    print(json.dumps({"now": now.id, "later": later.id}), flush=True)


def results(queue, phone, code):
    """Sends a task that succeeds and one that fails (code "bad"), and
    prints what AsyncResult.get returns and raises."""
    ok = send_sms_code.apply_async((phone, code), queue=queue)
    bad = send_sms_code.apply_async((phone, "bad"), queue=queue)
    out = {"ok_id": ok.id, "bad_id": bad.id, "ok": ok.get(timeout=20)}
    try:
        bad.get(timeout=20)
        out["bad"] = None
    except Exception as exc:
        out["bad"] = {"type": type(exc).__name__, "args": list(exc.args)}
    out["bad_state"] = bad.state
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(*sys.argv[2:5])
    elif sys.argv[1] == "results":
        results(*sys.argv[2:5])
    else:
        sys.exit("unknown command " + sys.argv[1])
