//! Leader election on a coordination.k8s.io Lease, so two replicas of a controller never act
//! at once. Same protocol as client-go's leaderelection: the holder renews `renewTime`; a
//! candidate takes the Lease once it has seen the same record unchanged for a whole
//! `leaseDurationSeconds` on its own clock (never comparing clocks across machines).
//!
//! The holder gives up after `renew_deadline` without a successful renewal, which is shorter
//! than the lease duration, so it has stopped acting before anyone else may start.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;

use super::apply::{is_conflict, is_not_found};

/// How long a Lease stays held without renewal (client-go's default).
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews: three tries within one lease duration.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// The holder stands down after this long without renewal, well before the Lease expires.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often a candidate looks again.
const RETRY: Duration = Duration::from_secs(2);
/// The duration a released Lease is left with: the shortest there is, so a standby takes it
/// at its next look.
const RELEASED_LEASE_SECONDS: i32 = 1;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name, e.g. resiliency-operator-database-controller.
    pub name: String,
    pub namespace: String,
    /// This replica, usually the Pod name.
    pub identity: String,
    /// How long a Lease stays held without renewal.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// The holder gives up when it could not renew for this long (less than `duration`).
    pub renew_deadline: Duration,
    /// How often a candidate looks again.
    pub retry: Duration,
}

impl LeaseConfig {
    /// A 15 s lease, renewed every 5 s; the holder stands down after 10 s without renewal.
    pub fn new(name: &str, namespace: &str, identity: &str) -> LeaseConfig {
        LeaseConfig {
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            duration: LEASE_DURATION,
            renew_every: RENEW_EVERY,
            renew_deadline: RENEW_DEADLINE,
            retry: RETRY,
        }
    }
}

/// The parts of a Lease record whose change proves the holder is alive.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew: Option<Timestamp>,
    transitions: Option<i32>,
}

/// A record as first seen by this candidate, on its own clock.
#[derive(Clone, Debug)]
pub struct Seen {
    record: Record,
    at: Instant,
}

/// What a candidate does with the Lease it just read.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, held by us.
    Create,
    /// Free or expired: take it over.
    Take,
    /// Ours already (e.g. this Pod restarted): keep it.
    Renew,
    /// Another replica holds it: look again after this long.
    Wait(Duration),
}

/// Decides from the Lease read (None: it does not exist), what this candidate saw before, and
/// `now`. Updates `seen` when the record changed.
pub fn step(
    lease: Option<&LeaseSpec>,
    me: &str,
    seen: &mut Option<Seen>,
    now: Instant,
    retry: Duration,
) -> Step {
    let Some(spec) = lease else {
        return Step::Create;
    };
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    match holder.as_deref() {
        None => return Step::Take,
        Some(h) if h == me => return Step::Renew,
        Some(_) => {}
    }
    let record = Record {
        holder,
        renew: spec.renew_time.as_ref().map(|t| t.0),
        transitions: spec.lease_transitions,
    };
    let first_seen = match seen {
        Some(s) if s.record == record => s.at,
        _ => {
            *seen = Some(Seen { record, at: now });
            now
        }
    };
    let duration = spec
        .lease_duration_seconds
        .map_or(LEASE_DURATION, |s| Duration::from_secs(s.max(1) as u64));
    let expires = first_seen + duration;
    if now >= expires {
        Step::Take
    } else {
        Step::Wait((expires - now).min(retry))
    }
}

/// How holding ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Another replica took the Lease, or renewal failed past the deadline: stop acting now.
    Lost,
    /// Shutdown was asked for; the Lease is still ours until [`Elector::release`].
    Shutdown,
}

pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The Lease as we last wrote it (its resourceVersion guards our next write).
    held: Option<Lease>,
}

impl Elector {
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Elector {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            held: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    /// Waits until this replica holds the Lease (true) or shutdown is asked for (false).
    pub async fn acquire(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let mut seen = None;
        loop {
            if *shutdown.borrow() {
                return false;
            }
            let wait = match self.try_acquire(&mut seen).await {
                Ok(None) => {
                    tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "leader election: acquired");
                    return true;
                }
                Ok(Some(wait)) => wait,
                Err(e) => {
                    tracing::warn!(lease = %self.cfg.name, namespace = %self.cfg.namespace, error = %e,
                        "leader election: cannot read or write the Lease");
                    self.cfg.retry
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One attempt: None when the Lease is now ours, else how long to wait.
    async fn try_acquire(
        &mut self,
        seen: &mut Option<Seen>,
    ) -> Result<Option<Duration>, kube::Error> {
        let current = self.api.get_opt(&self.cfg.name).await?;
        let now = Timestamp::now();
        match step(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.cfg.identity,
            seen,
            Instant::now(),
            self.cfg.retry,
        ) {
            Step::Wait(d) => Ok(Some(d)),
            Step::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, now, 0)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(l) => {
                        self.held = Some(l);
                        Ok(None)
                    }
                    // Another replica created it first.
                    Err(e) if is_conflict(&e) => Ok(Some(Duration::ZERO)),
                    Err(e) => Err(e),
                }
            }
            step @ (Step::Take | Step::Renew) => {
                let Some(mut lease) = current else {
                    return Ok(Some(Duration::ZERO));
                };
                let old = lease.spec.clone().unwrap_or_default();
                let (acquired, transitions) = if step == Step::Take {
                    (now, old.lease_transitions.unwrap_or(0).saturating_add(1))
                } else {
                    (
                        old.acquire_time.map(|t| t.0).unwrap_or(now),
                        old.lease_transitions.unwrap_or(0),
                    )
                };
                lease.spec = Some(self.spec(acquired, now, transitions));
                match self.replace(&lease).await {
                    Ok(()) => Ok(None),
                    // Someone wrote it since we read it: read again.
                    Err(e) if is_conflict(&e) => Ok(Some(Duration::ZERO)),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Writes `lease` over the one read (its resourceVersion guards the write); once written,
    /// it is the Lease we hold.
    async fn replace(&mut self, lease: &Lease) -> Result<(), kube::Error> {
        let written = self
            .api
            .replace(&self.cfg.name, &PostParams::default(), lease)
            .await?;
        self.held = Some(written);
        Ok(())
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.duration.as_secs().max(1) as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Renews the Lease until it is lost or shutdown is asked for.
    pub async fn hold(&mut self, shutdown: &mut watch::Receiver<bool>) -> Ended {
        let mut renewed = Instant::now();
        let mut wait = self.cfg.renew_every;
        loop {
            if *shutdown.borrow() {
                return Ended::Shutdown;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return Ended::Shutdown,
            }
            // Bounded by the time left to the deadline: a PUT that never answers must not keep
            // this replica acting while a standby takes the Lease.
            let left = self.cfg.renew_deadline.saturating_sub(renewed.elapsed());
            let Ok(renewal) = tokio::time::timeout(left, self.renew()).await else {
                tracing::error!(lease = %self.cfg.name,
                    "leader election: no answer to the renewal within the deadline; standing down");
                self.held = None;
                return Ended::Lost;
            };
            match renewal {
                Ok(true) => {
                    renewed = Instant::now();
                    wait = self.cfg.renew_every;
                }
                Ok(false) => {
                    tracing::warn!(lease = %self.cfg.name, "leader election: another replica holds the Lease now");
                    self.held = None;
                    return Ended::Lost;
                }
                Err(e) => {
                    if renewed.elapsed() >= self.cfg.renew_deadline {
                        tracing::error!(lease = %self.cfg.name, error = %e,
                            "leader election: could not renew within the deadline; standing down");
                        self.held = None;
                        return Ended::Lost;
                    }
                    tracing::warn!(lease = %self.cfg.name, error = %e, "leader election: renewal failed; retrying");
                    wait = self.cfg.retry.min(self.cfg.renew_every);
                }
            }
        }
    }

    /// One renewal: true when still ours, false when another replica holds it.
    async fn renew(&mut self) -> Result<bool, kube::Error> {
        let mut lease = match self.held.clone() {
            Some(l) => l,
            None => match self.api.get_opt(&self.cfg.name).await? {
                Some(l) => l,
                None => return Ok(false),
            },
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(&self.cfg.identity) {
            return Ok(false);
        }
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.replace(&lease).await {
            Ok(()) => Ok(true),
            Err(e) if is_conflict(&e) => {
                // Changed behind us: read it and try again only if it is still ours.
                self.held = None;
                let fresh = self.api.get_opt(&self.cfg.name).await?;
                let ours = fresh
                    .as_ref()
                    .and_then(|l| l.spec.as_ref())
                    .and_then(|s| s.holder_identity.as_deref())
                    == Some(&self.cfg.identity);
                if ours {
                    self.held = fresh;
                    Err(e)
                } else {
                    Ok(false)
                }
            }
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Hands the Lease back so a standby takes over at once instead of after it expires.
    pub async fn release(&mut self) {
        let Some(mut lease) = self.held.take() else {
            return;
        };
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            spec.lease_duration_seconds = Some(RELEASED_LEASE_SECONDS);
        }
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.cfg.name, "leader election: released"),
            Err(e) => tracing::warn!(lease = %self.cfg.name, error = %e,
                "leader election: could not release the Lease; it expires by itself"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renew_s: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renew_s).unwrap())),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_candidate_takes_only_a_missing_free_or_expired_lease() {
        let retry = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut seen = None;
        assert_eq!(step(None, "me", &mut seen, t0, retry), Step::Create);
        assert_eq!(
            step(Some(&spec(None, 1)), "me", &mut seen, t0, retry),
            Step::Take
        );
        assert_eq!(
            step(Some(&spec(Some(""), 1)), "me", &mut seen, t0, retry),
            Step::Take
        );
        assert_eq!(
            step(Some(&spec(Some("me"), 1)), "me", &mut seen, t0, retry),
            Step::Renew
        );
        // Held by another: wait, however old its renewTime looks (clocks differ across nodes).
        let other = spec(Some("other"), 1);
        assert_eq!(
            step(Some(&other), "me", &mut seen, t0, retry),
            Step::Wait(retry)
        );
        assert_eq!(
            step(
                Some(&other),
                "me",
                &mut seen,
                t0 + Duration::from_secs(14),
                retry
            ),
            Step::Wait(Duration::from_secs(1))
        );
        // A renewal seen resets the clock...
        let renewed = spec(Some("other"), 5);
        assert_eq!(
            step(
                Some(&renewed),
                "me",
                &mut seen,
                t0 + Duration::from_secs(14),
                retry
            ),
            Step::Wait(retry)
        );
        assert_eq!(
            step(
                Some(&renewed),
                "me",
                &mut seen,
                t0 + Duration::from_secs(28),
                retry
            ),
            Step::Wait(Duration::from_secs(1))
        );
        // ...and the same record unchanged for a whole lease duration means the holder is gone.
        assert_eq!(
            step(
                Some(&renewed),
                "me",
                &mut seen,
                t0 + Duration::from_secs(29),
                retry
            ),
            Step::Take
        );
    }
}
