//! S-5: spans per call key per session, per resolver run, `cached` only
//! when the call's resolver did not run. The judging is
//! [`cache_core::checks::telemetry::SpanCheck`], the same code the drivers
//! use; this module feeds it what the engine host saw and files what it
//! finds (reported under the rule's own id: §9 has no telemetry invariant).

use cache_core::checks::telemetry::{Answer, CallFacts, SpanViolation};

use crate::world::World;

fn file(world: &World, verdict: Result<(), SpanViolation>) {
    if let Err(v) = verdict {
        world.violate(SpanViolation::RULE, v.detail);
    }
}

/// A call starts: its number for the spans and the resolver it may run.
pub fn call_started(world: &World, facts: CallFacts) -> u64 {
    let mut sh = world.shadow();
    sh.next_call += 1;
    let call = sh.next_call;
    sh.spans.call_started(call, facts);
    call
}

/// The cache emitted a span while deciding `call`.
pub(super) fn span(world: &World, call: u64, cached: bool) {
    let verdict = world.shadow().spans.span(call, cached);
    world.count(if cached { "span-cached" } else { "span-run" });
    file(world, verdict);
}

/// `call`'s own resolver started.
pub(super) fn resolver_ran(world: &World, call: u64) {
    let verdict = world.shadow().spans.resolver_ran(call);
    file(world, verdict);
}

/// `call` answered.
pub(super) fn answered(world: &World, call: u64, answer: Answer) {
    let verdict = world.shadow().spans.call_answered(call, answer);
    file(world, verdict);
}

/// At the end: repeats were hits.
pub(super) fn finish(world: &World) {
    let (verdict, forced) = {
        let sh = world.shadow();
        (sh.spans.finish(), sh.spans.forced_retries_judged())
    };
    world.count_by("span-forced-retry", forced);
    file(world, verdict);
}
