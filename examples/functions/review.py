"""Queues a large order for a person to review."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from cloudevents_http import serve  # noqa: E402


def handle(data, event):
    return {"order": data["order"]["id"], "queued": "manual-review"}


serve(handle, "com.example.order.review-queued")
