//! The Gorilla chunk codec: delta-of-delta timestamps and XOR-compressed float values.
//!
//! The layout is byte-for-byte Prometheus' XOR chunk (`tsdb/chunkenc/xor.go`, `bstream.go`), so
//! the figures and the decades of scrutiny of that format carry over, and a Prometheus chunk can
//! be read by [`decode`].
//!
//! ## Format
//! ```text
//! chunk   := count:u16 big-endian | bitstream | zero padding to the next byte
//! sample 0: ts  as signed varint (zigzag, Go `binary.PutVarint`, byte-aligned)
//!           value as its 64 raw bits
//! sample 1: delta = ts1 - ts0 as unsigned varint (byte-aligned: sample 0 ends on a byte)
//!           value as XOR (below)
//! sample n>=2: dod = delta_n - delta_(n-1), then the value as XOR (below)
//!           '0'                     dod == 0
//!           '10'   + 14 bits        dod in [-(2^13-1), 2^13]
//!           '110'  + 17 bits        dod in [-(2^16-1), 2^16]
//!           '1110' + 20 bits        dod in [-(2^19-1), 2^19]
//!           '1111' + 64 bits        anything else
//!           (an n-bit field holds dod's low n bits; a field value greater than 2^(n-1) is
//!           negative: subtract 2^n. This odd-looking range is Prometheus'.)
//! XOR value: x = bits(value) ^ bits(previous value)
//!           '0'                     x == 0
//!           '10' + sig bits         x fits the current window: x >> trailing, where
//!                                   sig = 64 - leading - trailing of the current window
//!           '11' + leading:5 + sig:6 + sig bits
//!                                   new window; leading = min(leading zeros of x, 31), trailing
//!                                   = trailing zeros of x, sig = 64 - leading - trailing
//!                                   (a sig of 64 is written as 0)
//! ```
//! Bits are written most significant first, bytes filled from their high bit. A value is a raw
//! f64 bit pattern, so every NaN payload (the stale marker [`crate::series::STALE_NAN_BITS`]),
//! ±Inf, -0.0 and subnormals round-trip exactly.
//!
//! ## Timestamp arithmetic
//! Timestamps are any i64 (negative too); gaps may span the whole i64 range. Deltas and
//! delta-of-deltas are computed with wrapping arithmetic on u64/i64: a true delta is in
//! `1..=2^64-1`, which u64 holds exactly, and the decoder undoes the same wrapping additions, so
//! the round trip is exact modulo 2^64 and therefore exact. A dod that fits no small bucket takes
//! the 64-bit bucket.
//!
//! ## Invariants
//! - Timestamps in a chunk strictly increase (a consequence of S2). The encoder asserts it; the
//!   decoder treats a violation as corruption.
//! - [`ChunkEncoder::bytes`] is a complete chunk after every append: the count is kept current
//!   and the stream ends in zero padding, which is exactly what the decoder accepts (it refuses
//!   trailing bytes and non-zero padding, so truncation and garbage are caught).
//! - [`decode`] never panics on any input and never reserves more samples than the byte length
//!   could hold.

use std::fmt;

use crate::error::{Error, Result};
use crate::series::Sample;

/// Samples a chunk holds at most before the head cuts a new one.
pub const CHUNK_SAMPLES_MAX: usize = 120;

const HEADER_BYTES: usize = 2;
/// What an encoder that has not seen a sample yet returns from `bytes()`.
static EMPTY_CHUNK: [u8; HEADER_BYTES] = [0, 0];
/// `leading` value meaning "no XOR window chosen yet".
const NO_WINDOW: u8 = 0xff;
/// The 5-bit leading-zeros field holds at most 31.
const LEADING_MAX: u32 = 31;
/// The small delta-of-delta buckets: (prefix, prefix bits, payload bits).
const DOD_BUCKETS: [(u64, u32, u32); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

/// Appends samples to one chunk.
///
/// Kept small because one lives in memory per active series: the sample count lives in the
/// chunk header and the first timestamp is read back from the stream, so neither is stored twice.
#[derive(Clone, Debug, Default)]
pub struct ChunkEncoder {
    /// Header and bit stream. Empty until the first append, so an idle encoder holds no heap.
    buf: Vec<u8>,
    /// Last appended timestamp.
    t: i64,
    /// Bits of the last appended value.
    v: u64,
    /// Last timestamp delta (wrapping, see the module doc).
    t_delta: u64,
    /// Current XOR window; `leading == NO_WINDOW` until the first window is written.
    leading: u8,
    trailing: u8,
    /// Unused low bits of the last byte of `buf` (0..=7).
    free: u8,
}

impl ChunkEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a sample. `ts_ms` must be strictly greater than the last appended timestamp.
    pub fn append(&mut self, ts_ms: i64, value: f64) {
        let n = self.len();
        let bits = value.to_bits();
        if n == 0 {
            self.buf.clear();
            self.buf.extend_from_slice(&EMPTY_CHUNK);
            self.free = 0;
            self.write_uvarint(zigzag(ts_ms));
            self.write_bits(bits, 64);
            self.t_delta = 0;
            self.leading = NO_WINDOW;
            self.trailing = 0;
        } else {
            assert!(
                ts_ms > self.t,
                "invariant S2: chunk timestamps must strictly increase (appending {ts_ms} ms after {} ms)",
                self.t
            );
            // The count is a u16; the head cuts chunks far earlier (CHUNK_SAMPLES_MAX).
            assert!(
                n < usize::from(u16::MAX),
                "a chunk holds at most {} samples",
                u16::MAX
            );
            // Exact: the true delta is in 1..=2^64-1 (module doc).
            let t_delta = ts_ms.wrapping_sub(self.t) as u64;
            if n == 1 {
                self.write_uvarint(t_delta);
            } else {
                self.write_dod(t_delta.wrapping_sub(self.t_delta) as i64);
            }
            self.write_value(bits);
            self.t_delta = t_delta;
        }
        self.t = ts_ms;
        self.v = bits;
        // n + 1 <= u16::MAX by the assert above.
        self.buf[..HEADER_BYTES].copy_from_slice(&((n + 1) as u16).to_be_bytes());
    }

    /// Number of samples appended.
    pub fn len(&self) -> usize {
        header_count(&self.buf).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Timestamp of the first sample, read back from the stream.
    pub fn first_ts(&self) -> Option<i64> {
        if self.is_empty() {
            return None;
        }
        let first = BitReader::new(&self.buf[HEADER_BYTES..])
            .uvarint()
            .expect("the encoder wrote a valid first timestamp");
        Some(unzigzag(first))
    }

    /// The last appended sample.
    pub fn last(&self) -> Option<Sample> {
        (!self.is_empty()).then(|| Sample::new(self.t, f64::from_bits(self.v)))
    }

    /// The encoded bytes so far: a complete, decodable chunk at every point.
    pub fn bytes(&self) -> &[u8] {
        if self.buf.is_empty() {
            &EMPTY_CHUNK
        } else {
            &self.buf
        }
    }

    /// Heap bytes held (capacity), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Shrinks to fit and returns the bytes.
    pub fn finish(self) -> Vec<u8> {
        let mut buf = self.buf;
        if buf.is_empty() {
            buf.extend_from_slice(&EMPTY_CHUNK);
        }
        buf.shrink_to_fit();
        buf
    }

    fn write_dod(&mut self, dod: i64) {
        if dod == 0 {
            self.write_bits(0, 1);
            return;
        }
        for (prefix, prefix_bits, payload_bits) in DOD_BUCKETS {
            if dod_fits(dod, payload_bits) {
                self.write_bits(prefix, prefix_bits);
                self.write_bits(dod as u64, payload_bits);
                return;
            }
        }
        self.write_bits(0b1111, 4);
        self.write_bits(dod as u64, 64);
    }

    fn write_value(&mut self, bits: u64) {
        let x = bits ^ self.v;
        if x == 0 {
            self.write_bits(0, 1);
            return;
        }
        let leading = x.leading_zeros().min(LEADING_MAX);
        let trailing = x.trailing_zeros();
        if self.leading != NO_WINDOW
            && leading >= u32::from(self.leading)
            && trailing >= u32::from(self.trailing)
        {
            let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
            self.write_bits(0b10, 2);
            self.write_bits(x >> self.trailing, sig);
        } else {
            // x != 0, so sig >= 1 and trailing <= 63.
            let sig = 64 - leading - trailing;
            self.leading = leading as u8;
            self.trailing = trailing as u8;
            self.write_bits(0b11, 2);
            self.write_bits(u64::from(leading), 5);
            self.write_bits(u64::from(sig), 6); // 64 becomes 0: the field is 6 bits
            self.write_bits(x >> trailing, sig);
        }
    }

    fn write_uvarint(&mut self, mut x: u64) {
        while x >= 0x80 {
            self.write_bits(x | 0x80, 8);
            x >>= 7;
        }
        self.write_bits(x, 8);
    }

    /// Writes the low `n` bits of `value` (n <= 64), most significant first.
    fn write_bits(&mut self, value: u64, mut n: u32) {
        if n == 0 {
            return;
        }
        // Left-align: the first bit to write becomes bit 63 and everything below the n bits is
        // zero, which is also what pads the last byte.
        let mut v = value << (64 - n);
        if self.free > 0 {
            let free = u32::from(self.free);
            let k = n.min(free);
            *self.buf.last_mut().expect("free bits are in the last byte") |=
                (v >> (64 - free)) as u8;
            self.free -= k as u8;
            n -= k;
            if n == 0 {
                return;
            }
            v <<= k; // k <= 7
        }
        // Byte-aligned now.
        let bytes = n.div_ceil(8);
        self.buf
            .extend_from_slice(&v.to_be_bytes()[..bytes as usize]);
        self.free = (bytes * 8 - n) as u8;
    }
}

/// Prometheus' `bitRange`: whether `dod` fits an n-bit bucket (see the module doc).
fn dod_fits(dod: i64, n: u32) -> bool {
    -((1 << (n - 1)) - 1) <= dod && dod <= 1 << (n - 1)
}

fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn header_count(bytes: &[u8]) -> Option<usize> {
    let header: [u8; HEADER_BYTES] = bytes.get(..HEADER_BYTES)?.try_into().ok()?;
    Some(usize::from(u16::from_be_bytes(header)))
}

/// Number of samples recorded in the header (cheap, no decoding).
pub fn sample_count(bytes: &[u8]) -> Result<usize> {
    header_count(bytes).ok_or_else(|| {
        Error::corrupt(
            "chunk",
            format!(
                "{} bytes is shorter than the {HEADER_BYTES}-byte header",
                bytes.len()
            ),
        )
    })
}

/// Decodes a whole chunk. Corrupt input returns `Err(Error::Corrupt { .. })`, never panics.
pub fn decode(bytes: &[u8]) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    decode_into(bytes, &mut out)?;
    Ok(out)
}

/// Appends the decoded samples to `out`. On error `out` is left as it was.
pub fn decode_into(bytes: &[u8], out: &mut Vec<Sample>) -> Result<()> {
    let count = sample_count(bytes)?;
    let start = out.len();
    let mut r = BitReader::new(&bytes[HEADER_BYTES..]);
    // Sample 0 takes at least 72 bits and every later one at least 2, so a corrupt count cannot
    // make us reserve more than the bytes could hold.
    out.reserve(count.min(r.bits_left() / 2 + 1));
    match decode_samples(&mut r, count, out) {
        Ok(()) => Ok(()),
        Err(e) => {
            let decoded = out.len() - start;
            out.truncate(start);
            Err(Error::corrupt(
                "chunk",
                format!("sample {decoded} of {count}: {e}"),
            ))
        }
    }
}

fn decode_samples(
    r: &mut BitReader<'_>,
    count: usize,
    out: &mut Vec<Sample>,
) -> Result<(), DecodeError> {
    if count == 0 {
        return r.finish();
    }
    let mut t = unzigzag(r.uvarint()?);
    let mut v = r.read_bits(64)?;
    out.push(Sample::new(t, f64::from_bits(v)));
    if count == 1 {
        return r.finish();
    }
    // Before the first window is read, a "reuse" control means a full 64-bit window, as in
    // Prometheus' iterator; our encoder never writes that.
    let mut window = Window::default();
    let mut t_delta = r.uvarint()?;
    t = advance(t, t_delta)?;
    v = read_value(r, v, &mut window)?;
    out.push(Sample::new(t, f64::from_bits(v)));
    for _ in 2..count {
        let head = r.peek();
        if head >> 62 == 0 {
            // The most common sample of all: same spacing, same value ('0' '0').
            r.consume(2)?;
            t = advance(t, t_delta)?;
            out.push(Sample::new(t, f64::from_bits(v)));
            continue;
        }
        if head >> 63 == 0 {
            r.consume(1)?; // dod 0
        } else {
            t_delta = t_delta.wrapping_add(read_dod(r)? as u64);
        }
        t = advance(t, t_delta)?;
        v = read_value(r, v, &mut window)?;
        out.push(Sample::new(t, f64::from_bits(v)));
    }
    r.finish()
}

/// The next timestamp. With a true delta in 1..=2^64-1, the wrapping sum is `<= t` exactly when
/// the delta is 0 or the sum leaves the i64 range: neither happens in a chunk we wrote.
#[inline]
fn advance(t: i64, t_delta: u64) -> Result<i64, DecodeError> {
    let next = t.wrapping_add(t_delta as i64);
    if next <= t {
        return Err(DecodeError::NotIncreasing { prev: t, next });
    }
    Ok(next)
}

/// The decoder's current XOR window.
#[derive(Default)]
struct Window {
    leading: u32,
    trailing: u32,
}

#[inline]
fn read_value(r: &mut BitReader<'_>, prev: u64, w: &mut Window) -> Result<u64, DecodeError> {
    // Control: '0' same value, '10' current window, '11' new window.
    let control = r.peek() >> 62;
    if control < 0b10 {
        r.consume(1)?;
        return Ok(prev);
    }
    r.consume(2)?;
    if control == 0b11 {
        let fields = r.read_bits(5 + 6)? as u32;
        let leading = fields >> 6;
        let sig = match fields & 0x3f {
            0 => 64,
            s => s,
        };
        if leading + sig > 64 {
            return Err(DecodeError::BadWindow { leading, sig });
        }
        w.leading = leading;
        w.trailing = 64 - leading - sig;
    }
    // leading + trailing < 64 here, so 1 <= sig <= 64 and trailing <= 63.
    Ok(prev ^ (r.read_bits(64 - w.leading - w.trailing)? << w.trailing))
}

fn read_dod(r: &mut BitReader<'_>) -> Result<i64, DecodeError> {
    // The prefix is up to four 1 bits, ended by a 0 unless there are four.
    let ones = r.peek().leading_ones().min(4) as usize;
    r.consume(ones as u32 + u32::from(ones < 4))?;
    let n = match ones {
        0 => return Ok(0),
        4 => return Ok(r.read_bits(64)? as i64),
        _ => DOD_BUCKETS[ones - 1].2,
    };
    let field = r.read_bits(n)?;
    Ok(if field > 1 << (n - 1) {
        field as i64 - (1 << n)
    } else {
        field as i64
    })
}

/// Why a chunk did not decode; cheap to return, turned into an `Error` once at the top.
#[derive(Debug)]
enum DecodeError {
    Truncated { need_bits: u32, left_bits: usize },
    VarintOverflow,
    BadWindow { leading: u32, sig: u32 },
    NotIncreasing { prev: i64, next: i64 },
    TrailingBytes(usize),
    NonZeroPadding,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated {
                need_bits,
                left_bits,
            } => write!(
                f,
                "truncated: needs {need_bits} more bits, {left_bits} left"
            ),
            DecodeError::VarintOverflow => f.write_str("varint longer than 64 bits"),
            DecodeError::BadWindow { leading, sig } => write!(
                f,
                "XOR window of {leading} leading zeros and {sig} significant bits exceeds 64 bits"
            ),
            DecodeError::NotIncreasing { prev, next } => write!(
                f,
                "timestamp {next} ms does not follow {prev} ms (timestamps must strictly increase)"
            ),
            DecodeError::TrailingBytes(n) => {
                write!(f, "{n} bytes after the last sample")
            }
            DecodeError::NonZeroPadding => f.write_str("padding after the last sample is not zero"),
        }
    }
}

/// Reads bits most significant first from a byte slice.
struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    fn bits_left(&self) -> usize {
        self.data.len() * 8 - self.pos
    }

    /// The next 64 bits, first bit highest. Bits past the end read as zero: a caller may look
    /// at them but must `consume` (which checks the length) before trusting them.
    fn peek(&self) -> u64 {
        let i = self.pos / 8;
        let offset = (self.pos % 8) as u32;
        // 8 bytes from `i`, plus the head of byte i+8 when the position is not byte-aligned.
        let mut window = self.be_u64_at(i) << offset;
        if offset > 0 {
            window |= u64::from(self.byte_at(i + 8)) >> (8 - offset);
        }
        window
    }

    /// Moves past `n` bits that must exist.
    fn consume(&mut self, n: u32) -> Result<(), DecodeError> {
        let left_bits = self.bits_left();
        if n as usize > left_bits {
            return Err(DecodeError::Truncated {
                need_bits: n,
                left_bits,
            });
        }
        self.pos += n as usize;
        Ok(())
    }

    /// Reads `n <= 64` bits as the low bits of the result.
    fn read_bits(&mut self, n: u32) -> Result<u64, DecodeError> {
        debug_assert!(n <= 64);
        if n == 0 {
            return Ok(0);
        }
        let window = self.peek();
        self.consume(n)?;
        Ok(window >> (64 - n))
    }

    fn be_u64_at(&self, i: usize) -> u64 {
        match self.data.get(i..i + 8) {
            Some(b) => u64::from_be_bytes(b.try_into().expect("8 bytes")),
            None => (0..8).fold(0, |acc, k| acc << 8 | u64::from(self.byte_at(i + k))),
        }
    }

    fn byte_at(&self, i: usize) -> u8 {
        self.data.get(i).copied().unwrap_or(0)
    }

    /// Go's `binary.ReadUvarint`: at most 10 bytes, the 10th at most 1.
    fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let mut x = 0u64;
        for k in 0..10 {
            let b = self.read_bits(8)?;
            if k == 9 && b > 1 {
                return Err(DecodeError::VarintOverflow);
            }
            x |= (b & 0x7f) << (7 * k);
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err(DecodeError::VarintOverflow)
    }

    /// Accepts the end of a chunk: only zero padding up to the next byte may remain.
    fn finish(&self) -> Result<(), DecodeError> {
        let left = self.bits_left();
        if left >= 8 {
            return Err(DecodeError::TrailingBytes(left / 8));
        }
        if left > 0 && self.data[self.data.len() - 1] & ((1u8 << left) - 1) != 0 {
            return Err(DecodeError::NonZeroPadding);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::STALE_NAN_BITS;
    use proptest::prelude::*;

    fn encode(samples: &[(i64, u64)]) -> Vec<u8> {
        let mut enc = ChunkEncoder::new();
        for &(t, v) in samples {
            enc.append(t, f64::from_bits(v));
        }
        enc.finish()
    }

    fn as_pairs(samples: &[Sample]) -> Vec<(i64, u64)> {
        samples
            .iter()
            .map(|s| (s.ts_ms, s.value.to_bits()))
            .collect()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Data-driven check (CONVENTIONS.md 11): samples encode to exactly `expected_hex` and
    /// decode back bit for bit.
    fn check(samples: &[(i64, f64)], expected_hex: &str) {
        let pairs: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        let bytes = encode(&pairs);
        assert_eq!(hex(&bytes), expected_hex, "encoding of {samples:?}");
        assert_eq!(as_pairs(&decode(&bytes).unwrap()), pairs);
        assert_eq!(sample_count(&bytes).unwrap(), samples.len());
    }

    #[test]
    fn golden_bytes_match_prometheus_layout() {
        // Hand-derived from xor.go: count, zigzag varint 1000 = d0 0f, 1.0 = 3ff0..., uvarint
        // delta 1000 = e8 07, then a '0' bit for the unchanged value.
        check(&[], "0000");
        check(&[(1000, 1.0)], "0001d00f3ff0000000000000");
        check(
            &[(1000, 1.0), (2000, 1.0)],
            "0002d00f3ff0000000000000e80700",
        );
        // Third sample: dod 0 ('0') and unchanged value ('0'): still inside the last byte.
        check(
            &[(1000, 1.0), (2000, 1.0), (3000, 1.0)],
            "0003d00f3ff0000000000000e80700",
        );
        // Value 1.0 -> 2.0: x = 0x7ff0..., leading 1, trailing 52, sig 11: '11' 00001 001011
        // 11111111111, after the value bit '1' of sample 1: 1 11 00001 001011 11111111111 + pad.
        // ts -1 is zigzag 1; delta 1.
        check(&[(-1, 1.0), (0, 2.0)], "0002013ff000000000000001c25fff");
    }

    fn round_trip(samples: &[(i64, u64)]) {
        let bytes = encode(samples);
        let decoded = decode(&bytes).unwrap_or_else(|e| panic!("{samples:?}: {e}"));
        assert_eq!(as_pairs(&decoded), samples);
    }

    #[test]
    fn special_values_round_trip_bit_for_bit() {
        let specials = [
            STALE_NAN_BITS,
            f64::NAN.to_bits(),
            0x7ff8_dead_beef_0001, // quiet NaN with a payload
            0xfff0_0000_0000_0001, // negative signalling NaN
            f64::INFINITY.to_bits(),
            f64::NEG_INFINITY.to_bits(),
            0.0f64.to_bits(),
            (-0.0f64).to_bits(),
            1,                     // smallest subnormal
            0x000f_ffff_ffff_ffff, // largest subnormal
            f64::MAX.to_bits(),
            f64::MIN.to_bits(),
            f64::MIN_POSITIVE.to_bits(),
        ];
        // Every special after every special (all XOR windows), then each alone.
        let mut samples = Vec::new();
        for (i, &a) in specials.iter().enumerate() {
            for (j, &b) in specials.iter().enumerate() {
                let t = ((i * specials.len() + j) * 2) as i64;
                samples.push((t, a));
                samples.push((t + 1, b));
            }
        }
        round_trip(&samples);
        for &v in &specials {
            round_trip(&[(5, v)]);
        }
    }

    #[test]
    fn stale_marker_survives_and_differs_from_plain_nan() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let mut enc = ChunkEncoder::new();
        enc.append(1_000, 1.0);
        enc.append(2_000, stale);
        enc.append(3_000, f64::NAN);
        enc.append(4_000, stale);
        let got = decode(enc.bytes()).unwrap();
        assert_eq!(got[1].value.to_bits(), STALE_NAN_BITS);
        assert_eq!(got[2].value.to_bits(), f64::NAN.to_bits());
        assert_eq!(got[3].value.to_bits(), STALE_NAN_BITS);
        assert!(crate::series::is_stale_marker(got[3].value));
        assert_eq!(enc.last().unwrap().value.to_bits(), STALE_NAN_BITS);
    }

    #[test]
    fn negative_zero_is_not_zero() {
        let got = decode(&encode(&[
            (1, 0.0f64.to_bits()),
            (2, (-0.0f64).to_bits()),
            (3, 0.0f64.to_bits()),
        ]))
        .unwrap();
        let signs: Vec<bool> = got.iter().map(|s| s.value.is_sign_negative()).collect();
        assert_eq!(signs, [false, true, false]);
    }

    #[test]
    fn single_and_two_samples() {
        let mut enc = ChunkEncoder::new();
        assert!(enc.is_empty());
        assert_eq!((enc.len(), enc.first_ts(), enc.last()), (0, None, None));
        assert_eq!(enc.bytes(), [0, 0]);
        assert_eq!(decode(enc.bytes()).unwrap(), []);
        enc.append(-42, 3.5);
        assert_eq!(decode(enc.bytes()).unwrap(), [Sample::new(-42, 3.5)]);
        assert_eq!((enc.len(), enc.first_ts()), (1, Some(-42)));
        assert_eq!(enc.last(), Some(Sample::new(-42, 3.5)));
        enc.append(7, -3.5);
        assert_eq!(
            decode(enc.bytes()).unwrap(),
            [Sample::new(-42, 3.5), Sample::new(7, -3.5)]
        );
        assert_eq!((enc.len(), enc.first_ts()), (2, Some(-42)));
        assert_eq!(enc.last(), Some(Sample::new(7, -3.5)));
        assert_eq!(sample_count(&enc.finish()).unwrap(), 2);
    }

    #[test]
    fn extreme_timestamps_and_gaps() {
        let one = 1.0f64.to_bits();
        for ts in [
            vec![i64::MIN, i64::MAX],               // delta 2^64-1 in the varint
            vec![i64::MIN, i64::MIN + 1, i64::MAX], // dod ~2^64: 64-bit bucket
            vec![i64::MIN, 0, i64::MAX],            // deltas 2^63 and 2^63-1: dod -1
            vec![i64::MAX - 2, i64::MAX - 1, i64::MAX],
            vec![i64::MIN, i64::MIN + 1, i64::MIN + 2],
            vec![-5, -4, 1 << 62, (1 << 62) + 1, i64::MAX],
        ] {
            let samples: Vec<(i64, u64)> = ts.iter().map(|&t| (t, one)).collect();
            round_trip(&samples);
        }
    }

    /// Bits used by the stream after the header.
    fn stream_bits(enc: &ChunkEncoder) -> usize {
        (enc.buf.len() - HEADER_BYTES) * 8 - usize::from(enc.free)
    }

    #[test]
    fn dod_buckets_have_prometheus_bounds() {
        // (dod, bits the third sample takes: dod prefix + payload + 1 unchanged-value bit).
        let cases = [
            (0, 1 + 1),
            (1, 2 + 14 + 1),
            (-8191, 2 + 14 + 1),
            (8192, 2 + 14 + 1), // the positive bound is inclusive in Prometheus' bitRange
            (-8192, 3 + 17 + 1),
            (8193, 3 + 17 + 1),
            (65536, 3 + 17 + 1),
            (65537, 4 + 20 + 1),
            (-65535, 3 + 17 + 1),
            (-65536, 4 + 20 + 1),
            (524_288, 4 + 20 + 1),
            (524_289, 4 + 64 + 1),
            (-524_287, 4 + 20 + 1),
            (-524_288, 4 + 64 + 1),
            (-999_999, 4 + 64 + 1),
        ];
        for (dod, bits) in cases {
            let base_delta = 1_000_000i64;
            let ts = [0, base_delta, 2 * base_delta + dod];
            let mut enc = ChunkEncoder::new();
            enc.append(ts[0], 1.0);
            enc.append(ts[1], 1.0);
            let before = stream_bits(&enc);
            enc.append(ts[2], 1.0);
            assert_eq!(stream_bits(&enc) - before, bits, "dod {dod}");
            round_trip(&ts.map(|t| (t, 1.0f64.to_bits())));
        }
    }

    #[test]
    #[should_panic(expected = "S2")]
    fn equal_timestamp_is_refused() {
        let mut enc = ChunkEncoder::new();
        enc.append(10, 1.0);
        enc.append(10, 1.0);
    }

    #[test]
    #[should_panic(expected = "S2")]
    fn decreasing_timestamp_is_refused() {
        let mut enc = ChunkEncoder::new();
        enc.append(10, 1.0);
        enc.append(20, 1.0);
        enc.append(15, 1.0);
    }

    #[test]
    fn full_u16_count_decodes_and_one_more_is_refused() {
        let samples: Vec<(i64, u64)> = (0..i64::from(u16::MAX))
            .map(|i| (i * 15_000 + i % 3, ((i % 7) as f64).to_bits()))
            .collect();
        let mut enc = ChunkEncoder::new();
        for &(t, v) in &samples {
            enc.append(t, f64::from_bits(v));
        }
        assert_eq!(as_pairs(&decode(enc.bytes()).unwrap()), samples);
        let full = std::panic::catch_unwind(move || enc.append(i64::MAX, 0.0));
        let msg = *full.unwrap_err().downcast::<String>().unwrap();
        assert!(msg.contains("at most 65535 samples"), "{msg}");
    }

    fn corrupt_reason(bytes: &[u8]) -> String {
        match decode(bytes) {
            Err(Error::Corrupt { what, reason }) => {
                assert_eq!(what, "chunk");
                reason
            }
            other => panic!("{} decoded as {other:?}", hex(bytes)),
        }
    }

    #[test]
    fn decoder_names_the_corruption() {
        let valid = encode(&[(1000, 1.0f64.to_bits()), (2000, 1.0f64.to_bits())]);
        let mut trailing = valid.clone();
        trailing.push(0);
        assert!(corrupt_reason(&trailing).contains("1 bytes after the last sample"));
        let mut padding = valid.clone();
        *padding.last_mut().unwrap() |= 1;
        assert!(corrupt_reason(&padding).contains("padding"));
        assert!(corrupt_reason(&valid[..valid.len() - 1]).contains("truncated"));
        assert!(corrupt_reason(&[0]).contains("shorter than the 2-byte header"));
        // A delta of 0 (varint 00) after sample 0.
        let zero_delta = [&valid[..12], &[0x00, 0x00]].concat();
        assert!(corrupt_reason(&zero_delta).contains("strictly increase"));
        // Sample 0 at i64::MAX followed by delta 1 leaves the i64 range.
        let mut wrap = vec![0, 2];
        wrap.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        wrap.extend_from_slice(&[0; 8]);
        wrap.extend_from_slice(&[0x01, 0x00]);
        assert_eq!(unzigzag(0xffff_ffff_ffff_fffe), i64::MAX);
        assert!(corrupt_reason(&wrap).contains("strictly increase"));
        // Eleven varint bytes.
        let long_varint = [&[0u8, 1][..], &[0xff; 11]].concat();
        assert!(corrupt_reason(&long_varint).contains("varint"));
        // New window: leading 31, sig 63 (> 64 bits together).
        let bad_window = [&valid[..14], &[0b1111_1111, 0b1111_1000, 0]].concat();
        assert!(corrupt_reason(&bad_window).contains("XOR window"));
    }

    #[test]
    fn corrupt_count_does_not_allocate_for_it() {
        let mut bytes = encode(&[(1, 1.0f64.to_bits())]);
        bytes[..2].copy_from_slice(&u16::MAX.to_be_bytes());
        let mut out = Vec::new();
        assert!(decode_into(&bytes, &mut out).is_err());
        assert!(out.capacity() <= 64, "reserved {}", out.capacity());
    }

    #[test]
    fn decode_into_appends_and_leaves_out_alone_on_error() {
        let a = encode(&[(1, 1), (2, 2)]);
        let mut out = vec![Sample::new(-1, 9.0)];
        decode_into(&a, &mut out).unwrap();
        assert_eq!(as_pairs(&out), [(-1, 9.0f64.to_bits()), (1, 1), (2, 2)]);
        assert!(decode_into(&a[..a.len() - 1], &mut out).is_err());
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn encoder_is_small_and_idle_encoders_hold_no_heap() {
        assert!(std::mem::size_of::<ChunkEncoder>() <= 56);
        let enc = ChunkEncoder::default();
        assert_eq!(enc.heap_bytes(), 0);
        assert_eq!(enc.finish(), [0, 0]);
        let mut enc = ChunkEncoder::new();
        for i in 0..CHUNK_SAMPLES_MAX as i64 {
            enc.append(i * 10_000, 1.0);
        }
        assert!(enc.heap_bytes() >= enc.bytes().len());
        let len = enc.bytes().len();
        assert_eq!(enc.finish().capacity(), len);
    }

    /// Strictly increasing timestamps: sorted arbitrary i64 (huge gaps, the range limits) or a
    /// start plus deltas mixing regular scrapes, jitter and huge jumps.
    fn timestamps() -> impl Strategy<Value = Vec<i64>> {
        let sorted = (
            prop::collection::vec(any::<i64>(), 0..130),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(mut ts, min, max)| {
                ts.extend(min.then_some(i64::MIN));
                ts.extend(max.then_some(i64::MAX));
                ts.sort_unstable();
                ts.dedup();
                ts
            });
        let delta = prop_oneof![
            4 => Just(10_000u64),
            4 => 14_990u64..15_010,
            2 => 1u64..100,
            2 => 1u64..(1 << 21),
            1 => 1u64..=u64::MAX,
        ];
        let stepped =
            (any::<i64>(), prop::collection::vec(delta, 0..130)).prop_map(|(start, deltas)| {
                let mut ts = vec![start];
                for d in deltas {
                    match ts.last().unwrap().checked_add_unsigned(d) {
                        Some(t) => ts.push(t),
                        None => break,
                    }
                }
                ts
            });
        prop_oneof![sorted, stepped]
    }

    /// Value bit patterns: arbitrary, repeated, near the previous one, specials, small integers.
    fn values(n: usize) -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec((0u8..5, any::<u64>()), n).prop_map(|picks| {
            const SPECIAL: [u64; 6] = [
                STALE_NAN_BITS,
                0x8000_0000_0000_0000,
                0,
                0x7ff0_0000_0000_0000,
                1,
                0x7ff8_0000_0000_0000,
            ];
            let mut prev = 0u64;
            picks
                .into_iter()
                .map(|(kind, raw)| {
                    prev = match kind {
                        0 => raw,
                        1 => prev,
                        2 => prev ^ ((raw & 0xffff) << (raw >> 58)),
                        3 => SPECIAL[(raw % 6) as usize],
                        _ => ((raw % 10_000) as f64).to_bits(),
                    };
                    prev
                })
                .collect()
        })
    }

    fn samples() -> impl Strategy<Value = Vec<(i64, u64)>> {
        timestamps().prop_flat_map(|ts| {
            let n = ts.len();
            values(n).prop_map(move |vs| ts.iter().copied().zip(vs).collect())
        })
    }

    /// What any successful decode must satisfy, however corrupt the input looked.
    fn check_decoded(bytes: &[u8], got: &[Sample]) -> Result<(), TestCaseError> {
        prop_assert_eq!(got.len(), sample_count(bytes).unwrap());
        prop_assert!(got.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms));
        Ok(())
    }

    proptest! {
        #[test]
        fn prop_round_trip(samples in samples()) {
            let mut enc = ChunkEncoder::new();
            for &(t, v) in &samples {
                enc.append(t, f64::from_bits(v));
            }
            prop_assert_eq!(enc.len(), samples.len());
            prop_assert_eq!(enc.first_ts(), samples.first().map(|s| s.0));
            prop_assert_eq!(
                enc.last().map(|s| (s.ts_ms, s.value.to_bits())),
                samples.last().copied()
            );
            let bytes = enc.finish();
            prop_assert_eq!(sample_count(&bytes).unwrap(), samples.len());
            prop_assert_eq!(as_pairs(&decode(&bytes).unwrap()), samples);
        }

        #[test]
        fn prop_bytes_decode_at_every_point(samples in samples()) {
            let mut enc = ChunkEncoder::new();
            for (i, &(t, v)) in samples.iter().enumerate() {
                enc.append(t, f64::from_bits(v));
                let got = decode(enc.bytes()).unwrap();
                prop_assert_eq!(as_pairs(&got), &samples[..=i]);
                prop_assert_eq!(sample_count(enc.bytes()).unwrap(), i + 1);
            }
        }

        #[test]
        fn prop_every_strict_prefix_and_every_extension_is_refused(
            samples in samples(), extra in any::<u8>(),
        ) {
            let bytes = encode(&samples);
            for cut in 0..bytes.len() {
                prop_assert!(decode(&bytes[..cut]).is_err(), "prefix of {} bytes", cut);
            }
            let mut longer = bytes.clone();
            longer.push(extra);
            prop_assert!(decode(&longer).is_err());
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(
            count in 0u16..6, tail in prop::collection::vec(any::<u8>(), 0..200),
            raw_header in any::<bool>(),
        ) {
            // A small count gets the decoder past the header often; a raw one covers the rest.
            let bytes = if raw_header {
                tail
            } else {
                [&count.to_be_bytes()[..], &tail].concat()
            };
            if let Ok(got) = decode(&bytes) {
                check_decoded(&bytes, &got)?;
            }
        }

        #[test]
        fn prop_mutated_chunks_never_panic(
            samples in samples(),
            mutations in prop::collection::vec((0u8..4, any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = encode(&samples);
            for (kind, at, byte) in mutations {
                let i = at % (bytes.len() + 1);
                match kind {
                    0 if i < bytes.len() => bytes[i] ^= 1 << (byte % 8),
                    1 if i < bytes.len() => bytes[i] = byte,
                    2 => bytes.insert(i, byte),
                    _ => bytes.truncate(i),
                }
            }
            let mut out = vec![Sample::new(0, 0.0)];
            match decode_into(&bytes, &mut out) {
                Ok(()) => check_decoded(&bytes, &out[1..])?,
                Err(Error::Corrupt { .. }) => prop_assert_eq!(out.len(), 1),
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }
}
