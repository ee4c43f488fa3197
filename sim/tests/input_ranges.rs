//! Every accepted input has a range, and nothing inside the ranges breaks
//! the harness: no panic, no abort, no overflow, no violation the cache did
//! not commit. Scenario ranges are documented in
//! `sim/scenarios/reference.toml`, plan-file ranges in `sim::plan_file`.
//!
//! The property tests draw scenarios within the documented ranges, extremes
//! included. Running a simulation costs simulated time, so the runs use
//! time fields up to [`RUN_MS`] (still past the harness's own end-of-run
//! slack, so that the bounds derived from long resolvers and pauses are
//! exercised); the full ranges, up to `MAX_MS`, are checked for acceptance
//! and for plan generation, where the arithmetic on them happens.

use proptest::prelude::*;
use sim::plan::{
    Fault, FaultKind, Op, OpKind, MAX_FAULTS, MAX_FAULTS_PER_KIND, MAX_HEAL_MS, MAX_STORE_ERRORS,
};
use sim::plan_file::PlanFile;
use sim::scenario::{
    KeyDist, StoreKind, MAX_CLIENTS, MAX_FAULT_RATE, MAX_KEY_SPACE, MAX_MS, MAX_NAME_LEN,
    MAX_OPS_PER_CLIENT, MIN_FAULT_MS, NAMED,
};
use sim::{run_plan, Plan, Scenario};

/// Longest time field the running property uses, simulated ms: above
/// `LAST_REQUEST_MS` (10 s), so that a resolver or a pause that long needs
/// the end-of-run bound to account for it.
const RUN_MS: u64 = 24_000;

fn cases(default: u32) -> ProptestConfig {
    match std::env::var("PROPTEST_CASES") {
        // The default config reads the variable itself.
        Ok(_) => ProptestConfig::default(),
        Err(_) => ProptestConfig::with_cases(default),
    }
}

/// A value in `lo..=hi`, with both ends drawn often.
fn edge(lo: u64, hi: u64) -> impl Strategy<Value = u64> {
    prop_oneof![Just(lo), Just(hi), lo..=hi]
}

fn prob() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0f64]
}

fn weight() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(u32::MAX), 0..100u32, any::<u32>()]
}

/// `n` weights, at least one of them non-zero.
fn weights(n: usize) -> impl Strategy<Value = Vec<u32>> {
    (prop::collection::vec(weight(), n), 0..n).prop_map(|(mut w, i)| {
        if w.iter().all(|w| *w == 0) {
            w[i] = 1;
        }
        w
    })
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("x".repeat(MAX_NAME_LEN)),
        "[A-Za-z0-9_-]{1,64}",
    ]
}

/// Upper bounds of a drawn scenario.
struct Bounds {
    clients: u64,
    ops: u64,
    keys: u64,
    time: u64,
    rate: f64,
}

/// Scenarios within the documented ranges, capped by `b`.
fn scenario(b: Bounds) -> impl Strategy<Value = Scenario> {
    let sizes = (
        name(),
        edge(1, b.clients),
        edge(1, b.ops),
        edge(1, b.keys),
        prop_oneof![Just(KeyDist::Zipf), Just(KeyDist::Uniform)],
        edge(0, b.time),
        prop_oneof![4 => Just(StoreKind::Memory), 1 => Just(StoreKind::Sqlite)],
    );
    let mixes = (
        weights(6),
        weights(5),
        edge(1, b.time),
        prob(),
        prop::collection::vec(prob(), 11),
        edge(1, MAX_MS).prop_flat_map(|max| (edge(1, max), Just(max))),
    );
    let faults = (
        prob(),
        prop_oneof![Just(0.0), Just(b.rate), 0.0..=b.rate],
        prop::collection::vec(any::<bool>(), 8),
        edge(MIN_FAULT_MS, b.time.max(MIN_FAULT_MS)),
    );
    (sizes, mixes, faults).prop_map(|(sizes, mixes, faults)| {
        let (name, clients, ops, keys, key_dist, max_gap_ms, store) = sizes;
        let (ow, rw, max_dur, deaf, p, (ttl_min, ttl_max)) = mixes;
        let (enable, rate, kinds, fault_ms) = faults;
        let mut s = Scenario {
            name,
            clients: clients as usize,
            ops_per_client: ops as usize,
            key_space: keys,
            key_dist,
            max_gap_ms,
            store,
            ..Scenario::default()
        };
        let o = &mut s.ops;
        [
            o.call,
            o.nested,
            o.arbitrary,
            o.change,
            o.close,
            o.reconnect,
        ] = [ow[0], ow[1], ow[2], ow[3], ow[4], ow[5]];
        let r = &mut s.resolver;
        [r.value, r.no_value, r.error, r.panic, r.hang] = [rw[0], rw[1], rw[2], rw[3], rw[4]];
        r.max_duration_ms = max_dur;
        r.deaf = deaf;
        let c = &mut s.calls;
        [
            c.concurrency_key,
            c.do_not_cache,
            c.ttl_key,
            c.safe_to_persist,
            c.shared_content,
            c.cancel,
            c.retry,
            c.result_id,
            c.pipeline,
            c.cancel_init,
            c.cross,
        ] = [
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10],
        ];
        c.ttl_min_ms = ttl_min;
        c.ttl_max_ms = ttl_max;
        let f = &mut s.faults;
        f.enable = enable;
        f.rate = rate;
        [
            f.partition,
            f.latency,
            f.drop_connection,
            f.client_crash,
            f.engine_restart,
            f.store_error,
            f.store_slow,
            f.clock_jump,
        ] = [
            kinds[0], kinds[1], kinds[2], kinds[3], kinds[4], kinds[5], kinds[6], kinds[7],
        ];
        f.max_duration_ms = fault_ms;
        s
    })
}

/// A generated plan is within the plan-file ranges and its arithmetic did
/// not wrap.
fn check_generated(plan: &Plan, s: &Scenario) {
    plan.check(s.clients, s.key_space)
        .unwrap_or_else(|e| panic!("generated plan out of range: {e}"));
    assert!(plan.heal_at_ms >= 1000 && plan.heal_at_ms <= MAX_HEAL_MS);
    assert!(plan.faults.len() <= MAX_FAULTS);
    let longest_client: u64 = plan
        .clients
        .iter()
        .map(|ops| ops.iter().map(|o| o.gap_ms).sum::<u64>())
        .max()
        .unwrap_or(0);
    // The healing time covers every client's pauses (no wrapped horizon).
    assert!(plan.heal_at_ms >= longest_client);
}

proptest! {
    #![proptest_config(cases(24))]

    /// Scenarios within the documented ranges (times up to RUN_MS) are
    /// accepted, and every seed's plan runs with no panic and no violation.
    #[test]
    fn in_range_scenarios_run_clean(
        s in scenario(Bounds { clients: 4, ops: 6, keys: 4, time: RUN_MS, rate: 3.0 }),
        seed in any::<u64>(),
    ) {
        s.validate().unwrap();
        let plan = Plan::generate(seed, &s);
        check_generated(&plan, &s);
        let o = run_plan(plan, &s, None);
        prop_assert!(o.passed(), "seed {seed}: {:?}\nscenario: {s:?}", o.violations);
    }

    /// The full ranges, maxima included, are accepted; plan generation on
    /// them neither overflows nor allocates without bound, and its plans
    /// pass the plan-file checks and round-trip through a plan file.
    #[test]
    fn full_range_scenarios_are_accepted_and_generate(
        s in scenario(Bounds {
            clients: MAX_CLIENTS as u64,
            ops: 40,
            keys: MAX_KEY_SPACE,
            time: MAX_MS,
            rate: MAX_FAULT_RATE,
        }),
        seed in 0..=i64::MAX as u64,
    ) {
        s.validate().unwrap();
        // Through TOML too: what a user writes is what was validated.
        let text = toml::to_string(&s).unwrap();
        prop_assert_eq!(Scenario::parse(&text).unwrap(), s.clone());
        let plan = Plan::generate(seed, &s);
        check_generated(&plan, &s);
        // The round trip is cheap below a few thousand faults (at the
        // highest rates a long plan holds 80000, which TOML takes seconds
        // to parse in a debug build).
        if plan.faults.len() <= 2_000 {
            let file = PlanFile::new(plan, &s, None);
            let back = PlanFile::parse(&file.to_toml().unwrap()).unwrap();
            prop_assert_eq!(back, file);
        }
    }
}

/// Every field at its maximum at once: accepted, and the plan (64 clients
/// of 10000 operations, faults at the highest rate) stays in range.
#[test]
fn every_maximum_at_once_generates_a_bounded_plan() {
    let mut s = Scenario {
        name: "m".repeat(MAX_NAME_LEN),
        clients: MAX_CLIENTS,
        ops_per_client: MAX_OPS_PER_CLIENT,
        key_space: MAX_KEY_SPACE,
        max_gap_ms: MAX_MS,
        ..Scenario::default()
    };
    s.resolver.max_duration_ms = MAX_MS;
    s.calls.ttl_min_ms = MAX_MS;
    s.calls.ttl_max_ms = MAX_MS;
    s.faults.max_duration_ms = MAX_MS;
    s.faults.rate = MAX_FAULT_RATE;
    s.faults.enable = 1.0;
    s.ops.call = u32::MAX;
    s.ops.nested = u32::MAX;
    s.validate().unwrap();
    let plan = Plan::generate(7, &s);
    check_generated(&plan, &s);
    // Every kind hit the cap: the rate asks for ~10^12 faults of each.
    assert_eq!(plan.faults.len() as u64, 8 * MAX_FAULTS_PER_KIND);
    assert!(plan.heal_at_ms > 1_000_000_000_000, "{}", plan.heal_at_ms);
}

/// A plan whose resolvers and pauses outlast the harness's fixed slack
/// (`LAST_REQUEST_MS`, `DRAIN_MS`) after healing: deaf resolvers run to
/// their end, and a client pauses long after healing. Neither is a leak or
/// a hang (no false INV-1 / INV-11).
#[test]
fn long_resolvers_and_pauses_after_healing_are_not_violations() {
    let mut s = Scenario {
        name: "long".into(),
        clients: 2,
        ops_per_client: 3,
        key_space: 2,
        ..Scenario::default()
    };
    s.faults.rate = 0.0;
    s.validate().unwrap();
    let mut plan = Plan::generate(1, &s);
    let call = |gap_ms, dur_ms, deaf| Op {
        gap_ms,
        kind: OpKind::Call {
            key: 0,
            ckey: true,
            dnc: false,
            behave: sim::plan::Behave {
                outcome: sim::plan::Outcome::Value,
                dur_ms,
                safe: true,
                deaf,
            },
            nested: Some(1),
            cancel_ms: None,
            retry: false,
            pipelined: false,
            nests: Vec::new(),
        },
    };
    plan.heal_at_ms = 1;
    plan.faults.clear();
    // Client 0: a deaf resolver of 60 s (its client gives up after 4 s).
    plan.clients[0] = vec![call(0, 60_000, true)];
    // Client 1: a 45 s pause after healing, then a quick call.
    plan.clients[1] = vec![call(100, 50, false), call(45_000, 50, false)];
    plan.check(s.clients, s.key_space).unwrap();
    let o = run_plan(plan, &s, None);
    assert!(o.passed(), "{:?}\n{}", o.violations, o.trace.join("\n"));
    assert!(o.sim_ms >= 60_000, "ended at {} ms", o.sim_ms);
}

// --- Bad inputs: each error names its field ---------------------------------

fn scenario_err(toml: &str) -> String {
    Scenario::parse(toml).expect_err(toml)
}

#[test]
fn out_of_range_scenario_fields_are_named() {
    for (text, field) in [
        ("max_gap_ms = 1000000000000", "`max_gap_ms`"),
        ("max_gap_ms = 1000000001", "`max_gap_ms`"),
        (
            "[resolver]\nmax_duration_ms = 1000000000000",
            "`[resolver] max_duration_ms`",
        ),
        (
            "[resolver]\nmax_duration_ms = 4611686018427387904",
            "`[resolver] max_duration_ms`",
        ),
        (
            "[resolver]\nmax_duration_ms = 0",
            "`[resolver] max_duration_ms`",
        ),
        (
            "[calls]\nttl_min_ms = 9223372036854775806\nttl_max_ms = 9223372036854775807",
            "`[calls] ttl_max_ms`",
        ),
        ("[calls]\nttl_min_ms = 3000", "`[calls] ttl_min_ms`"),
        ("[faults]\nrate = nan", "`[faults] rate`"),
        ("[faults]\nrate = -3.0", "`[faults] rate`"),
        ("[faults]\nrate = inf", "`[faults] rate`"),
        ("[faults]\nrate = 100.5", "`[faults] rate`"),
        ("[faults]\nenable = nan", "`[faults] enable`"),
        (
            "[faults]\nmax_duration_ms = 10",
            "`[faults] max_duration_ms`",
        ),
        ("[resolver]\ndeaf = -0.1", "`[resolver] deaf`"),
        ("[calls]\ncancel = 2.0", "`[calls] cancel`"),
        ("ops_per_client = 0", "`ops_per_client`"),
        ("ops_per_client = 10001", "`ops_per_client`"),
        ("clients = 0", "`clients`"),
        ("clients = 65", "`clients`"),
        ("key_space = 1001", "`key_space`"),
        ("name = \"\"", "`name`"),
        ("name = \"../escaped\"", "`name`"),
        ("name = \"a b\"", "`name`"),
        (
            "[ops]\ncall = 0\nnested = 0\narbitrary = 0\nchange = 0\nclose = 0\nreconnect = 0",
            "`[ops]`",
        ),
        (
            "[resolver]\nvalue = 0\nno_value = 0\nerror = 0\npanic = 0\nhang = 0",
            "`[resolver]`",
        ),
    ] {
        let e = scenario_err(text);
        assert!(e.contains(field), "{text:?}: {e}");
    }
    let long = format!("name = \"{}\"", "x".repeat(MAX_NAME_LEN + 1));
    assert!(scenario_err(&long).contains("`name`"));
    // The range is in the message.
    let e = scenario_err("[resolver]\nmax_duration_ms = 4611686018427387904");
    assert!(e.contains("1..=1000000000"), "{e}");
}

#[test]
fn weights_sum_without_wrapping() {
    // 4294967295 + 1 wrapped a u32 sum to 0 ("needs a non-zero weight").
    let s = Scenario::parse(
        "[ops]\ncall = 4294967295\nnested = 1\narbitrary = 0\nchange = 0\nclose = 0\nreconnect = 0",
    )
    .unwrap();
    let plan = Plan::generate(3, &s);
    assert!(plan
        .clients
        .iter()
        .flatten()
        .all(|op| matches!(op.kind, OpKind::Call { .. })));
}

#[test]
fn boundary_values_are_accepted() {
    for text in [
        "max_gap_ms = 1000000000",
        "max_gap_ms = 0",
        "ops_per_client = 1",
        "ops_per_client = 10000",
        "[resolver]\nmax_duration_ms = 1000000000",
        "[calls]\nttl_min_ms = 1000000000\nttl_max_ms = 1000000000",
        "[faults]\nrate = 100.0",
        "[faults]\nrate = 0.0",
        "[faults]\nmax_duration_ms = 50",
        "name = \"Az09_-\"",
    ] {
        Scenario::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    }
}

fn write_tmp(dir: &tempfile::TempDir, file: &str, text: &str) -> String {
    let path = dir.path().join(file);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn scenario_files_must_set_something_and_name_themselves() {
    let dir = tempfile::tempdir().unwrap();
    for text in ["", "\n# only a comment\n"] {
        let path = write_tmp(&dir, "empty.toml", text);
        let e = Scenario::load(Some(&path)).unwrap_err();
        assert!(e.starts_with(&format!("empty scenario file {path}")), "{e}");
    }
    let path = write_tmp(&dir, "anon.toml", "clients = 2\n");
    let e = Scenario::load(Some(&path)).unwrap_err();
    assert!(e.contains("`name`") && e.contains(&path), "{e}");
    let path = write_tmp(&dir, "ok.toml", "name = \"mine\"\nclients = 2\n");
    let s = Scenario::load(Some(&path)).unwrap();
    assert_eq!((s.name.as_str(), s.clients), ("mine", 2));
    let path = write_tmp(
        &dir,
        "bad.toml",
        "name = \"mine\"\n[calls]\nttl_max_ms = 0\n",
    );
    let e = Scenario::load(Some(&path)).unwrap_err();
    assert!(
        e.contains(&path) && e.contains("`[calls] ttl_max_ms`"),
        "{e}"
    );
}

#[test]
fn an_unknown_scenario_lists_the_named_ones() {
    let e = Scenario::load(Some("nope")).unwrap_err();
    assert!(e.contains("\"nope\""), "{e}");
    for name in NAMED {
        assert!(e.contains(name), "{e}");
    }
}

// --- Plan files ---------------------------------------------------------------

fn small() -> (Plan, Scenario) {
    let s = Scenario {
        name: "small".into(),
        clients: 2,
        ops_per_client: 4,
        key_space: 3,
        ..Scenario::default()
    };
    (Plan::generate(5, &s), s)
}

/// The error of the plan file for `plan` (changed by `edit`) under `s`.
fn plan_err(edit: impl FnOnce(&mut PlanFile)) -> String {
    let (plan, s) = small();
    let mut file = PlanFile::new(plan, &s, None);
    edit(&mut file);
    PlanFile::parse(&file.to_toml().unwrap()).expect_err("an out-of-range plan file")
}

fn fault(kind: FaultKind, arg: i64) -> Fault {
    Fault {
        at_ms: 10,
        kind,
        client: 0,
        arg,
    }
}

#[test]
fn out_of_range_plan_fields_are_named() {
    let call_gap = plan_err(|f| f.plan.clients[0][0].gap_ms = i64::MAX as u64);
    assert!(
        call_gap.contains("`plan.clients[0].ops[0].gap_ms`"),
        "{call_gap}"
    );
    assert!(call_gap.contains("0..=1000000000"), "{call_gap}");

    let e = plan_err(|f| f.plan.heal_at_ms = 0);
    assert!(e.contains("`plan.heal_at_ms`"), "{e}");
    let e = plan_err(|f| f.plan.heal_at_ms = MAX_HEAL_MS + 1);
    assert!(e.contains("`plan.heal_at_ms`"), "{e}");

    let e = plan_err(|f| f.plan.faults = vec![fault(FaultKind::Partition, -50)]);
    assert!(
        e.contains("`plan.faults[0].arg`") && e.contains("partition"),
        "{e}"
    );
    let e = plan_err(|f| f.plan.faults = vec![fault(FaultKind::Latency, 0)]);
    assert!(e.contains("`plan.faults[0].arg`"), "{e}");
    let e = plan_err(|f| f.plan.faults = vec![fault(FaultKind::StoreError, MAX_STORE_ERRORS + 1)]);
    assert!(e.contains("`plan.faults[0].arg`"), "{e}");
    let e = plan_err(|f| f.plan.faults = vec![fault(FaultKind::ClockJump, -(MAX_MS as i64) - 1)]);
    assert!(e.contains("`plan.faults[0].arg`"), "{e}");
    let e = plan_err(|f| {
        f.plan.faults = vec![Fault {
            at_ms: MAX_HEAL_MS + 1,
            ..fault(FaultKind::DropConnection, 0)
        }]
    });
    assert!(e.contains("`plan.faults[0].at_ms`"), "{e}");

    let e = plan_err(|f| {
        f.plan.swarm.enabled.insert(FaultKind::Latency, -3.0);
    });
    assert!(e.contains("`plan.swarm.enabled.latency`"), "{e}");
    let e = plan_err(|f| {
        f.plan.swarm.enabled.insert(FaultKind::Latency, f64::NAN);
    });
    assert!(e.contains("`plan.swarm.enabled.latency`"), "{e}");

    let e = plan_err(|f| f.plan.keys[1].ttl_ms = MAX_MS + 1);
    assert!(e.contains("`plan.keys[1].ttl_ms`"), "{e}");
    let e = plan_err(|f| f.plan.keys[1].result_key = Some(3));
    assert!(e.contains("`plan.keys[1].result_key`"), "{e}");
    let e = plan_err(|f| f.plan.keys[1].result_key = Some(1));
    assert!(e.contains("`plan.keys[1].result_key`"), "{e}");

    let e = plan_err(|f| {
        f.plan.clients[1].push(Op {
            gap_ms: 1,
            kind: OpKind::Arbitrary {
                key: 3,
                change: false,
                behave: sim::plan::Behave {
                    outcome: sim::plan::Outcome::Value,
                    dur_ms: 1,
                    safe: false,
                    deaf: false,
                },
                cancel_ms: None,
            },
        })
    });
    assert!(
        e.contains("`plan.clients[1].ops[4].kind.arbitrary.key`"),
        "{e}"
    );

    // The scenario inside a plan file is checked with its full path.
    let e = plan_err(|f| f.scenario.faults.rate = f64::NAN);
    assert!(e.contains("`[scenario.faults] rate`"), "{e}");
    let e = plan_err(|f| f.scenario.name = "../escaped".into());
    assert!(e.contains("`[scenario] name`"), "{e}");
}

#[test]
fn boundary_plan_values_are_accepted() {
    let (plan, s) = small();
    let mut file = PlanFile::new(plan, &s, None);
    file.plan.heal_at_ms = MAX_HEAL_MS;
    file.plan.clients[0][0].gap_ms = MAX_MS;
    file.plan.faults = vec![
        fault(FaultKind::ClockJump, -(MAX_MS as i64)),
        fault(FaultKind::ClockJump, MAX_MS as i64),
        fault(FaultKind::StoreError, MAX_STORE_ERRORS),
        fault(FaultKind::Partition, MAX_MS as i64),
        fault(FaultKind::EngineRestart, 0),
    ];
    let back = PlanFile::parse(&file.to_toml().unwrap()).unwrap();
    assert_eq!(back, file);
}

#[test]
fn plan_files_have_one_key_fault_and_operation_per_line() {
    let (plan, s) = small();
    let text = PlanFile::new(plan.clone(), &s, Some("INV-1"))
        .to_toml()
        .unwrap();
    let ops: usize = plan.clients.iter().map(Vec::len).sum();
    assert!(
        ops > 0 && !plan.faults.is_empty(),
        "a plan with ops and faults"
    );
    let op_lines = text.lines().filter(|l| l.starts_with("    { gap_ms = "));
    assert_eq!(op_lines.count(), ops);
    assert!(text.lines().all(|l| l.matches("gap_ms").count() <= 1));
    assert!(text.lines().all(|l| l.matches("at_ms").count() <= 1));
    assert!(text.lines().all(|l| l.matches("ttl_ms").count() <= 1));
    assert_eq!(text.matches("[[plan.clients]]").count(), s.clients);

    // A typo in one operation is reported at that operation's line.
    let bad_line = text
        .lines()
        .position(|l| l.starts_with("    { gap_ms = "))
        .unwrap();
    let broken: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == bad_line {
                l.replacen("gap_ms = ", "gap_ms = -", 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    let e = PlanFile::parse(&broken.join("\n")).unwrap_err();
    assert!(e.contains(&format!("line {}", bad_line + 1)), "{e}");

    // A client table out of order is named.
    let swapped = text.replacen("client = 0\n", "client = 1\n", 1);
    let e = PlanFile::parse(&swapped).unwrap_err();
    assert!(e.contains("`plan.clients[0].client`"), "{e}");
}

#[test]
fn format_1_plan_files_still_load() {
    let (plan, s) = small();
    let file = PlanFile::new(plan, &s, None);
    // Format 1 wrote `plan.clients` as one nested array.
    let mut v = toml::Value::try_from(&file).unwrap();
    let t = v.as_table_mut().unwrap();
    t.insert("format".into(), toml::Value::Integer(1));
    let p = t.get_mut("plan").unwrap().as_table_mut().unwrap();
    let nested: Vec<toml::Value> = file
        .plan
        .clients
        .iter()
        .map(|ops| toml::Value::try_from(ops).unwrap())
        .collect();
    p.insert("clients".into(), toml::Value::Array(nested));
    let text = toml::to_string(&v).unwrap();
    assert!(!text.contains("[[plan.clients]]"), "{text}");
    let back = PlanFile::parse(&text).unwrap();
    assert_eq!(back.plan, file.plan);

    let e = PlanFile::parse(&text.replace("format = 1", "format = 3")).unwrap_err();
    assert!(e.contains("`format`") && e.contains("1 or 2"), "{e}");
}
