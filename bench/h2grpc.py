"""A minimal gRPC client over cleartext HTTP/2 (h2c), standard library only,
enough to drive `pushgate.v1.Push/SendStream` from the bench without grpcio.

What it does: the connection preface and SETTINGS, one client-streaming call
on stream 1 (HEADERS, then length-prefixed messages in DATA frames that
respect the peer's connection and stream windows and MAX_FRAME_SIZE), PING
and SETTINGS acknowledgements, and reading the answer: the reply message and
the trailers (`grpc-status`, `grpc-message`) through a full HPACK decoder
(static and dynamic tables, Huffman). What it does not: TLS, several calls
at once, server push (turned off in our SETTINGS), priorities.

The protobuf side is written by hand for the few messages it needs
(`SendChunk`, `SendRequest`, `TokenBatch`, `google.protobuf.Struct`,
`SendReply`), field numbers as in proto/pushgate/v1/push.proto.
"""

import select
import socket
import struct
import time
import urllib.parse

# ---------------------------------------------------------------- protobuf


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(number, data):
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(data)) + data


def pb_value(v):
    """google.protobuf.Value of a JSON value."""
    if v is None:
        return varint(1 << 3) + varint(0)
    if isinstance(v, bool):
        return varint(4 << 3) + varint(int(v))
    if isinstance(v, (int, float)):
        return varint(2 << 3 | 1) + struct.pack("<d", float(v))
    if isinstance(v, str):
        return field_bytes(3, v.encode())
    if isinstance(v, dict):
        return field_bytes(5, pb_struct(v))
    if isinstance(v, list):
        return field_bytes(6, b"".join(field_bytes(1, pb_value(x)) for x in v))
    raise TypeError(f"not a JSON value: {v!r}")


def pb_struct(obj):
    """google.protobuf.Struct of a JSON object: map<string, Value> fields = 1."""
    return b"".join(field_bytes(1, field_bytes(1, k.encode()) + field_bytes(2, pb_value(v)))
                    for k, v in obj.items())


def send_request(platform, message):
    """pushgate.v1.SendRequest{platform, message} (no tokens: they follow in batches)."""
    return field_bytes(1, platform.encode()) + field_bytes(2, pb_struct(message))


def chunk_header(platform, message):
    """SendChunk{header = SendRequest}."""
    return field_bytes(1, send_request(platform, message))


def chunk_tokens(batch):
    """SendChunk{tokens = TokenBatch}, `batch` an encoded TokenBatch body
    (`\\x0a<len><token>` per token, see token_batch)."""
    return field_bytes(2, batch)


def token_batch(tokens):
    return b"".join(field_bytes(1, t if isinstance(t, bytes) else t.encode()) for t in tokens)


def parse_fields(data):
    """{field number: [values]} of one message; varints as ints, length-delimited as bytes."""
    out, i = {}, 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(data, i)
        elif wire == 2:
            n, i = read_varint(data, i)
            value, i = data[i:i + n], i + n
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wire} not handled")
        out.setdefault(number, []).append(value)
    return out


def read_varint(data, i):
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def parse_send_reply(data):
    f = parse_fields(data)
    return {
        "job": f.get(1, [b""])[0].decode(),
        "accepted": f.get(2, [0])[0],
        "duplicates": f.get(3, [0])[0],
        "rejected_count": f.get(4, [0])[0],
        "replayed": bool(f.get(6, [0])[0]),
    }


def grpc_message(msg):
    """The gRPC length-prefixed message: uncompressed flag, 4-byte length, bytes."""
    return b"\x00" + struct.pack(">I", len(msg)) + msg


# ---------------------------------------------------------------- HPACK

STATIC = [None,
          (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
          (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
          (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
          ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
          ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
          ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
          ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
          ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
          ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
          ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
          ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
          ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
          ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", "")]

# RFC 7541 Appendix B is a canonical Huffman code: the code lengths of the 257
# symbols (EOS last) determine every code.
_HUFF_LENGTHS = bytes.fromhex(
    "0d171c1c1c1c1c1c1c181e1c1c1e1c1c1c1c1c1c1c1c1e1c1c1c1c1c1c1c1c1c060a0a0c0d06080b0a0a080b0806060605050506"
    "06060606060607080f060c0a0d06070707070707070707070707070707070707070707070807080d130d0e060f05060506050606"
    "060507070606060506070605050607070707070f0b0e0d1c14161414161616171617171717171817181816171817171717151617"
    "1617171816151416161717151716161815161717151516151716171714161616171616171a1a1413161716191a1a1a1b1b1a1819"
    "13151a1b1b1a1b1815151a1a1c1b1b1b14181415161515171616191918181a171a1b1a1a1b1b1b1b1b1c1b1b1b1b1b1a1e")


def _huffman_codes():
    codes, code, prev = {}, 0, None
    for sym in sorted(range(257), key=lambda s: (_HUFF_LENGTHS[s], s)):
        length = _HUFF_LENGTHS[sym]
        if prev is not None:
            code = (code + 1) << (length - prev)
        prev = length
        codes[(length, code)] = sym
    return codes


_HUFF = _huffman_codes()


def huffman_decode(data):
    out = bytearray()
    code = length = 0
    for byte in data:
        for bit in range(7, -1, -1):
            code = code << 1 | (byte >> bit) & 1
            length += 1
            sym = _HUFF.get((length, code))
            if sym is not None:
                if sym == 256:
                    raise ValueError("HPACK: EOS in a string")
                out.append(sym)
                code = length = 0
    if length > 7 or code != (1 << length) - 1:
        raise ValueError("HPACK: bad Huffman padding")
    return bytes(out)


def hpack_int(n, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if n < limit:
        return bytes([first | n])
    out = bytearray([first | limit])
    n -= limit
    while n >= 128:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def hpack_str(s):
    raw = s.encode() if isinstance(s, str) else s
    return hpack_int(len(raw), 7) + raw


def hpack_encode(headers):
    """Literal header fields without indexing (static-table names where there
    is one), no Huffman: simple, and our side keeps no dynamic table."""
    names = {name: i for i, (name, _v) in reversed(list(enumerate(STATIC))[1:])}
    out = bytearray()
    for name, value in headers:
        if (name, value) == (":method", "POST"):
            out += b"\x83"
        elif (name, value) == (":scheme", "http"):
            out += b"\x86"
        elif name in names:
            out += hpack_int(names[name], 4) + hpack_str(value)
        else:
            out += b"\x00" + hpack_str(name) + hpack_str(value)
    return bytes(out)


class HpackDecoder:
    def __init__(self, max_size=4096):
        self.table = []  # newest first
        self.size = 0
        self.max_size = max_size

    def _entry(self, index):
        if index <= 0:
            raise ValueError("HPACK: index 0")
        if index < len(STATIC):
            return STATIC[index]
        return self.table[index - len(STATIC)]

    def _add(self, name, value):
        self.table.insert(0, (name, value))
        self.size += len(name) + len(value) + 32
        self._evict()

    def _evict(self):
        while self.size > self.max_size and self.table:
            name, value = self.table.pop()
            self.size -= len(name) + len(value) + 32

    @staticmethod
    def _int(data, i, prefix_bits):
        limit = (1 << prefix_bits) - 1
        n = data[i] & limit
        i += 1
        if n < limit:
            return n, i
        shift = 0
        while True:
            b = data[i]
            i += 1
            n += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n, i

    def _str(self, data, i):
        huff = data[i] & 0x80
        n, i = self._int(data, i, 7)
        raw = data[i:i + n]
        return (huffman_decode(raw) if huff else raw).decode("latin-1"), i + n

    def decode(self, data):
        headers, i = [], 0
        while i < len(data):
            b = data[i]
            if b & 0x80:  # indexed
                index, i = self._int(data, i, 7)
                headers.append(self._entry(index))
            elif b & 0x40:  # literal, incremental indexing
                index, i = self._int(data, i, 6)
                name, i = (self._entry(index)[0], i) if index else self._str(data, i)
                value, i = self._str(data, i)
                self._add(name, value)
                headers.append((name, value))
            elif b & 0x20:  # dynamic table size update
                self.max_size, i = self._int(data, i, 5)
                self._evict()
            else:  # literal without indexing / never indexed
                index, i = self._int(data, i, 4)
                name, i = (self._entry(index)[0], i) if index else self._str(data, i)
                value, i = self._str(data, i)
                headers.append((name, value))
        return headers


# ---------------------------------------------------------------- HTTP/2

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 5, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
OUR_WINDOW = (1 << 31) - 1


class H2Error(Exception):
    pass


class GrpcStream:
    """One client-streaming gRPC call on a fresh h2c connection."""

    def __init__(self, host, port, path, metadata=(), timeout=600):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.authority = f"{host}:{port}"
        self.path = path
        self.metadata = list(metadata)
        self.decoder = HpackDecoder()
        self.conn_window = 65535
        self.stream_window = 65535
        self.peer_initial_window = 65535
        self.max_frame = 16384
        self.rbuf = b""
        self.header_block = b""
        self.headers, self.trailers = [], []
        self.data = bytearray()
        self.closed = False
        self.reset = None
        self._header_end_stream = False
        # Our settings: no push, the largest receive window; and the same for the connection.
        settings = struct.pack(">HI", 0x2, 0) + struct.pack(">HI", 0x4, OUR_WINDOW)
        self.sock.sendall(PREFACE + self._frame(SETTINGS, 0, 0, settings)
                          + self._frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", OUR_WINDOW - 65535)))

    @staticmethod
    def _frame(kind, flags, stream, payload):
        return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

    def _recv_exact(self, n):
        while len(self.rbuf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.rbuf)))
            if not chunk:
                raise H2Error("connection closed by the server")
            self.rbuf += chunk
        out, self.rbuf = self.rbuf[:n], self.rbuf[n:]
        return out

    def _read_frame(self):
        head = self._recv_exact(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = self._recv_exact(length)
        self._handle(kind, flags, stream, payload)

    def _handle(self, kind, flags, stream, payload):
        if kind == SETTINGS:
            if flags & ACK:
                return
            for i in range(0, len(payload), 6):
                ident, value = struct.unpack(">HI", payload[i:i + 6])
                if ident == 0x4:
                    self.stream_window += value - self.peer_initial_window
                    self.peer_initial_window = value
                elif ident == 0x5:
                    self.max_frame = value
            self.sock.sendall(self._frame(SETTINGS, ACK, 0, b""))
        elif kind == PING:
            if not flags & ACK:
                self.sock.sendall(self._frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            inc = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
            if stream == 0:
                self.conn_window += inc
            else:
                self.stream_window += inc
        elif kind in (HEADERS, CONTINUATION):
            if kind == HEADERS:
                if flags & PADDED:
                    pad = payload[0]
                    payload = payload[1:len(payload) - pad]
                if flags & PRIORITY:
                    payload = payload[5:]
                self._header_end_stream = bool(flags & END_STREAM)
            self.header_block += payload
            if flags & END_HEADERS:
                fields = self.decoder.decode(self.header_block)
                self.header_block = b""
                if not self.headers:
                    self.headers = fields
                    if any(k == "grpc-status" for k, _ in fields):
                        self.trailers = fields  # trailers-only answer
                else:
                    self.trailers = fields
                if self._header_end_stream:
                    self.closed = True
        elif kind == DATA:
            if flags & PADDED:
                pad = payload[0]
                payload = payload[1:len(payload) - pad]
            self.data += payload
            if flags & END_STREAM:
                self.closed = True
        elif kind == RST_STREAM:
            self.reset = struct.unpack(">I", payload)[0]
            self.closed = True
        elif kind == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            if code != 0 or last < 1:
                self.reset = code
                self.closed = True
        # PUSH_PROMISE is off by our SETTINGS; PRIORITY and unknown frames are ignored.

    def _poll(self):
        """Handles whatever the server has sent, without waiting."""
        while True:
            if self.rbuf:
                if len(self.rbuf) >= 9 and len(self.rbuf) >= 9 + int.from_bytes(self.rbuf[:3], "big"):
                    self._read_frame()
                    continue
            ready, _, _ = select.select([self.sock], [], [], 0)
            if not ready:
                return
            self._read_frame()

    def start(self):
        headers = [(":method", "POST"), (":scheme", "http"), (":path", self.path), (":authority", self.authority),
                   ("content-type", "application/grpc"), ("te", "trailers")] + self.metadata
        self.sock.sendall(self._frame(HEADERS, END_HEADERS, 1, hpack_encode(headers)))

    def send(self, data, end=False):
        """Sends `data` on stream 1 within the flow-control windows, waiting for
        WINDOW_UPDATEs when they are spent (that wait is the server's back-pressure)."""
        view = memoryview(data)
        while len(view):
            self._poll()
            if self.closed:
                raise H2Error(f"the server ended the call early: {self.status()}")
            n = min(len(view), self.max_frame, self.conn_window, self.stream_window)
            if n <= 0:
                self._read_frame()  # blocks until the server opens a window
                continue
            last = end and n == len(view)
            self.sock.sendall(self._frame(DATA, END_STREAM if last else 0, 1, bytes(view[:n])))
            self.conn_window -= n
            self.stream_window -= n
            view = view[n:]
        if end and not len(data):
            self.sock.sendall(self._frame(DATA, END_STREAM, 1, b""))

    def finish(self):
        """Reads until the call ends; returns (grpc-status, grpc-message, reply message bytes or None)."""
        while not self.closed:
            self._read_frame()
        self.sock.close()
        msg = None
        if len(self.data) >= 5:
            n = struct.unpack(">I", self.data[1:5])[0]
            msg = bytes(self.data[5:5 + n])
        status, message = self.status()
        return status, message, msg

    def status(self):
        t = dict(self.trailers or self.headers)
        if self.reset is not None and "grpc-status" not in t:
            return None, f"stream reset, HTTP/2 error code {self.reset}"
        code = t.get("grpc-status")
        return (int(code) if code is not None else None), urllib.parse.unquote(t.get("grpc-message", ""))


def send_stream(host, port, platform, message, batches, metadata=()):
    """Drives pushgate.v1.Push/SendStream: the header, then every encoded
    TokenBatch that `batches` yields. Returns (first_byte_time, reply_time,
    SendReply dict); raises H2Error on a non-OK status."""
    call = GrpcStream(host, port, "/pushgate.v1.Push/SendStream", metadata)
    started = time.perf_counter()
    call.start()
    call.send(grpc_message(chunk_header(platform, message)))
    for batch in batches:
        call.send(grpc_message(chunk_tokens(batch)))
    call.send(b"", end=True)
    status, text, reply = call.finish()
    answered = time.perf_counter()
    if status != 0 or reply is None:
        raise H2Error(f"SendStream answered grpc-status {status}: {text}")
    return started, answered, parse_send_reply(reply)
