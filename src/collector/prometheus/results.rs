//! Query results: decoding of the Prometheus API's answer (pure), and the
//! first cache level, raw results by PromQL text with a TTL and a bound on
//! the number of entries (least recently fetched evicted first).

use std::borrow::Cow;
use std::sync::Arc;

use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;

/// One series of a query result: its labels of interest and its value.
/// Namespace and model names repeat across thousands of rows and are
/// shared; the pod name is the row's own.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesValue {
    pub(crate) namespace: Arc<str>,
    pub(crate) pod: Box<str>,
    pub(crate) model_name: Arc<str>,
    pub(crate) value: f64,
    /// The `num_gpu_blocks` and `block_size` labels, when the series has
    /// both as positive integers (`vllm:cache_config_info`).
    pub(crate) kv_cache: Option<crate::saturation::v2::KvCacheConfig>,
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

/// One series of an answer as the decoder reads it, borrowed from the
/// body: handed to the caller's sink, which keeps what it needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RowRef<'r> {
    /// Empty when the series has no `namespace` label.
    pub(crate) namespace: &'r str,
    /// The `pod` label, else the series name (`__name__`), else empty.
    pub(crate) pod: &'r str,
    /// Empty when the series has no `model_name` label.
    pub(crate) model_name: &'r str,
    pub(crate) value: f64,
    /// The `num_gpu_blocks` and `block_size` labels, when the series has
    /// both as positive integers (`vllm:cache_config_info`).
    pub(crate) kv_cache: Option<crate::saturation::v2::KvCacheConfig>,
}

/// What a Prometheus `/api/v1/query` body said, its rows aside (they went
/// to the sink).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// A vector; this many rows went to the sink.
    Vector(usize),
    /// A successful answer of another result type (scalar, matrix, string).
    OtherResultType(String),
    /// `status: error`, with Prometheus' `errorType` and message.
    ApiError { error_type: String, error: String },
}

/// Receives each row of a vector as it is decoded; an `Err` stops the
/// decoding and becomes the [`DecodeError`].
pub(crate) type Sink<'s> = dyn FnMut(RowRef<'_>) -> Result<(), String> + 's;

/// The body's top level. Prometheus writes `status` first; a `data` read
/// before it is kept as raw text and decoded once the status says
/// success, so that no row of an error answer reaches the sink.
struct Envelope<'a, 's, 'k> {
    sink: &'k mut Sink<'s>,
    _body: std::marker::PhantomData<&'a ()>,
}

struct Top<'a> {
    status: Option<Text<'a>>,
    data: Option<Data<'a>>,
    error_type: Option<Text<'a>>,
    error: Option<Text<'a>>,
}

impl<'de: 'a, 'a, 's, 'k> de::DeserializeSeed<'de> for Envelope<'a, 's, 'k> {
    type Value = Top<'a>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Top<'a>, D::Error> {
        struct V<'a, 's, 'k>(&'k mut Sink<'s>, std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a, 's, 'k> Visitor<'de> for V<'a, 's, 'k> {
            type Value = Top<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Prometheus API answer")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'a>, A::Error> {
                let sink = self.0;
                let mut top = Top {
                    status: None,
                    data: None,
                    error_type: None,
                    error: None,
                };
                let mut deferred: Option<&'a serde_json::value::RawValue> = None;
                while let Some(key) = map.next_key::<Text<'a>>()? {
                    match key.0.as_ref() {
                        "status" => top.status = Some(map.next_value()?),
                        "data" if top.status.as_ref().is_some_and(|s| s.0 == "success") => {
                            top.data = Some(map.next_value_seed(DataSeed {
                                sink: &mut *sink,
                                _body: std::marker::PhantomData,
                            })?)
                        }
                        "data" => deferred = Some(map.next_value()?),
                        "errorType" => top.error_type = Some(map.next_value()?),
                        "error" => top.error = Some(map.next_value()?),
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                let status = top
                    .status
                    .as_ref()
                    .ok_or_else(|| de::Error::missing_field("status"))?;
                if let (Some(raw), "success") = (deferred, status.0.as_ref()) {
                    let mut d = serde_json::Deserializer::from_str(raw.get());
                    top.data = Some(
                        de::DeserializeSeed::deserialize(
                            DataSeed {
                                sink,
                                _body: std::marker::PhantomData,
                            },
                            &mut d,
                        )
                        .map_err(de::Error::custom)?,
                    );
                }
                Ok(top)
            }
        }
        d.deserialize_map(V(self.sink, std::marker::PhantomData))
    }
}

/// `data`: Prometheus writes `resultType` before `result`, so the rows of a
/// vector are decoded in the same pass; any other result is skipped.
struct Data<'a> {
    result_type: Text<'a>,
    rows: Option<usize>,
}

struct DataSeed<'a, 's, 'k> {
    sink: &'k mut Sink<'s>,
    _body: std::marker::PhantomData<&'a ()>,
}

impl<'de: 'a, 'a, 's, 'k> de::DeserializeSeed<'de> for DataSeed<'a, 's, 'k> {
    type Value = Data<'a>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Data<'a>, D::Error> {
        struct V<'a, 's, 'k>(&'k mut Sink<'s>, std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a, 's, 'k> Visitor<'de> for V<'a, 's, 'k> {
            type Value = Data<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a query result")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Data<'a>, A::Error> {
                let sink = self.0;
                let mut result_type: Option<Text<'a>> = None;
                let mut rows = None;
                let mut deferred: Option<&'a serde_json::value::RawValue> = None;
                while let Some(key) = map.next_key::<Text<'a>>()? {
                    match (key.0.as_ref(), result_type.as_ref()) {
                        ("resultType", _) => result_type = Some(map.next_value()?),
                        ("result", Some(t)) if t.0 == "vector" => {
                            rows = Some(map.next_value_seed(Rows {
                                sink: &mut *sink,
                                _body: std::marker::PhantomData,
                            })?)
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
                        de::DeserializeSeed::deserialize(
                            Rows {
                                sink,
                                _body: std::marker::PhantomData,
                            },
                            &mut d,
                        )
                        .map_err(de::Error::custom)?,
                    );
                }
                Ok(Data { result_type, rows })
            }
        }
        d.deserialize_map(V(self.sink, std::marker::PhantomData))
    }
}

/// The rows of a vector, each handed to the sink as soon as it is read
/// and never kept here: a 100,000-series answer is folded in one pass
/// over its body, without a row allocated per series.
struct Rows<'a, 's, 'k> {
    sink: &'k mut Sink<'s>,
    _body: std::marker::PhantomData<&'a ()>,
}

impl<'de: 'a, 'a, 's, 'k> de::DeserializeSeed<'de> for Rows<'a, 's, 'k> {
    type Value = usize;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        struct V<'a, 's, 'k>(&'k mut Sink<'s>, std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a, 's, 'k> Visitor<'de> for V<'a, 's, 'k> {
            type Value = usize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of series")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
                let mut n = 0;
                while let Some(row) = seq.next_element::<Row<'a>>()? {
                    (self.0)(row_ref(&row).map_err(de::Error::custom)?)
                        .map_err(de::Error::custom)?;
                    n += 1;
                }
                Ok(n)
            }
        }
        d.deserialize_seq(V(self.sink, std::marker::PhantomData))
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
struct Interner(std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(Arc::clone(&a));
        a
    }
}

/// Decodes the body of an instant query, handing each row of a vector to
/// `sink` as it is read. Series without a `pod` label get the series name
/// in its place (the availability check groups by `__name__`), else an
/// empty one. Sample values keep Prometheus' spelling of NaN and
/// infinities; range checks come later. When this returns an error, rows
/// before the fault may already have reached the sink.
pub(crate) fn decode_each(body: &[u8], sink: &mut Sink<'_>) -> Result<Outcome, DecodeError> {
    // The whole body checked as UTF-8 at once (fast over ASCII) rather
    // than string by string as the slice reader does.
    let text = std::str::from_utf8(body).map_err(|e| DecodeError(e.to_string()))?;
    let mut d = serde_json::Deserializer::from_str(text);
    let top = de::DeserializeSeed::deserialize(
        Envelope {
            sink,
            _body: std::marker::PhantomData,
        },
        &mut d,
    )
    .and_then(|top| d.end().map(|()| top))
    .map_err(|e| DecodeError(e.to_string()))?;
    let status = top.status.unwrap_or_default();
    if status.0 != "success" {
        return Ok(Outcome::ApiError {
            error_type: top.error_type.unwrap_or_default().0.into_owned(),
            error: top.error.unwrap_or_default().0.into_owned(),
        });
    }
    let data = top
        .data
        .ok_or_else(|| DecodeError("`status: success` without `data`".to_owned()))?;
    match data.rows {
        Some(n) => Ok(Outcome::Vector(n)),
        None => Ok(Outcome::OtherResultType(data.result_type.0.into_owned())),
    }
}

/// Decodes the body of an instant query into owned rows (see
/// [`decode_each`], which the fetch cycle uses without them).
pub fn decode(body: &[u8]) -> Result<Decoded, DecodeError> {
    let mut strings = Interner::default();
    let mut rows = Vec::new();
    let outcome = decode_each(body, &mut |r: RowRef<'_>| {
        rows.push(SeriesValue {
            namespace: strings.get(r.namespace),
            pod: r.pod.into(),
            model_name: strings.get(r.model_name),
            value: r.value,
            kv_cache: r.kv_cache,
        });
        Ok(())
    })?;
    Ok(match outcome {
        Outcome::Vector(_) => Decoded::Vector(rows),
        Outcome::OtherResultType(t) => Decoded::OtherResultType(t),
        Outcome::ApiError { error_type, error } => Decoded::ApiError { error_type, error },
    })
}

/// One wire row as a [`RowRef`]; Err names a value that is not a number.
fn row_ref<'r>(row: &'r Row<'_>) -> Result<RowRef<'r>, String> {
    // Per-model rows (the endpoint picker's queues) have no pod; they
    // never join a pod, but are read by model.
    let text = |t: &'r Option<Text<'_>>| t.as_ref().map_or("", |t| t.0.as_ref());
    let pod = match &row.metric.pod {
        Some(p) => p.0.as_ref(),
        None => text(&row.metric.name),
    };
    let value_text = &row.value.1 .0;
    let value = value_text
        .parse::<f64>()
        .map_err(|_| format!("sample value {value_text:?} is not a number"))?;
    let (blocks, block_size) = (&row.metric.num_gpu_blocks, &row.metric.block_size);
    let kv_cache = match (blocks, block_size) {
        (Some(_), Some(_)) => crate::collector::exposition::kv_cache_from_labels(|k| match k {
            "num_gpu_blocks" => blocks.as_ref().map(|t| t.0.as_ref()),
            "block_size" => block_size.as_ref().map(|t| t.0.as_ref()),
            _ => None,
        }),
        _ => None,
    };
    Ok(RowRef {
        namespace: text(&row.metric.namespace),
        pod,
        model_name: text(&row.metric.model_name),
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
