//! Query results: decoding of the Prometheus API's answer (pure), and the
//! first cache level, raw results by PromQL text with a TTL and a bound on
//! the number of entries (least recently fetched evicted first).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;

/// One series of a query result: its labels of interest and its value.
/// Namespace and model names repeat across thousands of rows and are
/// shared; the pod name is the row's own.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesValue {
    pub namespace: Arc<str>,
    pub pod: Box<str>,
    pub model_name: Arc<str>,
    pub value: f64,
    /// The `num_gpu_blocks` and `block_size` labels, when the series has
    /// both as positive integers (`vllm:cache_config_info`).
    pub kv_cache: Option<crate::saturation::v2::KvCacheConfig>,
}

/// What a Prometheus `/api/v1/query` body said.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Vector(Vec<SeriesValue>),
    /// A successful answer of another result type (scalar, matrix, string).
    OtherResultType(String),
    /// `status: error`, with Prometheus' `errorType` and message.
    ApiError {
        error_type: String,
        error: String,
    },
}

/// The body is not a Prometheus API answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Prometheus API answer: {0}")]
pub struct DecodeError(String);

// The wire shapes, borrowed from the body where no escapes force a copy.
// Decoding straight into these (instead of a generic JSON tree and a map of
// labels per series, as the client crate does) is what keeps a
// 100,000-series answer cheap.

/// A JSON string, borrowed from the body unless it has escapes. (serde's
/// `Cow<str>` always copies when nested in an `Option` or a tuple.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    status: Text<'a>,
    #[serde(default, borrow)]
    data: Option<Data<'a>>,
    #[serde(default, borrow, rename = "errorType")]
    error_type: Option<Text<'a>>,
    #[serde(default, borrow)]
    error: Option<Text<'a>>,
}

/// `data`: Prometheus writes `resultType` before `result`, so the rows of a
/// vector are decoded in the same pass; any other result is skipped.
struct Data<'a> {
    result_type: Text<'a>,
    rows: Option<Vec<SeriesValue>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Data<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Data<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a query result")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Data<'a>, A::Error> {
                let mut result_type: Option<Text<'a>> = None;
                let mut rows = None;
                let mut deferred: Option<&'a serde_json::value::RawValue> = None;
                while let Some(key) = map.next_key::<Text<'a>>()? {
                    match (key.0.as_ref(), result_type.as_ref()) {
                        ("resultType", _) => result_type = Some(map.next_value()?),
                        ("result", Some(t)) if t.0 == "vector" => {
                            rows = Some(map.next_value_seed(Rows(std::marker::PhantomData))?)
                        }
                        ("result", Some(_)) => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                        // `result` first: keep it until the type is known.
                        ("result", None) => deferred = Some(map.next_value()?),
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                let result_type =
                    result_type.ok_or_else(|| de::Error::missing_field("resultType"))?;
                if let (Some(raw), "vector") = (deferred, result_type.0.as_ref()) {
                    let mut d = serde_json::Deserializer::from_str(raw.get());
                    rows = Some(
                        de::DeserializeSeed::deserialize(Rows(std::marker::PhantomData), &mut d)
                            .map_err(de::Error::custom)?,
                    );
                }
                Ok(Data { result_type, rows })
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The rows of a vector, each turned into a [`SeriesValue`] as soon as it
/// is read: the wire rows of a 100,000-series answer are never all held
/// at once (they were 17 MB, twice that while their vector grew).
struct Rows<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> de::DeserializeSeed<'de> for Rows<'a> {
    type Value = Vec<SeriesValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Vec<SeriesValue>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of series")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut strings = Interner::default();
                let mut out = Vec::new();
                while let Some(row) = seq.next_element::<Row<'a>>()? {
                    out.push(series_value(row, &mut strings).map_err(de::Error::custom)?);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct Row<'a> {
    #[serde(borrow)]
    metric: Labels<'a>,
    #[serde(borrow)]
    value: (f64, Text<'a>),
}

#[derive(Deserialize)]
struct Labels<'a> {
    #[serde(default, borrow)]
    namespace: Option<Text<'a>>,
    #[serde(default, borrow)]
    pod: Option<Text<'a>>,
    #[serde(default, borrow)]
    model_name: Option<Text<'a>>,
    #[serde(default, borrow, rename = "__name__")]
    name: Option<Text<'a>>,
    #[serde(default, borrow)]
    num_gpu_blocks: Option<Text<'a>>,
    #[serde(default, borrow)]
    block_size: Option<Text<'a>>,
}

/// Shares equal strings.
#[derive(Default)]
struct Interner<'a>(HashMap<Text<'a>, Arc<str>, foldhash::fast::RandomState>);

impl<'a> Interner<'a> {
    fn get(&mut self, s: Option<Text<'a>>) -> Arc<str> {
        let s = s.unwrap_or_default();
        if let Some(a) = self.0.get(&s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(s.0.as_ref());
        self.0.insert(s, Arc::clone(&a));
        a
    }
}

/// Decodes the body of an instant query. Series without a `pod` label are
/// dropped, except that the name of the series stands in for it (the
/// availability check groups by `__name__`). Sample values keep
/// Prometheus' spelling of NaN and infinities; range checks come later.
pub fn decode(body: &[u8]) -> Result<Decoded, DecodeError> {
    let envelope: Envelope<'_> =
        serde_json::from_slice(body).map_err(|e| DecodeError(e.to_string()))?;
    if envelope.status.0 != "success" {
        return Ok(Decoded::ApiError {
            error_type: envelope.error_type.unwrap_or_default().0.into_owned(),
            error: envelope.error.unwrap_or_default().0.into_owned(),
        });
    }
    let data = envelope
        .data
        .ok_or_else(|| DecodeError("`status: success` without `data`".to_owned()))?;
    let Some(rows) = data.rows else {
        return Ok(Decoded::OtherResultType(data.result_type.0.into_owned()));
    };
    Ok(Decoded::Vector(rows))
}

/// One wire row as a [`SeriesValue`]; Err names a value that is not a number.
fn series_value<'a>(row: Row<'a>, strings: &mut Interner<'a>) -> Result<SeriesValue, String> {
    // Per-model rows (the endpoint picker's queues) have no pod; they
    // never join a pod, but are read by model.
    let pod = row.metric.pod.or(row.metric.name).unwrap_or_default();
    let text = &row.value.1 .0;
    let value = text
        .parse::<f64>()
        .map_err(|_| format!("sample value {text:?} is not a number"))?;
    let (blocks, block_size) = (&row.metric.num_gpu_blocks, &row.metric.block_size);
    let kv_cache = match (blocks, block_size) {
        (Some(_), Some(_)) => crate::collector::exposition::kv_cache_from_labels(|k| match k {
            "num_gpu_blocks" => blocks.as_ref().map(|t| t.0.as_ref()),
            "block_size" => block_size.as_ref().map(|t| t.0.as_ref()),
            _ => None,
        }),
        _ => None,
    };
    Ok(SeriesValue {
        namespace: strings.get(row.metric.namespace),
        pod: pod.0.into(),
        model_name: strings.get(row.metric.model_name),
        value,
        kv_cache,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(body: &str) -> Vec<SeriesValue> {
        match decode(body.as_bytes()) {
            Ok(Decoded::Vector(v)) => v,
            other => panic!("not a vector: {other:?}"),
        }
    }

    #[test]
    fn decodes_vectors_with_escapes_special_values_and_extra_labels() {
        let rows = vector(
            r#"{"status":"success","data":{"resultType":"vector","result":[
              {"metric":{"namespace":"a","pod":"p\"1","model_name":"m","job":"x"},"value":[1700000000.5,"0.25"]},
              {"metric":{"namespace":"a","pod":"p2","model_name":"m"},"value":[1700000000,"NaN"]},
              {"metric":{"namespace":"a","pod":"p3"},"value":[1700000000,"+Inf"]},
              {"metric":{"namespace":"a"},"value":[1700000000,"1"]}
            ]}}"#,
        );
        // A series without a pod is kept with an empty pod (per-model
        // answers such as the endpoint picker's queues); it joins no pod.
        assert_eq!(rows.len(), 4);
        assert_eq!(&*rows[3].pod, "");
        assert_eq!(&*rows[0].pod, "p\"1");
        assert_eq!(rows[0].value, 0.25);
        assert!(rows[1].value.is_nan());
        assert_eq!(rows[2].value, f64::INFINITY);
        assert_eq!(&*rows[2].model_name, "");
        assert!(Arc::ptr_eq(&rows[0].namespace, &rows[1].namespace));
    }

    #[test]
    fn cache_config_labels_are_decoded() {
        let rows = vector(
            r#"{"status":"success","data":{"resultType":"vector","result":[
              {"metric":{"namespace":"a","pod":"p1","model_name":"m","num_gpu_blocks":"27328","block_size":"16"},"value":[1,"1"]},
              {"metric":{"namespace":"a","pod":"p2","model_name":"m","num_gpu_blocks":"None","block_size":"16"},"value":[1,"1"]},
              {"metric":{"namespace":"a","pod":"p3","model_name":"m"},"value":[1,"1"]}
            ]}}"#,
        );
        let got: Vec<Option<(u64, u64)>> = rows
            .iter()
            .map(|r| r.kv_cache.map(|c| (c.num_gpu_blocks, c.block_size)))
            .collect();
        assert_eq!(got, [Some((27328, 16)), None, None]);
    }

    #[test]
    fn result_before_result_type_is_decoded_too() {
        let rows = vector(
            r#"{"data":{"result":[{"metric":{"pod":"p"},"value":[1,"2"]}],"resultType":"vector"},"status":"success"}"#,
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].value, 2.0);
    }

    #[test]
    fn availability_rows_use_the_series_name() {
        let rows = vector(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"vllm:num_requests_waiting"},"value":[1,"3"]}]}}"#,
        );
        assert_eq!(&*rows[0].pod, "vllm:num_requests_waiting");
    }

    #[test]
    fn errors_and_other_shapes() {
        let table: [(&str, Result<Decoded, ()>); 5] = [
            (
                r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
                Ok(Decoded::ApiError {
                    error_type: "bad_data".into(),
                    error: "parse error".into(),
                }),
            ),
            (
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#,
                Ok(Decoded::OtherResultType("scalar".into())),
            ),
            (r#"{"status":"success"}"#, Err(())),
            ("<html>502 Bad Gateway</html>", Err(())),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"p"},"value":[1,"many"]}]}}"#,
                Err(()),
            ),
        ];
        for (body, want) in table {
            assert_eq!(decode(body.as_bytes()).map_err(|_| ()), want, "{body}");
        }
    }
}
