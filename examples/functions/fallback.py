"""Answers a shipping quote from a flat rate table when the partner cannot: by weight, in EUR."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from cloudevents_http import serve  # noqa: E402

RATES = [(1, 4.9), (5, 9.9), (20, 19.9)]  # up to kg: price


def handle(data, event):
    weight = float(data.get("weight", 1)) if isinstance(data, dict) else 1.0
    price = next((p for limit, p in RATES if weight <= limit), None)  # None: too heavy to quote
    quote_id = data.get("id", event.get("id")) if isinstance(data, dict) else event.get("id")
    return {"id": quote_id, "price": price, "source": "fallback"}


serve(handle, "com.example.quote.fallback")
