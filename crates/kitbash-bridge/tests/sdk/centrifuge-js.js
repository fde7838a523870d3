// Drives the official Centrifugo JavaScript SDK (npm `centrifuge`, with `ws` on Node) against a
// bridge: `node centrifuge-js.js URL CHANNEL...`. Prints one JSON line per event on stdout
// (connected, disconnected, subscribed, pub, error) and exits when stdin closes.
'use strict';
const { Centrifuge } = require('centrifuge');
const WebSocket = require('ws');

const [url, ...channels] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const c = new Centrifuge(url, {
  websocket: WebSocket,
  minReconnectDelay: 50,
  maxReconnectDelay: 400,
  timeout: 5000,
});
c.on('connected', () => out({ ev: 'connected' }));
c.on('disconnected', (ctx) => out({ ev: 'disconnected', code: ctx.code }));
c.on('connecting', (ctx) => out({ ev: 'connecting', code: ctx.code, reason: ctx.reason }));
c.on('error', (ctx) => out({ ev: 'error', error: String(ctx.error && ctx.error.message) }));
for (const ch of channels) {
  const s = c.newSubscription(ch, { minResubscribeDelay: 50, maxResubscribeDelay: 400 });
  s.on('subscribed', (ctx) => out({
    ev: 'subscribed', channel: ch, recovered: ctx.recovered, wasRecovering: ctx.wasRecovering,
    recoverable: ctx.recoverable,
  }));
  s.on('publication', (ctx) => out({ ev: 'pub', channel: ch, offset: ctx.offset, id: ctx.data && ctx.data.id }));
  s.on('error', (ctx) => out({ ev: 'error', channel: ch, error: String(ctx.error && ctx.error.message) }));
  s.subscribe();
}
c.connect();
process.stdin.on('end', () => { c.disconnect(); process.exit(0); });
process.stdin.resume();
