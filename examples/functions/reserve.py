"""Reserves one order line in the warehouse."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from cloudevents_http import serve  # noqa: E402


def handle(data, event):
    return {"sku": data["sku"], "quantity": data["quantity"], "reserved": True}


serve(handle, "com.example.stock.reserved")
