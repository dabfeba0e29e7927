"""Sends the customer a notification by sms."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from cloudevents_http import serve  # noqa: E402


def handle(data, event):
    return {"channel": "sms", "order": data["order"]["id"], "sent": True}


serve(handle, "com.example.notification.sent")
