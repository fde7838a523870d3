//! N-dimensional arrays in numpy's `.npy` format, and the optional zlib compression of their
//! bytes. The stored layout is in `docs/WIRE.md`.
//!
//! Reading parses the header with the `npyz` crate (the header is a Python dict literal; npyz
//! handles every spelling numpy writes) and converts the data part in bulk. Writing produces the
//! small format-1.0 header itself — magic, version, length, the dict padded with spaces to a
//! 64-byte boundary — because npyz's writer serialises element by element (~6 ms per MiB here,
//! slower than sending the bytes to Redis); tests check numpy and npyz both read it.
//!
//! Writers always produce little-endian data (`<f8`, `<i4`, `|b1`, …) in C or Fortran order as
//! the array says; readers accept what numpy writes (either byte order, either axis order).
//! Supported dtypes: `bool`, signed and unsigned integers of 1, 2, 4 and 8 bytes, `float32`
//! and `float64`; anything else (strings, objects, records, complex) is an error.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use npyz::{DType, Endianness, NpyHeader, Order, TypeChar};

/// Why bytes are not an array this module can read or write.
#[derive(Debug, thiserror::Error)]
pub enum ArrayError {
    /// The bytes are not a `.npy` file (bad magic, bad header, truncated header).
    #[error("not a .npy array: {0}")]
    NotNpy(String),
    /// A `.npy` file whose dtype this module does not handle.
    #[error("unsupported dtype {0}")]
    UnsupportedDtype(String),
    /// The data part is shorter or longer than the header's shape and dtype say.
    #[error("array data is {got} bytes, header says {want}")]
    Length {
        /// Bytes present after the header.
        got: u64,
        /// `product(shape) × itemsize`.
        want: u64,
    },
    /// The shape does not match the number of elements.
    #[error("shape {shape:?} holds {want} elements, data has {got}")]
    Shape {
        /// The shape given.
        shape: Vec<u64>,
        /// Its product.
        want: u64,
        /// Elements supplied.
        got: u64,
    },
    /// The compressed bytes did not inflate.
    #[error("compressed array: {0}")]
    Compression(String),
    /// The stored encoding marker is missing or unknown.
    #[error("unknown array encoding {0:?}")]
    Encoding(String),
}

/// The elements of an array, in storage order, with their dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum ArrayData {
    /// `|b1`.
    Bool(Vec<bool>),
    /// `|i1`.
    I8(Vec<i8>),
    /// `<i2`.
    I16(Vec<i16>),
    /// `<i4`.
    I32(Vec<i32>),
    /// `<i8`.
    I64(Vec<i64>),
    /// `|u1`.
    U8(Vec<u8>),
    /// `<u2`.
    U16(Vec<u16>),
    /// `<u4`.
    U32(Vec<u32>),
    /// `<u8`.
    U64(Vec<u64>),
    /// `<f4`.
    F32(Vec<f32>),
    /// `<f8`.
    F64(Vec<f64>),
}

impl ArrayData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            ArrayData::Bool(v) => v.len(),
            ArrayData::I8(v) => v.len(),
            ArrayData::I16(v) => v.len(),
            ArrayData::I32(v) => v.len(),
            ArrayData::I64(v) => v.len(),
            ArrayData::U8(v) => v.len(),
            ArrayData::U16(v) => v.len(),
            ArrayData::U32(v) => v.len(),
            ArrayData::U64(v) => v.len(),
            ArrayData::F32(v) => v.len(),
            ArrayData::F64(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// numpy's name for the dtype (`float64`, `int8`, `bool`, …).
    pub fn dtype_name(&self) -> &'static str {
        match self {
            ArrayData::Bool(_) => "bool",
            ArrayData::I8(_) => "int8",
            ArrayData::I16(_) => "int16",
            ArrayData::I32(_) => "int32",
            ArrayData::I64(_) => "int64",
            ArrayData::U8(_) => "uint8",
            ArrayData::U16(_) => "uint16",
            ArrayData::U32(_) => "uint32",
            ArrayData::U64(_) => "uint64",
            ArrayData::F32(_) => "float32",
            ArrayData::F64(_) => "float64",
        }
    }
}

/// An n-dimensional array: shape, axis order and typed elements in storage order.
#[derive(Clone, Debug, PartialEq)]
pub struct NdArray {
    shape: Vec<u64>,
    fortran_order: bool,
    data: ArrayData,
}

impl NdArray {
    /// An array in C order (last axis fastest, numpy's default). The shape's product must equal
    /// the number of elements (an empty shape is a scalar: one element).
    ///
    /// ```
    /// use kitbash_client::array::{ArrayData, NdArray};
    /// let a = NdArray::new(vec![2, 3], ArrayData::F64(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]))?;
    /// let bytes = a.to_npy()?;
    /// assert_eq!(&bytes[..6], b"\x93NUMPY");
    /// assert_eq!(NdArray::from_npy(&bytes)?, a);
    /// # Ok::<(), kitbash_client::array::ArrayError>(())
    /// ```
    pub fn new(shape: Vec<u64>, data: ArrayData) -> Result<Self, ArrayError> {
        let want = shape.iter().product::<u64>();
        let got = data.len() as u64;
        if want != got {
            return Err(ArrayError::Shape { shape, want, got });
        }
        Ok(Self {
            shape,
            fortran_order: false,
            data,
        })
    }

    /// A one-dimensional `float64` array.
    pub fn from_f64(values: Vec<f64>) -> Self {
        Self {
            shape: vec![values.len() as u64],
            fortran_order: false,
            data: ArrayData::F64(values),
        }
    }

    /// Same array, its elements declared in Fortran order (first axis fastest).
    pub fn fortran(mut self) -> Self {
        self.fortran_order = true;
        self
    }

    /// The shape.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Whether the elements are in Fortran order.
    pub fn is_fortran_order(&self) -> bool {
        self.fortran_order
    }

    /// The elements, in storage order.
    pub fn data(&self) -> &ArrayData {
        &self.data
    }

    /// The elements, when the dtype is `float64`.
    pub fn as_f64(&self) -> Option<&[f64]> {
        match &self.data {
            ArrayData::F64(v) => Some(v),
            _ => None,
        }
    }

    /// numpy's type string of the elements as written (`<f8`, `|b1`, …).
    pub fn descr(&self) -> &'static str {
        match &self.data {
            ArrayData::Bool(_) => "|b1",
            ArrayData::I8(_) => "|i1",
            ArrayData::I16(_) => "<i2",
            ArrayData::I32(_) => "<i4",
            ArrayData::I64(_) => "<i8",
            ArrayData::U8(_) => "|u1",
            ArrayData::U16(_) => "<u2",
            ArrayData::U32(_) => "<u4",
            ArrayData::U64(_) => "<u8",
            ArrayData::F32(_) => "<f4",
            ArrayData::F64(_) => "<f8",
        }
    }

    /// The array as a complete `.npy` file (format 1.0).
    pub fn to_npy(&self) -> Result<Vec<u8>, ArrayError> {
        let shape = match self.shape.as_slice() {
            [] => "()".to_owned(),
            [n] => format!("({n},)"),
            dims => format!(
                "({})",
                dims.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let dict = format!(
            "{{'descr': '{}', 'fortran_order': {}, 'shape': {}, }}",
            self.descr(),
            if self.fortran_order { "True" } else { "False" },
            shape
        );
        // magic (6) + version (2) + length (2) + dict + padding + '\n', a multiple of 64.
        let unpadded = 10 + dict.len() + 1;
        let pad = (64 - unpadded % 64) % 64;
        let header_len = u16::try_from(dict.len() + pad + 1)
            .map_err(|_| ArrayError::NotNpy(format!("header too long for format 1.0: {dict}")))?;
        let width = match &self.data {
            ArrayData::Bool(_) | ArrayData::I8(_) | ArrayData::U8(_) => 1,
            ArrayData::I16(_) | ArrayData::U16(_) => 2,
            ArrayData::I32(_) | ArrayData::U32(_) | ArrayData::F32(_) => 4,
            _ => 8,
        };
        let mut out = Vec::with_capacity(unpadded + pad + self.data.len() * width);
        out.extend_from_slice(b"\x93NUMPY\x01\x00");
        out.extend_from_slice(&header_len.to_le_bytes());
        out.extend_from_slice(dict.as_bytes());
        out.resize(out.len() + pad, b' ');
        out.push(b'\n');
        // On little-endian machines the elements' memory is already the file's bytes: one copy.
        macro_rules! le {
            ($v:expr) => {
                if cfg!(target_endian = "little") {
                    out.extend_from_slice(bytemuck::cast_slice($v.as_slice()));
                } else {
                    for x in $v {
                        out.extend_from_slice(&x.to_le_bytes());
                    }
                }
            };
        }
        match &self.data {
            ArrayData::Bool(v) => out.extend(v.iter().map(|b| u8::from(*b))),
            ArrayData::I8(v) => le!(v),
            ArrayData::I16(v) => le!(v),
            ArrayData::I32(v) => le!(v),
            ArrayData::I64(v) => le!(v),
            ArrayData::U8(v) => out.extend_from_slice(v),
            ArrayData::U16(v) => le!(v),
            ArrayData::U32(v) => le!(v),
            ArrayData::U64(v) => le!(v),
            ArrayData::F32(v) => le!(v),
            ArrayData::F64(v) => le!(v),
        }
        Ok(out)
    }

    /// Reads a complete `.npy` file. The data part must be exactly as long as the header says.
    pub fn from_npy(bytes: &[u8]) -> Result<Self, ArrayError> {
        let mut rest = bytes;
        let header =
            NpyHeader::from_reader(&mut rest).map_err(|e| ArrayError::NotNpy(e.to_string()))?;
        let shape = header.shape().to_vec();
        let fortran_order = header.order() == Order::Fortran;
        let dtype = header.dtype();
        let DType::Plain(ts) = &dtype else {
            return Err(ArrayError::UnsupportedDtype(dtype.descr()));
        };
        let size = ts.size_field();
        let supported = matches!(
            (ts.type_char(), size),
            (TypeChar::Bool, 1)
                | (TypeChar::Int | TypeChar::Uint, 1 | 2 | 4 | 8)
                | (TypeChar::Float, 4 | 8)
        );
        if !supported {
            return Err(ArrayError::UnsupportedDtype(ts.to_string()));
        }
        let want = header.len().saturating_mul(size);
        let got = rest.len() as u64;
        if got != want {
            return Err(ArrayError::Length { got, want });
        }
        let big = ts.endianness() == Endianness::Big;
        let native = if cfg!(target_endian = "little") {
            !big
        } else {
            big
        };
        macro_rules! conv {
            ($t:ty, $n:literal) => {
                if native {
                    // Same byte order as this machine: one (alignment-safe) copy.
                    bytemuck::pod_collect_to_vec::<u8, $t>(rest)
                } else {
                    rest.chunks_exact($n)
                        .map(|c| {
                            let mut a = [0u8; $n];
                            a.copy_from_slice(c);
                            if big {
                                <$t>::from_be_bytes(a)
                            } else {
                                <$t>::from_le_bytes(a)
                            }
                        })
                        .collect()
                }
            };
        }
        let data = match (ts.type_char(), size) {
            (TypeChar::Bool, _) => {
                if let Some(b) = rest.iter().find(|b| **b > 1) {
                    return Err(ArrayError::NotNpy(format!("bool element {b}")));
                }
                ArrayData::Bool(rest.iter().map(|b| *b == 1).collect())
            }
            (TypeChar::Int, 1) => ArrayData::I8(rest.iter().map(|b| *b as i8).collect()),
            (TypeChar::Int, 2) => ArrayData::I16(conv!(i16, 2)),
            (TypeChar::Int, 4) => ArrayData::I32(conv!(i32, 4)),
            (TypeChar::Int, _) => ArrayData::I64(conv!(i64, 8)),
            (TypeChar::Uint, 1) => ArrayData::U8(rest.to_vec()),
            (TypeChar::Uint, 2) => ArrayData::U16(conv!(u16, 2)),
            (TypeChar::Uint, 4) => ArrayData::U32(conv!(u32, 4)),
            (TypeChar::Uint, _) => ArrayData::U64(conv!(u64, 8)),
            (TypeChar::Float, 4) => ArrayData::F32(conv!(f32, 4)),
            _ => ArrayData::F64(conv!(f64, 8)),
        };
        Ok(Self {
            shape,
            fortran_order,
            data,
        })
    }
}

/// How stored bytes are encoded (the `enc` field of an array hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The `.npy` bytes unchanged.
    Raw,
    /// A zlib stream (RFC 1950) of the `.npy` bytes.
    Zlib,
}

impl Encoding {
    /// The marker stored beside the bytes.
    pub fn marker(self) -> &'static str {
        match self {
            Encoding::Raw => kitbash_schema::Keys::ENC_RAW,
            Encoding::Zlib => kitbash_schema::Keys::ENC_ZLIB,
        }
    }

    /// The encoding a marker names; anything else is an error (readers never guess).
    pub fn from_marker(marker: &str) -> Result<Self, ArrayError> {
        match marker {
            m if m == kitbash_schema::Keys::ENC_RAW => Ok(Encoding::Raw),
            m if m == kitbash_schema::Keys::ENC_ZLIB => Ok(Encoding::Zlib),
            other => Err(ArrayError::Encoding(other.to_owned())),
        }
    }
}

/// When to compress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressionPolicy {
    /// `.npy` files longer than this are compressed when it pays (seed 003: 1024 bytes).
    pub threshold: usize,
}

impl Default for CompressionPolicy {
    fn default() -> Self {
        Self { threshold: 1024 }
    }
}

/// Bytes of the sample the compressibility probe compresses (four slices spread over the
/// array), and the least saving on it for the whole array to be compressed.
const PROBE_SLICE: usize = 2048;
const PROBE_MIN_SAVING: f64 = 0.10;

impl CompressionPolicy {
    /// Encodes `.npy` bytes: unchanged up to the threshold; above it, zlib — unless a probe of
    /// four 2 KiB slices saves less than 10 % (random floats save ~5 % at 10× the cost of
    /// sending them), or the whole compressed stream is not smaller. The result says which,
    /// and readers go by that marker, never by guessing.
    pub fn encode(&self, npy: Vec<u8>) -> (Vec<u8>, Encoding) {
        if npy.len() <= self.threshold || !probe_pays(&npy) {
            return (npy, Encoding::Raw);
        }
        let mut enc = ZlibEncoder::new(Vec::with_capacity(npy.len() / 2), Compression::fast());
        let packed = enc.write_all(&npy).and_then(|()| enc.finish());
        match packed {
            Ok(z) if z.len() < npy.len() => (z, Encoding::Zlib),
            _ => (npy, Encoding::Raw),
        }
    }
}

fn probe_pays(npy: &[u8]) -> bool {
    if npy.len() <= 4 * PROBE_SLICE {
        return true;
    }
    let step = (npy.len() - PROBE_SLICE) / 3;
    let mut sample = Vec::with_capacity(4 * PROBE_SLICE);
    for i in 0..4 {
        let at = i * step;
        sample.extend_from_slice(&npy[at..at + PROBE_SLICE]);
    }
    let mut enc = ZlibEncoder::new(Vec::with_capacity(sample.len()), Compression::fast());
    match enc.write_all(&sample).and_then(|()| enc.finish()) {
        Ok(z) => (z.len() as f64) < (sample.len() as f64) * (1.0 - PROBE_MIN_SAVING),
        Err(_) => false,
    }
}

/// Decodes stored bytes back to the `.npy` file, by their marker (raw bytes are borrowed).
pub fn decode(bytes: &[u8], encoding: Encoding) -> Result<std::borrow::Cow<'_, [u8]>, ArrayError> {
    match encoding {
        Encoding::Raw => Ok(std::borrow::Cow::Borrowed(bytes)),
        Encoding::Zlib => {
            let mut out = Vec::with_capacity(bytes.len() * 2);
            ZlibDecoder::new(bytes)
                .read_to_end(&mut out)
                .map_err(|e| ArrayError::Compression(e.to_string()))?;
            Ok(std::borrow::Cow::Owned(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bytes` with the first `from` replaced by `to` (same length).
    pub(crate) fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        if let Some(at) = bytes.windows(from.len()).position(|w| w == from) {
            out[at..at + from.len()].copy_from_slice(to);
        }
        out
    }

    #[test]
    fn every_dtype_round_trips() {
        let cases = vec![
            ArrayData::Bool(vec![true, false, true, true]),
            ArrayData::I8(vec![-1, 2, -3, 4]),
            ArrayData::I16(vec![-1, 2, -3, i16::MAX]),
            ArrayData::I32(vec![-1, 2, -3, i32::MIN]),
            ArrayData::I64(vec![-1, 2, -3, i64::MAX]),
            ArrayData::U8(vec![1, 2, 3, 255]),
            ArrayData::U16(vec![1, 2, 3, u16::MAX]),
            ArrayData::U32(vec![1, 2, 3, u32::MAX]),
            ArrayData::U64(vec![1, 2, 3, u64::MAX]),
            ArrayData::F32(vec![0.5, -1.25, f32::MAX, 3.0]),
            ArrayData::F64(vec![0.1, -2.5, f64::MIN_POSITIVE, 1e300]),
        ];
        for data in cases {
            let a = NdArray::new(vec![2, 2], data).expect("shape");
            let back = NdArray::from_npy(&a.to_npy().expect("encode")).expect("decode");
            assert_eq!(back, a);
            let f = a.clone().fortran();
            let back = NdArray::from_npy(&f.to_npy().expect("encode")).expect("decode");
            assert!(back.is_fortran_order());
            assert_eq!(back, f);
        }
    }

    #[test]
    fn header_is_numpy_format_1_0() {
        let a = NdArray::new(vec![3], ArrayData::F64(vec![1.0, 2.0, 3.0])).expect("shape");
        let b = a.to_npy().expect("encode");
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0, "header padded to 64 bytes");
        let header = std::str::from_utf8(&b[10..10 + hlen]).expect("ascii");
        assert!(header.contains("'descr': '<f8'"), "{header}");
        assert!(header.contains("'fortran_order': False"), "{header}");
        assert!(header.contains("'shape': (3,"), "{header}");
        assert_eq!(b.len(), 10 + hlen + 24);
    }

    #[test]
    fn npyz_reads_what_we_write_for_every_shape() {
        for shape in [vec![], vec![0], vec![5], vec![2, 3], vec![1, 2, 3, 1]] {
            let n = shape.iter().product::<u64>() as usize;
            let a = NdArray::new(shape.clone(), ArrayData::I32((0..n as i32).collect()))
                .expect("shape");
            let bytes = a.to_npy().expect("encode");
            let mut r = &bytes[..];
            let npy = npyz::NpyFile::new(&mut r).expect("npyz parses our header");
            assert_eq!(npy.shape(), &shape[..]);
            assert_eq!(
                npy.into_vec::<i32>().expect("data"),
                (0..n as i32).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn big_endian_input_is_read() {
        let mut b = NdArray::new(vec![2], ArrayData::U16(vec![1, 258]))
            .expect("shape")
            .to_npy()
            .expect("encode");
        b = replace(&b, b"'<u2'", b"'>u2'");
        let n = b.len();
        b[n - 4..].copy_from_slice(&[0, 1, 1, 2]);
        let a = NdArray::from_npy(&b).expect("decode");
        assert_eq!(a.data(), &ArrayData::U16(vec![1, 258]));
    }

    #[test]
    fn shape_must_match_data() {
        let e = NdArray::new(vec![2, 2], ArrayData::I8(vec![1, 2, 3])).unwrap_err();
        assert!(
            matches!(
                e,
                ArrayError::Shape {
                    want: 4,
                    got: 3,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let good = NdArray::from_f64(vec![1.0, 2.0, 3.0])
            .to_npy()
            .expect("encode");
        // Truncated data.
        let e = NdArray::from_npy(&good[..good.len() - 3]).unwrap_err();
        assert!(matches!(e, ArrayError::Length { .. }), "{e}");
        // Truncated header.
        let e = NdArray::from_npy(&good[..20]).unwrap_err();
        assert!(matches!(e, ArrayError::NotNpy(_)), "{e}");
        // Not .npy at all.
        let e = NdArray::from_npy(b"{\"pattern\": [1, 2, 3]}").unwrap_err();
        assert!(matches!(e, ArrayError::NotNpy(_)), "{e}");
        assert!(e.to_string().starts_with("not a .npy array"), "{e}");
        // An unknown dtype: same header with a unicode-string dtype.
        let e = NdArray::from_npy(&replace(&good, b"'<f8'", b"'<U4'")).unwrap_err();
        assert!(
            matches!(e, ArrayError::UnsupportedDtype(ref d) if d.contains("U4")),
            "{e}"
        );
        // Garbage in a compressed value.
        let e = decode(b"not zlib", Encoding::Zlib).unwrap_err();
        assert!(matches!(e, ArrayError::Compression(_)), "{e}");
        let e = Encoding::from_marker("gzip").unwrap_err();
        assert!(matches!(e, ArrayError::Encoding(_)), "{e}");
    }

    #[test]
    fn compression_is_explicit_and_only_when_it_pays() {
        let p = CompressionPolicy::default();
        // Small: never compressed.
        let small = NdArray::from_f64(vec![0.0; 10]).to_npy().expect("encode");
        assert_eq!(p.encode(small.clone()).1, Encoding::Raw);
        // Large and regular: compressed, and decodes back.
        let spikes = NdArray::new(
            vec![1000, 100],
            ArrayData::I8((0..100_000).map(|i| i8::from(i % 7 == 0)).collect()),
        )
        .expect("shape");
        let npy = spikes.to_npy().expect("encode");
        let (z, enc) = p.encode(npy.clone());
        assert_eq!(enc, Encoding::Zlib);
        assert!(z.len() < npy.len() / 4);
        assert_eq!(decode(&z, enc).expect("inflate").as_ref(), &npy[..]);
        // Large and random: stored raw.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<f64> = (0..50_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 11) as f64 / (1u64 << 53) as f64
            })
            .collect();
        let npy = NdArray::from_f64(noise).to_npy().expect("encode");
        assert_eq!(p.encode(npy).1, Encoding::Raw);
    }
}
