// The unicast frame codec against protocols/unicast/SPEC.md: byte layout, splitting, and the
// frames a receiver must refuse. Run with `node --test` in interop/js.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { FrameDecoder, KIND, encodeFrame, varint } from '../unicast.mjs'

test('a request is laid out as the spec says', () => {
  const frame = encodeFrame(KIND.request, 1, 258, Buffer.from('hi'))
  assert.deepEqual([...frame], [
    13, // L = 11 + 2, one varint byte
    0, // kind: Request
    0, 0, 0, 0, 0, 0, 0, 1, // id, big-endian
    1, 2, // module 258, big-endian
    0x68, 0x69 // payload
  ])
})

test('varints are unsigned LEB128', () => {
  assert.deepEqual([...varint(0)], [0])
  assert.deepEqual([...varint(127)], [0x7f])
  assert.deepEqual([...varint(300)], [0xac, 0x02])
  assert.deepEqual([...varint(2 ** 25)], [0x80, 0x80, 0x80, 0x10])
})

test('frames come out whole however the bytes are split', () => {
  const frames = [
    encodeFrame(KIND.response, 7, 0, Buffer.from('echo:x')),
    encodeFrame(KIND.error, 2 ** 40, 0, Buffer.from('no handler for module 9')),
    encodeFrame(KIND.response, 3, 0, Buffer.alloc(300, 0x61)) // a two-byte length
  ]
  const bytes = Buffer.concat(frames)
  for (let cut = 0; cut <= bytes.length; cut++) {
    const decoder = new FrameDecoder()
    const got = [...decoder.push(bytes.subarray(0, cut)), ...decoder.push(bytes.subarray(cut))]
    assert.deepEqual(got.map((f) => [f.kind, f.id, f.payload.length]), [
      [KIND.response, 7n, 6],
      [KIND.error, 2n ** 40n, 23],
      [KIND.response, 3n, 300]
    ], `cut at ${cut}`)
    assert.equal(got[1].payload.toString(), 'no handler for module 9')
  }
})

test('a length under the 11-byte header is refused', () => {
  assert.throws(() => new FrameDecoder().push(Buffer.from([10, ...Buffer.alloc(10)])), /under 11/)
})

test('a length over the limit is refused from the prefix alone', () => {
  assert.throws(() => new FrameDecoder(100).push(varint(101)), /over the limit/)
  assert.deepEqual(new FrameDecoder(100).push(varint(100)), []) // at the limit: waits for the body
})

test('malformed varints are refused', () => {
  assert.throws(() => new FrameDecoder().push(Buffer.from([0x8b, 0x00])), /not minimal/)
  assert.throws(() => new FrameDecoder().push(Buffer.alloc(9, 0x80)), /over 9 bytes/)
  assert.deepEqual(new FrameDecoder().push(Buffer.alloc(8, 0x80)), []) // may still end
})
