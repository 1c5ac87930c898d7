//! The one rule about a model served by a single replica.

use super::super::{TargetReason, VariantState, VariantTarget};

/// A model served by one replica keeps a second while its load is above
/// this fraction of a replica's rate (see [`second_replica`]).
const LONE_REPLICA_LOAD: f64 = 0.5;

/// A lone replica is kept alone only while it could take a doubling of
/// its load (`load` at most [`LONE_REPLICA_LOAD`] of its rate); above
/// that, a second. A request queued in a replica is served by that
/// replica, so a load step that lands on one replica builds a backlog
/// only it can drain: at 70 % of its rate a sixfold step left about 3,000
/// requests for one replica to work off after the new replicas came, 7
/// minutes over the objective; two replicas halve the load on each and
/// the drain. Where the count is larger, one more replica buys less (a
/// fifth, not a half) and this rule asks for none. Neither does it apply
/// when the smaller count was already two or more, nor above a variant's
/// `maxReplicas`.
pub(super) fn second_replica(
    targets: &mut [VariantTarget],
    variants: &[VariantState],
    per_replica: &[f64],
    load: f64,
) {
    if targets.iter().map(|t| t.desired).sum::<u32>() != 1 {
        return;
    }
    let lone = targets.iter().position(|t| t.desired == 1);
    let Some(i) = lone else {
        return;
    };
    let (Some(variant), Some(rate)) = (variants.get(i), per_replica.get(i)) else {
        return;
    };
    if load > LONE_REPLICA_LOAD * rate && variant.max_replicas >= 2 {
        let target = &mut targets[i];
        target.desired = 2;
        target.reason = TargetReason::of_move(target.current, 2);
    }
}
