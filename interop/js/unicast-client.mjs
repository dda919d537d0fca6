// A client of bcos-p2p's unicast protocol, /bcos/unicast/1.0.0, written only from
// protocols/unicast/SPEC.md: the proof that the spec is enough to speak it from another libp2p
// implementation. It needs a node in open mode (`bcos-p2p run --open`: stock libp2p-tls).
//
//   node --import ./polyfill.mjs unicast-client.mjs [--timeout S] MULTIADDR/p2p/PEER OP...
//   OP = request:MODULE:DATA | oneway:MODULE:DATA     (DATA is UTF-8; it may contain ':')
//
// It dials with a fresh secp256k1 identity (bcos-p2p NodeIds are secp256k1, P-256 or RSA keys),
// waits for identify (logged on stderr as `identify {...}`), opens one unicast stream, writes every
// OP on it at once, in order (requests pipelined, ids 1, 2, ...). It checks every frame that comes
// back against the spec and prints one JSON object per line on stdout:
//   {"event":"ready","node_id":..,"peer_id":..}            this client's NodeId, before sending
//   {"event":"response","id":..,"module":..,"data":..,"rtt_ms":..}
//   {"event":"error","id":..,"module":..,"reason":..,"rtt_ms":..}
// and exits 0 once every request is answered. A frame that breaks the spec, the stream closing
// first, or the timeout (default 30 s) exit 1 with the reason on stderr.
import { ECDH } from 'node:crypto'
import { multiaddr } from '@multiformats/multiaddr'
import { createNode, deadline, log, logIdentify, peerOf, seconds } from './lib.mjs'
import { FrameDecoder, KIND, MAX_REASON, PROTOCOL, encodeFrame } from './unicast.mjs'

/** Parses `request:MODULE:DATA` / `oneway:MODULE:DATA`. */
function parseOp (text) {
  const first = text.indexOf(':')
  const second = first < 0 ? -1 : text.indexOf(':', first + 1)
  if (second < 0) throw new Error(`bad OP ${JSON.stringify(text)}: want request:MODULE:DATA or oneway:MODULE:DATA`)
  const kind = text.slice(0, first)
  const module = Number(text.slice(first + 1, second))
  if (kind !== 'request' && kind !== 'oneway') throw new Error(`bad OP ${JSON.stringify(text)}: unknown kind ${kind}`)
  if (!Number.isInteger(module) || module < 0 || module > 0xffff || text.slice(first + 1, second) === '') {
    throw new Error(`bad OP ${JSON.stringify(text)}: the module is an integer 0..65535`)
  }
  return { kind, module, data: Buffer.from(text.slice(second + 1), 'utf8') }
}

function parseArgs (argv) {
  let timeout = 30
  const rest = []
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--timeout') {
      timeout = seconds(argv[++i], undefined, '--timeout')
    } else {
      rest.push(argv[i])
    }
  }
  if (rest.length < 2) {
    throw new Error('usage: unicast-client.mjs [--timeout S] MULTIADDR/p2p/PEER request:MODULE:DATA|oneway:MODULE:DATA...')
  }
  const target = multiaddr(rest[0])
  return { timeout, target, peer: peerOf(target), ops: rest.slice(1).map(parseOp) }
}

/** A secp256k1 key's NodeId: the uncompressed point without its 04 prefix, in hex. */
function nodeId (publicKey) {
  return ECDH.convertKey(Buffer.from(publicKey.raw), 'secp256k1', undefined, 'hex', 'uncompressed').slice(2)
}

/** Checks an answer against the spec and the requests still owed one; returns its JSON line. */
function answer (frame, pending) {
  if (frame.kind !== KIND.response && frame.kind !== KIND.error) {
    // Request/Oneway frames never come back on the stream we opened; other kinds are unknown.
    throw new Error(`frame kind ${frame.kind} on our outbound stream`)
  }
  const request = pending.get(frame.id)
  if (request === undefined) throw new Error(`answer for id ${frame.id}, which is not in flight`)
  if (frame.module !== 0) throw new Error(`answer for id ${frame.id} has module ${frame.module}, not 0`)
  pending.delete(frame.id)
  const base = { id: Number(frame.id), module: request.module }
  const rttMs = Number(process.hrtime.bigint() - request.sent) / 1e6
  if (frame.kind === KIND.response) {
    return { event: 'response', ...base, data: frame.payload.toString('utf8'), rtt_ms: rttMs }
  }
  if (frame.payload.length > MAX_REASON) throw new Error(`error reason of ${frame.payload.length} bytes (limit ${MAX_REASON})`)
  const reason = new TextDecoder('utf-8', { fatal: true }).decode(frame.payload)
  return { event: 'error', ...base, reason, rtt_ms: rttMs }
}

async function main () {
  const { timeout, target, peer, ops } = parseArgs(process.argv.slice(2))
  const cancel = deadline(timeout, `unicast exchange with ${target}`)
  const signal = AbortSignal.timeout(timeout * 1000)
  const node = await createNode({ keyType: 'secp256k1' })
  console.log(JSON.stringify({ event: 'ready', node_id: nodeId(node.peerId.publicKey), peer_id: node.peerId.toString() }))
  try {
    const identified = logIdentify(node, peer, signal)
    const connection = await node.dial(target, { signal })
    log(`connected to ${connection.remotePeer} at ${connection.remoteAddr}`)
    await identified

    const stream = await connection.newStream(PROTOCOL, { signal })
    const pending = new Map() // id -> { module, sent }
    let nextId = 1n
    for (const op of ops) {
      let id = 0n
      if (op.kind === 'request') {
        id = nextId++
        pending.set(id, { module: op.module, sent: process.hrtime.bigint() })
      }
      if (!stream.send(encodeFrame(KIND[op.kind], id, op.module, op.data))) await stream.onDrain({ signal })
    }
    log(`sent ${ops.length} frame(s), ${pending.size} request(s) in flight`)

    const decoder = new FrameDecoder()
    if (pending.size > 0) {
      for await (const chunk of stream) {
        for (const frame of decoder.push(chunk instanceof Uint8Array ? chunk : chunk.subarray())) {
          console.log(JSON.stringify(answer(frame, pending)))
        }
        if (pending.size === 0) break
      }
    }
    if (pending.size > 0) throw new Error(`the stream closed with ${pending.size} request(s) unanswered`)
    await stream.close({ signal })
  } finally {
    cancel()
    await node.stop()
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    log(`error: ${err.stack ?? err}`)
    process.exit(1)
  }
)
