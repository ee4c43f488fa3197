//! A deterministic randomized run of the state machine against a small shadow
//! model: after every operation, `check_invariants()` (INV-3, INV-10, C-11a),
//! `check_refcounts(shadow)` (INV-2), and every release hook ran at most once,
//! and exactly once iff its entry is gone (INV-10). At the end everything is
//! settled and INV-1 must hold.

mod common;

use std::collections::BTreeMap;

use cache_core::id::CallId;
use cache_core::machine::{
    Begin, CallRequest, Caller, ChainLink, Decision, EntryId, Handle, Left, Namespace,
    PendingRelease, Resolved, RunMode, SessionId, WaiterId,
};
use cache_core::CallError;
use common::*;

/// A 64-bit LCG (Knuth's MMIX constants): deterministic, no dependency.
struct Lcg(u64);

impl Lcg {
    fn new(seed: u64) -> Self {
        Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Who a waiter is: a top-level caller (with its session, if any) or a
/// resolver making a nested call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Origin {
    Top(Option<SessionId>),
    Inner(EntryId),
}

/// A resolver the model is running (in flight, or abandoned: no waiters).
struct Running {
    chain: Vec<ChainLink>,
    waiters: Vec<(WaiterId, Origin)>,
    /// Refs the resolver took from nested calls: handed in on success.
    inner: Vec<Handle>,
    mode: RunMode,
    key: String,
    conc: String,
}

impl Running {
    fn arbitrary(&self) -> bool {
        self.mode == RunMode::Arbitrary
    }
    fn abandoned(&self) -> bool {
        self.waiters.is_empty()
    }
}

/// A handle the model holds; `session` is set when the session owns it.
struct Held {
    handle: Handle,
    session: Option<SessionId>,
}

/// Paths seen, so the run proves it covered them.
#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    hits: usize,
    joins: usize,
    runs: usize,
    recursive: usize,
    blocked: usize,
    duplicates: usize,
    closed_during: usize,
    rejected_nested: usize,
    cancels: usize,
    abandoned_settled: usize,
    errors: usize,
    nested: usize,
    stale_releases: usize,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.hits += o.hits;
        self.joins += o.joins;
        self.runs += o.runs;
        self.recursive += o.recursive;
        self.blocked += o.blocked;
        self.duplicates += o.duplicates;
        self.closed_during += o.closed_during;
        self.rejected_nested += o.rejected_nested;
        self.cancels += o.cancels;
        self.abandoned_settled += o.abandoned_settled;
        self.errors += o.errors;
        self.nested += o.nested;
        self.stale_releases += o.stale_releases;
    }
}

struct Model {
    seed: u64,
    step: usize,
    op: &'static str,
    cache: Cache,
    instance: u64,
    change: bool,
    rng: Lcg,
    ids: Vec<CallId>,
    held: Vec<Held>,
    /// Handles whose session released them: releasing them is an error.
    stale: Vec<Handle>,
    /// (entry the ref is on, parent entry owning it) (C-11).
    nested: Vec<(EntryId, EntryId)>,
    running: BTreeMap<EntryId, Running>,
    /// Value of every successful result, by entry.
    values: BTreeMap<EntryId, Option<u32>>,
    open: Vec<SessionId>,
    closed: Vec<SessionId>,
    hooks: Vec<(HookCounter, EntryId)>,
    stats: Stats,
}

impl Model {
    fn new(seed: u64) -> Self {
        let instance = 7;
        let change = seed % 2 == 1;
        let cache = if change {
            Cache::new_change_cache(instance)
        } else {
            Cache::new(instance)
        };
        Model {
            seed,
            step: 0,
            op: "start",
            cache,
            instance,
            change,
            rng: Lcg::new(seed),
            // Small key space: a and b share content A, so collisions abound.
            ids: vec![
                with_content(id("a"), "A"),
                with_content(id("b"), "A"),
                id("c"),
                with_content(id_n("d", 1), "D"),
            ],
            held: Vec::new(),
            stale: Vec::new(),
            nested: Vec::new(),
            running: BTreeMap::new(),
            values: BTreeMap::new(),
            open: Vec::new(),
            closed: Vec::new(),
            hooks: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn ctx(&self) -> String {
        format!(
            "seed {} step {} op {}\n{}",
            self.seed,
            self.step,
            self.op,
            self.cache.leak_report()
        )
    }

    fn run_hooks(&self, releases: Vec<PendingRelease>) {
        for r in releases {
            r.run()
                .unwrap_or_else(|e| panic!("hook failed: {e}\n{}", self.ctx()));
        }
    }

    // ---- the shadow model ----

    /// Refs per entry as the model sees them (INV-2). A nested ref counts
    /// while its parent is held; a parent nobody holds is gone, and its
    /// nested refs with it (C-11), so they are dropped for good.
    fn shadow(&mut self) -> BTreeMap<EntryId, u32> {
        loop {
            let mut counts: BTreeMap<EntryId, u32> = BTreeMap::new();
            let base = self
                .held
                .iter()
                .map(|h| h.handle.entry())
                .chain(
                    self.running
                        .values()
                        .flat_map(|r| r.inner.iter().map(|h| h.entry())),
                )
                .chain(self.nested.iter().map(|(on, _)| *on));
            for e in base {
                *counts.entry(e).or_default() += 1;
            }
            let before = self.nested.len();
            self.nested
                .retain(|(_, parent)| counts.get(parent).copied().unwrap_or(0) > 0);
            if self.nested.len() == before {
                return counts;
            }
        }
    }

    fn check(&mut self) {
        if let Err(v) = self.cache.check_invariants() {
            panic!("{v}\n{}", self.ctx());
        }
        let shadow = self.shadow();
        if let Err(v) = self.cache.check_refcounts(&shadow) {
            panic!("{v}\n{}", self.ctx());
        }
        for (counter, entry) in &self.hooks {
            let runs = counter.runs();
            let want = usize::from(!self.cache.contains(*entry));
            assert_eq!(
                runs,
                want,
                "hook of {entry} ran {runs} times, entry alive: {}\n{}",
                want == 0,
                self.ctx()
            );
        }
        for (e, r) in &self.running {
            assert!(
                self.cache.contains(*e),
                "running {e} is gone\n{}",
                self.ctx()
            );
            assert_eq!(
                self.cache.waiters(*e),
                r.waiters.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
                "waiters of {e}\n{}",
                self.ctx()
            );
        }
    }

    /// Whether `from`'s resolver, through the model's wait edges, waits on
    /// `to` (C-4b). An edge P → R exists while R has a waiter from inside P.
    fn reaches(&self, from: EntryId, to: EntryId) -> bool {
        let mut stack = vec![from];
        let mut seen = Vec::new();
        while let Some(e) = stack.pop() {
            if e == to {
                return true;
            }
            if seen.contains(&e) {
                continue;
            }
            seen.push(e);
            for (r, run) in &self.running {
                if run.waiters.iter().any(|(_, o)| *o == Origin::Inner(e)) {
                    stack.push(*r);
                }
            }
        }
        false
    }

    /// The in-flight call a request would join, if any.
    fn joinable(&self, key: &str, conc: &str, arbitrary: bool) -> Option<EntryId> {
        self.running
            .iter()
            .find(|(_, r)| {
                !r.abandoned()
                    && r.key == key
                    && if arbitrary {
                        r.arbitrary()
                    } else {
                        r.mode == RunMode::Cached && !conc.is_empty() && r.conc == conc
                    }
            })
            .map(|(e, _)| *e)
    }

    fn route(&mut self, origin: Origin, handle: Handle, session_owned: bool) {
        match origin {
            Origin::Top(session) => self.held.push(Held {
                handle,
                session: if session_owned { session } else { None },
            }),
            Origin::Inner(parent) => match self.running.get_mut(&parent) {
                Some(r) => r.inner.push(handle),
                None => self.held.push(Held {
                    handle,
                    session: None,
                }),
            },
        }
    }

    // ---- operations ----

    fn pick_caller(&mut self) -> (Caller, Origin) {
        if !self.running.is_empty() && self.rng.chance(30) {
            let i = self.rng.below(self.running.len());
            let (e, r) = self.running.iter().nth(i).unwrap();
            let caller = Caller {
                session: None,
                chain: r.chain.clone(),
                inside: Some((self.instance, *e)),
            };
            return (caller, Origin::Inner(*e));
        }
        let roll = self.rng.below(100);
        let session = if roll < 60 && !self.open.is_empty() {
            Some(self.open[self.rng.below(self.open.len())])
        } else if roll < 68 && !self.closed.is_empty() {
            Some(self.closed[self.rng.below(self.closed.len())])
        } else {
            None
        };
        let caller = Caller {
            session,
            ..Caller::default()
        };
        (caller, Origin::Top(session))
    }

    fn begin(&mut self, arbitrary: bool) {
        let (caller, origin) = self.pick_caller();
        let (key, conc, dnc, b) = if arbitrary {
            let key = ["x", "y"][self.rng.below(2)].to_string();
            let b = self.cache.begin_arbitrary(&caller, &key);
            (key, String::new(), false, b)
        } else {
            let id = self.ids[self.rng.below(self.ids.len())].clone();
            let conc = ["", "c1", "c2"][self.rng.below(3)].to_string();
            let dnc = self.rng.chance(8);
            let key = id.call_key();
            let req = CallRequest::new(id)
                .concurrency_key(conc.clone())
                .do_not_cache(dnc);
            (key, conc, dnc, self.cache.begin_call(&caller, req))
        };
        self.apply_begin(b, &caller, origin, key, conc, dnc, arbitrary);
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_begin(
        &mut self,
        b: Begin<u32>,
        caller: &Caller,
        origin: Origin,
        key: String,
        conc: String,
        dnc: bool,
        arbitrary: bool,
    ) {
        let closed_session = matches!(origin, Origin::Top(Some(s)) if !self.open.contains(&s));
        let namespace = if arbitrary {
            Namespace::Arbitrary
        } else {
            Namespace::Call
        };
        let in_chain = caller
            .chain
            .iter()
            .any(|l| l.instance == self.instance && l.namespace == namespace && l.key == key);
        if in_chain {
            assert!(
                matches!(b.outcome, Err(CallError::Recursive { .. })),
                "C-4: {:?}\n{}",
                b.outcome,
                self.ctx()
            );
        }
        match b.outcome {
            Err(CallError::SessionClosed) => assert!(closed_session, "{}", self.ctx()),
            Err(CallError::Recursive { .. }) => {
                self.stats.recursive += 1;
                let Origin::Inner(parent) = origin else {
                    panic!("top-level call refused as recursive\n{}", self.ctx());
                };
                let cycle = !dnc
                    && self
                        .joinable(&key, &conc, arbitrary)
                        .is_some_and(|e| self.reaches(e, parent));
                assert!(in_chain || cycle, "recursion without cause\n{}", self.ctx());
            }
            Err(e) => panic!("unexpected error {e}\n{}", self.ctx()),
            Ok(_) if closed_session => panic!("S-2: closed session served\n{}", self.ctx()),
            Ok(Decision::Hit(served)) => {
                self.stats.hits += 1;
                assert!(served.hit && !served.detached);
                assert_eq!(served.session_owned, matches!(origin, Origin::Top(Some(_))));
                let want = self.values.get(&served.handle.entry());
                assert_eq!(Some(&served.value), want, "hit value\n{}", self.ctx());
                self.route(origin, served.handle, served.session_owned);
            }
            Ok(Decision::Wait { entry, waiter }) => {
                self.stats.joins += 1;
                assert!(!dnc, "C-2: do-not-cache never joins");
                let want = self.joinable(&key, &conc, arbitrary);
                assert_eq!(want, Some(entry), "joined the wrong call\n{}", self.ctx());
                self.running
                    .get_mut(&entry)
                    .unwrap()
                    .waiters
                    .push((waiter, origin));
            }
            Ok(Decision::Run(order)) => {
                self.stats.runs += 1;
                // INV-4 / K-5: never two resolvers for one deduplicated key.
                if order.mode == RunMode::Cached || order.mode == RunMode::Arbitrary {
                    assert_eq!(
                        self.joinable(&key, &conc, arbitrary),
                        None,
                        "INV-4\n{}",
                        self.ctx()
                    );
                }
                if arbitrary && self.change {
                    assert!(
                        !self.running.values().any(|r| r.arbitrary() && r.key == key),
                        "K-5: two inits of {key} overlap\n{}",
                        self.ctx()
                    );
                }
                assert_eq!(order.mode == RunMode::DoNotCache, dnc);
                self.running.insert(
                    order.entry,
                    Running {
                        chain: order.chain,
                        waiters: vec![(order.waiter, origin)],
                        inner: Vec::new(),
                        mode: order.mode,
                        key,
                        conc,
                    },
                );
            }
            Ok(Decision::Blocked { entry }) => {
                self.stats.blocked += 1;
                let r = &self.running[&entry];
                assert!(
                    self.change && r.arbitrary() && r.abandoned() && r.key == key,
                    "{}",
                    self.ctx()
                );
            }
        }
    }

    fn complete(&mut self, entry: EntryId, force_success: bool) {
        let mut r = self.running.remove(&entry).unwrap();
        let roll = if force_success {
            self.rng.below(75)
        } else {
            self.rng.below(100)
        };
        let counter = HookCounter::new();
        let v = self.rng.next() as u32 % 1000;
        let mut outcome = match roll {
            0..60 => Ok(Resolved::value(v).with_release(counter.hook())),
            60..75 => Ok(Resolved::no_value().with_release(counter.hook())),
            75..88 => Err(CallError::Resolver("boom".into())),
            88..94 => Err(CallError::Panicked("oops".into())),
            _ => Err(CallError::Cancelled),
        };
        let value = if roll < 60 { Some(v) } else { None };
        let mut rejected = false;
        match &mut outcome {
            Ok(resolved) => {
                if !r.arbitrary() && self.rng.chance(20) {
                    resolved.id = Some(self.ids[self.rng.below(self.ids.len())].clone());
                }
                self.stats.nested += r.inner.len();
                resolved.nested = std::mem::take(&mut r.inner);
                if !self.stale.is_empty() && self.rng.chance(5) {
                    let i = self.rng.below(self.stale.len());
                    resolved.nested.push(self.stale.swap_remove(i));
                    rejected = true;
                    self.stats.rejected_nested += 1;
                } else {
                    // The result now owns these refs (C-11).
                    let on = resolved.nested.iter().map(|h| (h.entry(), entry));
                    self.nested.extend(on);
                }
                self.hooks.push((counter, entry));
            }
            Err(_) => {
                self.stats.errors += 1;
                // The resolver failed: the shell drops the refs it took.
                for h in std::mem::take(&mut r.inner) {
                    let releases = self.cache.release(h).expect("inner handle is live");
                    self.run_hooks(releases);
                }
            }
        }
        let success = outcome.is_ok() && !rejected;
        let error = outcome.as_ref().err().cloned();
        if success {
            self.values.insert(entry, value);
        }
        let done = self
            .cache
            .complete(entry, outcome)
            .unwrap_or_else(|e| panic!("complete: {e}\n{}", self.ctx()));
        self.run_hooks(done.releases);
        if r.abandoned() {
            self.stats.abandoned_settled += 1;
        }
        let served: Vec<WaiterId> = done.served.iter().map(|(w, _)| *w).collect();
        let want: Vec<WaiterId> = r.waiters.iter().map(|(w, _)| *w).collect();
        assert_eq!(served, want, "served waiters\n{}", self.ctx());
        for ((_, result), (_, origin)) in done.served.into_iter().zip(r.waiters) {
            let closed = matches!(origin, Origin::Top(Some(s)) if !self.open.contains(&s));
            match result {
                Ok(s) => {
                    assert!(success && !closed, "{}", self.ctx());
                    assert!(!s.hit && !s.content_hit);
                    assert_eq!(s.detached, r.mode == RunMode::DoNotCache);
                    assert_eq!(
                        s.session_owned,
                        matches!(origin, Origin::Top(Some(_))) && !s.detached
                    );
                    if s.handle.entry() != entry {
                        self.stats.duplicates += 1;
                        assert!(!s.detached);
                    }
                    let want = self.values.get(&s.handle.entry());
                    assert_eq!(Some(&s.value), want, "served value\n{}", self.ctx());
                    self.route(origin, s.handle, s.session_owned);
                }
                Err(CallError::ClosedDuringExecution) => {
                    self.stats.closed_during += 1;
                    assert!(success && closed, "{}", self.ctx());
                }
                Err(e) => {
                    if rejected {
                        assert!(matches!(e, CallError::Resolver(_)), "{}", self.ctx());
                    } else {
                        assert_eq!(Some(e), error, "{}", self.ctx());
                    }
                }
            }
        }
    }

    fn leave(&mut self) {
        let candidates: Vec<EntryId> = self
            .running
            .iter()
            .filter(|(_, r)| !r.waiters.is_empty())
            .map(|(e, _)| *e)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let entry = candidates[self.rng.below(candidates.len())];
        if self.rng.chance(10) {
            assert_eq!(
                self.cache.leave(entry, WaiterId(u64::MAX)),
                Left::NotWaiting
            );
            return;
        }
        let r = self.running.get_mut(&entry).unwrap();
        let i = self.rng.below(r.waiters.len());
        let (w, _) = r.waiters.remove(i);
        let want = if r.waiters.is_empty() {
            self.stats.cancels += 1;
            Left::CancelResolver
        } else {
            Left::Removed
        };
        assert_eq!(self.cache.leave(entry, w), want, "{}", self.ctx());
        assert_eq!(self.cache.leave(entry, w), Left::NotWaiting);
    }

    fn release_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let i = self.rng.below(self.held.len());
        let h = self.held.swap_remove(i);
        let releases = self
            .cache
            .release(h.handle)
            .unwrap_or_else(|e| panic!("release: {e}\n{}", self.ctx()));
        self.run_hooks(releases);
    }

    fn release_stale(&mut self) {
        if let Some(h) = self.stale.pop() {
            self.stats.stale_releases += 1;
            assert!(
                matches!(self.cache.release(h), Err(CallError::UnknownHandle(_))),
                "C-12: stale handle released\n{}",
                self.ctx()
            );
        }
    }

    fn release_inner(&mut self) {
        let with_inner: Vec<EntryId> = self
            .running
            .iter()
            .filter(|(_, r)| !r.inner.is_empty())
            .map(|(e, _)| *e)
            .collect();
        if with_inner.is_empty() {
            return;
        }
        let e = with_inner[self.rng.below(with_inner.len())];
        let h = self.running.get_mut(&e).unwrap().inner.pop().unwrap();
        let releases = self.cache.release(h).expect("inner handle is live");
        self.run_hooks(releases);
    }

    fn close(&mut self, s: SessionId) {
        let closed = self
            .cache
            .close_session(s)
            .unwrap_or_else(|e| panic!("close: {e}\n{}", self.ctx()));
        let (mine, rest): (Vec<Held>, Vec<Held>) =
            self.held.drain(..).partition(|h| h.session == Some(s));
        self.held = rest;
        assert_eq!(closed.released, mine.len(), "S-1\n{}", self.ctx());
        let in_flight = self
            .running
            .values()
            .filter(|r| r.waiters.iter().any(|(_, o)| *o == Origin::Top(Some(s))))
            .count();
        assert_eq!(closed.in_flight, in_flight, "S-1a\n{}", self.ctx());
        self.stale.extend(mine.into_iter().map(|h| h.handle));
        self.open.retain(|x| *x != s);
        self.closed.push(s);
        self.run_hooks(closed.releases);
    }

    fn random_step(&mut self) {
        let roll = self.rng.below(100);
        self.op = match roll {
            0..25 => {
                self.begin(false);
                "begin_call"
            }
            25..35 => {
                self.begin(true);
                "begin_arbitrary"
            }
            35..55 => {
                if !self.running.is_empty() {
                    let i = self.rng.below(self.running.len());
                    let e = *self.running.keys().nth(i).unwrap();
                    self.complete(e, false);
                }
                "complete"
            }
            55..65 => {
                self.leave();
                "leave"
            }
            65..84 => {
                self.release_held();
                "release"
            }
            84..87 => {
                self.release_stale();
                "release stale"
            }
            87..90 => {
                self.release_inner();
                "release inner"
            }
            90..95 => {
                if self.open.len() < 4 {
                    let s = self.cache.open_session();
                    self.open.push(s);
                }
                "open"
            }
            _ => {
                if !self.open.is_empty() {
                    let s = self.open[self.rng.below(self.open.len())];
                    self.close(s);
                }
                "close"
            }
        };
    }

    /// Closes every session, settles every resolver, releases every handle.
    fn quiesce(&mut self) {
        self.op = "quiesce";
        for s in self.open.clone() {
            self.close(s);
            self.check();
        }
        while let Some(&e) = self.running.keys().next() {
            let ok = self.rng.chance(70);
            self.complete(e, ok);
            self.check();
        }
        while let Some(h) = self.held.pop() {
            let releases = self.cache.release(h.handle).expect("held handle is live");
            self.run_hooks(releases);
            self.check();
        }
        while !self.stale.is_empty() {
            self.release_stale();
        }
        assert!(self.nested.is_empty(), "nested refs outlived their parents");
        finish(&self.cache);
        for (counter, entry) in &self.hooks {
            assert_eq!(
                counter.runs(),
                1,
                "INV-1: hook of {entry} (seed {})",
                self.seed
            );
        }
    }
}

fn run_seed(seed: u64, steps: usize) -> Stats {
    let mut m = Model::new(seed);
    for step in 0..steps {
        m.step = step;
        m.random_step();
        m.check();
    }
    m.quiesce();
    m.stats
}

#[test]
fn random_operations_keep_every_invariant() {
    let mut total = Stats::default();
    for seed in 1..=12 {
        total.add(&run_seed(seed, 2_000));
    }
    // The run must have exercised every path it claims to check.
    let t = total;
    for (name, n) in [
        ("hits", t.hits),
        ("joins", t.joins),
        ("runs", t.runs),
        ("recursive", t.recursive),
        ("blocked", t.blocked),
        ("duplicates (C-7)", t.duplicates),
        ("closed during execution (S-3)", t.closed_during),
        ("rejected nested", t.rejected_nested),
        ("cancels", t.cancels),
        ("abandoned settled (C-5a)", t.abandoned_settled),
        ("errors", t.errors),
        ("nested refs", t.nested),
        ("stale releases", t.stale_releases),
    ] {
        assert!(n > 0, "the random run never exercised {name}: {t:?}");
    }
}

#[test]
fn random_operations_are_deterministic() {
    // Same seed, same path counts: the machine has no hidden source of order.
    let a = run_seed(99, 500);
    let b = run_seed(99, 500);
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}
