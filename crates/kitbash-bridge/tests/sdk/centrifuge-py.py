"""Drives the official Centrifugo Python SDK (centrifuge-python) against a bridge:
`python3 centrifuge-py.py URL CHANNEL...`. Prints one JSON line per event on stdout
(connected, disconnected, subscribed, pub, error) and exits when stdin closes."""
import asyncio
import json
import sys

from centrifuge import Client, ClientEventHandler, SubscriptionEventHandler


def out(o):
    sys.stdout.write(json.dumps(o) + "\n")
    sys.stdout.flush()


class Events(ClientEventHandler):
    async def on_connected(self, ctx):
        out({"ev": "connected"})

    async def on_disconnected(self, ctx):
        out({"ev": "disconnected", "code": ctx.code})

    async def on_error(self, ctx):
        out({"ev": "error", "error": str(ctx.error)})


class SubEvents(SubscriptionEventHandler):
    def __init__(self, channel):
        self.channel = channel

    async def on_subscribed(self, ctx):
        out({"ev": "subscribed", "channel": self.channel, "recovered": ctx.recovered,
             "wasRecovering": ctx.was_recovering, "recoverable": ctx.recoverable})

    async def on_publication(self, ctx):
        data = ctx.pub.data if isinstance(ctx.pub.data, dict) else {}
        out({"ev": "pub", "channel": self.channel, "offset": ctx.pub.offset, "id": data.get("id")})

    async def on_error(self, ctx):
        out({"ev": "error", "channel": self.channel, "error": str(ctx.error)})


async def main():
    url, channels = sys.argv[1], sys.argv[2:]
    client = Client(url, events=Events(), min_reconnect_delay=0.05, max_reconnect_delay=0.4,
                    proxy=None)
    for ch in channels:
        sub = client.new_subscription(ch, events=SubEvents(ch), min_resubscribe_delay=0.05,
                                      max_resubscribe_delay=0.4)
        await sub.subscribe()
    await client.connect()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await client.disconnect()


asyncio.run(main())
