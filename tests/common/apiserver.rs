//! An in-process Kubernetes API server for tests. It speaks the real wire
//! protocol the kube client uses: list (with a resourceVersion), watch as a
//! stream of JSON events from a resourceVersion, `410 Gone` for an expired
//! resourceVersion, field selectors on `metadata.name`, status PATCH
//! (server-side apply: the patch is merged into the stored status, lists of
//! conditions by their `type`, as the API server does for fields other
//! managers own), KEDA `ScaledObject`s (keda.sh/v1alpha1), and 404 Status
//! for resources it does not serve. Tests create, change and
//! delete objects through [`ApiServer`] and can cut every watch stream or
//! expire every resourceVersion, as a real API server does on restarts and
//! compactions.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// Resources served, by URL segment: (group path prefix, plural, kind).
const RESOURCES: &[(&str, &str, &str)] = &[
    (
        "/apis/llmd.ai/v1alpha1",
        "variantautoscalings",
        "VariantAutoscaling",
    ),
    (
        "/apis/autoscaling/v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
    ),
    ("/apis/apps/v1", "deployments", "Deployment"),
    ("/apis/apps/v1", "statefulsets", "StatefulSet"),
    ("/apis/apps/v1", "replicasets", "ReplicaSet"),
    ("/api/v1", "pods", "Pod"),
    ("/api/v1", "configmaps", "ConfigMap"),
    ("/apis/events.k8s.io/v1", "events", "Event"),
    ("/apis/keda.sh/v1alpha1", "scaledobjects", "ScaledObject"),
    // Cluster scoped, for the accelerator limiter.
    ("/api/v1", "nodes", "Node"),
    ("/apis/coordination.k8s.io/v1", "leases", "Lease"),
    // Last: its list path `/api/v1/namespaces` is the prefix of every
    // namespaced path above.
    ("/api/v1", "namespaces", "Namespace"),
];

/// One change, as a watch stream sends it: serialized once (a run with
/// tens of thousands of objects keeps every change, and each watch sends
/// the same line).
#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    plural: &'static str,
    namespace: String,
    name: String,
    /// `{"type": ..., "object": ...}` and a newline.
    line: Bytes,
}

impl Event {
    fn new(rv: u64, plural: &'static str, kind_of_change: &str, object: &Value) -> Event {
        let line = format!("{}\n", json!({"type": kind_of_change, "object": object}));
        Event {
            rv,
            plural,
            namespace: object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            name: object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            line: Bytes::from(line),
        }
    }
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Watches from a resourceVersion below this get 410 Gone.
    expired_below: u64,
    /// (plural, namespace, name) -> object.
    objects: BTreeMap<(String, String, String), Value>,
    events: Vec<Event>,
    /// Status PATCH requests received: (path, body).
    status_patches: Vec<(String, Value)>,
    /// List requests served, and watches answered 410 Gone.
    lists: u64,
    gone: u64,
    /// SubjectAccessReviews and TokenReviews received.
    access_reviews: Vec<Value>,
    token_reviews: Vec<Value>,
    /// Users denied by SubjectAccessReview; everyone else is allowed.
    denied_users: Vec<String>,
    /// Bearer tokens TokenReview accepts, and the user each names.
    tokens: BTreeMap<String, String>,
    /// Resources (plurals) whose list requests are held until released.
    held_lists: Vec<String>,
    /// Delay before answering each review (to exceed the server's timeout).
    review_delay: std::time::Duration,
    /// Tokens TokenReview accepts with a whole `status.user` object.
    token_users: BTreeMap<String, Value>,
    /// How long TokenReview takes to answer.
    token_review_delay: std::time::Duration,
    /// Creates and updates refused with 409 (exists, or stale resourceVersion).
    conflicts: u64,
    /// When each request other than a watch arrived, and its method and path.
    calls: Vec<(std::time::Instant, String, String)>,
    /// Answers given to the next status PATCH requests instead of applying
    /// them: (code, Retry-After seconds).
    status_faults: std::collections::VecDeque<(u16, u32)>,
    /// Answers of status PATCH requests: (time, code).
    status_answers: Vec<(std::time::Instant, u16)>,
    /// Resources (plurals) whose lists and watches are answered 403, as
    /// when the client's ClusterRole lacks them.
    forbidden: Vec<String>,
    /// Resources (plurals) whose creates and patches are answered 403.
    forbidden_writes: Vec<String>,
    /// CRD schemas installed with [`ApiServer::install_crd`], by plural.
    schemas: BTreeMap<String, Value>,
    /// Status writes refused by a CRD's schema: (path, field errors).
    schema_rejections: Vec<(String, Vec<String>)>,
    /// When set, every request is authorized against these RBAC rules
    /// (unset: everything is allowed, as before).
    rbac: Option<Vec<RbacRule>>,
    /// Requests the RBAC rules allowed, and refused (403).
    rbac_allowed: Vec<RbacRequest>,
    rbac_refused: Vec<RbacRequest>,
}

/// One RBAC rule as granted to the client: by a ClusterRoleBinding
/// (`namespace: None`, every namespace and cluster-scoped resources) or a
/// RoleBinding (`namespace: Some`, that namespace only).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RbacRule {
    pub namespace: Option<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
    pub verbs: Vec<String>,
}

/// A request as Kubernetes' RBAC authorizer sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RbacRequest {
    pub verb: String,
    pub api_group: String,
    /// `plural` or `plural/subresource`; empty for a non-resource request.
    pub resource: String,
    pub namespace: Option<String>,
    /// The object's name: from the path, or for a list or watch from a
    /// `metadata.name=` field selector (as the API server's request-info
    /// resolver does).
    pub name: Option<String>,
    pub path: String,
}

impl RbacRule {
    /// Whether this rule grants the request (RBAC's `RuleAllows`).
    pub fn allows(&self, r: &RbacRequest) -> bool {
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        if !any(&self.verbs, &r.verb) {
            return false;
        }
        if r.resource.is_empty() {
            return self.namespace.is_none()
                && self.non_resource_urls.iter().any(|u| {
                    u == &r.path || u.strip_suffix('*').is_some_and(|p| r.path.starts_with(p))
                });
        }
        if let Some(ns) = &self.namespace {
            if r.namespace.as_deref() != Some(ns.as_str()) {
                return false;
            }
        }
        any(&self.api_groups, &r.api_group)
            && any(&self.resources, &r.resource)
            && (self.resource_names.is_empty()
                || r.name
                    .as_ref()
                    .is_some_and(|n| self.resource_names.contains(n)))
    }
}

/// The RBAC attributes of a request.
pub fn rbac_request(method: &Method, path: &str, query: &BTreeMap<String, String>) -> RbacRequest {
    let non_resource = |verb: &str| RbacRequest {
        verb: verb.to_owned(),
        api_group: String::new(),
        resource: String::new(),
        namespace: None,
        name: None,
        path: path.to_owned(),
    };
    let http_verb = match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "unknown",
    };
    let (group, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        ("", rest)
    } else if let Some(rest) = path.strip_prefix("/apis/") {
        let mut parts = rest.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(g), Some(_version), Some(rest)) if !rest.is_empty() => (g, rest),
            _ => return non_resource(http_verb),
        }
    } else {
        return non_resource(http_verb);
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let (namespace, resource_parts) = match parts.as_slice() {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns.to_string()), tail.to_vec()),
        _ => (None, parts.clone()),
    };
    let (resource, name, sub) = match resource_parts.as_slice() {
        [r] => (r.to_string(), None, None),
        [r, n] => (r.to_string(), Some(n.to_string()), None),
        [r, n, s, ..] => (r.to_string(), Some(n.to_string()), Some(s.to_string())),
        [] => return non_resource(http_verb),
    };
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (http_verb, &name) {
        ("get", Some(_)) => "get",
        ("get", None) if watch => "watch",
        ("get", None) => "list",
        ("post", _) => "create",
        ("put", _) => "update",
        ("delete", None) => "deletecollection",
        (v, _) => v,
    };
    let name = name.or_else(|| {
        if verb != "list" && verb != "watch" {
            return None;
        }
        query.get("fieldSelector")?.split(',').find_map(|term| {
            let v = term
                .strip_prefix("metadata.name==")
                .or_else(|| term.strip_prefix("metadata.name="))?;
            Some(v.to_owned())
        })
    });
    RbacRequest {
        verb: verb.to_owned(),
        api_group: group.to_owned(),
        resource: match sub {
            Some(s) => format!("{resource}/{s}"),
            None => resource,
        },
        namespace,
        name,
        path: path.to_owned(),
    }
}

/// What a write requires of the stored object (optimistic concurrency).
enum Precondition {
    /// POST: the object must not exist yet (else 409 AlreadyExists).
    Absent,
    /// PUT: the stored resourceVersion must equal the one sent (else 409 Conflict).
    ResourceVersion(String),
}

/// A running test API server.
#[derive(Clone)]
pub struct ApiServer {
    pub port: u16,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Event>,
    cut: broadcast::Sender<()>,
}

fn plural_of(kind: &str) -> Option<(&'static str, &'static str)> {
    RESOURCES.iter().find(|r| r.2 == kind).map(|r| (r.1, r.2))
}

impl ApiServer {
    pub async fn start() -> ApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = ApiServer {
            port,
            state: Arc::new(Mutex::new(State {
                rv: 1,
                ..Default::default()
            })),
            // Room for a benchmark's burst of 10,000 changes: a watch that
            // falls further behind ends, and the client watches again.
            events: broadcast::channel(16384).0,
            cut: broadcast::channel(16).0,
        };
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(s.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        server
    }

    /// A kubeconfig file that points the kube client here.
    pub fn write_kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let y = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://127.0.0.1:{}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\nusers:\n- name: test\n  user:\n    token: test-token\n",
            self.port
        );
        std::fs::write(&path, y).unwrap();
        path
    }

    /// Creates or replaces an object (its `kind` says where it goes),
    /// pruned, defaulted and validated as kube-apiserver does when a CRD
    /// schema is installed for its kind (an invalid object fails the test:
    /// use [`Self::try_apply`] to see the errors).
    pub fn apply(&self, object: Value) {
        if let Err(errors) = self.try_apply(object) {
            panic!("the test API server refuses the object: {errors:?}");
        }
    }

    /// [`Self::apply`], or the field errors of an invalid object (nothing stored).
    pub fn try_apply(&self, mut object: Value) -> Result<Value, Vec<String>> {
        self.admit(&mut object)?;
        let mut st = self.state.lock().unwrap();
        let (e, stored) = Self::store(&mut st, object);
        drop(st);
        let _ = self.events.send(e);
        Ok(stored)
    }

    /// Installs a CustomResourceDefinition: objects of its kind are from
    /// now on pruned, defaulted and validated against its openAPIV3Schema
    /// on every write (creates and status writes), as kube-apiserver does.
    pub fn install_crd(&self, crd: &Value) {
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        let (plural, _) = plural_of(kind).unwrap_or_else(|| panic!("kind {kind} is not served"));
        let schema = super::openapi::crd_schema(crd).expect("the CRD has an openAPIV3Schema");
        self.state
            .lock()
            .unwrap()
            .schemas
            .insert(plural.to_owned(), schema);
    }

    /// Status writes a CRD schema refused: (path, field errors).
    pub fn schema_rejections(&self) -> Vec<(String, Vec<String>)> {
        self.state.lock().unwrap().schema_rejections.clone()
    }

    /// Prunes, defaults and validates `object` against its kind's CRD
    /// schema, if one is installed.
    fn admit(&self, object: &mut Value) -> Result<(), Vec<String>> {
        let kind = object["kind"].as_str().unwrap_or_default();
        let Some((plural, _)) = plural_of(kind) else {
            return Ok(());
        };
        let schema = self.state.lock().unwrap().schemas.get(plural).cloned();
        match schema {
            Some(schema) => super::openapi::admit(&schema, object),
            None => Ok(()),
        }
    }

    /// The 422 Invalid answer kube-apiserver gives a write its schema refuses.
    fn invalid(
        &self,
        path: &str,
        kind: &str,
        name: &str,
        errors: Vec<String>,
    ) -> Response<TestBody> {
        let message = format!(
            "{kind}.llmd.ai {name:?} is invalid: [{}]",
            errors.join(", ")
        );
        self.state
            .lock()
            .unwrap()
            .schema_rejections
            .push((path.to_owned(), errors));
        full(
            StatusCode::UNPROCESSABLE_ENTITY,
            status_json(422, "Invalid", &message),
        )
    }

    /// Creates or replaces an object without schema checks.
    fn apply_unchecked(&self, object: Value) {
        let mut st = self.state.lock().unwrap();
        let (e, _) = Self::store(&mut st, object);
        drop(st);
        let _ = self.events.send(e);
    }

    /// Creates (POST) or replaces (PUT) an object only if `precondition`
    /// holds, atomically as an API server does; else 409.
    fn write_checked(
        &self,
        object: Value,
        precondition: Precondition,
    ) -> Result<Value, (&'static str, String)> {
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let Some((plural, _)) = plural_of(&kind) else {
            return Err(("BadRequest", format!("kind {kind:?} is not served")));
        };
        let key = (
            plural.to_owned(),
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        let mut st = self.state.lock().unwrap();
        let stored_rv = st.objects.get(&key).map(|o| {
            o["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        });
        let refused = match (&precondition, &stored_rv) {
            (Precondition::Absent, Some(_)) => Some(("AlreadyExists", format!("{} {:?} already exists", plural, key.2))),
            (Precondition::Absent, None) => None,
            (Precondition::ResourceVersion(_), None) => {
                return Err(("NotFound", format!("{} {:?} not found", plural, key.2)))
            }
            (Precondition::ResourceVersion(sent), Some(stored)) if sent != stored => Some((
                "Conflict",
                format!("Operation cannot be fulfilled on {plural} {:?}: the object has been modified; please apply your changes to the latest version and try again", key.2),
            )),
            (Precondition::ResourceVersion(_), Some(_)) => None,
        };
        if let Some(r) = refused {
            st.conflicts += 1;
            return Err(r);
        }
        let (e, stored) = Self::store(&mut st, object);
        drop(st);
        let _ = self.events.send(e);
        Ok(stored)
    }

    /// Writes requests refused with 409 so far.
    pub fn conflicts(&self) -> u64 {
        self.state.lock().unwrap().conflicts
    }

    /// Stores `object`; returns the change and the object as stored.
    fn store(st: &mut State, mut object: Value) -> (Event, Value) {
        let kind = object["kind"].as_str().unwrap().to_owned();
        let (plural, _) = plural_of(&kind).unwrap_or_else(|| panic!("kind {kind} is not served"));
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        st.rv += 1;
        let rv = st.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(format!("uid-{plural}-{ns}-{name}"));
        }
        if object["metadata"]["creationTimestamp"].is_null() {
            object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let key = (plural.to_owned(), ns, name);
        let kind_of_change = if st.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let e = Event::new(rv, plural, kind_of_change, &object);
        st.objects.insert(key, object.clone());
        st.events.push(e.clone());
        (e, object)
    }

    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let (plural, _) = plural_of(kind).unwrap();
        let mut st = self.state.lock().unwrap();
        let Some(mut object) =
            st.objects
                .remove(&(plural.to_owned(), namespace.to_owned(), name.to_owned()))
        else {
            return;
        };
        st.rv += 1;
        let rv = st.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let e = Event::new(rv, plural, "DELETED", &object);
        st.events.push(e.clone());
        drop(st);
        let _ = self.events.send(e);
    }

    /// Ends every open watch stream, as an API server restart does.
    pub fn cut_watches(&self) {
        let _ = self.cut.send(());
    }

    /// Makes every resourceVersion seen so far too old: the next watch from
    /// one gets 410 Gone and the client must list again.
    pub fn expire_resource_versions(&self) {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        st.expired_below = st.rv;
        st.events.clear();
    }

    async fn access_review(&self, req: Request<Incoming>) -> Response<TestBody> {
        let delay = self.state.lock().unwrap().review_delay;
        tokio::time::sleep(delay).await;
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut st = self.state.lock().unwrap();
        st.access_reviews.push(review.clone());
        let user = review["spec"]["user"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let denied = st.denied_users.contains(&user);
        review["status"] =
            json!({"allowed": !denied, "reason": if denied { "denied by the test" } else { "" }});
        full(StatusCode::CREATED, review.to_string())
    }

    async fn token_review(&self, req: Request<Incoming>) -> Response<TestBody> {
        let delay = self.state.lock().unwrap().review_delay;
        tokio::time::sleep(delay).await;
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let delay = {
            let mut st = self.state.lock().unwrap();
            st.token_reviews.push(review.clone());
            st.token_review_delay
        };
        tokio::time::sleep(delay).await;
        let st = self.state.lock().unwrap();
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        review["status"] = match (st.tokens.get(token), st.token_users.get(token)) {
            (Some(user), _) => {
                json!({"authenticated": true, "user": {"username": user, "groups": ["token-users"]}})
            }
            (None, Some(user)) => json!({"authenticated": true, "user": user}),
            (None, None) => json!({"authenticated": false}),
        };
        full(StatusCode::CREATED, review.to_string())
    }

    /// SubjectAccessReviews received so far.
    pub fn access_reviews(&self) -> Vec<Value> {
        self.state.lock().unwrap().access_reviews.clone()
    }

    /// Authorizes every later request against `rules` (RBAC semantics,
    /// field-selector names included); a refused request is answered 403
    /// as the API server answers it.
    pub fn enforce_rbac(&self, rules: Vec<RbacRule>) {
        self.state.lock().unwrap().rbac = Some(rules);
    }

    /// Whether the enforced rules allow `request` (none enforced: yes).
    pub fn rbac_allows(&self, request: &RbacRequest) -> bool {
        match &self.state.lock().unwrap().rbac {
            Some(rules) => rules.iter().any(|r| r.allows(request)),
            None => true,
        }
    }

    /// Requests the enforced rules allowed so far.
    pub fn rbac_allowed(&self) -> Vec<RbacRequest> {
        self.state.lock().unwrap().rbac_allowed.clone()
    }

    /// Requests the enforced rules refused so far.
    pub fn rbac_refused(&self) -> Vec<RbacRequest> {
        self.state.lock().unwrap().rbac_refused.clone()
    }

    /// Denies every review for `user` from now on.
    pub fn deny_user(&self, user: &str) {
        self.state
            .lock()
            .unwrap()
            .denied_users
            .push(user.to_owned());
    }

    /// Makes TokenReview accept `token` as `user`.
    pub fn add_token(&self, token: &str, user: &str) {
        self.state
            .lock()
            .unwrap()
            .tokens
            .insert(token.to_owned(), user.to_owned());
    }

    /// Holds every list request of `plural` until [`ApiServer::release_lists`]
    /// (an API server slow to answer: the client's caches stay unsynced).
    pub fn hold_lists(&self, plural: &str) {
        self.state
            .lock()
            .unwrap()
            .held_lists
            .push(plural.to_owned());
    }

    pub fn release_lists(&self) {
        self.state.lock().unwrap().held_lists.clear();
    }

    /// Answers every list and watch of `plural` 403 Forbidden from now on.
    pub fn forbid(&self, plural: &str) {
        self.state.lock().unwrap().forbidden.push(plural.to_owned());
    }

    /// Answers every create and patch of `plural` 403 Forbidden from now on.
    pub fn forbid_writes(&self, plural: &str) {
        self.state
            .lock()
            .unwrap()
            .forbidden_writes
            .push(plural.to_owned());
    }

    /// Delays every SubjectAccessReview and TokenReview answer by `delay`.
    pub fn delay_reviews(&self, delay: std::time::Duration) {
        self.state.lock().unwrap().review_delay = delay;
    }

    /// Makes TokenReview accept `token` with this `status.user` object
    /// (username, uid, groups, extra).
    pub fn add_token_user(&self, token: &str, user: Value) {
        self.state
            .lock()
            .unwrap()
            .token_users
            .insert(token.to_owned(), user);
    }

    /// Makes every TokenReview take this long to answer.
    pub fn set_token_review_delay(&self, delay: std::time::Duration) {
        self.state.lock().unwrap().token_review_delay = delay;
    }

    /// TokenReviews received so far.
    pub fn token_reviews(&self) -> Vec<Value> {
        self.state.lock().unwrap().token_reviews.clone()
    }

    /// (list requests served, watches answered 410 Gone) so far.
    pub fn counters(&self) -> (u64, u64) {
        let st = self.state.lock().unwrap();
        (st.lists, st.gone)
    }

    /// Events recorded so far (their JSON).
    pub fn events(&self) -> Vec<Value> {
        let st = self.state.lock().unwrap();
        st.objects
            .iter()
            .filter(|((p, _, _), _)| p == "events")
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// The stored object (plural, namespace, name), if any.
    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&(plural.to_owned(), namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// How many stored objects of `plural` in `namespace` satisfy `pred`
    /// (one lock, no copies: for polls over thousands of objects).
    pub fn count_objects(
        &self,
        plural: &str,
        namespace: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> usize {
        self.state
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|((p, ns, _), o)| p == plural && ns == namespace && pred(o))
            .count()
    }

    /// Status PATCH requests received so far.
    pub fn status_patches(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().status_patches.clone()
    }

    /// Every request other than a watch so far: (arrival, method, path).
    pub fn calls(&self) -> Vec<(std::time::Instant, String, String)> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The most requests (watches excluded) that arrived within any
    /// `window` so far.
    pub fn max_calls_within(&self, window: std::time::Duration) -> usize {
        self.max_calls_within_matching(window, |_| true)
    }

    /// As [`ApiServer::max_calls_within`], counting only requests whose
    /// path satisfies `keep`.
    pub fn max_calls_within_matching(
        &self,
        window: std::time::Duration,
        keep: impl Fn(&str) -> bool,
    ) -> usize {
        let times: Vec<std::time::Instant> = self
            .calls()
            .iter()
            .filter(|c| keep(&c.2))
            .map(|c| c.0)
            .collect();
        let mut best = 0;
        let mut first = 0;
        for (last, t) in times.iter().enumerate() {
            while *t - times[first] >= window {
                first += 1;
            }
            best = best.max(last - first + 1);
        }
        best
    }

    /// The next status PATCH requests are answered with these codes (and
    /// `Retry-After` seconds, 0 for none) instead of being applied, in order.
    pub fn fail_status_patches(&self, faults: &[(u16, u32)]) {
        self.state
            .lock()
            .unwrap()
            .status_faults
            .extend(faults.iter().copied());
    }

    /// The answer code of every status PATCH so far, with its time.
    pub fn status_answers(&self) -> Vec<(std::time::Instant, u16)> {
        self.state.lock().unwrap().status_answers.clone()
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<TestBody> {
        let is_watch = req.uri().query().is_some_and(|q| {
            form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
        });
        if !is_watch {
            self.state.lock().unwrap().calls.push((
                std::time::Instant::now(),
                req.method().to_string(),
                req.uri().path().to_owned(),
            ));
        }
        let path = req.uri().path().to_owned();
        let path_and_query = req.uri().to_string();
        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        {
            let mut st = self.state.lock().unwrap();
            if let Some(rules) = &st.rbac {
                let r = rbac_request(req.method(), &path, &query);
                if rules.iter().any(|rule| rule.allows(&r)) {
                    st.rbac_allowed.push(r);
                } else {
                    let scope = match &r.namespace {
                        Some(ns) => format!("in the namespace {ns:?}"),
                        None => "at the cluster scope".to_owned(),
                    };
                    let message = format!(
                        "{}.{} is forbidden: User \"system:serviceaccount:wva-system:wva-metrics-server\" cannot {} resource {:?} in API group {:?} {scope}",
                        r.resource, r.api_group, r.verb, r.resource, r.api_group
                    );
                    st.rbac_refused.push(r);
                    return full(
                        StatusCode::FORBIDDEN,
                        status_json(403, "Forbidden", &message),
                    );
                }
            }
        }
        if req.method() == Method::POST
            && path == "/apis/authorization.k8s.io/v1/subjectaccessreviews"
        {
            return self.access_review(req).await;
        }
        if req.method() == Method::POST && path == "/apis/authentication.k8s.io/v1/tokenreviews" {
            return self.token_review(req).await;
        }
        let Some(ResourcePath {
            prefix,
            plural,
            kind,
            namespace,
            name,
            sub,
        }) = parse_path(&path)
        else {
            return full(
                StatusCode::NOT_FOUND,
                status_json(
                    404,
                    "NotFound",
                    &format!("the server could not find the requested resource {path}"),
                ),
            );
        };
        if req.method() == Method::GET
            && name.is_none()
            && self
                .state
                .lock()
                .unwrap()
                .forbidden
                .iter()
                .any(|p| p == plural)
        {
            let message = format!("{plural} is forbidden: User \"test\" cannot list resource \"{plural}\" at the cluster scope");
            return full(
                StatusCode::FORBIDDEN,
                status_json(403, "Forbidden", &message),
            );
        }
        if (req.method() == Method::POST || req.method() == Method::PATCH)
            && self
                .state
                .lock()
                .unwrap()
                .forbidden_writes
                .iter()
                .any(|p| p == plural)
        {
            let verb = if req.method() == Method::POST {
                "create"
            } else {
                "patch"
            };
            let message =
                format!("{plural} is forbidden: User \"test\" cannot {verb} resource \"{plural}\"");
            return full(
                StatusCode::FORBIDDEN,
                status_json(403, "Forbidden", &message),
            );
        }
        match (req.method().clone(), name.clone(), sub) {
            (Method::GET, None, _)
                if query.get("watch").is_some_and(|w| w == "1" || w == "true") =>
            {
                self.watch(plural, kind, namespace, &query).await
            }
            (Method::GET, None, _) => {
                // Bounded: a test that holds lists releases them.
                for _ in 0..600 {
                    let held = self
                        .state
                        .lock()
                        .unwrap()
                        .held_lists
                        .iter()
                        .any(|p| p == plural);
                    if !held {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                self.list(prefix, plural, kind, namespace, &query)
            }
            (Method::GET, Some(name), None) => {
                let st = self.state.lock().unwrap();
                match st
                    .objects
                    .get(&(plural.to_owned(), namespace.unwrap_or_default(), name))
                {
                    Some(o) => full(StatusCode::OK, o.to_string()),
                    None => full(
                        StatusCode::NOT_FOUND,
                        status_json(404, "NotFound", "not found"),
                    ),
                }
            }
            // Events: stored like any object (POST creates, PATCH updates a series).
            // A PATCH is a merge patch (a series' count) of the stored Event.
            (Method::POST, None, None) | (Method::PATCH, Some(_), None) if plural == "events" => {
                let patch_of = match (req.method() == Method::PATCH, &name) {
                    (true, Some(n)) => Some(n.clone()),
                    _ => None,
                };
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let mut event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if let Some(n) = patch_of {
                    let key = (
                        "events".to_owned(),
                        namespace.clone().unwrap_or_default(),
                        n,
                    );
                    let Some(mut stored) = self.state.lock().unwrap().objects.get(&key).cloned()
                    else {
                        return full(
                            StatusCode::NOT_FOUND,
                            status_json(404, "NotFound", "event not found"),
                        );
                    };
                    merge_apply(&mut stored, &event);
                    event = stored;
                }
                if event["metadata"]["name"].is_null() {
                    let n = self.state.lock().unwrap().rv;
                    event["metadata"]["name"] = json!(format!("event-{n}"));
                }
                event["metadata"]["namespace"] = json!(namespace.clone().unwrap_or_default());
                event["kind"] = json!("Event");
                self.apply(event.clone());
                full(StatusCode::CREATED, event.to_string())
            }
            // Leases: create and update with optimistic concurrency, so that
            // two electors really race.
            (Method::POST, None, None) | (Method::PUT, Some(_), None) if plural == "leases" => {
                let is_put = req.method() == Method::PUT;
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                    return full(
                        StatusCode::BAD_REQUEST,
                        status_json(400, "BadRequest", "not JSON"),
                    );
                };
                object["kind"] = json!("Lease");
                object["apiVersion"] = json!("coordination.k8s.io/v1");
                object["metadata"]["namespace"] = json!(namespace.clone().unwrap_or_default());
                if let (true, Some(n)) = (is_put, &name) {
                    if object["metadata"]["name"] != json!(n) {
                        return full(
                            StatusCode::BAD_REQUEST,
                            status_json(
                                400,
                                "BadRequest",
                                "name in the body differs from the path",
                            ),
                        );
                    }
                }
                let precondition = if is_put {
                    match object["metadata"]["resourceVersion"].as_str() {
                        Some(rv) => Precondition::ResourceVersion(rv.to_owned()),
                        None => {
                            return full(
                                StatusCode::BAD_REQUEST,
                                status_json(
                                    400,
                                    "BadRequest",
                                    "an update needs metadata.resourceVersion in this server",
                                ),
                            )
                        }
                    }
                } else {
                    Precondition::Absent
                };
                match self.write_checked(object, precondition) {
                    Ok(stored) => full(
                        if is_put {
                            StatusCode::OK
                        } else {
                            StatusCode::CREATED
                        },
                        stored.to_string(),
                    ),
                    Err((reason, message)) => {
                        let code = match reason {
                            "NotFound" => 404,
                            "BadRequest" => 400,
                            _ => 409,
                        };
                        full(
                            StatusCode::from_u16(code).unwrap(),
                            status_json(code, reason, &message),
                        )
                    }
                }
            }
            (Method::PATCH, Some(name), Some("status")) => {
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let patch: Value = serde_json::from_slice(&body)
                    .or_else(|_| serde_norway::from_slice(&body))
                    .unwrap_or(Value::Null);
                let ns = namespace.unwrap_or_default();
                let fault = {
                    let mut st = self.state.lock().unwrap();
                    let fault = st.status_faults.pop_front();
                    let code = fault.map_or(200, |f| f.0);
                    st.status_answers.push((std::time::Instant::now(), code));
                    fault
                };
                if let Some((code, retry_after)) = fault {
                    let reason = match code {
                        403 => "Forbidden",
                        409 => "Conflict",
                        429 => "TooManyRequests",
                        _ => "InternalError",
                    };
                    let mut body: Value =
                        serde_json::from_str(&status_json(code, reason, "injected by the test"))
                            .unwrap();
                    let mut r = full(StatusCode::from_u16(code).unwrap(), String::new());
                    if retry_after > 0 {
                        // As kube-apiserver does: the header and the Status detail.
                        body["details"] = json!({"retryAfterSeconds": retry_after});
                        r.headers_mut().insert(
                            http::header::RETRY_AFTER,
                            http::HeaderValue::from(retry_after),
                        );
                    }
                    *r.body_mut() =
                        http_body_util::Either::Left(Full::new(Bytes::from(body.to_string())));
                    return r;
                }
                self.state
                    .lock()
                    .unwrap()
                    .status_patches
                    .push((path_and_query.clone(), patch.clone()));
                let current = self
                    .state
                    .lock()
                    .unwrap()
                    .objects
                    .get(&(plural.to_owned(), ns.clone(), name.clone()))
                    .cloned();
                match current {
                    Some(mut o) => {
                        merge_apply(&mut o["status"], &patch["status"]);
                        if let Err(errors) = self.admit(&mut o) {
                            return self.invalid(&path, kind, &name, errors);
                        }
                        self.apply_unchecked(o.clone());
                        full(StatusCode::OK, o.to_string())
                    }
                    None => full(
                        StatusCode::NOT_FOUND,
                        status_json(404, "NotFound", "not found"),
                    ),
                }
            }
            _ => full(
                StatusCode::METHOD_NOT_ALLOWED,
                status_json(405, "MethodNotAllowed", "not supported by the test server"),
            ),
        }
    }

    fn matches(
        object: &Value,
        namespace: &Option<String>,
        query: &BTreeMap<String, String>,
    ) -> bool {
        Self::matches_key(
            object["metadata"]["namespace"].as_str().unwrap_or_default(),
            object["metadata"]["name"].as_str().unwrap_or_default(),
            namespace,
            query,
        ) && label_selector_matches(object, query.get("labelSelector"))
    }

    /// Whether an object of this namespace and name is in a list or watch
    /// of `namespace` (None: all) with the query's `metadata.name` selector.
    fn matches_key(
        object_namespace: &str,
        object_name: &str,
        namespace: &Option<String>,
        query: &BTreeMap<String, String>,
    ) -> bool {
        let ns_ok = namespace.as_ref().is_none_or(|ns| object_namespace == ns);
        let field_ok = match query
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="))
        {
            Some(name) => object_name == name,
            None => true,
        };
        ns_ok && field_ok
    }

    fn list(
        &self,
        prefix: &str,
        plural: &str,
        kind: &str,
        namespace: Option<String>,
        query: &BTreeMap<String, String>,
    ) -> Response<TestBody> {
        let mut st = self.state.lock().unwrap();
        st.lists += 1;
        // Pages, as the kube client asks (`limit`, then `continue`): the
        // token is the list's resourceVersion and the last key served.
        let limit: Option<usize> = query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|&l| l > 0);
        let after: Option<(String, String, String)> = query.get("continue").and_then(|c| {
            let mut parts = c.splitn(3, '/');
            Some((
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
            ))
        });
        let rv = after
            .as_ref()
            .map_or_else(|| st.rv.to_string(), |(rv, _, _)| rv.clone());
        let mut items: Vec<(String, String, Value)> = st
            .objects
            .iter()
            .filter(|((p, ns, name), o)| {
                p == plural
                    && after
                        .as_ref()
                        .is_none_or(|(_, a_ns, a_name)| (ns, name) > (a_ns, a_name))
                    && Self::matches(o, &namespace, query)
            })
            .take(limit.map_or(usize::MAX, |l| l + 1))
            .map(|((_, ns, name), o)| (ns.clone(), name.clone(), o.clone()))
            .collect();
        let mut metadata = json!({"resourceVersion": rv});
        if limit.is_some_and(|l| items.len() > l) {
            items.pop();
            if let Some((ns, name, _)) = items.last() {
                metadata["continue"] = json!(format!("{rv}/{ns}/{name}"));
            }
        }
        let items: Vec<Value> = items.into_iter().map(|(_, _, o)| o).collect();
        let api_version = prefix
            .trim_start_matches("/apis/")
            .trim_start_matches("/api/");
        let body = json!({
            "kind": format!("{kind}List"),
            "apiVersion": api_version,
            "metadata": metadata,
            "items": items,
        });
        full(StatusCode::OK, body.to_string())
    }

    async fn watch(
        &self,
        plural: &'static str,
        _kind: &str,
        namespace: Option<String>,
        query: &BTreeMap<String, String>,
    ) -> Response<TestBody> {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(290u64);
        let query = query.clone();
        let (backlog, mut rx, expired) = {
            let st = self.state.lock().unwrap();
            let backlog: Vec<Event> = st
                .events
                .iter()
                .filter(|e| e.rv > from && e.plural == plural)
                .cloned()
                .collect();
            (backlog, self.events.subscribe(), from < st.expired_below)
        };
        if expired {
            self.state.lock().unwrap().gone += 1;
        }
        if expired {
            // The kube client sees 410 Gone as an ERROR event and lists again.
            let gone = json!({"type": "ERROR", "object": serde_json::from_str::<Value>(&status_json(410, "Expired", "too old resource version")).unwrap()});
            let frame = Bytes::from(format!("{gone}\n"));
            let s: futures::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>> =
                Box::pin(futures::stream::iter(vec![Ok(Frame::data(frame))]));
            return stream_response(s);
        }
        let mut cut = self.cut.subscribe();
        let (tx, out) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
        tokio::spawn(async move {
            let send = |e: &Event| e.line.clone();
            for e in backlog
                .iter()
                .filter(|e| Self::matches_key(&e.namespace, &e.name, &namespace, &query))
            {
                if tx.send(Ok(Frame::data(send(e)))).await.is_err() {
                    return;
                }
            }
            let deadline = tokio::time::sleep(std::time::Duration::from_secs(timeout));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => return,
                    _ = cut.recv() => return,
                    e = rx.recv() => match e {
                        Ok(e) if e.plural == plural && e.rv > from && Self::matches_key(&e.namespace, &e.name, &namespace, &query) => {
                            if tx.send(Ok(Frame::data(send(&e)))).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }
        });
        stream_response(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out)))
    }
}

/// The body of every answer: a whole JSON document, or a watch stream.
type TestBody = http_body_util::Either<
    Full<Bytes>,
    StreamBody<futures::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>,
>;

/// A list's `labelSelector`: equality (`k=v`, `k==v`, `k!=v`) and
/// existence (`k`, `!k`) requirements, comma-separated (lists only; the
/// tests that use it create their objects before the client lists).
fn label_selector_matches(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.trim().is_empty()) else {
        return true;
    };
    let labels = &object["metadata"]["labels"];
    selector.split(',').map(str::trim).all(|req| {
        if let Some((k, v)) = req.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            labels[k.trim()].as_str() == Some(v.trim())
        } else if let Some(k) = req.strip_prefix('!') {
            labels[k.trim()].is_null()
        } else {
            !labels[req].is_null()
        }
    })
}

fn full(code: StatusCode, body: String) -> Response<TestBody> {
    let mut r = Response::new(http_body_util::Either::Left(Full::new(Bytes::from(body))));
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn stream_response(
    s: futures::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>,
) -> Response<TestBody> {
    let mut r = Response::new(http_body_util::Either::Right(StreamBody::new(s)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn status_json(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}).to_string()
}

/// Merges an applied configuration into the stored one, as server-side
/// apply does for fields the applier does not own: maps merge key by key,
/// lists whose items all carry a `type` (conditions: `listType: map`,
/// `listMapKeys: [type]`) merge item by item, anything else is replaced.
/// (Fields the applier owned before and now omits are not removed: the
/// server under test always applies the whole status it owns.)
pub fn merge_apply(stored: &mut Value, applied: &Value) {
    fn keyed(v: &Value) -> Option<Vec<(String, Value)>> {
        v.as_array()?
            .iter()
            .map(|item| Some((item.get("type")?.as_str()?.to_owned(), item.clone())))
            .collect()
    }
    if let (Some(into), Some(from)) = (stored.as_object_mut(), applied.as_object()) {
        for (k, v) in from {
            merge_apply(into.entry(k.clone()).or_insert(Value::Null), v);
        }
        return;
    }
    if let (Some(old), Some(new)) = (keyed(stored), keyed(applied)) {
        let mut merged: Vec<(String, Value)> = old;
        for (t, item) in new {
            match merged.iter_mut().find(|(k, _)| *k == t) {
                Some((_, slot)) => merge_apply(slot, &item),
                None => merged.push((t, item)),
            }
        }
        *stored = Value::Array(merged.into_iter().map(|(_, v)| v).collect());
        return;
    }
    *stored = applied.clone();
}

/// A request path, split.
struct ResourcePath<'a> {
    prefix: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<&'a str>,
}

/// Splits `/apis/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME[/SUB]]`.
fn parse_path(path: &str) -> Option<ResourcePath<'_>> {
    for (prefix, plural, kind) in RESOURCES {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        let parsed = match parts.as_slice() {
            [p] if p == plural => Some((None, None, None)),
            ["namespaces", ns, p] if p == plural => Some((Some(ns.to_string()), None, None)),
            ["namespaces", ns, p, name] if p == plural => {
                Some((Some(ns.to_string()), Some(name.to_string()), None))
            }
            ["namespaces", ns, p, name, sub] if p == plural => {
                Some((Some(ns.to_string()), Some(name.to_string()), Some(*sub)))
            }
            _ => None,
        };
        if let Some((namespace, name, sub)) = parsed {
            return Some(ResourcePath {
                prefix,
                plural,
                kind,
                namespace,
                name,
                sub,
            });
        }
    }
    None
}

/// One variant in `api`: Deployment llm/llama-decode of three ready replicas,
/// whose three Pods are fresh emulators of model "m" (KV 0.20, 0.30, 0.25),
/// and its VariantAutoscaling; anonymous requests are denied.
pub async fn three_replica_llama(api: &ApiServer) -> Vec<super::Emulator> {
    let mut emulators = Vec::new();
    for kv in [0.20, 0.30, 0.25] {
        emulators.push(super::Emulator::start("m", kv, 1.0).await);
    }
    api.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "llama-decode", "namespace": "llm"},
        "spec": {"replicas": 3, "selector": {}, "template": {}}, "status": {"replicas": 3, "readyReplicas": 3}}));
    for (i, e) in emulators.iter().enumerate() {
        api.apply(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("p{i}"), "namespace": "llm", "labels": {"llm-d.ai/variant": "llama"},
                         "annotations": {"prometheus.io/port": e.port.to_string()}},
            "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}));
    }
    api.apply(json!({"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling", "metadata": {"name": "llama", "namespace": "llm"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "llama-decode"}, "modelID": "m", "maxReplicas": 10}}));
    api.deny_user("system:anonymous");
    emulators
}
