#!/usr/bin/env node
// Publish one event to sagaline from Node.js with amqplib (nothing else).
//
//   npm ci
//   node publish.js OrderSubmitted ../payloads/OrderSubmitted.json
//
// The payload file holds the event's fields (see /schemas/<type>.json on the orchestrator, or
// contracts/schema/ in the repository). This wraps them in sagaline's envelope, publishes to the
// events exchange with the type as routing key, waits for the broker's confirm and prints the
// ids as one JSON line. Environment: AMQP_URL (default amqp://guest:guest@localhost:5672/) and
// SAGALINE_NAMESPACE (default sagaline).
//
// Options: --correlation-id UUID (the saga an event steers; omit to start a saga) and
// --message-id UUID (publishing the same id again changes nothing).
// Exit codes: 0 published, 1 the broker refused it, 2 bad arguments.
'use strict';

const fs = require('node:fs');
const { randomBytes } = require('node:crypto');
const amqp = require('amqplib');

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// A version 7 UUID (RFC 9562): 48 bits of Unix milliseconds, then random bits. Ids made later
// sort later, so sagaline's inbox and saga tables add them on their indexes' newest pages
// instead of random ones (about a third of the write-ahead log at a million sagas).
function uuidv7() {
  const bytes = randomBytes(16);
  bytes.writeUIntBE(Date.now(), 0, 6);
  bytes[6] = (bytes[6] & 0x0f) | 0x70;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

class UsageError extends Error {}

function parseArgs(argv) {
  const positional = [];
  const options = {};
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--correlation-id' || arg === '--message-id') {
      const value = argv[i + 1];
      if (value === undefined || !UUID.test(value)) throw new UsageError(`${arg} needs a UUID`);
      options[arg === '--message-id' ? 'messageId' : 'correlationId'] = value.toLowerCase();
      i += 1;
    } else if (arg.startsWith('--')) {
      throw new UsageError(`unknown option ${arg}`);
    } else {
      positional.push(arg);
    }
  }
  if (positional.length !== 2) throw new UsageError('usage: publish.js TYPE PAYLOAD_FILE');
  const [type, source] = positional;
  let payload;
  try {
    payload = JSON.parse(fs.readFileSync(source === '-' ? 0 : source, 'utf8'));
  } catch (err) {
    throw new UsageError(`cannot read the payload: ${err.message}`);
  }
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    throw new UsageError('the payload must be a JSON object');
  }
  return { type, payload, ...options };
}

// The JSON body sagaline reads: ids, type, schema version, time, and the event itself.
function envelope(type, payload, correlationId, messageId) {
  return {
    message_id: messageId,
    correlation_id: correlationId,
    causation_id: null,
    type,
    schema_version: 1,
    occurred_at: new Date().toISOString(),
    payload,
  };
}

async function publish(url, exchange, body) {
  const connection = await amqp.connect(url);
  // Failures also arrive as 'error' events; the awaited calls below report them, once.
  connection.on('error', () => {});
  try {
    const channel = await connection.createConfirmChannel();
    channel.on('error', () => {});
    // A missing exchange closes the channel with 404: sagaline has not run on this namespace.
    await channel.checkExchange(exchange);
    // The broker returns a mandatory message no queue takes, before it confirms it.
    let returned = false;
    channel.on('return', () => {
      returned = true;
    });
    channel.publish(exchange, body.type, Buffer.from(JSON.stringify(body)), {
      contentType: 'application/json',
      deliveryMode: 2,
      messageId: body.message_id,
      correlationId: body.correlation_id,
      type: body.type,
      mandatory: true,
    });
    await channel.waitForConfirms();
    if (returned) throw new Error(`no queue takes ${body.type} (is the orchestrator running?)`);
  } finally {
    await connection.close().catch(() => {});
  }
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`error: ${err.message}\n`);
    return 2;
  }
  const correlationId = args.correlationId || uuidv7();
  const messageId = args.messageId || uuidv7();
  const body = envelope(args.type, args.payload, correlationId, messageId);
  const url = process.env.AMQP_URL || 'amqp://guest:guest@localhost:5672/';
  const exchange = `${process.env.SAGALINE_NAMESPACE || 'sagaline'}.events`;
  try {
    await publish(url, exchange, body);
  } catch (err) {
    process.stderr.write(`error: publish failed: ${err.message}\n`);
    return 1;
  }
  process.stdout.write(
    `${JSON.stringify({ type: args.type, message_id: messageId, correlation_id: correlationId })}\n`,
  );
  return 0;
}

main().then((code) => {
  process.exitCode = code;
});
