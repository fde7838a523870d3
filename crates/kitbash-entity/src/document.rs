//! The operations on a document, in Rust: RFC 7396 merge patch, counter increments, replace and
//! delete. `serde_json` (with `preserve_order` and `float_roundtrip`) keeps key order, floats,
//! 64-bit integers, `[]` vs `{}` and unicode exactly; the result is committed as bytes, so Redis's
//! Lua `cjson` never re-encodes a document.

use kitbash_schema::messages::{EntityOp, json_kind};
use serde_json::{Map, Number, Value};

/// Applies `op` with argument `patch` to `doc` (`None` = no document). Returns the new document
/// (`None` = deleted), or why the update cannot apply (the document is then unchanged).
pub fn apply(doc: Option<&Value>, op: EntityOp, patch: &Value) -> Result<Option<Value>, String> {
    match op {
        EntityOp::Merge => {
            if !patch.is_object() {
                return Err(format!(
                    "a merge patch must be a JSON object, got {}",
                    json_kind(patch)
                ));
            }
            let mut out = doc.cloned().unwrap_or(Value::Null);
            merge_patch(&mut out, patch);
            Ok(Some(out))
        }
        EntityOp::Increment => {
            let Value::Object(inc) = patch else {
                return Err(format!(
                    "an increment patch must be a JSON object, got {}",
                    json_kind(patch)
                ));
            };
            let mut out = match doc {
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(d) => d.clone(),
            };
            increment(&mut out, inc, "")?;
            Ok(Some(out))
        }
        EntityOp::Replace => Ok(Some(patch.clone())),
        EntityOp::Delete => Ok(None),
    }
}

/// RFC 7396 `MergePatch(target, patch)`: objects merge key by key, `null` removes a key,
/// anything else replaces. Existing keys keep their place; new keys go last.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.shift_remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Adds the number leaves of `inc` to the numbers at the same paths of `target` (an object).
fn increment(target: &mut Value, inc: &Map<String, Value>, path: &str) -> Result<(), String> {
    let Value::Object(t) = target else {
        return Err(format!(
            "cannot increment inside {}: it is {}, not an object",
            if path.is_empty() {
                "the document"
            } else {
                path
            },
            json_kind(target)
        ));
    };
    for (k, v) in inc {
        let here = format!("{path}/{k}");
        match v {
            Value::Object(sub) => {
                let slot = t
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                increment(slot, sub, &here)?;
            }
            Value::Number(by) => {
                let slot = t.entry(k.clone()).or_insert(Value::from(0));
                let Value::Number(cur) = slot else {
                    return Err(format!(
                        "cannot increment {here}: it is {}, not a number",
                        json_kind(slot)
                    ));
                };
                *slot =
                    Value::Number(add(cur, by).ok_or_else(|| {
                        format!("increment of {here} overflows or is not finite")
                    })?);
            }
            other => {
                return Err(format!(
                    "increment of {here} is {}, not a number or an object",
                    json_kind(other)
                ));
            }
        }
    }
    Ok(())
}

/// `a + b`: exact in integers (as `i64` or `u64`), `f64` when either is a float.
fn add(a: &Number, b: &Number) -> Option<Number> {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    if let (Some(x), Some(y)) = (int(a), int(b)) {
        let s = x.checked_add(y)?;
        return i64::try_from(s)
            .map(Number::from)
            .ok()
            .or_else(|| u64::try_from(s).ok().map(Number::from));
    }
    Number::from_f64(a.as_f64()? + b.as_f64()?)
}

/// Compact JSON bytes of a document (what is stored).
pub fn to_bytes(doc: &Value) -> Vec<u8> {
    serde_json::to_vec(doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap_or(Value::Null)
    }

    /// The examples of RFC 7396 appendix A.
    #[test]
    fn rfc7396_appendix_a() {
        let cases = [
            (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
            (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
            (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
            (
                r#"{"a":{"b":"c"}}"#,
                r#"{"a":{"b":"d","c":null}}"#,
                r#"{"a":{"b":"d"}}"#,
            ),
            (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
            (r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#),
            (r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#),
            (r#"{"a":"foo"}"#, "null", "null"),
            (r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#),
            (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#),
            (r#"[1,2]"#, r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
            (
                r#"{}"#,
                r#"{"a":{"bb":{"ccc":null}}}"#,
                r#"{"a":{"bb":{}}}"#,
            ),
        ];
        for (t, p, want) in cases {
            let mut doc = parse(t);
            merge_patch(&mut doc, &parse(p));
            assert_eq!(doc, parse(want), "{t} + {p}");
        }
    }

    #[test]
    fn key_order_is_kept_and_removal_does_not_reorder() {
        let mut doc = parse(r#"{"z":1,"a":2,"m":3}"#);
        merge_patch(&mut doc, &parse(r#"{"z":null,"b":4,"a":5}"#));
        assert_eq!(
            String::from_utf8(to_bytes(&doc)).unwrap_or_default(),
            r#"{"a":5,"m":3,"b":4}"#
        );
    }

    #[test]
    fn fidelity_of_numbers_arrays_unicode_and_depth() {
        let text = r#"{"f":0.1,"g":1.7976931348623157e308,"h":5e-324,"big":9007199254740993,"u":18446744073709551615,"neg":-9223372036854775808,"ea":[],"eo":{},"s":"Lévy 😀 \u0000","deep":[[[[[[[[[[{"x":[{}]}]]]]]]]]]]}"#;
        let doc = parse(text);
        let out = apply(Some(&doc), EntityOp::Merge, &json!({"new": 1}))
            .ok()
            .flatten();
        let bytes = out.as_ref().map(to_bytes).unwrap_or_default();
        let back: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(back.get("big"), Some(&json!(9007199254740993u64)));
        assert_eq!(back.get("u"), Some(&json!(u64::MAX)));
        assert_eq!(back.get("neg"), Some(&json!(i64::MIN)));
        assert_eq!(back.get("ea"), Some(&json!([])));
        assert_eq!(back.get("eo"), Some(&json!({})));
        assert_eq!(back.get("f").and_then(Value::as_f64), Some(0.1));
        assert_eq!(back.get("h").and_then(Value::as_f64), Some(5e-324));
        assert_eq!(back.get("s"), Some(&json!("Lévy 😀 \u{0}")));
        assert_eq!(back, out.unwrap_or(Value::Null));
    }

    #[test]
    fn increments_add_exactly_and_refuse_non_numbers() {
        let doc = parse(r#"{"n":9007199254740992,"f":0.5,"o":{"c":1}}"#);
        let out = apply(
            Some(&doc),
            EntityOp::Increment,
            &json!({"n": 1, "f": 0.25, "o": {"c": 2, "d": 3}, "new": 7}),
        );
        assert_eq!(
            out,
            Ok(Some(parse(
                r#"{"n":9007199254740993,"f":0.75,"o":{"c":3,"d":3},"new":7}"#
            )))
        );
        assert!(apply(Some(&doc), EntityOp::Increment, &json!({"o": 1})).is_err());
        assert!(apply(Some(&doc), EntityOp::Increment, &json!({"n": "x"})).is_err());
        assert!(apply(Some(&doc), EntityOp::Increment, &json!([1])).is_err());
        assert!(
            apply(
                Some(&json!({"m": u64::MAX})),
                EntityOp::Increment,
                &json!({"m": 1})
            )
            .is_err()
        );
        assert_eq!(
            apply(None, EntityOp::Increment, &json!({"a": 1})),
            Ok(Some(json!({"a": 1})))
        );
    }

    #[test]
    fn replace_and_delete() {
        assert_eq!(
            apply(None, EntityOp::Replace, &json!([])),
            Ok(Some(json!([])))
        );
        assert_eq!(
            apply(Some(&json!({"a": 1})), EntityOp::Delete, &Value::Null),
            Ok(None)
        );
        assert!(apply(None, EntityOp::Merge, &json!("x")).is_err());
    }
}
