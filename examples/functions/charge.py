"""Charges an order. With FAIL_FIRST=N it answers 503 to the first N charges of each order, to show
retries (the engine retries 5xx with the step's policy)."""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from cloudevents_http import serve  # noqa: E402

failures = {}
lock = threading.Lock()
FAIL_FIRST = int(os.environ.get("FAIL_FIRST", "0"))


def handle(data, event):
    order = data["order"]
    with lock:
        seen = failures.get(order["id"], 0)
        failures[order["id"]] = seen + 1
    if seen < FAIL_FIRST:
        from cloudevents_http import Reject
        raise Reject(503, "payment provider busy, try again")
    return {"id": "rcpt-" + order["id"], "amount": order["amount"],
            "mode": os.environ.get("PAYMENT_MODE", "live")}


serve(handle, "com.example.payment.charged")
