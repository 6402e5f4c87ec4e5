//! Kubernetes Leases (`coordination.k8s.io/v1`) as locks that one process holds at a time:
//! the building block replicas share work with (a leader Lease for the branch follower and the
//! outbox, a Lease per shard of apps).
//!
//! A holder renews its Lease before `leaseDurationSeconds` pass; another process takes it only
//! once the last renewal is older than that. Every write carries the `resourceVersion` it read,
//! so of two processes racing for one Lease the API server lets exactly one win (the other
//! gets 409 Conflict and reads the winner). `leaseTransitions` counts the changes of holder:
//! it is the fencing token — a holder that lost its Lease and comes back sees a larger one.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};

/// Why a Lease could not be read or written (a lost race is not an error: see [`Held`]).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API server refused or could not be reached.
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },
}

/// Who holds a Lease after an attempt to take or renew it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// This process holds it until `until`; `generation` is the fencing token.
    Mine {
        /// Holder changes so far (`leaseTransitions`).
        generation: i64,
        /// When it expires unless renewed.
        until: Timestamp,
    },
    /// Another process holds it until `until`.
    Theirs {
        /// Its `holderIdentity`.
        holder: String,
        /// When it expires unless renewed.
        until: Timestamp,
    },
}

/// One Lease, taken and renewed on behalf of `holder`.
pub struct LeaseLock {
    api: Api<Lease>,
    namespace: String,
    name: String,
    holder: String,
    duration: Duration,
}

impl LeaseLock {
    /// The Lease `namespace/name`, held as `holder` for `duration` after each renewal.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        holder: &str,
        duration: Duration,
    ) -> LeaseLock {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            holder: holder.to_string(),
            duration,
        }
    }

    fn error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Takes the Lease when it is free or expired, renews it when this process holds it; one
    /// attempt, answering who holds it afterwards.
    #[tracing::instrument(level = "debug", skip(self), fields(lease = %self.name, holder = %self.holder))]
    pub async fn acquire_or_renew(&self) -> Result<Held, LeaseError> {
        let now = Timestamp::now();
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error(e))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, 0, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => Ok(self.held(&created)),
                // Another process created it first: it holds it.
                Err(kube::Error::Api(e)) if e.code == 409 => self.read().await,
                Err(e) => Err(self.error(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let transitions = i64::from(spec.lease_transitions.unwrap_or(0));
        let spec = match holder {
            Some(h) if h == self.holder => {
                let acquired = spec.acquire_time.map_or(now, |t| t.0);
                let transitions = i32::try_from(transitions).unwrap_or(i32::MAX);
                self.spec(acquired, transitions, now)
            }
            Some(_) if expiry(&spec) > now => return Ok(self.held(&lease)),
            // Free or expired: taken, one more holder change.
            _ => self.spec(now, i32::try_from(transitions + 1).unwrap_or(i32::MAX), now),
        };
        lease.spec = Some(spec);
        // The resourceVersion read above makes the write conditional.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => Ok(self.held(&written)),
            Err(kube::Error::Api(e)) if e.code == 409 => self.read().await,
            Err(e) => Err(self.error(e)),
        }
    }

    /// Gives the Lease up when this process holds it, so another takes it at once instead of
    /// waiting for it to expire.
    #[tracing::instrument(level = "debug", skip(self), fields(lease = %self.name, holder = %self.holder))]
    pub async fn release(&self) -> Result<(), LeaseError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.holder.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            // Taken meanwhile (it had expired): nothing left to give up.
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    async fn read(&self) -> Result<Held, LeaseError> {
        let lease = self.api.get(&self.name).await.map_err(|e| self.error(e))?;
        Ok(self.held(&lease))
    }

    fn spec(&self, acquired: Timestamp, transitions: i32, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.seconds()),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn held(&self, lease: &Lease) -> Held {
        let spec = lease.spec.clone().unwrap_or_default();
        let until = expiry(&spec);
        match spec.holder_identity.filter(|h| !h.is_empty()) {
            Some(holder) if holder == self.holder => Held::Mine {
                generation: i64::from(spec.lease_transitions.unwrap_or(0)),
                until,
            },
            Some(holder) => Held::Theirs { holder, until },
            // Released between our read and write: free, not ours.
            None => Held::Theirs {
                holder: String::new(),
                until: Timestamp::UNIX_EPOCH,
            },
        }
    }
}

/// When a Lease expires: its last renewal plus its duration (long past when never renewed).
pub fn expiry(spec: &LeaseSpec) -> Timestamp {
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    renewed
        .checked_add(SignedDuration::from_secs(seconds))
        .unwrap_or(renewed)
}

/// The shard of `app` among `shards`: a stable hash of the name (the same in every process
/// and release), so every replica agrees on the owner without asking.
pub fn shard_of(app: &str, shards: u32) -> u32 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(app.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u32::try_from(u64::from_be_bytes(first) % u64::from(shards.max(1))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("checkout-api", 8), shard_of("checkout-api", 8));
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[shard_of(&format!("app-{i}"), 4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(shard_of("anything", 0), 0);
    }

    #[test]
    fn a_lease_expires_its_duration_after_the_last_renewal() {
        let renewed = Timestamp::from_second(1_000).expect("time");
        let spec = LeaseSpec {
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert_eq!(expiry(&spec), Timestamp::from_second(1_015).expect("time"));
        assert_eq!(expiry(&LeaseSpec::default()), Timestamp::UNIX_EPOCH);
    }
}
