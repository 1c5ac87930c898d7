//! `--inventory file:PATH`: variants, targets and pods from a multi-document
//! YAML file of real Kubernetes objects, reloaded when the file changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;

use super::crd::VariantAutoscaling;
use super::pods::Interner;
use super::projection::Project;
use super::resolve::{resolve_with, InventoryObjects, ResolveOptions};
use super::store::InventoryStore;

/// Why the inventory file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InventoryFileError {
    #[error("cannot read inventory file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A document that does not parse or validate, with where and which field.
    #[error("inventory file {path}, line {line}: {}{message}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        /// 1-based line in the file.
        line: usize,
        /// The field at fault, as a path (`spec.minReplicas`), when known.
        field: Option<String>,
        message: String,
    },
}

/// One YAML document of the file and the line it starts on.
#[derive(Debug, Clone, Copy)]
struct DocumentText<'a> {
    text: &'a str,
    /// Byte offset of `text` in the file's text.
    start: usize,
    /// 1-based line of the file where `text` starts.
    first_line: usize,
}

impl DocumentText<'_> {
    /// The line of the document's first content (after its `---` and
    /// comments): where a problem of the whole document is reported.
    fn content_line(&self) -> usize {
        self.text
            .lines()
            .position(|l| {
                let t = l.trim();
                !(t.is_empty() || t.starts_with('#') || t == "---" || t.starts_with("--- #"))
            })
            .map(|i| self.first_line + i)
            .unwrap_or(self.first_line)
    }
}

/// Splits a multi-document YAML stream at its `---` separators, keeping the
/// line numbers: errors must name the line in the file, not in the document.
fn split_documents(text: &str) -> Vec<DocumentText<'_>> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let separator = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        if separator && offset > start {
            docs.push(DocumentText {
                text: &text[start..offset],
                start,
                first_line: start_line,
            });
            start = offset;
            start_line = index + 1;
        }
        offset += line.len();
    }
    if offset > start {
        docs.push(DocumentText {
            text: &text[start..],
            start,
            first_line: start_line,
        });
    }
    docs
}

/// The API version (group/version) each kind the inventory uses must have:
/// kubectl rejects the others, so the file does too.
fn expected_api_version(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "VariantAutoscaling" => "llmd.ai/v1alpha1",
        "Deployment" | "StatefulSet" | "ReplicaSet" => "apps/v1",
        "Pod" => "v1",
        "HorizontalPodAutoscaler" => "autoscaling/v2",
        "ScaledObject" => "keda.sh/v1alpha1",
        _ => return None,
    })
}

/// The 1-based line (in `doc`) of the field at `path` (`["spec",
/// "minReplicas"]`), found by walking block-style keys at growing indentation;
/// array indices in the path are skipped.
fn line_of_field(doc: &str, path: &[String]) -> Option<usize> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut from = 0;
    let mut indent: Option<usize> = None;
    let mut found = None;
    for segment in path.iter().filter(|s| s.parse::<usize>().is_err()) {
        let hit = lines.iter().enumerate().skip(from).find_map(|(i, line)| {
            let content = line.trim_start();
            let depth = line.len() - content.len();
            let key = content.strip_prefix("- ").unwrap_or(content).trim_start();
            let named = key.strip_prefix(segment.as_str()).or_else(|| {
                key.strip_prefix(&format!("\"{segment}\""))
                    .or_else(|| key.strip_prefix(&format!("'{segment}'")))
            });
            let is_key = named.is_some_and(|rest| rest.trim_start().starts_with(':'));
            (is_key && indent.is_none_or(|d| depth > d)).then_some((i, depth))
        })?;
        from = hit.0 + 1;
        indent = Some(hit.1);
        found = Some(hit.0 + 1);
    }
    found
}

/// Paths of the fields in `given` that deserializing into the type dropped
/// (they are missing from `kept`, the typed value serialized back): fields the
/// type does not have, which is how a typo looks. Empty values are not
/// reported (types omit empty lists and maps when serializing), nor anything
/// under `status`, which the cluster writes, not the user.
fn dropped_fields(
    given: &serde_json::Value,
    kept: &serde_json::Value,
    path: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    use serde_json::Value;
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    match (given, kept) {
        (Value::Object(g), Value::Object(k)) => {
            for (key, value) in g {
                if path.is_empty() && key == "status" {
                    continue;
                }
                path.push(key.clone());
                match k.get(key) {
                    Some(kv) => dropped_fields(value, kv, path, out),
                    None if !empty(value) => out.push(path.clone()),
                    None => {}
                }
                path.pop();
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            for (i, (gv, kv)) in g.iter().zip(k).enumerate() {
                path.push(i.to_string());
                dropped_fields(gv, kv, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// A key given where a required field was missing, that looks like it.
struct Misspelled {
    given: String,
    wanted: String,
}

/// For "missing field `modelID`" at `field` (`spec`): a key of the given
/// object at that path that differs from `modelID` only by case or by up
/// to two edits, and is not itself expected there.
fn misspelled_required_field(
    given: &serde_json::Value,
    field: Option<&str>,
    message: &str,
) -> Option<Misspelled> {
    let wanted = message
        .strip_prefix("missing field `")?
        .split('`')
        .next()?
        .to_owned();
    let mut object = given;
    for segment in field.iter().flat_map(|f| f.split('.')) {
        object = object.get(segment)?;
    }
    let keys = object.as_object()?;
    let close = |k: &str| k.eq_ignore_ascii_case(&wanted) || edit_distance(k, &wanted) <= 2;
    keys.keys()
        .find(|k| k.as_str() != wanted && close(k))
        .map(|k| Misspelled {
            given: k.clone(),
            wanted,
        })
}

/// Levenshtein distance between two short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// serde_norway's message without its own positions: " at line L column
/// C" (counted from the document, not the file), which can appear twice
/// ("did not find expected key at line 11 column 3, while parsing a block
/// mapping at line 6 column 3"): the file's line is reported instead, once.
fn without_location(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(" at line ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " at line ".len()..];
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let n = digits(after);
        let tail = &after[n..];
        match tail.strip_prefix(" column ") {
            Some(col) if n > 0 => rest = &col[digits(col)..],
            _ => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `spec.minReplicas: invalid type ...` -> the field path serde_norway names.
fn field_of_message(message: &str) -> Option<String> {
    let (head, _) = message.split_once(": ")?;
    let looks_like_path = !head.is_empty()
        && head
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '[' | ']'));
    looks_like_path.then(|| head.to_owned())
}

/// One document typed as `T`, strictly: errors and dropped fields are
/// reported with the line in the file and the field.
fn typed_document<T>(
    path: &Path,
    doc: DocumentText<'_>,
    kind: &str,
    given: &serde_json::Value,
) -> Result<T, InventoryFileError>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let invalid =
        |line: usize, field: Option<String>, message: String| InventoryFileError::Invalid {
            path: path.to_owned(),
            line,
            field,
            message,
        };
    let value: T = serde_norway::from_str(doc.text).map_err(|e| {
        let text = e.to_string();
        let line = e
            .location()
            .map(|l| doc.first_line + l.line() - 1)
            .unwrap_or(doc.first_line);
        let message = without_location(&text);
        let message = message.as_str();
        let field = field_of_message(message);
        let message = match &field {
            Some(f) => message[f.len() + 2..].to_owned(),
            None => message.to_owned(),
        };
        // A required field "missing" because it is spelled differently
        // (`modelId` for `modelID`): name the key that is there.
        if let Some(unknown) = misspelled_required_field(given, field.as_deref(), &message) {
            let path: Vec<String> = field
                .iter()
                .flat_map(|f| f.split('.'))
                .map(str::to_owned)
                .chain(std::iter::once(unknown.given.clone()))
                .collect();
            let line = line_of_field(doc.text, &path)
                .map(|l| doc.first_line + l - 1)
                .unwrap_or(line);
            return invalid(
                line,
                Some(path.join(".")),
                format!(
                    "unknown field `{}` of {kind}, did you mean `{}`?",
                    unknown.given, unknown.wanted
                ),
            );
        }
        invalid(line, field, format!("not a valid {kind}: {message}"))
    })?;
    let kept = serde_json::to_value(&value).map_err(|e| {
        invalid(
            doc.first_line,
            None,
            format!("cannot re-encode {kind}: {e}"),
        )
    })?;
    let mut dropped = Vec::new();
    dropped_fields(given, &kept, &mut Vec::new(), &mut dropped);
    if let Some(field) = dropped.first() {
        let line = line_of_field(doc.text, field)
            .map(|l| doc.first_line + l - 1)
            .unwrap_or(doc.content_line());
        return Err(invalid(
            line,
            Some(field.join(".")),
            format!("unknown field of {kind} (a typo, or a field this server's Kubernetes 1.33 types do not have)"),
        ));
    }
    Ok(value)
}

/// Where each object came from in the file, to report validation problems
/// found after parsing at the object's line.
#[derive(Debug, Clone, Default)]
pub(crate) struct ObjectLines {
    /// (`Kind namespace/name`, first line of its document text, line of its
    /// first content, where its text is in the file's text).
    documents: Vec<(String, usize, usize, std::ops::Range<usize>)>,
}

impl ObjectLines {
    /// The line of `field` (a dotted path, or `annotation NAME`) in the
    /// document of `object`, else the document's first line.
    fn line(&self, file_text: &str, object: &str, reason: &str) -> Option<usize> {
        let (_, first, content, range) = self.documents.iter().find(|(o, _, _, _)| o == object)?;
        let text = file_text.get(range.clone())?;
        let head = reason.split_whitespace().next().unwrap_or_default();
        let field: Vec<String> = if head == "annotation" {
            let name = reason
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .split('=')
                .next()
                .unwrap_or_default();
            vec!["metadata".into(), "annotations".into(), name.into()]
        } else {
            head.split('.').map(str::to_owned).collect()
        };
        Some(
            line_of_field(text, &field)
                .map(|l| first + l - 1)
                .unwrap_or(*content),
        )
    }
}

/// Parses the YAML text into typed objects. Documents of other kinds are
/// skipped with a log line; a document of a kind the inventory uses must have
/// that kind's apiVersion and fit its type exactly (no unknown fields), else
/// the error names the line in the file and the field.
pub fn parse_objects(path: &Path, text: &str) -> Result<InventoryObjects, InventoryFileError> {
    parse_objects_with_lines(path, text).map(|(objects, _)| objects)
}

/// [`parse_objects`], also returning where each object is in the file.
pub(crate) fn parse_objects_with_lines(
    path: &Path,
    text: &str,
) -> Result<(InventoryObjects, ObjectLines), InventoryFileError> {
    let mut objects = InventoryObjects::default();
    let mut lines = ObjectLines::default();
    let mut interner = Interner::default();
    for (index, doc) in split_documents(text).into_iter().enumerate() {
        let index = index + 1;
        let invalid =
            |line: usize, field: Option<&str>, message: String| InventoryFileError::Invalid {
                path: path.to_owned(),
                line,
                field: field.map(str::to_owned),
                message,
            };
        let value: serde_norway::Value = serde_norway::from_str(doc.text).map_err(|e| {
            let line = e
                .location()
                .map(|l| doc.first_line + l.line() - 1)
                .unwrap_or(doc.first_line);
            invalid(
                line,
                None,
                format!("not valid YAML: {}", without_location(&e.to_string())),
            )
        })?;
        if value.is_null() {
            continue;
        }
        let at = |field: &str| {
            line_of_field(doc.text, &[field.to_owned()])
                .map(|l| doc.first_line + l - 1)
                .unwrap_or(doc.first_line)
        };
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| {
                invalid(
                    doc.content_line(),
                    Some("kind"),
                    "missing: every document needs a `kind`".to_owned(),
                )
            })?
            .to_owned();
        let Some(expected) = expected_api_version(&kind) else {
            tracing::info!(path = %path.display(), document = index, line = doc.content_line(), kind, "skipping document of a kind the inventory does not use");
            continue;
        };
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if api_version != expected {
            return Err(invalid(
                at("apiVersion"),
                Some("apiVersion"),
                format!(
                    "{api_version:?} is not the API of {kind}: use {expected} (a cluster would reject this document too)"
                ),
            ));
        }
        let given = serde_json::to_value(&value)
            .map_err(|e| invalid(doc.first_line, None, format!("cannot read as JSON: {e}")))?;
        let name = format!(
            "{kind} {}/{}",
            given["metadata"]["namespace"].as_str().unwrap_or_default(),
            given["metadata"]["name"].as_str().unwrap_or_default()
        );
        // Where the document is, not a copy of it.
        lines.documents.push((
            name,
            doc.first_line,
            doc.content_line(),
            doc.start..doc.start + doc.text.len(),
        ));
        // Read strictly as its typed kind, then kept as its projection:
        // at 100,000 pods the typed objects took hundreds of MiB.
        macro_rules! projected {
            ($kind:ty) => {{
                let object: $kind = typed_document(path, doc, &kind, &given)?;
                Arc::new(<_ as Project<$kind>>::project(&object, &mut interner))
            }};
        }
        match kind.as_str() {
            "VariantAutoscaling" => objects
                .variant_autoscalings
                .push(projected!(VariantAutoscaling)),
            "Deployment" => objects.workloads.push(projected!(Deployment)),
            "StatefulSet" => objects.workloads.push(projected!(StatefulSet)),
            "ReplicaSet" => objects.workloads.push(projected!(ReplicaSet)),
            "Pod" => objects.pods.push(projected!(Pod)),
            "HorizontalPodAutoscaler" => objects
                .horizontal_pod_autoscalers
                .push(Arc::new(typed_document(path, doc, &kind, &given)?)),
            _ => objects
                .scaled_objects
                .push(Arc::new(typed_document(path, doc, &kind, &given)?)),
        }
    }
    Ok((objects, lines))
}

/// Reads, parses and validates the file, then publishes the snapshot. An
/// object that cannot be used (a negative minReplicas, an empty modelID, ...)
/// is an error here, naming its line: in a file, unlike a cluster, it can
/// only be a mistake in the file.
#[cfg(test)]
pub(crate) fn load_into(path: &Path, store: &InventoryStore) -> Result<(), InventoryFileError> {
    load_into_with(path, store, &ResolveOptions::default())
}

/// [`load_into`] with resolve options (controller-instance filtering).
pub(crate) fn load_into_with(
    path: &Path,
    store: &InventoryStore,
    options: &ResolveOptions,
) -> Result<(), InventoryFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| InventoryFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let (objects, lines) = parse_objects_with_lines(path, &text)?;
    let (snapshot, problems) = resolve_with(&objects, options);
    // An object used with a default in place of a bad field (an unparsable
    // variantCost reads as 10, as upstream WVA does) is a warning; an
    // object that cannot be used at all stops the load.
    for p in problems.iter().filter(|p| p.defaulted.is_some()) {
        tracing::warn!(object = %p.object, reason = %p.reason, outcome = p.outcome(), "inventory object not used as written");
    }
    if let Some(p) = problems.iter().find(|p| p.defaulted.is_none()) {
        let field = p
            .reason
            .split_whitespace()
            .next()
            .filter(|h| h.contains('.'))
            .map(str::to_owned);
        return Err(InventoryFileError::Invalid {
            path: path.to_owned(),
            line: lines.line(&text, &p.object, &p.reason).unwrap_or(1),
            field,
            message: format!("{}: {}", p.object, p.reason),
        });
    }
    tracing::info!(
        path = %path.display(),
        variants = snapshot.variants().len(),
        pods = snapshot.pods().len(),
        "inventory loaded"
    );
    store.publish(snapshot);
    Ok(())
}

/// Loads the file once (an error here stops start-up), then reloads it in the
/// background whenever its modification time or size changes
/// ([`crate::file_watch`]). A reload that fails keeps the previous inventory
/// and logs why. `options`: controller-instance filtering.
pub(crate) async fn watch_file_with(
    path: PathBuf,
    store: Arc<InventoryStore>,
    options: ResolveOptions,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, InventoryFileError> {
    load_into_with(&path, &store, &options)?;
    Ok(crate::file_watch::poll_files(
        vec![path.clone()],
        crate::file_watch::RELOAD_CHECK_INTERVAL,
        shutdown,
        move || {
            if let Err(e) = load_into_with(&path, &store, &options) {
                tracing::error!(error = %e, "inventory reload failed; keeping the previous inventory");
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VA: &str = "apiVersion: llmd.ai/v1alpha1
kind: VariantAutoscaling
metadata:
  name: llama-a100
  namespace: llm
spec:
  scaleTargetRef:
    kind: Deployment
    name: llama
  modelID: meta/llama-3.1-8b
  minReplicas: 1
";

    const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: llama
  namespace: llm
spec:
  replicas: 1
  selector:
    matchLabels:
      app: llama
  template:
    metadata:
      labels:
        app: llama
    spec:
      containers:
      - name: vllm
        image: vllm
";

    fn error_of(text: &str) -> (usize, Option<String>, String) {
        match parse_objects(Path::new("inv.yaml"), text) {
            Err(InventoryFileError::Invalid {
                line,
                field,
                message,
                ..
            }) => (line, field, message),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    /// A file of a leading comment, the Deployment, then `va`: the VA's
    /// document starts on line 22.
    fn file_with(va: &str) -> String {
        format!("# inventory\n---\n{DEPLOYMENT}---\n{va}")
    }

    #[test]
    fn a_valid_file_parses() {
        let objects = parse_objects(Path::new("inv.yaml"), &file_with(VA)).unwrap();
        assert_eq!(objects.variant_autoscalings.len(), 1);
        assert_eq!(objects.workloads.len(), 1);
    }

    #[test]
    fn mistakes_name_the_line_in_the_file_and_the_field() {
        // (what to change in the VA, line in the file, field, part of the message)
        let table: &[(&str, &str, usize, Option<&str>, &str)] = &[
            (
                "apiVersion: llmd.ai/v1alpha1",
                "apiVersion: llm-d.ai/v1alpha1",
                22,
                Some("apiVersion"),
                "use llmd.ai/v1alpha1",
            ),
            (
                "apiVersion: llmd.ai/v1alpha1",
                "apiVersion: v1",
                22,
                Some("apiVersion"),
                "is not the API of VariantAutoscaling",
            ),
            (
                "  minReplicas: 1",
                "  minReplica: 1",
                32,
                Some("spec.minReplica"),
                "unknown field",
            ),
            (
                "  minReplicas: 1",
                "  minReplicas: two",
                32,
                Some("spec.minReplicas"),
                "invalid type",
            ),
            (
                "  minReplicas: 1",
                "  minReplicas: 1\n  variantCots: \"5\"",
                33,
                Some("spec.variantCots"),
                "unknown field",
            ),
            (
                "    name: llama\n",
                "    nmae: llama\n",
                30,
                Some("spec.scaleTargetRef.nmae"),
                "unknown field `nmae` of VariantAutoscaling, did you mean `name`?",
            ),
            (
                "  modelID: meta/llama-3.1-8b\n",
                "  modelId: meta/llama-3.1-8b\n",
                31,
                Some("spec.modelId"),
                "unknown field `modelId` of VariantAutoscaling, did you mean `modelID`?",
            ),
            (
                "    name: llama\n",
                "    name: llama\n  - x: 1\n",
                31,
                None,
                "not valid YAML: did not find expected key, while parsing a block mapping",
            ),
            (
                "  modelID: meta/llama-3.1-8b\n",
                "",
                28,
                Some("spec"),
                "missing field `modelID`",
            ),
            (
                "  minReplicas: 1",
                "  minReplicas: [1",
                33,
                None,
                "not valid YAML",
            ),
            (
                "kind: VariantAutoscaling\n",
                "",
                22,
                Some("kind"),
                "every document needs a `kind`",
            ),
        ];
        for (from, to, line, field, message) in table {
            let va = VA.replacen(from, to, 1);
            assert_ne!(va, VA, "{from:?} not found");
            let (got_line, got_field, got_message) = error_of(&file_with(&va));
            assert_eq!(
                (got_line, got_field.as_deref()),
                (*line, *field),
                "{to:?}: {got_message}"
            );
            assert!(got_message.contains(message), "{to:?}: {got_message}");
        }
    }

    #[test]
    fn fields_the_cluster_writes_are_not_checked() {
        let va = format!("{VA}status:\n  actuation:\n    applied: true\n");
        assert!(parse_objects(Path::new("inv.yaml"), &file_with(&va)).is_ok());
        // Empty values of known and unknown fields are harmless.
        let va = VA.replace("metadata:\n", "metadata:\n  labels: {}\n  annotations:\n");
        assert!(parse_objects(Path::new("inv.yaml"), &file_with(&va)).is_ok());
    }

    #[test]
    fn other_kinds_are_skipped() {
        let text = file_with(&format!(
            "{VA}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  bogus: 1\n"
        ));
        assert!(parse_objects(Path::new("inv.yaml"), &text).is_ok());
    }

    #[test]
    fn objects_that_do_not_validate_stop_the_load_at_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.yaml");
        std::fs::write(
            &path,
            file_with(&VA.replace("minReplicas: 1", "minReplicas: -1")),
        )
        .unwrap();
        let store = InventoryStore::new();
        match load_into(&path, &store) {
            Err(InventoryFileError::Invalid {
                line,
                field,
                message,
                ..
            }) => {
                assert_eq!(
                    (line, field.as_deref()),
                    (32, Some("spec.minReplicas")),
                    "{message}"
                );
                assert!(
                    message.contains("VariantAutoscaling llm/llama-a100"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(store.load().variants().is_empty(), "nothing published");
    }

    #[test]
    fn the_message_says_file_line_and_field() {
        let e = parse_objects(
            Path::new("/etc/inv.yaml"),
            &file_with(&VA.replace("minReplicas", "minReplica")),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "inventory file /etc/inv.yaml, line 32: field `spec.minReplica`: unknown field of VariantAutoscaling \
             (a typo, or a field this server's Kubernetes 1.33 types do not have)"
        );
    }

    proptest::proptest! {
        /// Wherever the bad document sits, the line is the one in the file.
        #[test]
        fn the_line_counts_from_the_file(comments in 0usize..6, before in 0usize..4, separator_comment in proptest::bool::ANY) {
            let mut text = String::new();
            for _ in 0..comments {
                text.push_str("# a comment\n");
            }
            for _ in 0..before {
                text.push_str(DEPLOYMENT);
                text.push_str(if separator_comment { "--- # next\n" } else { "---\n" });
            }
            let first = text.lines().count() + 1;
            text.push_str(&VA.replace("minReplicas", "minReplica"));
            let (line, field, _) = error_of(&text);
            proptest::prop_assert_eq!(line, first + 10);
            proptest::prop_assert_eq!(field.as_deref(), Some("spec.minReplica"));
        }
    }
}
