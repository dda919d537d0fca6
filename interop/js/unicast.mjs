// The frames of /bcos/unicast/1.0.0, from protocols/unicast/SPEC.md ("Frames"): a varint
// length, then kind (1 byte), id (u64 big-endian), module (u16 big-endian) and the payload.
// Used by unicast-client.mjs; test/unicast.test.mjs checks it (`node --test`).

export const PROTOCOL = '/bcos/unicast/1.0.0'

export const KIND = { request: 0, oneway: 1, response: 2, error: 3 }
export const HEADER = 11 // kind (1) + id (8) + module (2)
export const MAX_VARINT = 9
export const FRAME_LIMIT = 32 * 1024 * 1024 // the default receiver limit
export const MAX_REASON = 1024

/** An unsigned LEB128 varint. */
export function varint (n) {
  const out = []
  do {
    let byte = n % 128
    n = Math.floor(n / 128)
    if (n > 0) byte |= 0x80
    out.push(byte)
  } while (n > 0)
  return Buffer.from(out)
}

/** One frame: varint body length, then kind, id (u64 BE), module (u16 BE), payload. */
export function encodeFrame (kind, id, module, payload) {
  const body = Buffer.alloc(HEADER + payload.length)
  body.writeUInt8(kind, 0)
  body.writeBigUInt64BE(BigInt(id), 1)
  body.writeUInt16BE(module, 9)
  body.set(payload, HEADER)
  return Buffer.concat([varint(body.length), body])
}

/**
 * Splits bytes into frames. `push` returns every complete frame in the data so far, or throws
 * on a malformed varint, a length under 11 or over the limit (checked before buffering the
 * body), as the spec asks of a receiver.
 */
export class FrameDecoder {
  constructor (limit = FRAME_LIMIT) {
    this.limit = limit
    this.buf = Buffer.alloc(0)
  }

  push (chunk) {
    this.buf = this.buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buf, chunk])
    const frames = []
    for (;;) {
      const prefix = this.#length()
      if (prefix === null) break
      const { length, size } = prefix
      if (this.buf.length < size + length) break
      const body = this.buf.subarray(size, size + length)
      frames.push({
        kind: body.readUInt8(0),
        id: body.readBigUInt64BE(1),
        module: body.readUInt16BE(9),
        payload: Buffer.from(body.subarray(HEADER))
      })
      this.buf = this.buf.subarray(size + length)
    }
    return frames
  }

  /** The body length and the prefix's size, null if the prefix is not complete yet. */
  #length () {
    let length = 0
    for (let i = 0; i < Math.min(this.buf.length, MAX_VARINT); i++) {
      const byte = this.buf[i]
      length += (byte & 0x7f) * 2 ** (7 * i)
      if ((byte & 0x80) === 0) {
        if (i > 0 && byte === 0) throw new Error('malformed varint (not minimal)')
        if (length < HEADER) throw new Error(`frame length ${length} is under ${HEADER}`)
        if (length > this.limit) throw new Error(`frame length ${length} is over the limit ${this.limit}`)
        return { length, size: i + 1 }
      }
    }
    if (this.buf.length >= MAX_VARINT) throw new Error(`malformed varint (over ${MAX_VARINT} bytes)`)
    return null
  }
}
