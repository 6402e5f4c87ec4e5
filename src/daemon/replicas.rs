//! Several replicas of the daemon on one PostgreSQL store, coordinated by Kubernetes Leases.
//!
//! - **Leader.** One Lease (`<prefix>-leader`) elects the replica that follows the branch
//!   (creates executions, records the cursor, reports refused commits), sends the status
//!   outbox and checks drift. Every other replica still fetches and checks commits, so pull
//!   request plans and the API answer everywhere.
//! - **Shards.** Every app belongs to one of `shards` shards by a stable hash of its name
//!   ([`shard_of`]). A replica holds a Lease per shard it runs (`<prefix>-shard-<n>`) and runs
//!   the executions of those apps only. Replicas count each other by member Leases
//!   (`<prefix>-member-<id>`) and hold about an equal share: one short takes free or expired
//!   shards, one over gives the surplus back.
//! - **Fencing.** Taking a shard records the Lease's generation (`leaseTransitions`) in the
//!   store; every stage transition carries it and the store refuses an older one, so a replica
//!   that was paused or cut off cannot write over its successor. A replica also stops the
//!   executions of a shard by itself once its hold is older than the lease duration without
//!   a renewal.
//! - **Handoff.** Work reaches the replica that runs it through the store: an execution is a
//!   queued row wherever it was created, and a wake-up (PostgreSQL `NOTIFY`) makes the
//!   shard's holder look at once; without one it looks on every renewal anyway.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};

use super::{Daemon, lock};
use crate::cluster::lease::{Held, LeaseError, LeaseLock};
use crate::store::Fence;

pub use crate::cluster::lease::shard_of;

/// How replicas find each other and split the apps.
#[derive(Clone)]
pub struct ReplicaConfig {
    /// The Kubernetes API holding the Leases.
    pub client: kube::Client,
    /// Namespace of the Leases.
    pub namespace: String,
    /// Prefix of the Lease names (replicas of one deployment share it).
    pub prefix: String,
    /// Shards of apps (every replica must use the same number).
    pub shards: u32,
    /// How long a Lease holds without renewal; renewed every third of it.
    pub lease_duration: Duration,
}

impl std::fmt::Debug for ReplicaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaConfig")
            .field("namespace", &self.namespace)
            .field("prefix", &self.prefix)
            .field("shards", &self.shards)
            .field("lease_duration", &self.lease_duration)
            .finish_non_exhaustive()
    }
}

/// A shard this replica holds.
#[derive(Debug, Clone, Copy)]
struct Hold {
    /// The Lease generation recorded in the store as the fence.
    generation: i64,
    /// Until when the hold is certain: the start of its last successful renewal plus the
    /// lease duration. Past it the replica stops the shard's work without asking anyone.
    valid_until: Instant,
}

/// What this replica holds now: the leader Lease and its shards. The engine asks it for the
/// fence of an app ([`crate::pipeline::Fencing`]).
pub struct Holdings {
    holder: String,
    shards: u32,
    leader: AtomicBool,
    held: Mutex<BTreeMap<u32, Hold>>,
}

impl std::fmt::Debug for Holdings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holdings")
            .field("holder", &self.holder)
            .field("leader", &self.is_leader())
            .field("shards", &self.held_shards())
            .finish()
    }
}

impl Holdings {
    /// Nothing held yet, for replica `holder` among `shards` shards.
    pub fn new(holder: &str, shards: u32) -> Holdings {
        Holdings {
            holder: holder.to_string(),
            shards: shards.max(1),
            leader: AtomicBool::new(false),
            held: Mutex::new(BTreeMap::new()),
        }
    }

    /// This replica's identity (the holder written into Leases and fences).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether this replica holds the leader Lease.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// The shards held now, with their generations.
    pub fn held_shards(&self) -> BTreeMap<u32, i64> {
        let now = Instant::now();
        lock(&self.held)
            .iter()
            .filter(|(_, h)| h.valid_until > now)
            .map(|(s, h)| (*s, h.generation))
            .collect()
    }

    /// Whether this replica runs the executions of `app` now.
    pub fn runs(&self, app: &str) -> bool {
        crate::pipeline::Fencing::fence(self, app).is_some()
    }
}

impl crate::pipeline::Fencing for Holdings {
    fn shard_of(&self, app: &str) -> u32 {
        shard_of(app, self.shards)
    }

    fn fence(&self, app: &str) -> Option<Fence> {
        let shard = shard_of(app, self.shards);
        let hold = *lock(&self.held).get(&shard)?;
        (hold.valid_until > Instant::now()).then(|| Fence {
            shard,
            holder: self.holder.clone(),
            generation: hold.generation,
        })
    }
}

/// The replica's side of the coordination: keeps its Leases, takes and gives back shards,
/// and tells the daemon what changed.
pub struct Coordinator {
    config: ReplicaConfig,
    holdings: Arc<Holdings>,
    leader: LeaseLock,
    member: LeaseLock,
    shards: Vec<LeaseLock>,
    /// The daemon's runtime: what the coordination starts there (a reconcile) runs there,
    /// while the coordination itself may run on a runtime of its own.
    main: tokio::runtime::Handle,
    /// The last reconcile request the leader saw.
    reconcile_seen: Mutex<Option<String>>,
}

/// Name of shard `shard`'s Lease.
fn shard_lease(prefix: &str, shard: u32) -> String {
    format!("{prefix}-shard-{shard}")
}

/// Name of the member Lease of `holder` (a holder id is not a valid object name).
fn member_lease(prefix: &str, holder: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(holder.as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-member-{hex}")
}

/// How many shards each of `members` replicas should hold, at most.
fn fair_share(shards: u32, members: usize) -> usize {
    let members = members.max(1);
    (shards as usize).div_ceil(members)
}

impl Coordinator {
    /// A coordinator for `holdings` (whose holder is this replica) with `config`, made on the
    /// daemon's runtime.
    pub fn new(config: ReplicaConfig, holdings: Arc<Holdings>) -> Coordinator {
        let lock_named = |name: String| {
            LeaseLock::new(
                config.client.clone(),
                &config.namespace,
                &name,
                &holdings.holder,
                config.lease_duration,
            )
        };
        let leader = lock_named(format!("{}-leader", config.prefix));
        let member = lock_named(member_lease(&config.prefix, &holdings.holder));
        let shards = (0..holdings.shards)
            .map(|s| lock_named(shard_lease(&config.prefix, s)))
            .collect();
        Coordinator {
            config,
            holdings,
            leader,
            member,
            shards,
            reconcile_seen: Mutex::new(None),
            main: tokio::runtime::Handle::current(),
        }
    }

    /// What this replica holds.
    pub fn holdings(&self) -> &Arc<Holdings> {
        &self.holdings
    }

    fn renew_every(&self) -> Duration {
        (self.config.lease_duration / 3).max(Duration::from_millis(100))
    }

    /// Keeps the Leases until the daemon stops (or is dropped), then gives them back.
    pub async fn run(self: Arc<Self>, daemon: Weak<Daemon>) {
        let mut stopped = match daemon.upgrade() {
            Some(d) => d.stopping.subscribe(),
            None => return,
        };
        loop {
            let Some(d) = daemon.upgrade() else {
                break;
            };
            if *stopped.borrow() {
                break;
            }
            self.round(&d).await;
            drop(d);
            tokio::select! {
                _ = tokio::time::sleep(self.renew_every()) => {}
                _ = stopped.changed() => {}
            }
        }
    }

    /// One round: drop holds that lapsed, renew the leader Lease and the member Lease, renew
    /// held shards, then take or give back shards towards an equal share.
    #[tracing::instrument(level = "debug", skip_all, fields(replica = %self.holdings.holder))]
    async fn round(&self, daemon: &Arc<Daemon>) {
        self.drop_lapsed(daemon);
        self.keep_leadership(daemon).await;
        if let Err(e) = self.member.acquire_or_renew().await {
            tracing::warn!(error = %e, "could not renew the member lease");
        }
        self.renew_shards(daemon).await;
        match self.survey().await {
            Ok(survey) => self.balance(daemon, &survey).await,
            Err(e) => tracing::warn!(error = %e, "could not list the leases"),
        }
        // Wake-ups can be missed (a reconnect, a full buffer): every round looks too.
        daemon.request_shard_work();
        let _main = self.main.enter();
        daemon.take_reconcile_request(&mut lock(&self.reconcile_seen));
    }

    /// Holds not renewed within the lease duration: another replica may take them now, so
    /// this one stops their work first.
    fn drop_lapsed(&self, daemon: &Arc<Daemon>) {
        let now = Instant::now();
        let lapsed: Vec<u32> = {
            let mut held = lock(&self.holdings.held);
            let lapsed: Vec<u32> = held
                .iter()
                .filter(|(_, h)| h.valid_until <= now)
                .map(|(s, _)| *s)
                .collect();
            for s in &lapsed {
                held.remove(s);
            }
            lapsed
        };
        for shard in lapsed {
            tracing::warn!(
                shard,
                "shard lease not renewed in time: stopping its executions"
            );
            daemon.stop_shard(shard, self.holdings.shards);
        }
    }

    async fn keep_leadership(&self, daemon: &Arc<Daemon>) {
        let was = self.holdings.is_leader();
        let is = match self.leader.acquire_or_renew().await {
            Ok(Held::Mine { .. }) => true,
            Ok(Held::Theirs { .. }) => false,
            Err(e) => {
                tracing::warn!(error = %e, "could not renew the leader lease");
                false
            }
        };
        self.holdings.leader.store(is, Ordering::SeqCst);
        match (was, is) {
            (false, true) => {
                tracing::info!("became the leader: following the branch and sending the outbox");
                daemon.metrics.leader.set(1);
                let _main = self.main.enter();
                daemon.became_leader();
            }
            (true, false) => {
                tracing::warn!("no longer the leader");
                daemon.metrics.leader.set(0);
            }
            _ => {}
        }
    }

    async fn renew_shards(&self, daemon: &Arc<Daemon>) {
        let held: Vec<(u32, Hold)> = lock(&self.holdings.held)
            .iter()
            .map(|(s, h)| (*s, *h))
            .collect();
        for (shard, hold) in held {
            let started = Instant::now();
            match self.shards[shard as usize].acquire_or_renew().await {
                Ok(Held::Mine { generation, .. }) if generation == hold.generation => {
                    if let Some(h) = lock(&self.holdings.held).get_mut(&shard) {
                        h.valid_until = started + self.config.lease_duration;
                    }
                }
                Ok(other) => {
                    tracing::warn!(shard, now = ?other, "lost the shard lease: stopping its executions");
                    lock(&self.holdings.held).remove(&shard);
                    daemon.stop_shard(shard, self.holdings.shards);
                }
                // Kept until its hold lapses (see `drop_lapsed`).
                Err(e) => tracing::warn!(shard, error = %e, "could not renew the shard lease"),
            }
        }
    }

    /// The live members and the shards nobody holds now, from one list of the Leases.
    async fn survey(&self) -> Result<Survey, LeaseError> {
        let api: Api<Lease> = Api::namespaced(self.config.client.clone(), &self.config.namespace);
        let leases = api
            .list(&ListParams::default())
            .await
            .map_err(|source| LeaseError::Api {
                namespace: self.config.namespace.clone(),
                name: format!("{}-*", self.config.prefix),
                source,
            })?;
        let now = k8s_openapi::jiff::Timestamp::now();
        let member_prefix = format!("{}-member-", self.config.prefix);
        let mut members = BTreeSet::new();
        let mut taken = BTreeSet::new();
        for lease in leases.items {
            let name = lease.metadata.name.clone().unwrap_or_default();
            let Some(spec) = lease.spec else { continue };
            let Some(holder) = spec.holder_identity.clone().filter(|h| !h.is_empty()) else {
                continue;
            };
            if crate::cluster::lease::expiry(&spec) <= now {
                continue;
            }
            if name.starts_with(&member_prefix) {
                members.insert(holder);
            } else if let Some(shard) =
                (0..self.holdings.shards).find(|s| shard_lease(&self.config.prefix, *s) == name)
            {
                taken.insert(shard);
            }
        }
        members.insert(self.holdings.holder.clone());
        Ok(Survey {
            members: members.len(),
            taken,
        })
    }

    /// Takes free shards while under the fair share; gives back the surplus while over it.
    async fn balance(&self, daemon: &Arc<Daemon>, survey: &Survey) {
        let share = fair_share(self.holdings.shards, survey.members);
        let mut mine = lock(&self.holdings.held).len();
        // Each replica starts looking at a different shard, so they rarely race.
        let start = shard_of(&self.holdings.holder, self.holdings.shards);
        let order = (0..self.holdings.shards).map(|i| (start + i) % self.holdings.shards);
        for shard in order {
            if mine >= share {
                break;
            }
            if survey.taken.contains(&shard) || lock(&self.holdings.held).contains_key(&shard) {
                continue;
            }
            if self.take(daemon, shard).await {
                mine += 1;
            }
        }
        while mine > share {
            let Some(shard) = lock(&self.holdings.held).keys().next_back().copied() else {
                break;
            };
            self.give_back(daemon, shard).await;
            mine -= 1;
        }
    }

    /// Takes shard `shard` when its Lease is free or expired and records the fence; then
    /// runs the shard's executions. Whether it was taken.
    async fn take(&self, daemon: &Arc<Daemon>, shard: u32) -> bool {
        let started = Instant::now();
        let generation = match self.shards[shard as usize].acquire_or_renew().await {
            Ok(Held::Mine { generation, .. }) => generation,
            Ok(Held::Theirs { .. }) => return false,
            Err(e) => {
                tracing::warn!(shard, error = %e, "could not take the shard lease");
                return false;
            }
        };
        let fence = Fence {
            shard,
            holder: self.holdings.holder.clone(),
            generation,
        };
        match daemon.store.record_fence(&fence) {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(
                    shard,
                    generation,
                    "the store has a newer hold of this shard than its lease (was the lease deleted?): not running it"
                );
                let _ = self.shards[shard as usize].release().await;
                return false;
            }
            Err(e) => {
                tracing::warn!(shard, error = %e, "could not record the shard's fence");
                let _ = self.shards[shard as usize].release().await;
                return false;
            }
        }
        lock(&self.holdings.held).insert(
            shard,
            Hold {
                generation,
                valid_until: started + self.config.lease_duration,
            },
        );
        tracing::info!(shard, generation, "took the shard");
        daemon
            .metrics
            .shards
            .set(lock(&self.holdings.held).len() as i64);
        daemon.request_shard_work();
        true
    }

    /// Stops the shard's executions, then gives its Lease back and wakes the others.
    async fn give_back(&self, daemon: &Arc<Daemon>, shard: u32) {
        lock(&self.holdings.held).remove(&shard);
        daemon.stop_shard(shard, self.holdings.shards);
        daemon
            .metrics
            .shards
            .set(lock(&self.holdings.held).len() as i64);
        if let Err(e) = self.shards[shard as usize].release().await {
            tracing::warn!(shard, error = %e, "could not give the shard lease back");
        }
        tracing::info!(shard, "gave the shard back");
        let _ = daemon
            .store
            .notify(crate::store::WAKE_EXECUTIONS, &shard.to_string());
    }

    /// Gives every Lease back (on shutdown, after the executions stopped), so the other
    /// replicas take over at once instead of after the lease duration.
    pub async fn release_all(&self) {
        let held: Vec<u32> = std::mem::take(&mut *lock(&self.holdings.held))
            .into_keys()
            .collect();
        for shard in held {
            if let Err(e) = self.shards[shard as usize].release().await {
                tracing::warn!(shard, error = %e, "could not give the shard lease back");
            }
        }
        self.holdings.leader.store(false, Ordering::SeqCst);
        for lease in [&self.leader, &self.member] {
            if let Err(e) = lease.release().await {
                tracing::warn!(error = %e, "could not give a lease back");
            }
        }
    }
}

/// What one list of the Leases says.
struct Survey {
    /// Replicas alive (this one included).
    members: usize,
    /// Shards held by someone (this replica included).
    taken: BTreeSet<u32>,
}

/// Key of the queued request for a reconcile that a replica other than the leader received
/// (a push webhook, the API): the leader reconciles when it changes.
pub const RECONCILE_REQUEST_KEY: &str = "source.reconcileRequested";

impl Daemon {
    /// Whether this process follows the branch for everyone: the only one, or the leader.
    pub fn leads(&self) -> bool {
        self.config.replicas.as_ref().is_none_or(|h| h.is_leader())
    }

    /// What this replica holds, when it is one of several.
    pub fn holdings(&self) -> Option<&Arc<Holdings>> {
        self.config.replicas.as_ref()
    }

    /// Stops at once the executions this process runs for apps of shard `shard` (of
    /// `shards`): another replica takes them over. Every transition is committed, so the
    /// successor resumes each where it was.
    pub(super) fn stop_shard(&self, shard: u32, shards: u32) {
        let mut tasks = lock(&self.tasks);
        tasks.reap();
        for running in tasks.ids.values() {
            if shard_of(&running.app, shards) == shard {
                tracing::info!(execution = %running.execution, app = %running.app, shard, "stopping: the shard is no longer held here");
                running.handle.abort();
            }
        }
    }

    /// Asks for a look at the work of this replica's shards ([`Daemon::run_shard_work`]), on
    /// its own task: the Lease renewals never wait for it.
    pub(super) fn request_shard_work(&self) {
        self.shard_work.notify_one();
    }

    /// Starts every queued or interrupted execution of the apps whose shards this replica
    /// holds and does not run yet (after taking a shard, on a wake-up, on every round).
    fn run_shard_work(self: &Arc<Self>) {
        let Some(holdings) = &self.config.replicas else {
            return;
        };
        let active = match self.store.active() {
            Ok(active) => active,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for the shards' executions");
                return;
            }
        };
        // Oldest first, so the one-running-per-app rule keeps their order; only what this
        // replica runs and does not run yet is read in full.
        for active in active {
            if !holdings.runs(&active.app) || lock(&self.tasks).runs(&active.id) {
                continue;
            }
            match self.store.execution(&active.id) {
                Ok(execution) if !execution.status.is_final() => self.spawn_execution(execution),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(execution = %active.id, error = %e, "could not read the execution")
                }
            }
        }
    }

    /// This replica just became the leader: it reads the last reconciled commit back from
    /// the store (what it followed meanwhile started no executions), delivers the outbox and
    /// reconciles.
    pub(super) fn became_leader(self: &Arc<Self>) {
        match self.store.meta(super::CURSOR_KEY) {
            Ok(Some(sha)) => {
                if let Err(e) = self.restore_cursor(&sha) {
                    tracing::warn!(commit = %sha, error = %e, "last reconciled commit not readable");
                    lock(&self.state).inputs.clear();
                }
            }
            Ok(None) => {
                let mut state = lock(&self.state);
                state.last_good = None;
                state.roots.clear();
                state.inputs.clear();
            }
            Err(e) => tracing::warn!(error = %e, "could not read the last reconciled commit"),
        }
        self.outbox.wake();
        self.request_reconcile();
    }

    /// Hands a reconcile to the leader through the store, when this replica is not it.
    /// Returns whether it did (the leader reconciles soon); `false` when this one leads.
    pub(super) fn hand_reconcile_to_leader(&self) -> bool {
        if self.leads() {
            return false;
        }
        let requested = chrono::Utc::now().to_rfc3339();
        let sent = self
            .store
            .set_meta(RECONCILE_REQUEST_KEY, &requested)
            .and_then(|()| {
                self.store
                    .notify(crate::store::WAKE_RECONCILE, self.branch())
            });
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not hand the reconcile to the leader; it polls anyway");
        }
        true
    }

    /// The leader's look at the queued reconcile request (see
    /// [`Daemon::hand_reconcile_to_leader`]).
    pub(super) fn take_reconcile_request(self: &Arc<Self>, seen: &mut Option<String>) {
        if !self.leads() {
            return;
        }
        match self.store.meta(RECONCILE_REQUEST_KEY) {
            Ok(current) if current != *seen => {
                if seen.is_some() || current.is_some() {
                    self.request_reconcile();
                }
                *seen = current;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the reconcile request"),
        }
    }
}

/// Looks at the work of this replica's shards whenever asked (requests while it looks are
/// one more look), off the async workers, until the daemon is dropped.
pub(super) async fn shard_work_loop(daemon: Weak<Daemon>, asked: Arc<tokio::sync::Notify>) {
    loop {
        asked.notified().await;
        let Some(d) = daemon.upgrade() else {
            return;
        };
        // The store calls block: on a blocking thread.
        let runtime = tokio::runtime::Handle::current();
        let _ = tokio::task::spawn_blocking(move || {
            let _entered = runtime.enter();
            d.run_shard_work();
        })
        .await;
    }
}

/// How long a wake-up waits for others of the same burst.
const WAKE_COALESCE: Duration = Duration::from_millis(100);

/// Wakes this replica on notices from the others: queued executions for its shards, and
/// reconcile requests when it leads.
pub(super) async fn listen(
    daemon: Weak<Daemon>,
    mut notices: tokio::sync::broadcast::Receiver<crate::store::Notice>,
) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let mut seen = None;
    loop {
        let first = notices.recv().await;
        // A burst (a commit queues an execution per app) is one look: take what else came
        // within a moment, then look once.
        tokio::time::sleep(WAKE_COALESCE).await;
        // `None`: some were missed, so look at everything.
        let mut burst: Vec<Option<String>> = match first {
            Ok(n) => vec![Some(n.channel)],
            Err(RecvError::Lagged(_)) => vec![None],
            Err(RecvError::Closed) => return,
        };
        loop {
            match notices.try_recv() {
                Ok(n) => burst.push(Some(n.channel)),
                Err(TryRecvError::Lagged(_)) => burst.push(None),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
        let reconcile = burst.iter().any(|c| {
            c.as_deref()
                .is_none_or(|c| c == crate::store::WAKE_RECONCILE)
        });
        let executions = burst.iter().any(|c| {
            c.as_deref()
                .is_none_or(|c| c != crate::store::WAKE_RECONCILE)
        });
        let Some(daemon) = daemon.upgrade() else {
            return;
        };
        if reconcile {
            daemon.take_reconcile_request(&mut seen);
        }
        if executions {
            daemon.request_shard_work();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_shard() {
        assert_eq!(fair_share(16, 3), 6);
        assert_eq!(fair_share(16, 1), 16);
        assert_eq!(fair_share(16, 0), 16);
        assert_eq!(fair_share(3, 5), 1);
        assert!(fair_share(16, 3) * 3 >= 16);
    }

    #[test]
    fn member_lease_names_are_object_names() {
        let name = member_lease("bowline", "host-7f9c:12:0a1b2c3d");
        assert!(name.starts_with("bowline-member-"));
        assert_eq!(name.len(), "bowline-member-".len() + 12);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_ne!(name, member_lease("bowline", "host-7f9c:12:0a1b2c3e"));
    }

    #[test]
    fn a_lapsed_hold_gives_no_fence() {
        let holdings = Holdings::new("r1", 4);
        let shard = shard_of("shop", 4);
        lock(&holdings.held).insert(
            shard,
            Hold {
                generation: 3,
                valid_until: Instant::now() + Duration::from_secs(60),
            },
        );
        let fence = crate::pipeline::Fencing::fence(&holdings, "shop").expect("held");
        assert_eq!(fence.generation, 3);
        assert_eq!(fence.holder, "r1");
        lock(&holdings.held)
            .get_mut(&shard)
            .expect("held")
            .valid_until = Instant::now();
        assert!(!holdings.runs("shop"));
        assert!(holdings.held_shards().is_empty());
    }
}
