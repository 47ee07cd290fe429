//! Byte-level encodings: varints, the per-series chunk columns and the WAL entry format.
//!
//! Why these encodings: segments are compressed with zstd *after* column encoding, so the column
//! encoders aim to produce long runs of identical small bytes rather than dense bit streams:
//!
//! * timestamps: first value, first delta, then delta-of-deltas as zigzag varints (a regular
//!   10 s series gives a run of `0x00` bytes that zstd shrinks to almost nothing);
//! * values: "decimal" mode when every value of the chunk is exactly `m / 10^e` for an integer
//!   `m` (|m| < 2^53) and a common `e <= 15` — true for counters, percentages and most gauges —
//!   then deltas or delta-of-deltas of `m` (whichever is smaller) as zigzag varints; otherwise
//!   Gorilla XOR bit packing (bit-exact, handles NaN/-0.0). Decoding is always bit-exact.

use crate::StoreError;
use warden_model::DDSketch;

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

#[inline]
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
pub(crate) fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A bounds-checked reader over a byte slice; every method fails instead of panicking.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| corrupt("truncated"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| corrupt("truncated"))?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, StoreError> {
        let b = *self.buf.get(self.pos).ok_or_else(|| corrupt("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    pub(crate) fn uvarint(&mut self) -> Result<u64, StoreError> {
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift >= 64 {
                return Err(corrupt("varint too long"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    #[inline]
    pub(crate) fn ivarint(&mut self) -> Result<i64, StoreError> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| corrupt("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn f64(&mut self) -> Result<f64, StoreError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    pub(crate) fn str(&mut self) -> Result<String, StoreError> {
        let n = self.len()?;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| corrupt("invalid utf-8"))
    }

    /// A length prefix, sanity-checked against the remaining input.
    pub(crate) fn len(&mut self) -> Result<usize, StoreError> {
        let n = self.uvarint()?;
        if n > (self.buf.len() - self.pos.min(self.buf.len())) as u64 * 8 + 64 {
            return Err(corrupt("length beyond input"));
        }
        Ok(n as usize)
    }
}

// ---------------------------------------------------------------- timestamps

pub(crate) fn encode_ts(ts: impl IntoIterator<Item = i64>, out: &mut Vec<u8>) {
    let mut prev = 0i64;
    let mut prev_delta = 0i64;
    for (i, t) in ts.into_iter().enumerate() {
        match i {
            0 => put_ivarint(out, t),
            1 => {
                prev_delta = t.wrapping_sub(prev);
                put_ivarint(out, prev_delta);
            }
            _ => {
                let d = t.wrapping_sub(prev);
                put_ivarint(out, d.wrapping_sub(prev_delta));
                prev_delta = d;
            }
        }
        prev = t;
    }
}

pub(crate) fn decode_ts(r: &mut Reader<'_>, n: usize) -> Result<Vec<i64>, StoreError> {
    let mut out = Vec::with_capacity(n);
    let mut prev = 0i64;
    let mut delta = 0i64;
    for i in 0..n {
        let t = match i {
            0 => r.ivarint()?,
            1 => {
                delta = r.ivarint()?;
                prev.wrapping_add(delta)
            }
            _ => {
                delta = delta.wrapping_add(r.ivarint()?);
                prev.wrapping_add(delta)
            }
        };
        out.push(t);
        prev = t;
    }
    Ok(out)
}

// ---------------------------------------------------------------- values

const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];
const MAX_EXACT: f64 = 9_007_199_254_740_992.0; // 2^53

const MODE_DELTA: u8 = 0;
const MODE_DOD: u8 = 1;
const MODE_GORILLA: u8 = 2;
const MODE_PACKED: u8 = 3;

const PACK_RAW: u8 = 0;
const PACK_DELTA: u8 = 1;
const PACK_DOD: u8 = 2;

fn bit_width(max: u64) -> u32 {
    64 - max.leading_zeros()
}

/// The sequence packed by a sub-mode: the mantissas, their deltas or their delta-of-deltas.
fn derived(ms: &[i64], sub: u8) -> Vec<i64> {
    match sub {
        PACK_RAW => ms.to_vec(),
        PACK_DELTA => ms.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect(),
        _ => ms
            .windows(3)
            .map(|w| {
                w[2].wrapping_sub(w[1])
                    .wrapping_sub(w[1].wrapping_sub(w[0]))
            })
            .collect(),
    }
}

fn min_width(v: &[i64]) -> (i64, u32) {
    let min = v.iter().copied().min().unwrap_or(0);
    let max = v.iter().copied().max().unwrap_or(0);
    (min, bit_width(max.wrapping_sub(min) as u64))
}

/// Cheapest frame-of-reference packing of the mantissas: `(sub-mode, width, bytes)`; the
/// packed values are `x - min(x)` for x = mantissas, deltas or delta-of-deltas.
fn best_packing(ms: &[i64]) -> (u8, u32, usize) {
    let mut best = (PACK_RAW, 0, usize::MAX);
    for sub in [PACK_RAW, PACK_DELTA, PACK_DOD] {
        let d = derived(ms, sub);
        let (_, w) = min_width(&d);
        let bytes = (d.len() * w as usize).div_ceil(8) + 10 * (sub as usize + 1);
        if bytes < best.2 {
            best = (sub, w, bytes);
        }
    }
    best
}

fn encode_packed(ms: &[i64], e: u8, sub: u8, width: u32, out: &mut Vec<u8>) {
    out.push(MODE_PACKED);
    out.push(e);
    out.push(sub);
    out.push(width as u8);
    // Heads that the derived sequence does not cover.
    let heads = match sub {
        PACK_RAW => 0,
        PACK_DELTA => 1,
        _ => 2,
    };
    for &m in ms.iter().take(heads) {
        put_ivarint(out, m);
    }
    let d = derived(ms, sub);
    let (min, _) = min_width(&d);
    put_ivarint(out, min);
    let mut w = BitWriter {
        out,
        acc: 0,
        nbits: 0,
    };
    for x in d {
        w.put(x.wrapping_sub(min) as u64, width);
    }
    w.finish();
}

fn decode_packed(r: &mut Reader<'_>, n: usize) -> Result<Vec<f64>, StoreError> {
    let e = r.u8()? as usize;
    let p = *POW10.get(e).ok_or_else(|| corrupt("decimal exponent"))?;
    let sub = r.u8()?;
    let width = u32::from(r.u8()?);
    if width > 64 || sub > PACK_DOD {
        return Err(corrupt("packed header"));
    }
    let heads = (sub as usize).min(n);
    let mut ms = Vec::with_capacity(n);
    for _ in 0..heads {
        ms.push(r.ivarint()?);
    }
    let min = r.ivarint()?;
    // The packed section is exactly ceil(count × width / 8) bytes: take it whole, then read
    // the fields without a bounds check and error path per value.
    let bits = (n - heads)
        .checked_mul(width as usize)
        .ok_or_else(|| corrupt("packed length"))?;
    let data = r.take(bits.div_ceil(8))?;
    let mut bitpos = 0usize;
    let mut d = if sub == PACK_DOD && n > 1 {
        ms[1].wrapping_sub(ms[0])
    } else {
        0
    };
    for _ in heads..n {
        let x = min.wrapping_add(read_bits(data, bitpos, width) as i64);
        bitpos += width as usize;
        let m = match sub {
            PACK_RAW => x,
            PACK_DELTA => ms[ms.len() - 1].wrapping_add(x),
            _ => {
                d = d.wrapping_add(x);
                ms[ms.len() - 1].wrapping_add(d)
            }
        };
        ms.push(m);
    }
    if e == 0 {
        return Ok(ms.into_iter().map(|m| m as f64).collect());
    }
    Ok(ms.into_iter().map(|m| m as f64 / p).collect())
}

/// `width` (≤ 64) bits starting at bit `bitpos` of `data`, most significant bit first (the
/// order `BitWriter` writes). Bits past the end of `data` read as zero; callers size `data`
/// so the field lies within it.
#[inline]
fn read_bits(data: &[u8], bitpos: usize, width: u32) -> u64 {
    if width == 0 {
        return 0;
    }
    let byte = bitpos / 8;
    let off = (bitpos % 8) as u32;
    // off + width ≤ 71 bits: a 16-byte big-endian window always holds the field.
    let window = match data.get(byte..byte + 16) {
        Some(w) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(w);
            u128::from_be_bytes(a)
        }
        None => {
            let mut a = [0u8; 16];
            let tail = data.get(byte..).unwrap_or(&[]);
            a[..tail.len()].copy_from_slice(tail);
            u128::from_be_bytes(a)
        }
    };
    ((window << off) >> (128 - width)) as u64
}

fn decimal_mantissas(values: &[f64]) -> Option<(u8, Vec<i64>)> {
    let mut e_max = 0usize;
    for &v in values {
        let mut found = None;
        for (e, p) in POW10.iter().enumerate().skip(e_max) {
            // Round, then demand a bit-exact round trip: `v * p` itself is often a hair off an
            // integer (0.29 * 100 = 28.999999999999996) although `29 / 100 == 0.29` exactly.
            let s = (v * p).round();
            if s.abs() < MAX_EXACT && ((s as i64) as f64 / p).to_bits() == v.to_bits() {
                found = Some(e);
                break;
            }
        }
        e_max = found?;
    }
    let p = POW10[e_max];
    let mut ms = Vec::with_capacity(values.len());
    for &v in values {
        let s = (v * p).round();
        if s.abs() >= MAX_EXACT {
            return None;
        }
        let m = s as i64;
        if ((m as f64) / p).to_bits() != v.to_bits() {
            return None;
        }
        ms.push(m);
    }
    Some((e_max as u8, ms))
}

fn zz_len(v: i64) -> usize {
    let u = ((v << 1) ^ (v >> 63)) as u64;
    ((64 - u.leading_zeros() as usize).max(1)).div_ceil(7)
}

pub(crate) fn encode_values(values: &[f64], out: &mut Vec<u8>) {
    if let Some((e, ms)) = decimal_mantissas(values) {
        let (mut sd, mut sdd) = (0usize, 0usize);
        let (mut pd, mut p) = (0i64, 0i64);
        for (i, &m) in ms.iter().enumerate() {
            let d = m.wrapping_sub(p);
            if i > 0 {
                sd += zz_len(d);
                sdd += zz_len(if i == 1 { d } else { d.wrapping_sub(pd) });
            }
            pd = d;
            p = m;
        }
        let (sub, width, packed) = best_packing(&ms);
        if packed < sd.min(sdd) {
            encode_packed(&ms, e, sub, width, out);
            return;
        }
        let mode = if sdd < sd { MODE_DOD } else { MODE_DELTA };
        out.push(mode);
        out.push(e);
        let (mut p, mut pd) = (0i64, 0i64);
        for (i, &m) in ms.iter().enumerate() {
            if i == 0 {
                put_ivarint(out, m);
            } else {
                let d = m.wrapping_sub(p);
                if mode == MODE_DOD && i > 1 {
                    put_ivarint(out, d.wrapping_sub(pd));
                } else {
                    put_ivarint(out, d);
                }
                pd = d;
            }
            p = m;
        }
        return;
    }
    out.push(MODE_GORILLA);
    gorilla_encode(values, out);
}

pub(crate) fn decode_values(r: &mut Reader<'_>, n: usize) -> Result<Vec<f64>, StoreError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mode = r.u8()?;
    match mode {
        MODE_DELTA | MODE_DOD => {
            let e = r.u8()? as usize;
            let p = *POW10.get(e).ok_or_else(|| corrupt("decimal exponent"))?;
            let mut out = Vec::with_capacity(n);
            let (mut m, mut d) = (0i64, 0i64);
            for i in 0..n {
                let x = r.ivarint()?;
                if i == 0 {
                    m = x;
                } else if mode == MODE_DOD && i > 1 {
                    d = d.wrapping_add(x);
                    m = m.wrapping_add(d);
                } else {
                    d = x;
                    m = m.wrapping_add(d);
                }
                out.push(m as f64 / p);
            }
            Ok(out)
        }
        MODE_GORILLA => gorilla_decode(r, n),
        MODE_PACKED => decode_packed(r, n),
        _ => Err(corrupt("value column mode")),
    }
}

struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    nbits: u32,
}

impl BitWriter<'_> {
    fn put(&mut self, v: u64, bits: u32) {
        // Write in pieces of at most 32 bits so the accumulator never overflows.
        if bits > 32 {
            self.put(v >> 32, bits - 32);
            self.put(v & 0xffff_ffff, 32);
            return;
        }
        if bits == 0 {
            return;
        }
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        self.acc = (self.acc << bits) | (v & mask);
        self.nbits += bits;
        while self.nbits >= 8 {
            self.nbits -= 8;
            self.out.push((self.acc >> self.nbits) as u8);
        }
    }
    fn finish(mut self) {
        if self.nbits > 0 {
            let pad = 8 - self.nbits;
            self.put(0, pad);
        }
    }
}

struct BitReader<'a, 'b> {
    r: &'b mut Reader<'a>,
    acc: u64,
    nbits: u32,
}

impl BitReader<'_, '_> {
    fn get(&mut self, bits: u32) -> Result<u64, StoreError> {
        if bits > 32 {
            let hi = self.get(bits - 32)?;
            let lo = self.get(32)?;
            return Ok((hi << 32) | lo);
        }
        while self.nbits < bits {
            self.acc = (self.acc << 8) | u64::from(self.r.u8()?);
            self.nbits += 8;
        }
        self.nbits -= bits;
        let mask = if bits == 0 { 0 } else { (1u64 << bits) - 1 };
        Ok((self.acc >> self.nbits) & mask)
    }
}

fn gorilla_encode(values: &[f64], out: &mut Vec<u8>) {
    let mut w = BitWriter {
        out,
        acc: 0,
        nbits: 0,
    };
    let mut prev = 0u64;
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    for (i, v) in values.iter().enumerate() {
        let bits = v.to_bits();
        if i == 0 {
            w.put(bits, 64);
            prev = bits;
            continue;
        }
        let x = bits ^ prev;
        prev = bits;
        if x == 0 {
            w.put(0, 1);
            continue;
        }
        w.put(1, 1);
        let l = x.leading_zeros();
        let t = x.trailing_zeros();
        if lead != u32::MAX && l >= lead && t >= trail {
            w.put(0, 1);
            w.put(x >> trail, 64 - lead - trail);
        } else {
            lead = l;
            trail = t;
            let meaningful = 64 - l - t;
            w.put(1, 1);
            w.put(u64::from(l), 6);
            w.put(u64::from(meaningful - 1), 6);
            w.put(x >> t, meaningful);
        }
    }
    w.finish();
}

fn gorilla_decode(r: &mut Reader<'_>, n: usize) -> Result<Vec<f64>, StoreError> {
    let mut br = BitReader {
        r,
        acc: 0,
        nbits: 0,
    };
    let mut out = Vec::with_capacity(n);
    let mut prev = br.get(64)?;
    out.push(f64::from_bits(prev));
    let (mut lead, mut trail) = (0u32, 0u32);
    for _ in 1..n {
        if br.get(1)? == 0 {
            out.push(f64::from_bits(prev));
            continue;
        }
        if br.get(1)? == 1 {
            lead = br.get(6)? as u32;
            let meaningful = br.get(6)? as u32 + 1;
            if lead + meaningful > 64 {
                return Err(corrupt("gorilla window"));
            }
            trail = 64 - lead - meaningful;
        }
        let bits = 64 - lead - trail;
        let x = br.get(bits)? << trail;
        prev ^= x;
        out.push(f64::from_bits(prev));
    }
    Ok(out)
}

// ---------------------------------------------------------------- sketches

pub(crate) fn encode_sketch(s: &DDSketch, out: &mut Vec<u8>) {
    let bins = s.bins();
    put_uvarint(out, bins.len() as u64);
    let mut prev = 0i64;
    for &(k, _) in bins {
        put_ivarint(out, i64::from(k) - prev);
        prev = i64::from(k);
    }
    for &(_, n) in bins {
        put_uvarint(out, n);
    }
    put_uvarint(out, s.count());
    for v in [s.min(), s.max(), s.sum(), s.avg()] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

pub(crate) fn decode_sketch(r: &mut Reader<'_>) -> Result<DDSketch, StoreError> {
    let n = r.len()?;
    let mut keys = Vec::with_capacity(n);
    let mut prev = 0i64;
    for _ in 0..n {
        prev = prev.wrapping_add(r.ivarint()?);
        keys.push(i32::try_from(prev).map_err(|_| corrupt("sketch key"))?);
    }
    let mut wire_keys = Vec::with_capacity(n);
    let mut wire_counts = Vec::with_capacity(n);
    for &k in &keys {
        // Counts above u32 go out as repeated bins with the same key (from_bins sums them).
        let mut c = r.uvarint()?;
        while c > u64::from(u32::MAX) {
            wire_keys.push(k);
            wire_counts.push(u32::MAX);
            c -= u64::from(u32::MAX);
        }
        wire_keys.push(k);
        wire_counts.push(c as u32);
    }
    let cnt = r.uvarint()?;
    let (min, max, sum, avg) = (r.f64()?, r.f64()?, r.f64()?, r.f64()?);
    DDSketch::from_bins(&wire_keys, &wire_counts, cnt, min, max, sum, avg)
        .map_err(|e| corrupt(&format!("sketch: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(values: &[f64]) -> usize {
        let mut out = Vec::new();
        encode_values(values, &mut out);
        let back = decode_values(&mut Reader::new(&out), values.len()).expect("decode");
        assert_eq!(back.len(), values.len());
        for (a, b) in values.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits(), "{a} vs {b}");
        }
        out.len()
    }

    #[test]
    fn values_roundtrip_bit_exact() {
        roundtrip(&[1.0, 2.0, 3.0, 5.0, 8.0]);
        roundtrip(&[0.1, 0.2, 0.30000000000000004, 12.75, -3.5]);
        roundtrip(&[f64::NAN, -0.0, 0.0, f64::INFINITY, 1e300, -1e-300]);
        roundtrip(&[std::f64::consts::PI, std::f64::consts::E, 1.0 / 3.0]);
        roundtrip(&[42.0]);
        roundtrip(&[]);
        roundtrip(&[9.007e15, -9.007e15, 1.0]);
        // Constant chunks pack to width 0.
        assert!(roundtrip(&[16e9; 360]) < 16);
        // Small random integers pack at their bit width (5 bits for 0..=20).
        let counts: Vec<f64> = (0..360).map(|i| f64::from((i * 7919) % 21)).collect();
        assert!(roundtrip(&counts) <= 360 * 5 / 8 + 16);
        roundtrip(&[1.0, 1e15, -1e15, 0.0, 3.0]);
        roundtrip(&[5.0, 5.0]);
        roundtrip(&[-2.5, 7.25, 100.75]);
        // counters compress to ~1 byte per value before zstd.
        let c: Vec<f64> = (0..360).map(|i| f64::from(i * 1000)).collect();
        assert!(roundtrip(&c) < 400);
        // two-decimal gauges use decimal mode.
        let g: Vec<f64> = (0..360).map(|i| f64::from(i % 97) / 100.0 + 20.0).collect();
        assert!(roundtrip(&g) < 800);
    }

    proptest::proptest! {
        #[test]
        fn any_values_roundtrip(
            bits in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..50),
            decimals in proptest::collection::vec(-1_000_000i64..1_000_000, 0..300),
            e in 0u32..6,
        ) {
            // Arbitrary bit patterns (NaN payloads, infinities, subnormals): Gorilla path.
            let v: Vec<f64> = bits.iter().map(|b| f64::from_bits(*b)).collect();
            roundtrip(&v);
            // Decimal values with e digits: packed/varint paths.
            let p = 10f64.powi(e as i32);
            let d: Vec<f64> = decimals.iter().map(|m| *m as f64 / p).collect();
            roundtrip(&d);
        }
    }

    #[test]
    fn timestamps_roundtrip() {
        for ts in [
            vec![],
            vec![5],
            vec![100, 110, 120, 130, 145, 150],
            vec![i64::MIN, i64::MAX, 0, -5],
        ] {
            let mut out = Vec::new();
            encode_ts(ts.iter().copied(), &mut out);
            assert_eq!(decode_ts(&mut Reader::new(&out), ts.len()).expect("ts"), ts);
        }
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        encode_values(&[std::f64::consts::PI, 2.5, 7.25], &mut out);
        for cut in 0..out.len() {
            let _ = decode_values(&mut Reader::new(&out[..cut]), 3);
        }
        assert!(decode_values(&mut Reader::new(&out[..1]), 3).is_err());
    }

    #[test]
    fn sketch_roundtrip() {
        let mut s = DDSketch::new();
        for v in 1..500 {
            s.insert(f64::from(v) * 0.37);
        }
        s.insert(-4.0);
        let mut out = Vec::new();
        encode_sketch(&s, &mut out);
        let back = decode_sketch(&mut Reader::new(&out)).expect("sketch");
        assert_eq!(back, s);
    }
}
