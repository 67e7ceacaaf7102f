// A minimal protobuf codec for the handful of messages the V8-wasm baseline exchanges with the
// guest (field numbers from docs/wire-format.md). Hand-written rather than generated so the
// baseline carries no dependency, and kept allocation-light so it does not flatter us: a real
// generated codec (the official provider's) is at least this expensive.

const utf8 = new TextEncoder();
const utf8d = new TextDecoder();
// Scratch for doubles: cheaper than a DataView per read (little-endian hosts only, as V8 is).
const f64 = new Float64Array(1);
const f64bytes = new Uint8Array(f64.buffer);

/** Growable output buffer; nested messages are written in place and their length patched in. */
export class Writer {
  constructor(capacity = 4096) {
    this.buf = new Uint8Array(capacity);
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
    this.marks = [];
  }

  reset() {
    this.pos = 0;
    this.marks.length = 0;
    return this;
  }

  ensure(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  varint(v) {
    this.ensure(10);
    // Values here are lengths, enums and small counters: below 2^53, never negative.
    while (v > 0x7f) {
      this.buf[this.pos++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
  }

  tag(field, wire) {
    this.varint(field * 8 + wire);
  }

  /** Opens a length-delimited field: 5 bytes are reserved for its length. */
  fork(field) {
    this.tag(field, 2);
    this.ensure(5);
    this.marks.push(this.pos);
    this.pos += 5;
  }

  /** Closes the innermost fork: writes the length, slides the body down over the spare bytes. */
  join() {
    const start = this.marks.pop();
    const body = start + 5;
    const len = this.pos - body;
    let lenBytes = 1;
    for (let v = len; v > 0x7f; v = Math.floor(v / 128)) lenBytes++;
    if (lenBytes < 5) this.buf.copyWithin(start + lenBytes, body, this.pos);
    let p = start;
    let v = len;
    while (v > 0x7f) {
      this.buf[p++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[p] = v;
    this.pos = start + lenBytes + len;
  }

  string(field, s) {
    this.tag(field, 2);
    const n = s.length;
    // ASCII fast path (context keys and values are mostly ASCII); else the encoder.
    if (n < 128) {
      this.ensure(n + 1);
      const at = this.pos + 1;
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c > 0x7f) break;
        this.buf[at + i] = c;
      }
      if (i === n) {
        this.buf[this.pos] = n;
        this.pos = at + n;
        return;
      }
    }
    const bytes = utf8.encode(s);
    this.varint(bytes.length);
    this.raw(bytes);
  }

  bytes(field, u8) {
    this.tag(field, 2);
    this.varint(u8.length);
    this.raw(u8);
  }

  raw(u8) {
    this.ensure(u8.length);
    this.buf.set(u8, this.pos);
    this.pos += u8.length;
  }

  uint(field, v) {
    this.tag(field, 0);
    this.varint(v);
  }

  bool(field, b) {
    this.tag(field, 0);
    this.ensure(1);
    this.buf[this.pos++] = b ? 1 : 0;
  }

  double(field, d) {
    this.tag(field, 1);
    this.ensure(8);
    this.view.setFloat64(this.pos, d, true);
    this.pos += 8;
  }

  /** A copy of what was written. */
  finish() {
    return this.buf.slice(0, this.pos);
  }
}

/** Sequential reader over one message's bytes. */
export class Reader {
  constructor(u8, pos = 0, end = u8.length) {
    this.buf = u8;
    this.pos = pos;
    this.end = end;
  }

  varint() {
    let result = 0;
    let scale = 1;
    for (;;) {
      const b = this.buf[this.pos++];
      result += (b & 0x7f) * scale;
      if (b < 0x80) return result;
      scale *= 128;
    }
  }

  skip(wire) {
    switch (wire) {
      case 0:
        while (this.buf[this.pos++] & 0x80);
        return;
      case 1:
        this.pos += 8;
        return;
      case 2:
        this.pos += this.varint();
        return;
      case 5:
        this.pos += 4;
        return;
      default:
        throw new Error(`unsupported wire type ${wire}`);
    }
  }

  string() {
    const len = this.varint();
    const start = this.pos;
    this.pos += len;
    // Short ASCII decodes faster by hand than through TextDecoder.
    if (len < 32) {
      let s = '';
      for (let i = start; i < start + len; i++) {
        const c = this.buf[i];
        if (c > 0x7f) return utf8d.decode(this.buf.subarray(start, start + len));
        s += String.fromCharCode(c);
      }
      return s;
    }
    return utf8d.decode(this.buf.subarray(start, start + len));
  }

  bytes() {
    const len = this.varint();
    const out = this.buf.slice(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  /** A reader over the next length-delimited field, advancing past it. */
  sub() {
    const len = this.varint();
    const r = new Reader(this.buf, this.pos, this.pos + len);
    this.pos += len;
    return r;
  }

  double() {
    for (let i = 0; i < 8; i++) f64bytes[i] = this.buf[this.pos + i];
    this.pos += 8;
    return f64[0];
  }
}

// ---- google.protobuf.Struct / Value --------------------------------------------------------

/** Writes a JS value as google.protobuf.Value fields (the caller has forked the Value). */
export function writeValue(w, v) {
  switch (typeof v) {
    case 'string':
      w.string(3, v);
      return;
    case 'number':
      w.double(2, v);
      return;
    case 'boolean':
      w.bool(4, v);
      return;
  }
  if (v === null || v === undefined) {
    w.uint(1, 0);
  } else if (Array.isArray(v)) {
    w.fork(6);
    for (const item of v) {
      w.fork(1);
      writeValue(w, item);
      w.join();
    }
    w.join();
  } else if (v instanceof Date) {
    w.string(3, v.toISOString());
  } else {
    w.fork(5);
    writeStructFields(w, v);
    w.join();
  }
}

/** Writes the map entries of a google.protobuf.Struct for a plain object. */
export function writeStructFields(w, obj) {
  for (const key in obj) {
    const v = obj[key];
    if (v === undefined) continue;
    w.fork(1);
    w.string(1, key);
    w.fork(2);
    writeValue(w, v);
    w.join();
    w.join();
  }
}

/** A `map<string, M>` in field 1 (a `Struct`'s fields, a struct schema's): key → `readM(value)`. */
function readStringMap(r, readM) {
  const out = {};
  while (r.pos < r.end) {
    const tag = r.varint();
    if (tag !== 10) {
      r.skip(tag & 7);
      continue;
    }
    const entry = r.sub();
    let key = '';
    let value = null;
    while (entry.pos < entry.end) {
      const t = entry.varint();
      if (t === 10) key = entry.string();
      else if (t === 18) value = readM(entry.sub());
      else entry.skip(t & 7);
    }
    out[key] = value;
  }
  return out;
}

export function readStruct(r) {
  return readStringMap(r, readValue);
}

export function readValue(r) {
  let value = null;
  while (r.pos < r.end) {
    const tag = r.varint();
    switch (tag) {
      case 8:
        r.varint();
        value = null;
        break;
      case 17:
        value = r.double();
        break;
      case 26:
        value = r.string();
        break;
      case 32:
        value = r.varint() !== 0;
        break;
      case 42:
        value = readStruct(r.sub());
        break;
      case 50: {
        const list = r.sub();
        value = [];
        while (list.pos < list.end) {
          const t = list.varint();
          if (t === 10) value.push(readValue(list.sub()));
          else list.skip(t & 7);
        }
        break;
      }
      default:
        r.skip(tag & 7);
    }
  }
  return value;
}

/** FlagSchema as a plain tree (`{struct: {...}}`, `'bool'`, ...): decoded because the official codec does. */
export function readFlagSchema(r) {
  let schema = null;
  while (r.pos < r.end) {
    const tag = r.varint();
    const field = tag >>> 3;
    if ((tag & 7) !== 2) {
      r.skip(tag & 7);
      continue;
    }
    const body = r.sub();
    switch (field) {
      case 1:
        schema = { struct: readStructSchema(body) };
        break;
      case 2: {
        let element = null;
        while (body.pos < body.end) {
          const t = body.varint();
          if (t === 10) element = readFlagSchema(body.sub());
          else body.skip(t & 7);
        }
        schema = { list: element };
        break;
      }
      default:
        schema = ['', '', '', 'int', 'double', 'string', 'bool'][field] ?? 'unknown';
    }
  }
  return schema;
}

export function readStructSchema(r) {
  return readStringMap(r, readFlagSchema);
}

// ---- CDN payload ---------------------------------------------------------------------------

/** `ClientResolverState{state = 1, account = 2}` → its two fields. */
export function decodeClientResolverState(u8) {
  const r = new Reader(u8);
  let state = new Uint8Array(0);
  let account = '';
  while (r.pos < r.end) {
    const tag = r.varint();
    if (tag === 10) state = r.bytes();
    else if (tag === 18) account = r.string();
    else r.skip(tag & 7);
  }
  return { state, account };
}

/** The inverse, for building CDN bodies from the fixture. */
export function encodeClientResolverState(state, account) {
  const w = new Writer(state.length + 64);
  w.bytes(1, state);
  w.string(2, account);
  return w.finish();
}
