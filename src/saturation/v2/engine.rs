//! The vLLM engine parameters V2 reads from a Deployment's pod template:
//! the per-step token budget and sequence cap that bound compute capacity
//! (k2), and the few settings that decide whether two variants have the
//! same capacity per replica ("compatible", for variants with no replica
//! yet). Upstream WVA parses the same flags with the same defaults
//! (`saturation_v2/deployment_parser.go`); the parser here is our own.
//!
//! Pure: callers hand over each container's command, args and the value of
//! its `VLLM_USE_V1` variable, so this module knows no Kubernetes type.

/// One container as the parser sees it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ContainerArgs<'a> {
    pub(crate) command: &'a [String],
    pub(crate) args: &'a [String],
    /// Value of the `VLLM_USE_V1` environment variable, when set.
    pub(crate) vllm_use_v1: Option<&'a str>,
}

/// The engine parameters of one variant's pods, already resolved: only
/// the numbers V2 uses, so that the inventory keeps these instead of
/// whole pod templates.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineParams {
    /// The per-step token budget: `--max-num-batched-tokens` when given,
    /// else vLLM's default (8192 with the V1 engine, 2048 with V0's
    /// chunked prefill, else `max(--max-model-len, 2048)`).
    pub max_num_batched_tokens: u64,
    /// `--max-num-seqs`, else 256.
    pub(crate) max_num_seqs: u64,
    /// `--gpu-memory-utilization`, else 0.9.
    pub gpu_memory_utilization: f64,
    /// `--block-size`, else 16.
    pub(crate) block_size: u64,
    /// `--kv-cache-dtype`, else `auto`.
    pub(crate) kv_cache_dtype: String,
    /// `--tensor-parallel-size`, else 1.
    pub(crate) tensor_parallel_size: u64,
    /// `--num-gpu-blocks-override`, 0 when not set. With it the KV cache
    /// size (and so k1) is known before any pod runs.
    pub(crate) num_gpu_blocks_override: u64,
    /// GPUs one pod requests (`<vendor>/gpu` over its containers), 1 when
    /// it requests none (upstream's default).
    pub(crate) gpus_per_replica: u32,
}

impl Default for EngineParams {
    fn default() -> Self {
        EngineParams {
            max_num_batched_tokens: 8192,
            max_num_seqs: 256,
            gpu_memory_utilization: 0.9,
            block_size: 16,
            kv_cache_dtype: "auto".to_owned(),
            tensor_parallel_size: 1,
            num_gpu_blocks_override: 0,
            gpus_per_replica: 1,
        }
    }
}

/// What the flags say before the token budget is resolved.
#[derive(Debug, Default)]
struct Parsed {
    max_num_batched_tokens: Option<i64>,
    max_model_len: Option<i64>,
    chunked_prefill_flag: bool,
    v0_engine: bool,
}

impl EngineParams {
    /// Reads the parameters from a pod template's containers, as upstream
    /// does: every container's command and args in order (a later value
    /// wins), `--k=v` and `--k v`, `-` or `_`; a `sh -c "..."` (also
    /// `bash`, `/bin/sh`, `/bin/bash`) is read from its command string.
    /// A value that does not parse keeps the default: the Deployment is not
    /// ours to reject, and vLLM would refuse to start with it anyway.
    pub(crate) fn from_containers<'a>(
        containers: impl IntoIterator<Item = ContainerArgs<'a>>,
        gpus_per_replica: u32,
    ) -> Self {
        let mut p = EngineParams {
            gpus_per_replica: gpus_per_replica.max(1),
            ..EngineParams::default()
        };
        let mut parsed = Parsed::default();
        for c in containers {
            if c.vllm_use_v1 == Some("0") {
                parsed.v0_engine = true;
            }
            let words = collect_words(c.command, c.args);
            p.apply_words(&words, &mut parsed);
        }
        p.max_num_batched_tokens = resolve_budget(&parsed);
        p
    }

    /// [`from_containers`](Self::from_containers) for one container's words
    /// (command followed by args), default environment and one GPU.
    pub fn from_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Self {
        let words: Vec<String> = args.into_iter().map(str::to_owned).collect();
        Self::from_containers(
            [ContainerArgs {
                command: &words,
                ..ContainerArgs::default()
            }],
            1,
        )
    }

    fn apply_words(&mut self, words: &[String], parsed: &mut Parsed) {
        let mut i = 0;
        while i < words.len() {
            let word = &words[i];
            i += 1;
            let Some(flag) = word.strip_prefix("--") else {
                continue;
            };
            let (key, value) = match flag.split_once('=') {
                Some((k, v)) => (k, Some(v.to_owned())),
                // The next word is the value unless it is another flag.
                None => match words.get(i).filter(|w| !w.starts_with("--")) {
                    Some(v) => {
                        i += 1;
                        (flag, Some(v.clone()))
                    }
                    None => (flag, None),
                },
            };
            let key = key.trim_start_matches('-').replace('_', "-");
            let value = value.unwrap_or_default();
            let int = || value.parse::<i64>().ok();
            let uint = || value.parse::<u64>().ok();
            match key.as_str() {
                "max-num-batched-tokens" => {
                    if let Some(v) = int() {
                        parsed.max_num_batched_tokens = Some(v);
                    }
                }
                "max-model-len" => {
                    if let Some(v) = int() {
                        parsed.max_model_len = Some(v);
                    }
                }
                "enable-chunked-prefill" => parsed.chunked_prefill_flag = true,
                "max-num-seqs" => {
                    if let Some(v) = uint() {
                        self.max_num_seqs = v;
                    }
                }
                "gpu-memory-utilization" => {
                    if let Some(v) = value.parse::<f64>().ok().filter(|v| v.is_finite()) {
                        self.gpu_memory_utilization = v;
                    }
                }
                "block-size" => {
                    if let Some(v) = uint() {
                        self.block_size = v;
                    }
                }
                "kv-cache-dtype" => self.kv_cache_dtype = value,
                "tensor-parallel-size" => {
                    if let Some(v) = uint() {
                        self.tensor_parallel_size = v;
                    }
                }
                "num-gpu-blocks-override" => {
                    if let Some(v) = uint() {
                        self.num_gpu_blocks_override = v;
                    }
                }
                _ => {}
            }
        }
    }

    /// Total KV tokens when `--num-gpu-blocks-override` fixes the cache size.
    pub fn override_total_tokens(&self) -> Option<u64> {
        (self.num_gpu_blocks_override > 0)
            .then(|| self.num_gpu_blocks_override.saturating_mul(self.block_size))
            .filter(|t| *t > 0)
    }

    /// Whether two variants with these parameters have the same capacity
    /// per replica (upstream's `IsCapacityCompatible`: memory utilisation,
    /// block size, cache dtype, tensor parallelism, block override and token
    /// budget; the sequence cap is not compared). GPUs per replica are
    /// compared by the caller, as upstream does.
    pub(crate) fn is_capacity_compatible(&self, other: &EngineParams) -> bool {
        self.gpu_memory_utilization == other.gpu_memory_utilization
            && self.block_size == other.block_size
            && self.kv_cache_dtype == other.kv_cache_dtype
            && self.tensor_parallel_size == other.tensor_parallel_size
            && self.num_gpu_blocks_override == other.num_gpu_blocks_override
            && self.max_num_batched_tokens == other.max_num_batched_tokens
    }

    /// k2 from the engine parameters: steady-state sequences
    /// `N = min(B x O / (I + O), S)`, each holding on average `I + O/2`
    /// tokens. None without output-length data.
    pub(crate) fn derived_k2(&self, avg_input: f64, avg_output: f64) -> Option<u64> {
        if avg_output <= 0.0 || self.max_num_batched_tokens == 0 {
            return None;
        }
        let (b, s) = (self.max_num_batched_tokens as f64, self.max_num_seqs as f64);
        let n = (b * avg_output / (avg_input + avg_output)).min(s);
        let k2 = (n * (avg_input + avg_output / 2.0)) as u64;
        (k2 > 0).then_some(k2)
    }
}

/// The per-step token budget (upstream's resolution order): the explicit
/// flag when positive; chunked prefill (always on with the V1 engine) 8192
/// with V1 and 2048 with V0; otherwise `max(--max-model-len, 2048)`.
fn resolve_budget(p: &Parsed) -> u64 {
    if let Some(b) = p.max_num_batched_tokens.filter(|b| *b > 0) {
        return b as u64;
    }
    let v1 = !p.v0_engine;
    if v1 {
        8192
    } else if p.chunked_prefill_flag {
        2048
    } else {
        p.max_model_len
            .filter(|l| *l > 2048)
            .map_or(2048, |l| l as u64)
    }
}

/// Command and args as one word list; a shell invocation (`sh -c "..."`)
/// is replaced by the words of its command string.
fn collect_words(command: &[String], args: &[String]) -> Vec<String> {
    let all: Vec<&String> = command.iter().chain(args).collect();
    for i in 0..all.len().saturating_sub(2) {
        let shell = matches!(all[i].as_str(), "/bin/sh" | "/bin/bash" | "sh" | "bash");
        if shell && all[i + 1] == "-c" {
            return split_shell(all[i + 2]);
        }
    }
    all.into_iter().cloned().collect()
}

/// Splits a shell command string on spaces outside single or double
/// quotes (no escapes or expansions: enough for `vllm serve ...` lines).
fn split_shell(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let (mut single, mut double) = (false, false);
    for ch in s.chars() {
        match ch {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            c if c.is_whitespace() && !single && !double => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn parse(command: &[&str], args: &[&str], v1: Option<&str>) -> EngineParams {
        let (c, a) = (strings(command), strings(args));
        EngineParams::from_containers(
            [ContainerArgs {
                command: &c,
                args: &a,
                vllm_use_v1: v1,
            }],
            1,
        )
    }

    /// Upstream `deployment_parser_test.go`, transcribed: (name, command,
    /// args, VLLM_USE_V1, expected fields changed from the defaults).
    #[test]
    fn upstream_deployment_parser_cases() {
        type Case = (
            &'static str,
            &'static [&'static str],
            &'static [&'static str],
            Option<&'static str>,
            fn(&mut EngineParams),
        );
        let cases: [Case; 16] = [
            ("Argument formats: should parse hyphen format (--gpu-memory-utilization=0.85)",
                &[], &["--gpu-memory-utilization=0.85"], None, |p| p.gpu_memory_utilization = 0.85),
            ("Argument formats: should parse underscore format (--gpu_memory_utilization=0.85)",
                &[], &["--gpu_memory_utilization=0.85"], None, |p| p.gpu_memory_utilization = 0.85),
            ("Argument formats: should parse space-separated format (--gpu-memory-utilization 0.85)",
                &[], &["--gpu-memory-utilization", "0.85"], None, |p| p.gpu_memory_utilization = 0.85),
            ("Shell command parsing: should parse args from shell command string",
                &["/bin/sh", "-c"],
                &["vllm serve model-name --gpu-memory-utilization=0.85 --max-num-seqs=128"],
                None, |p| { p.gpu_memory_utilization = 0.85; p.max_num_seqs = 128; }),
            ("Default values: should return vLLM defaults when no args are provided",
                &[], &[], None, |_| {}),
            ("All capacity-related params: should parse all known capacity parameters",
                &[], &["--gpu-memory-utilization=0.85", "--block-size=32", "--kv-cache-dtype=fp8",
                       "--tensor-parallel-size=4", "--max-num-batched-tokens=4096", "--max-num-seqs=128",
                       "--max-model-len=8192"],
                None, |p| { p.gpu_memory_utilization = 0.85; p.block_size = 32; p.kv_cache_dtype = "fp8".into();
                            p.tensor_parallel_size = 4; p.max_num_batched_tokens = 4096; p.max_num_seqs = 128; }),
            ("Boolean flag detection: should detect --enforce-eager as a boolean flag",
                &[], &["--enforce-eager", "--gpu-memory-utilization=0.85"], None, |p| p.gpu_memory_utilization = 0.85),
            ("NumGpuBlocksOverride: should parse --num-gpu-blocks-override",
                &[], &["--num-gpu-blocks-override=5000"], None, |p| p.num_gpu_blocks_override = 5000),
            ("V1 engine detection: should default to V1 engine when no VLLM_USE_V1 env var is set",
                &[], &[], None, |_| {}),
            ("V1 engine detection: should detect V1 engine when VLLM_USE_V1=1",
                &[], &[], Some("1"), |_| {}),
            ("V1 engine detection: should detect V0 engine when VLLM_USE_V1=0",
                &[], &[], Some("0"), |p| p.max_num_batched_tokens = 2048),
            ("V1 engine detection: should enable chunked prefill on V0 engine with --enable-chunked-prefill",
                &[], &["--enable-chunked-prefill"], Some("0"), |p| p.max_num_batched_tokens = 2048),
            ("EffectiveMaxBatchedTokens resolution: should use explicit --max-num-batched-tokens when set",
                &[], &["--max-num-batched-tokens=4096"], None, |p| p.max_num_batched_tokens = 4096),
            ("EffectiveMaxBatchedTokens resolution: should default to 2048 for V0 engine chunked prefill",
                &[], &["--enable-chunked-prefill"], Some("0"), |p| p.max_num_batched_tokens = 2048),
            ("EffectiveMaxBatchedTokens resolution: should use max_model_len for unchunked prefill when larger than 2048",
                &[], &["--max-model-len=8192"], Some("0"), |p| p.max_num_batched_tokens = 8192),
            ("EffectiveMaxBatchedTokens resolution: should fallback to 2048 for unchunked prefill with small model len",
                &[], &["--max-model-len=1024"], Some("0"), |p| p.max_num_batched_tokens = 2048),
        ];
        for (name, command, args, v1, change) in cases {
            let mut want = EngineParams::default();
            change(&mut want);
            assert_eq!(parse(command, args, v1), want, "{name}");
        }
        // "EffectiveMaxBatchedTokens resolution: should default to 8192 for V1 engine chunked prefill"
        // and "Nil deployment: should return defaults for nil deployment".
        assert_eq!(parse(&[], &[], None).max_num_batched_tokens, 8192);
        assert_eq!(
            EngineParams::from_containers([], 0),
            EngineParams::default()
        );
    }

    /// The two flags in both forms, in `command` or `args`, several
    /// containers, and values that do not parse.
    #[test]
    fn token_budget_and_sequence_cap_in_every_form() {
        type Case = (
            &'static str,
            &'static [&'static str],
            &'static [&'static str],
            (u64, u64),
        );
        let cases: [Case; 8] = [
            (
                "equals form in args",
                &["vllm", "serve", "m"],
                &["--max-num-batched-tokens=4096", "--max-num-seqs=64"],
                (4096, 64),
            ),
            (
                "separate value in command",
                &[
                    "vllm",
                    "serve",
                    "m",
                    "--max-num-batched-tokens",
                    "2048",
                    "--max-num-seqs",
                    "32",
                ],
                &[],
                (2048, 32),
            ),
            (
                "underscores",
                &[],
                &["--max_num_batched_tokens", "1024", "--max_num_seqs=16"],
                (1024, 16),
            ),
            (
                "command flag, args value",
                &["vllm", "serve", "m", "--max-num-seqs"],
                &["8"],
                (8192, 8),
            ),
            (
                "sh -c with quotes",
                &["sh", "-c"],
                &["exec vllm serve 'm' --max-num-seqs \"128\" --port 8000"],
                (8192, 128),
            ),
            (
                "value that does not parse keeps the default",
                &[],
                &["--max-num-seqs", "lots"],
                (8192, 256),
            ),
            (
                "a flag with no value before the next flag",
                &[],
                &["--max-num-seqs", "--max-num-batched-tokens=512"],
                (512, 256),
            ),
            (
                "zero budget means automatic",
                &[],
                &["--max-num-batched-tokens=0"],
                (8192, 256),
            ),
        ];
        for (name, command, args, (b, s)) in cases {
            let p = parse(command, args, None);
            assert_eq!((p.max_num_batched_tokens, p.max_num_seqs), (b, s), "{name}");
        }
        // Several containers: each is read, a later value wins.
        let (a, b) = (
            strings(&["--max-num-seqs=4"]),
            strings(&["--max-num-batched-tokens=999"]),
        );
        let p = EngineParams::from_containers(
            [
                ContainerArgs {
                    args: &a,
                    ..Default::default()
                },
                ContainerArgs {
                    args: &b,
                    ..Default::default()
                },
            ],
            2,
        );
        assert_eq!(
            (p.max_num_batched_tokens, p.max_num_seqs, p.gpus_per_replica),
            (999, 4, 2)
        );
        assert_eq!(
            EngineParams::from_args(["--max-num-seqs", "7"]).max_num_seqs,
            7
        );
    }

    /// Upstream `IsCapacityCompatible` cases.
    #[test]
    fn upstream_capacity_compatibility_cases() {
        let d = EngineParams::default();
        type Case = (&'static str, fn(&mut EngineParams), bool);
        let cases: [Case; 7] = [
            (
                "should return true for identical default params",
                |_| {},
                true,
            ),
            (
                "should return false when GpuMemoryUtilization differs",
                |p| p.gpu_memory_utilization = 0.8,
                false,
            ),
            (
                "should return false when BlockSize differs",
                |p| p.block_size = 32,
                false,
            ),
            (
                "should return false when KvCacheDtype differs",
                |p| p.kv_cache_dtype = "fp8".into(),
                false,
            ),
            (
                "should return false when TensorParallelSize differs",
                |p| p.tensor_parallel_size = 2,
                false,
            ),
            (
                "should return false when EffectiveMaxBatchedTokens differs",
                |p| p.max_num_batched_tokens = 4096,
                false,
            ),
            (
                "should ignore non-capacity fields like MaxNumSeqs and MaxModelLen",
                |p| p.max_num_seqs = 64,
                true,
            ),
        ];
        for (name, change, want) in cases {
            let mut other = d.clone();
            change(&mut other);
            assert_eq!(d.is_capacity_compatible(&other), want, "{name}");
        }
        let mut o = d.clone();
        o.num_gpu_blocks_override = 100;
        assert!(!d.is_capacity_compatible(&o), "block override differs");
    }

    #[test]
    fn override_total_tokens_needs_the_override() {
        assert_eq!(EngineParams::default().override_total_tokens(), None);
        assert_eq!(
            EngineParams {
                num_gpu_blocks_override: 1875,
                ..Default::default()
            }
            .override_total_tokens(),
            Some(30000)
        );
    }
}
