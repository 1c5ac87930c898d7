//! The emulated replica's state and the JSON of `POST /admin/state`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a vLLM replica reports about its load.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ReplicaState {
    /// KV-cache usage (0 to 1 for a healthy replica).
    #[serde(serialize_with = "ser_f64", deserialize_with = "de_f64")]
    pub kv: f64,
    /// Requests waiting in the queue.
    #[serde(serialize_with = "ser_f64", deserialize_with = "de_f64")]
    pub waiting: f64,
    /// Requests being served.
    #[serde(serialize_with = "ser_f64", deserialize_with = "de_f64")]
    pub running: f64,
}

/// A partial update: missing fields keep their value.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatePatch {
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub(crate) kv: Option<f64>,
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub(crate) waiting: Option<f64>,
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub(crate) running: Option<f64>,
    /// `vllm:cache_config_info`'s `num_gpu_blocks` (what vLLM found room
    /// for at start; changing it emulates a replica with another GPU).
    #[serde(default)]
    pub(crate) num_gpu_blocks: Option<u64>,
    /// `vllm:cache_config_info`'s `block_size`.
    #[serde(default)]
    pub(crate) block_size: Option<u64>,
    /// Requests completed per second: drives `vllm:request_success_total`
    /// and the token counters (unset: running / 2 per second).
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub(crate) request_rate: Option<f64>,
    /// Requests this emulator reports queued for its model in the endpoint
    /// picker's flow control (`inference_extension_flow_control_queue_size`),
    /// so that one emulator can stand in for the endpoint picker.
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub(crate) scheduler_queue: Option<f64>,
    /// Prompt tokens prefilled per second from now on: each finished
    /// request's `vllm:request_prefill_time_seconds` is its prompt tokens
    /// over this (unset: 8,000, or `emulate --prefill-tokens-per-second`).
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub(crate) prefill_tokens_per_second: Option<f64>,
}

impl ReplicaState {
    pub(crate) fn apply(&mut self, p: StatePatch) {
        if let Some(v) = p.kv {
            self.kv = v;
        }
        if let Some(v) = p.waiting {
            self.waiting = v;
        }
        if let Some(v) = p.running {
            self.running = v;
        }
    }
}

/// JSON has no NaN or infinity, yet tests must be able to make a replica
/// report them: numbers are accepted as numbers or as "NaN", "+Inf", "-Inf".
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(f64),
    Text(String),
}

fn parse(v: NumberOrText) -> Result<f64, String> {
    match v {
        NumberOrText::Number(n) => Ok(n),
        NumberOrText::Text(t) => match t.as_str() {
            "NaN" => Ok(f64::NAN),
            "+Inf" | "Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            other => other
                .parse::<f64>()
                .map_err(|_| format!("{other:?} is not a number, \"NaN\", \"+Inf\" or \"-Inf\"")),
        },
    }
}

fn de_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    parse(NumberOrText::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    de_f64(d).map(Some)
}

/// Prometheus' spelling of a float: NaN, +Inf and -Inf included (the
/// state's JSON and the rendered page spell floats alike).
pub(crate) fn prom_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

fn ser_f64<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_str(&prom_float(*v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_accept_numbers_and_special_values() {
        let cases = [
            (
                r#"{"kv":0.9,"waiting":7,"running":4}"#,
                Some((0.9, 7.0, 4.0)),
            ),
            (r#"{"kv":1.7}"#, Some((1.7, 1.0, 1.0))),
            (r#"{"kv":"+Inf"}"#, Some((f64::INFINITY, 1.0, 1.0))),
            (r#"{"kv":"soon"}"#, None),
            (r#"{"colour":1}"#, None),
            ("not json", None),
        ];
        for (json, want) in cases {
            let mut s = ReplicaState {
                kv: 0.1,
                waiting: 1.0,
                running: 1.0,
            };
            match (serde_json::from_str::<StatePatch>(json), want) {
                (Ok(p), Some(w)) => {
                    s.apply(p);
                    assert_eq!((s.kv, s.waiting, s.running), w, "{json}");
                }
                (Err(_), None) => {}
                (got, want) => panic!("{json}: got {got:?}, want {want:?}"),
            }
        }
        let p: StatePatch = serde_json::from_str(r#"{"kv":"NaN"}"#).unwrap();
        assert!(p.kv.unwrap().is_nan());
    }
}
