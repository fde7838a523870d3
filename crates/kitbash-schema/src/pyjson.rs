//! JSON exactly as Python's `json.dumps` writes it (seed 002 publishes with it): `", "` and
//! `": "` separators, non-ASCII escaped as `\uXXXX`, floats as Python's `repr` (`100.0`,
//! `1e-05`). Readers that compare bytes, or parse with Python, see what they always saw.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::Formatter;

/// A `serde_json` formatter that imitates `json.dumps` with default arguments.
#[derive(Clone, Copy, Debug, Default)]
pub struct PythonFormatter;

/// Python's `repr(float)`.
pub fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let abs = x.abs();
    if x == 0.0 || (1e-4..1e16).contains(&abs) {
        let s = format!("{x}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        // Rust: "1e-5", "1.5e16"; Python: "1e-05", "1.5e+16".
        let s = format!("{x:e}");
        match s.split_once('e') {
            Some((mant, exp)) => {
                let (sign, digits) = match exp.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', exp),
                };
                format!("{mant}e{sign}{digits:0>2}")
            }
            None => s,
        }
    }
}

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
    fn write_f64<W: ?Sized + Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(python_float(value).as_bytes())
    }
    fn write_f32<W: ?Sized + Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        w.write_all(python_float(f64::from(value)).as_bytes())
    }
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                let mut b = [0u8; 1];
                w.write_all(c.encode_utf8(&mut b).as_bytes())?;
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Serialises `value` as `json.dumps(value)` would.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut ser)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_python_repr() {
        // Expected values printed by CPython 3.11: repr(x).
        assert_eq!(python_float(100.0), "100.0");
        assert_eq!(python_float(0.1), "0.1");
        assert_eq!(python_float(1e-5), "1e-05");
        assert_eq!(python_float(1.5e16), "1.5e+16");
        assert_eq!(python_float(123456789.125), "123456789.125");
        assert_eq!(python_float(-0.0001), "-0.0001");
        assert_eq!(python_float(0.0), "0.0");
    }

    #[test]
    fn separators_and_ascii_escapes_like_json_dumps() {
        let v = serde_json::json!({"a": [1, 2.5], "b": "Lévy 😀", "c": {"d": null}});
        // python3 -c 'import json; print(json.dumps({"a":[1,2.5],"b":"Lévy 😀","c":{"d":None}}))'
        assert_eq!(
            String::from_utf8(to_vec(&v).unwrap_or_default()).unwrap_or_default(),
            r#"{"a": [1, 2.5], "b": "L\u00e9vy \ud83d\ude00", "c": {"d": null}}"#
        );
    }
}
