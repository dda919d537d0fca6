#!/usr/bin/env bash
# Writes the seed corpora under fuzz/seeds/<target>/: a few valid encodings per target, so the
# fuzzer starts from inputs that reach deep into each decoder. Needs a built `bcos-p2p` binary
# (for gen-certs; pass its path as $1, default: `bcos-p2p` on PATH) and `openssl`.
# Each target reads a mode byte or a few parameter bytes first: see fuzz/README.md.
set -euo pipefail
BIN=${1:-bcos-p2p}
cd "$(dirname "$0")"
SEEDS=$PWD/seeds
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
rm -rf "$SEEDS"
mkdir -p "$SEEDS"/{unicast_codec,flood_wire,status_codec,link_frame,certificate,node_key,node_id,config}

# seed TARGET NAME PREFIX-BYTES(printf format) [FILE]: PREFIX followed by FILE's bytes.
seed() {
    { printf "$3"; if [ $# -ge 4 ]; then cat "$4"; fi; } >"$SEEDS/$1/$2"
}

# Frames (byte layouts in each protocol's SPEC.md).
ID='\x00\x00\x00\x00\x00\x00\x00\x07'
seed unicast_codec request   "\x00\x04\x03\x0d\x00${ID}\x00\x01hi"
seed unicast_codec stream    "\x00\x04\x05\x0b\x01${ID}\x00\x02\x0b\x02${ID}\x00\x00\x0f\x03${ID}\x00\x00oops"
ORIGIN=$(printf '\\x%02x' $(seq 1 64) | tr -d '\n')
seed flood_wire data      "\x01\x01\x00\x40${ORIGIN}${ID}\x0a\x01${ID}\x01t\x00\x03sigpayload"
seed flood_wire broadcast "\x01\x02\x00\x40${ORIGIN}${ID}\x0a\x02${ID}\x00\x00\x03sigpayload"
seed flood_wire record    "\x02\x01\x00\x40${ORIGIN}${ID}${ID}\x00\x02${ID}${ID}\x00\x02\x01a\x02bc\x00\x03sig"
seed flood_wire digest    "\x03${ID}"
seed flood_wire cert-request "\x06\x01\x00\x40${ORIGIN}"
seed flood_wire summary   "\x08\x00\x01${ID}${ID}${ID}"
seed flood_wire record-request "\x09\x00\x02${ID}${ID}"
seed flood_wire cert      "\x07\x01\x00\x40${ORIGIN}\x02\x00\x030\x01\x00\x00\x020\x02"
seed flood_wire ihave     "\x04\x00\x02${ID}${ID}\x01\x80${ID}${ID}\x02\xff\x01"
seed flood_wire iwant     "\x05\x00\x01${ID}${ID}\x01\xa0"
seed status_codec announce "\x01${ID}${ID}"
seed status_codec query    "\x02${ID}${ID}"
# {"payload": h'6869', "future": [1, {"x": 2}], "topics": ["t"], "modules": [7], "version": "v"}
seed status_codec status   "\x03${ID}${ID}\xa5\x67payload\x42hi\x66future\x82\x01\xa1\x61x\x02\x66topics\x81\x61t\x67modules\x81\x07\x67version\x61v"
seed link_frame frames     "\x00\x01\x02\x03\x05hello\x00\x03abc"
# Regression inputs: a 10-byte varint prefix once read as a small length (fixed in take_frame).
OVERLONG='\x80\x80\x80\x80\x80\x80\x80\x80\x02'
seed link_frame overlong-prefix    "\x00\x04\x00\x10\x85${OVERLONG}abcde"
seed unicast_codec overlong-prefix "\x00\x04\x10\x8d${OVERLONG}\x00${ID}\x00\x01hi"

# Keys, certificates and configs from gen-certs, in every form openssl writes them.
for kt in secp256k1 p256 rsa; do
    "$BIN" gen-certs --out "$TMP/$kt" --nodes 1 --key-type "$kt" >/dev/null
    n=$TMP/$kt/node0
    seed node_id "$kt-text" '\x00' "$n/node.nodeid"
    xxd -r -p "$n/node.nodeid" >"$TMP/raw"
    seed node_id "$kt-bytes" '\x01' "$TMP/raw"
    seed node_key "$kt-pkcs8.pem" '\x00' "$n/node.key"
    openssl pkey -in "$n/node.key" -outform DER -out "$TMP/k.der"
    seed node_key "$kt-pkcs8.der" '\x01' "$TMP/k.der"
    if [ "$kt" = rsa ]; then
        openssl rsa -in "$n/node.key" -traditional -out "$TMP/trad.pem" 2>/dev/null
        openssl rsa -in "$n/node.key" -traditional -outform DER -out "$TMP/trad.der" 2>/dev/null
        seed node_key "$kt-pkcs1.der" '\x03' "$TMP/trad.der"
    else
        openssl ec -in "$n/node.key" -out "$TMP/trad.pem" 2>/dev/null
        openssl ec -in "$n/node.key" -outform DER -out "$TMP/trad.der" 2>/dev/null
        seed node_key "$kt-sec1.der" '\x02' "$TMP/trad.der"
    fi
    seed node_key "$kt-traditional.pem" '\x00' "$TMP/trad.pem"
    cat "$n/node.crt" "$n/ca.crt" >"$TMP/chain.pem"
    seed certificate "$kt-chain.pem" '\x00' "$TMP/chain.pem"
    openssl x509 -in "$n/node.crt" -outform DER -out "$TMP/leaf.der"
    openssl x509 -in "$n/ca.crt" -outform DER -out "$TMP/ca.der"
    seed certificate "$kt-leaf.der" '\x01' "$TMP/leaf.der"
    { printf '\x02'
      for f in "$TMP/leaf.der" "$TMP/ca.der"; do
          printf "$(printf '\\x%02x\\x%02x' $(( $(stat -c %s "$f") >> 8 )) $(( $(stat -c %s "$f") & 255 )))"
          cat "$f"
      done; } >"$SEEDS/certificate/$kt-chain.der"
    seed certificate "$kt-anchor.der" '\x03' "$TMP/ca.der"
    seed config "$kt.toml" '\x00' "$n/config.toml"
done
# A secp256k1 signature over "fuzz" with its uncompressed point (certificate mode 4).
n=$TMP/secp256k1/node0
printf fuzz >"$TMP/msg"
openssl dgst -sha256 -sign "$n/node.key" -out "$TMP/sig" "$TMP/msg"
{ printf '\x04\x04'; xxd -r -p "$n/node.nodeid"; cat "$TMP/sig"; } >"$SEEDS/certificate/secp256k1-signature"
NODE_ID=$(cat "$n/node.nodeid")
cat >"$TMP/config.ini" <<INI
[p2p]
    listen_ip=0.0.0.0
    listen_port=30300
    ; nodes to connect to
    node.0=127.0.0.1:30301
    node.1=peer.example:30302
[certificate_blacklist]
    crl.0=$NODE_ID
[certificate_whitelist]
    cal.0=0x$NODE_ID
[network_security]
    data_path=conf/
    key=\${data_path}/node.key
    cert=\${data_path}/node.crt
    ca_cert=\${data_path}/ca.crt
[chain]
    id=1
INI
seed config fisco-2x.ini '\x01' "$TMP/config.ini"
cat >"$TMP/config3.ini" <<'INI'
[p2p]
    listen_ip=127.0.0.1
    listen_port=30300
[cert]
    ca_path=./conf
    ca_cert=ca.crt
    node_key=ssl.key
    node_cert=ssl.crt
INI
seed config fisco-3x.ini '\x01' "$TMP/config3.ini"
du -sh "$SEEDS"; find "$SEEDS" -type f | wc -l
