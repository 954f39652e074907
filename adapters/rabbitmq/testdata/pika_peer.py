"""A classic pika producer and consumer, as existing Python services run
them against a plain named queue. The Go interop tests drive it.

    pika_peer.py produce URL QUEUE BODY...   publish each BODY to QUEUE
    pika_peer.py consume URL QUEUE N         print N bodies (JSON lines), then exit
"""
import json
import sys

import pika


def channel(url, queue):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    # The tutorial's declaration: a plain, non-durable queue.
    ch.queue_declare(queue=queue)
    return conn, ch


def produce(url, queue, bodies):
    conn, ch = channel(url, queue)
    for body in bodies:
        ch.basic_publish(exchange="", routing_key=queue, body=body.encode())
    conn.close()


def consume(url, queue, n):
    conn, ch = channel(url, queue)
    got = []

    def on_message(ch, method, properties, body):
        print(json.dumps({"body": body.decode(), "message_id": properties.message_id,
                          "headers": {k: str(v) for k, v in (properties.headers or {}).items()}}),
              flush=True)
        ch.basic_ack(delivery_tag=method.delivery_tag)
        got.append(body)
        if len(got) >= n:
            ch.stop_consuming()

    ch.basic_consume(queue=queue, on_message_callback=on_message)
    conn.call_later(30, ch.stop_consuming)
    ch.start_consuming()
    conn.close()
    if len(got) < n:
        sys.exit("received %d of %d messages" % (len(got), n))


if __name__ == "__main__":
    cmd, url, queue = sys.argv[1:4]
    if cmd == "produce":
        produce(url, queue, sys.argv[4:])
    elif cmd == "consume":
        consume(url, queue, int(sys.argv[4]))
    else:
        sys.exit("unknown command " + cmd)
