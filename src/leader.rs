//! Leader election over a `coordination.k8s.io/v1` Lease, as Kubernetes
//! controllers do it: several replicas of the server all answer the API,
//! and only the one that holds the Lease writes VariantAutoscaling status
//! and Events.
//!
//! The protocol (client-go's `leaderelection` with a Lease lock):
//! - every retry period, read the Lease; create it if absent (we lead);
//! - if we hold it, renew it (`renewTime` = now) with an update that
//!   carries the `resourceVersion` read, so that two writers cannot both
//!   succeed (the loser gets 409 Conflict);
//! - if another replica holds it, take it over only once it has not
//!   changed for `leaseDurationSeconds`, measured on OUR clock from when we
//!   last saw it change (clock skew between nodes does not matter);
//! - the leader steps down when it could not renew within the renew
//!   deadline (shorter than the lease duration, so it stops writing before
//!   anyone else can take over), and on shutdown releases the Lease (empty
//!   holder) so that the next replica takes over at once.
//!
//! [`next_step`] is the pure decision; [`LeaderElector`] does the I/O.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Settings of the election (flags `--leader-elect-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaderConfig {
    pub(crate) lease_name: String,
    pub(crate) namespace: String,
    /// This replica's holder identity: unique per process.
    pub(crate) identity: String,
    pub(crate) lease_duration: Duration,
    pub(crate) renew_deadline: Duration,
    pub(crate) retry_period: Duration,
}

/// A configuration error of the election flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LeaderConfigError {
    #[error("--leader-elect-renew-deadline ({renew:?}) must be shorter than --leader-elect-lease-duration ({lease:?}): the leader must stop writing before another replica can take over")]
    RenewNotBelowLease { renew: Duration, lease: Duration },
    #[error("--leader-elect-retry-period ({retry:?}) must be shorter than --leader-elect-renew-deadline ({renew:?}): the leader must get at least one renewal attempt per deadline")]
    RetryNotBelowRenew { retry: Duration, renew: Duration },
    #[error("--leader-elect-lease-duration ({0:?}) must be at least 1s (the Lease stores whole seconds)")]
    LeaseTooShort(Duration),
}

impl LeaderConfig {
    /// The relations client-go enforces between the three durations.
    pub(crate) fn validate(&self) -> Result<(), LeaderConfigError> {
        if self.lease_duration < Duration::from_secs(1) {
            return Err(LeaderConfigError::LeaseTooShort(self.lease_duration));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(LeaderConfigError::RenewNotBelowLease {
                renew: self.renew_deadline,
                lease: self.lease_duration,
            });
        }
        if self.retry_period >= self.renew_deadline {
            return Err(LeaderConfigError::RetryNotBelowRenew {
                retry: self.retry_period,
                renew: self.renew_deadline,
            });
        }
        Ok(())
    }
}

/// A holder identity: the pod's name (or host name) and a random suffix,
/// so that a restarted process never mistakes its predecessor's Lease for
/// its own.
pub(crate) fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "wva-metrics-server".to_owned());
    let suffix: u32 = rand::random();
    format!("{host}_{suffix:08x}")
}

/// What this replica last saw of the Lease, and when (on its own clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) holder: Option<String>,
    /// `renewTime` as written by the holder: a change means it is alive.
    pub(crate) renew_time: Option<String>,
    pub(crate) lease_duration: Duration,
    /// When this replica first saw the Lease in this state.
    pub(crate) since: Instant,
}

/// What to do with the Lease now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// No Lease yet: create it with us as holder.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free (released) or expired: take it over.
    TakeOver,
    /// Another replica holds it and it has not expired.
    Follow,
}

/// The pure decision of one attempt. `observed` is `None` when the Lease
/// does not exist.
pub(crate) fn next_step(observed: Option<&Observed>, identity: &str, now: Instant) -> Step {
    let Some(o) = observed else {
        return Step::Create;
    };
    match o.holder.as_deref() {
        Some(h) if h == identity => Step::Renew,
        None | Some("") => Step::TakeOver,
        Some(_) if now.saturating_duration_since(o.since) >= o.lease_duration => Step::TakeOver,
        Some(_) => Step::Follow,
    }
}

/// Updates what we observed from a freshly read Lease: the clock restarts
/// only when the holder or its renew time changed.
pub(crate) fn observe(
    previous: Option<&Observed>,
    lease: &Lease,
    default_duration: Duration,
    now: Instant,
) -> Observed {
    let spec = lease.spec.as_ref();
    let holder = spec.and_then(|s| s.holder_identity.clone());
    let renew_time = spec.and_then(|s| s.renew_time.as_ref().map(|t| t.0.to_string()));
    let lease_duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s as u64))
        .unwrap_or(default_duration);
    let since = match previous {
        Some(p) if p.holder == holder && p.renew_time == renew_time => p.since,
        _ => now,
    };
    Observed {
        holder,
        renew_time,
        lease_duration,
        since,
    }
}

/// Whether the leader must step down: it has not renewed for the renew
/// deadline.
pub(crate) fn renewal_overdue(
    last_renewed: Option<Instant>,
    renew_deadline: Duration,
    now: Instant,
) -> bool {
    last_renewed.is_none_or(|t| now.saturating_duration_since(t) >= renew_deadline)
}

/// A receiver that always says "leading": for a single replica with
/// election switched off.
pub(crate) fn always_leading() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(true);
    // The receiver keeps the value after the sender is gone.
    drop(tx);
    rx
}

/// Runs the election against the cluster.
pub(crate) struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
    leading: watch::Sender<bool>,
    observed: Option<Observed>,
    last_renewed: Option<Instant>,
    /// A 403 was logged (once, until an attempt succeeds again).
    forbidden_logged: bool,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("another replica wrote the Lease first (409 Conflict)")]
    Conflict,
    #[error("no answer from the API server within the renew deadline")]
    TimedOut,
    #[error("{0}")]
    Api(#[from] kube::Error),
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElector {
    pub(crate) fn new(client: Client, config: LeaderConfig) -> (Self, watch::Receiver<bool>) {
        let (leading, rx) = watch::channel(false);
        let api = Api::namespaced(client, &config.namespace);
        (
            LeaderElector {
                api,
                config,
                leading,
                observed: None,
                last_renewed: None,
                forbidden_logged: false,
            },
            rx,
        )
    }

    /// Runs until shutdown, then releases the Lease if held.
    pub(crate) fn spawn(mut self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tracing::info!(
                lease = %self.config.lease_name,
                namespace = %self.config.namespace,
                identity = %self.config.identity,
                "leader election started"
            );
            loop {
                self.attempt().await;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(self.config.retry_period) => {}
                }
            }
            self.release().await;
        })
    }

    fn set_leading(&mut self, leading: bool) {
        if *self.leading.borrow() != leading {
            if leading {
                tracing::info!(identity = %self.config.identity, lease = %self.config.lease_name, "became leader: writing status and Events");
            } else {
                tracing::warn!(identity = %self.config.identity, lease = %self.config.lease_name, "not the leader any more: status and Events stop");
            }
            self.leading.send_replace(leading);
        }
    }

    async fn attempt(&mut self) {
        let now = Instant::now();
        // Bounded: a hung request must not keep us "leading" past the
        // point where another replica may take over.
        let attempt =
            tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew(now)).await;
        let result = attempt.unwrap_or(Err(AttemptError::TimedOut));
        if result.is_ok() {
            self.forbidden_logged = false;
        }
        match result {
            Ok(true) => {
                self.last_renewed = Some(now);
                self.set_leading(true);
            }
            Ok(false) => {
                self.last_renewed = None;
                self.set_leading(false);
            }
            Err(e) => {
                let forbidden =
                    matches!(&e, AttemptError::Api(kube::Error::Api(s)) if s.code == 403);
                if forbidden && !self.forbidden_logged {
                    // Without the Lease this replica never writes status or
                    // Events: say why, once, not on every retry period.
                    self.forbidden_logged = true;
                    tracing::error!(
                        permission = "get, create, update leases (API group coordination.k8s.io)",
                        namespace = %self.config.namespace,
                        lease = %self.config.lease_name,
                        error = %e,
                        "the API server refused the leader Lease for lack of permission: grant the server's service account this permission (deploy/ Role); logged once, retried every retry period; no status or Events are written meanwhile"
                    );
                }
                tracing::debug!(error = %e, lease = %self.config.lease_name, "leader election attempt failed");
                if *self.leading.borrow()
                    && renewal_overdue(
                        self.last_renewed,
                        self.config.renew_deadline,
                        Instant::now(),
                    )
                {
                    tracing::warn!(error = %e, "could not renew the Lease within the renew deadline");
                    self.set_leading(false);
                }
            }
        }
    }

    fn spec(
        &self,
        now: jiff::Timestamp,
        acquire: Option<MicroTime>,
        transitions: i32,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs() as i32),
            acquire_time: acquire.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt: true when we hold the Lease afterwards.
    async fn try_acquire_or_renew(&mut self, now: Instant) -> Result<bool, AttemptError> {
        let wall = jiff::Timestamp::now();
        let current = self.api.get_opt(&self.config.lease_name).await?;
        self.observed = current
            .as_ref()
            .map(|l| observe(self.observed.as_ref(), l, self.config.lease_duration, now));
        let step = next_step(self.observed.as_ref(), &self.config.identity, now);
        match (step, current) {
            (Step::Follow, _) => Ok(false),
            (Step::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.lease_name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(wall, None, 0)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_conflict(&e) => Err(AttemptError::Conflict),
                    Err(e) => Err(e.into()),
                }
            }
            (step, Some(mut lease)) => {
                let old = lease.spec.clone().unwrap_or_default();
                let transitions = old.lease_transitions.unwrap_or(0);
                lease.spec = Some(if step == Step::Renew {
                    self.spec(wall, old.acquire_time, transitions)
                } else {
                    tracing::info!(previous = ?old.holder_identity, "taking over the Lease");
                    self.spec(wall, None, transitions + 1)
                });
                // `lease` still carries the resourceVersion we read: the
                // API server refuses the update if anyone wrote since.
                match self
                    .api
                    .replace(&self.config.lease_name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if is_conflict(&e) => Err(AttemptError::Conflict),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Stops writing, then frees the Lease (if still ours) so that another
    /// replica takes over without waiting for it to expire.
    async fn release(&mut self) {
        let was_leading = *self.leading.borrow();
        self.set_leading(false);
        if !was_leading {
            return;
        }
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.config.lease_name).await? else {
                return Ok::<_, kube::Error>(false);
            };
            let Some(spec) = lease.spec.as_mut() else {
                return Ok(false);
            };
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
            self.api
                .replace(&self.config.lease_name, &PostParams::default(), &lease)
                .await?;
            Ok(true)
        }
        .await;
        match result {
            Ok(true) => tracing::info!(lease = %self.config.lease_name, "released the Lease"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, lease = %self.config.lease_name, "cannot release the Lease; another replica takes over when it expires")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn lease(holder: Option<&str>, renew: Option<&str>, seconds: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                renew_time: renew.map(|r| MicroTime(r.parse().unwrap())),
                lease_duration_seconds: seconds,
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn steps_follow_the_lease_protocol() {
        let t0 = Instant::now();
        let held = |holder: Option<&str>, age: u64| {
            Observed {
                holder: holder.map(str::to_owned),
                renew_time: Some("2026-01-01T00:00:00Z".into()),
                lease_duration: D,
                since: t0,
            }
            .with_age(t0, age)
        };
        // (observed, expected step), judged at t0 + 20 s where relevant.
        let now = t0 + Duration::from_secs(20);
        let cases = [
            (None, Step::Create),
            (Some(held(Some("me"), 0)), Step::Renew),
            // Ours even when "expired": we renew rather than take over.
            (Some(held(Some("me"), 30)), Step::Renew),
            (Some(held(None, 0)), Step::TakeOver),
            (Some(held(Some(""), 0)), Step::TakeOver),
            // Seen unchanged for 14 s of 15: still theirs.
            (Some(held(Some("other"), 14)), Step::Follow),
            // Exactly the lease duration: expired.
            (Some(held(Some("other"), 15)), Step::TakeOver),
            (Some(held(Some("other"), 20)), Step::TakeOver),
        ];
        for (observed, want) in cases {
            assert_eq!(
                next_step(observed.as_ref(), "me", now),
                want,
                "{observed:?}"
            );
        }
    }

    impl Observed {
        /// The same observation, first seen `age` seconds before `now + 20s`.
        fn with_age(mut self, t0: Instant, age: u64) -> Self {
            self.since = t0 + Duration::from_secs(20) - Duration::from_secs(age);
            self
        }
    }

    #[test]
    fn expiry_is_measured_from_the_last_change_we_saw() {
        let t0 = Instant::now();
        let a = lease(Some("other"), Some("2026-01-01T00:00:00Z"), Some(10));
        let first = observe(None, &a, D, t0);
        assert_eq!(first.since, t0);
        assert_eq!(
            first.lease_duration,
            Duration::from_secs(10),
            "the Lease's own duration wins"
        );
        // Unchanged: the clock keeps running, expiry after 10 s.
        let later = observe(Some(&first), &a, D, t0 + Duration::from_secs(9));
        assert_eq!(later.since, t0);
        assert_eq!(
            next_step(Some(&later), "me", t0 + Duration::from_secs(9)),
            Step::Follow
        );
        assert_eq!(
            next_step(Some(&later), "me", t0 + Duration::from_secs(10)),
            Step::TakeOver
        );
        // A renewal restarts it.
        let renewed = lease(Some("other"), Some("2026-01-01T00:00:05Z"), Some(10));
        let t9 = t0 + Duration::from_secs(9);
        let o = observe(Some(&later), &renewed, D, t9);
        assert_eq!(o.since, t9);
        assert_eq!(
            next_step(Some(&o), "me", t0 + Duration::from_secs(12)),
            Step::Follow
        );
        // A new holder restarts it too; no duration falls back to ours.
        let moved = lease(Some("third"), Some("2026-01-01T00:00:05Z"), None);
        let o2 = observe(Some(&o), &moved, D, t0 + Duration::from_secs(11));
        assert_eq!(o2.since, t0 + Duration::from_secs(11));
        assert_eq!(o2.lease_duration, D);
    }

    #[test]
    fn the_leader_steps_down_at_the_renew_deadline() {
        let t0 = Instant::now();
        let deadline = Duration::from_secs(10);
        assert!(renewal_overdue(None, deadline, t0));
        assert!(!renewal_overdue(
            Some(t0),
            deadline,
            t0 + Duration::from_secs(9)
        ));
        assert!(renewal_overdue(
            Some(t0),
            deadline,
            t0 + Duration::from_secs(10)
        ));
    }

    #[test]
    fn durations_must_nest() {
        let ok = LeaderConfig {
            lease_name: "l".into(),
            namespace: "n".into(),
            identity: "i".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        };
        assert_eq!(ok.validate(), Ok(()));
        let bad = [
            LeaderConfig {
                renew_deadline: Duration::from_secs(15),
                ..ok.clone()
            },
            LeaderConfig {
                retry_period: Duration::from_secs(10),
                ..ok.clone()
            },
            LeaderConfig {
                lease_duration: Duration::from_millis(500),
                renew_deadline: Duration::from_millis(400),
                retry_period: Duration::from_millis(100),
                ..ok.clone()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn identities_are_unique_per_process_start() {
        assert_ne!(default_identity(), default_identity());
    }
}
