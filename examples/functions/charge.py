"""Charges an order. To show what failures look like (README, "When a step fails"):
- an order whose id starts with "flaky-" gets 503 on its first two charges (the payment provider
  is busy), which the engine retries with the workflow's policy, so the run completes;
- an order whose id starts with "declined-" gets 402 (card declined): a 4xx other than 404, 408,
  409 and 429 is not retried, so the run faults at this step;
- with FAIL_FIRST=N in the function's env, every order gets 503 on its first N charges."""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from cloudevents_http import Reject, serve  # noqa: E402

failures = {}
lock = threading.Lock()
FAIL_FIRST = int(os.environ.get("FAIL_FIRST", "0"))


def handle(data, event):
    order = data["order"]
    if order["id"].startswith("declined-"):
        raise Reject(402, "card declined")
    with lock:
        seen = failures.get(order["id"], 0)
        failures[order["id"]] = seen + 1
    if seen < FAIL_FIRST or (order["id"].startswith("flaky-") and seen < 2):
        raise Reject(503, "payment provider busy, try again")
    return {"id": "rcpt-" + order["id"], "amount": order["amount"],
            "mode": os.environ.get("PAYMENT_MODE", "live")}


serve(handle, "com.example.payment.charged")
