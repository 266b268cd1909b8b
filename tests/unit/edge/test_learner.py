"""Edge learner rules without Kafka or SQLite (edge_agents/learner.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edge_agents.learner import EXPERTS, SHIFTED, EdgeLearner, EdgePolicy
from models.errors import ModelError
from models.privacy import epsilon_for, releases_within
from models.specs import get_spec
from streams.merger.rounds import Merger, MergerConfig, Update

SPEC = get_spec("fraud-linear")
NOW = 1_800_000_000_000


def events(seed: int, n: int, shift: float = 0.0) -> list[tuple[str, dict[str, float], bool]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = {"amount": float(rng.normal(3 + shift, 1)), "hour": float(rng.normal(12, 3))}
        out.append((f"s{seed}-{i}", x, bool(x["amount"] > 3.5 + shift)))
    return out


def trained(node: str = "n1", seed: int = 1, n: int = 200, **policy) -> EdgeLearner:
    learner = EdgeLearner("fraud-linear", node, EdgePolicy(**policy))
    for eid, x, y in events(seed, n):
        learner.observe(eid, x, y)
    return learner


def a_global(version: int, seed: int = 9, n: int = 300):
    other = trained("other", seed, n)
    return other.state().replica.with_provenance(node_id="global", sequence=0, base_version=version)


X = {"amount": 4.0, "hour": 11.0}


def test_without_a_global_model_every_score_is_the_local_fallback() -> None:
    learner = trained()
    scored = learner.score(X, NOW, linked=True)
    assert scored.source == "local" and scored.version == 0
    assert scored.score == pytest.approx(SPEC.score_one(learner.personal, X))


def test_a_fresh_global_is_mixed_a_stale_or_unreachable_one_falls_back() -> None:
    learner = trained(global_max_age_s=60)
    assert learner.adopt(a_global(3), 3, created_ms=NOW)
    fresh = learner.score(X, NOW + 59_000, linked=True)
    assert (fresh.source, fresh.version) == ("blend", 3)
    local_only = SPEC.score_one(learner.personal, X)
    assert fresh.score != pytest.approx(local_only)
    stale = learner.score(X, NOW + 61_000, linked=True)
    assert (stale.source, stale.score) == ("local", pytest.approx(local_only))
    cut_off = learner.score(X, NOW, linked=False)
    assert cut_off.source == "local"


def test_alpha_one_scores_with_the_global_model_itself() -> None:
    learner = trained(blend_alpha=1.0)
    g = a_global(2)
    learner.adopt(g, 2, created_ms=NOW)
    scored = learner.score(X, NOW, linked=True)
    assert scored.source == "global"
    assert scored.score == pytest.approx(SPEC.score_one(SPEC.load(g), X))


def test_older_or_equal_global_versions_are_ignored() -> None:
    learner = trained()
    assert learner.adopt(a_global(5), 5, NOW)
    assert not learner.adopt(a_global(5, seed=4), 5, NOW)
    assert not learner.adopt(a_global(4, seed=4), 4, NOW)
    assert learner.global_version == 5


def test_late_labels_join_pending_events_unknown_ones_are_counted() -> None:
    learner = EdgeLearner("fraud-linear", "n1", EdgePolicy(max_pending=2))
    for eid, x, _ in events(1, 3):
        assert not learner.observe(eid, x, None)
    assert learner.counts["expired"] == 1 and list(learner.pending) == ["s1-1", "s1-2"]
    assert learner.label("s1-2", True)
    assert not learner.label("s1-0", True)  # expired
    assert not learner.label("nobody", False)
    assert learner.counts == {"learned": 1, "expired": 1, "unknown-label": 2, "adopted": 0,
                              "held": 0}  # fmt: skip


@pytest.mark.parametrize(
    ("quantize", "deltas", "rtol"),
    [("float64", None, 1e-9), ("float32", None, 1e-6), ("float32", "float16", 1e-4)],
)
def test_increments_cover_disjoint_stretches_so_the_merger_counts_each_event_once(
    quantize: str, deltas: str | None, rtol: float
) -> None:
    """Two nodes, cuts, merges and adoptions interleaved: the global's exact
    statistics end equal to one scaler over every event of both nodes (counts
    exactly; means and variances to float64 precision, float32's for float32
    globals, and within float16 deltas' error, which does not add up)."""
    nodes = {n: EdgeLearner("fraud-linear", n, EdgePolicy()) for n in ("a", "b")}
    config = MergerConfig(strategy="fedavg", round_size=2, round_timeout_s=60, quantize=quantize,
                          deltas=deltas)  # fmt: skip
    merger = Merger(config)
    streams = {"a": events(1, 600), "b": events(2, 600, shift=0.5)}
    oracle = SPEC.new_model()
    now = 0
    for stretch in range(6):
        for name, learner in nodes.items():
            for eid, x, y in streams[name][stretch * 100 : (stretch + 1) * 100]:
                learner.observe(eid, x, y)
                SPEC.learn_one(oracle, x, y)
            increment = learner.cut()
            assert increment is not None and increment.n_samples == 100
            assert increment.sequence == stretch + 1
            assert merger.offer(Update(increment, offset=now, partition=0), now_ms=now) is None
            now += 1
        (closed,) = merger.close_due(now_ms=now)
        if stretch % 2 == 0:  # node b adopts every other global: staleness is allowed
            for learner in nodes.values():
                assert learner.adopt(closed.result.summary, closed.version, NOW)
        else:
            nodes["a"].adopt(closed.result.summary, closed.version, NOW)
    final = closed.result.summary
    truth = SPEC.summarize(oracle)
    assert final.n_samples == 1200 == truth.n_samples
    aligned = SPEC.algebra.align(final, truth.features)
    assert aligned.tensor("count").tolist() == truth.tensor("count").tolist()
    for name in ("mean", "var"):
        np.testing.assert_allclose(aligned.tensor(name), truth.tensor(name), rtol=rtol, atol=1e-12)


def test_a_delta_adoption_keeps_unsent_progress_and_drops_nothing() -> None:
    learner = trained(n=100)
    learner.cut()
    for eid, x, y in events(5, 40):
        learner.observe(eid, x, y)
    g = a_global(1, n=300)
    learner.adopt(g, 1, NOW)
    increment = learner.cut()
    assert increment.n_samples == 40  # the 40 unsent events, nothing of the global's 300
    assert learner.state().replica.n_samples == 340
    assert increment.base_version == 1


def test_nothing_learned_means_no_increment_and_no_sequence_number_used() -> None:
    learner = trained(n=10)
    assert learner.cut().sequence == 1
    assert learner.cut() is None
    learner.observe("late", X, None)  # waiting for a label: not learned
    assert learner.cut() is None
    learner.label("late", True)
    assert learner.cut().sequence == 2


def test_restore_of_a_state_continues_exactly() -> None:
    a = trained(n=150)
    a.cut()
    a.adopt(a_global(2), 2, NOW)
    for eid, x, _ in events(7, 5):
        a.observe(eid, x, None)
    b = EdgeLearner("fraud-linear", "n1", EdgePolicy())
    b.restore(a.state())
    for learner in (a, b):
        for eid, x, y in events(8, 50):
            learner.observe(eid, x, y)
        learner.label("s7-3", True)
    assert a.score(X, NOW, True) == b.score(X, NOW, True)
    ia, ib = a.cut(), b.cut()
    assert (ia.sequence, ia.n_samples) == (ib.sequence, ib.n_samples) == (2, 51)
    for name in ia.tensors:
        np.testing.assert_array_equal(ia.tensor(name), ib.tensor(name))


def test_dp_clips_the_weight_movement_and_refuses_specs_without_weights() -> None:
    clipped = trained(n=300, dp_clip=0.01, dp_noise=0.0)
    before = SPEC.algebra.learned_vector(clipped.state().replica) * 0  # baseline: a fresh model
    increment = clipped.cut()
    movement = SPEC.algebra.learned_vector(increment) - before
    assert np.linalg.norm(movement) == pytest.approx(0.01)
    noisy = trained(n=300, dp_clip=0.01, dp_noise=1.0).cut()
    assert not np.allclose(
        SPEC.algebra.learned_vector(noisy), SPEC.algebra.learned_vector(increment)
    )
    with pytest.raises(ModelError, match="no learned weights"):
        EdgeLearner("iot-gauss", "n1", EdgePolicy(dp_clip=1.0))
    with pytest.raises(ModelError, match="clipping norm"):
        EdgePolicy(dp_noise=1.0)


def test_unsupervised_specs_learn_every_event_at_once() -> None:
    learner = EdgeLearner("iot-gauss", "m1", EdgePolicy())
    assert learner.observe("e1", {"t": 1.0, "v": 2.0}, None)
    assert learner.counts["learned"] == 1 and not learner.pending
    assert not learner.label("e1", True)  # already learned; not an unknown label
    assert learner.counts["unknown-label"] == 0


def test_a_node_that_learned_nothing_yet_adopts_a_global_and_scores_with_it() -> None:
    fresh = EdgeLearner("fraud-linear", "new", EdgePolicy(blend_alpha=1.0))
    assert fresh.adopt(a_global(1), 1, NOW)  # used to fail aligning an empty feature index
    assert fresh.score(X, NOW, True).source == "global"
    assert fresh.cut() is None  # and it has nothing of its own to send
    fresh.observe("e", X, True)
    assert fresh.cut().n_samples == 1


def test_a_new_node_starts_its_personal_model_from_the_first_global() -> None:
    fresh = EdgeLearner("fraud-linear", "new", EdgePolicy())
    g = a_global(1)
    assert fresh.adopt(g, 1, NOW)
    assert SPEC.score_one(fresh.personal, X) == pytest.approx(SPEC.score_one(SPEC.load(g), X))
    fresh.observe("e", X, True)
    assert fresh.adopt(a_global(2, seed=4), 2, NOW)  # from now on it stays its own
    assert SPEC.summarize(fresh.personal).n_samples == g.n_samples + 1


def test_no_global_overwrites_the_personal_model() -> None:
    learner = trained(n=150, personal_pull=0.0)
    before = SPEC.summarize(learner.personal)
    learner.cut()
    assert learner.adopt(a_global(1), 1, NOW) and learner.adopt(a_global(2, seed=4), 2, NOW)
    after = SPEC.summarize(learner.personal)
    for name in before.tensors:
        np.testing.assert_array_equal(before.tensor(name), after.tensor(name))
    replica = learner.state().replica
    assert replica.n_samples > before.n_samples  # the replica took the globals in


def _twins(flip_site: bool, pull: float = 0.01) -> tuple[EdgeLearner, EdgeLearner, object]:
    """A site with and without Ditto's pull, fed alike: personal models learned an inverted
    concept, then g1 serves 300 scored events whose labels follow the fleet's concept (the
    global earns the pull) or, with ``flip_site``, the inverted one (it does not)."""
    twins = []
    for rate in (pull, 0.0):
        learner = EdgeLearner("fraud-linear", "site", EdgePolicy(personal_pull=rate))
        for eid, x, y in events(3, 150):
            learner.observe(eid, x, not y)
        g1 = a_global(1)
        assert learner.adopt(g1, 1, NOW)
        for eid, x, y in events(4, 300):
            learner.score(x, NOW, True, event_id=eid)
            learner.observe(eid, x, y != flip_site)
        twins.append(learner)
    return twins[0], twins[1], g1


def test_a_global_that_earned_it_pulls_the_personal_slopes_at_the_next_version() -> None:
    pulled, twin, g1 = _twins(flip_site=False)
    before = SPEC.summarize(twin.personal)
    assert pulled.adopt(a_global(2, seed=4), 2, NOW) and twin.adopt(a_global(2, seed=4), 2, NOW)
    after = SPEC.summarize(pulled.personal)
    share = 1 - (1 - 0.01) ** 300  # Ditto's proximal step, once per event learned under g1
    std_g, std_p = np.sqrt(g1.tensor("var")), np.sqrt(before.tensor("var"))
    toward = g1.tensor("weights") / std_g * std_p  # g1's raw slopes, in the site's scale
    expected = (1 - share) * before.tensor("weights") + share * toward
    np.testing.assert_allclose(after.tensor("weights"), expected)
    for name in ("intercept", "count", "mean", "var"):  # its base rate and statistics stay its own
        np.testing.assert_array_equal(before.tensor(name), after.tensor(name))
    assert pulled.adopt(a_global(3, seed=5), 3, NOW)  # nothing learned under g2: no pull
    np.testing.assert_array_equal(
        SPEC.summarize(pulled.personal).tensor("weights"), after.tensor("weights")
    )


def test_a_restart_keeps_the_evidence_for_the_pull() -> None:
    pulled, _, _ = _twins(flip_site=False)
    restarted = EdgeLearner("fraud-linear", "site", EdgePolicy(personal_pull=0.01))
    restarted.restore(pulled.state())
    for learner in (pulled, restarted):
        assert learner.adopt(a_global(2, seed=4), 2, NOW)
    np.testing.assert_array_equal(
        SPEC.summarize(restarted.personal).tensor("weights"),
        SPEC.summarize(pulled.personal).tensor("weights"),
    )


def test_a_global_the_sites_labels_found_worse_does_not_pull() -> None:
    pulled, twin, _ = _twins(flip_site=True)
    assert pulled.adopt(a_global(2, seed=4), 2, NOW) and twin.adopt(a_global(2, seed=4), 2, NOW)
    np.testing.assert_array_equal(
        SPEC.summarize(pulled.personal).tensor("weights"),
        SPEC.summarize(twin.personal).tensor("weights"),
    )


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from(["learn", "cut", "round"]),
                          st.integers(1, 30)), min_size=1, max_size=30),
       st.sampled_from([0.0, 0.02, 1e9]))  # fmt: skip
@example([("a", "learn", 20), ("a", "cut", 1), ("a", "learn", 20)], 1e9)  # held, then stops
@example([("b", "learn", 9), ("a", "round", 1), ("b", "learn", 9), ("b", "cut", 1)], 1e9)
def test_adopt_and_cut_in_any_order_count_every_event_exactly_once(ops, min_move) -> None:
    """Personal models learn every event; the global's exact statistics end equal to one
    scaler over every event of both nodes, whatever the order of learning, cuts and rounds,
    and however many increments the adaptive cadence held back (``min_move``)."""
    nodes = {n: EdgeLearner("fraud-linear", n, EdgePolicy(min_move=min_move)) for n in "ab"}
    lossless = MergerConfig(
        strategy="fedavg", round_size=2, round_timeout_s=1e9, quantize=None, deltas=None
    )
    merger = Merger(lossless)  # float32 globals: the parametrised test above
    oracle, learned = SPEC.new_model(), {"a": 0, "b": 0}
    started_from = {"a": 0, "b": 0}  # a node that adopts before learning starts from the global
    now = version = 0
    pool = {"a": iter(events(1, 10_000)), "b": iter(events(2, 10_000, shift=0.5))}

    def offer(name: str, hold: bool = True) -> None:
        nonlocal now
        increment = nodes[name].cut(hold=hold)
        if increment is not None:
            assert merger.offer(Update(increment, offset=now, partition=0), now_ms=now) is None
        now += 1

    for name, op, k in [*ops, ("a", "stop", 0), ("b", "stop", 0), ("a", "round", 0)]:
        if op == "stop":  # a node that stops sends what it held
            offer(name, hold=False)
        elif op == "learn":
            for _ in range(k):
                eid, x, y = next(pool[name])
                nodes[name].observe(eid, x, y)
                SPEC.learn_one(oracle, x, y)
                learned[name] += 1
        elif op == "cut":
            offer(name)
        else:
            for _ in range(3):  # a node's next update waits for the next round
                now += 10**12
                for closed in merger.close_due(now_ms=now):  # every open round closes
                    version = closed.version
                    for n, learner in nodes.items():
                        if learned[n] == 0 and learner.global_version == 0:
                            started_from[n] = closed.result.summary.n_samples
                        learner.adopt(closed.result.summary, version, NOW)
    for name, learner in nodes.items():
        personal = SPEC.summarize(learner.personal).n_samples
        assert personal == started_from[name] + learned[name]
    if version == 0:
        return  # nothing was ever merged
    final = merger.tiers["fraud-linear"].current
    truth = SPEC.summarize(oracle)
    assert final.n_samples == truth.n_samples == sum(learned.values())
    aligned = SPEC.algebra.align(final, truth.features)
    for name in ("count", "mean", "var"):
        np.testing.assert_allclose(aligned.tensor(name), truth.tensor(name), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shift", [False, True], ids=["two-experts", "with-shifted"])
def test_the_hybrid_tracks_the_better_expert_also_after_the_best_one_changes(shift) -> None:
    """Phase 0: labels follow the global's concept and the personal model starts from
    nothing. Phase 1: the concept flips at this site; the global stays as it was.
    The hybrid's log loss stays within the mixer's documented bound of the best
    one-switch sequence of experts (with the shifted global: ``ln 4 + m ln(3/alpha)``),
    and in phase 1 it leaves the global, and the global's shifted copy with it."""
    share = 0.01
    policy = EdgePolicy(blend_alpha=0.5, mix_share=share, shift_global=shift)
    learner = EdgeLearner("fraud-linear", "site", policy)
    fleet = trained("fleet", seed=9, n=3000)
    for eid, x, _ in events(5, 10):  # a few events of its own: no warm start from the global
        learner.observe(eid, x, bool(np.random.default_rng(len(eid)).random() < 0.5))
    learner.adopt(fleet.state().replica, 1, NOW)
    rng = np.random.default_rng(4)
    loss = {"hybrid": [], "personal": [], "global": []}
    for phase in (0, 1):
        for i in range(1000):
            x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
            y = (x["amount"] > 3.5) != bool(phase)
            personal = SPEC.score_one(learner.personal, x)
            glob = SPEC.score_one(learner._global_model, x)
            scored = learner.score(x, NOW, True, event_id=f"{phase}-{i}")
            assert scored.source == "blend"
            assert set(EXPERTS) <= dict(scored.weights).keys() <= {*EXPERTS, SHIFTED}
            assert shift or SHIFTED not in dict(scored.weights)
            experts = (("personal", personal), ("global", glob))
            for name, p in (("hybrid", scored.score), *experts):
                p = min(max(p, 1e-4), 1 - 1e-4)
                loss[name].append(-np.log(p if y else 1 - p))
            learner.observe(f"{phase}-{i}", x, y)
    total = {k: np.array(v) for k, v in loss.items()}
    best_sequence = min(
        total[a][:k].sum() + total[b][k:].sum()
        for a in EXPERTS
        for b in EXPERTS
        for k in (0, 1000, 2000)
    )
    k = 3 if shift else 2
    bound = np.log(2 * (k - 1)) + np.log(k / share) + 1998 * np.log(1 / (1 - share))
    assert total["hybrid"].sum() <= best_sequence + bound
    assert total["hybrid"][1000:].sum() < 0.25 * total["global"][1000:].sum()  # it left the global
    assert dict(scored.weights)["personal"] > 0.9 and SHIFTED not in dict(scored.weights)


def test_first_increments_come_sooner_then_every_n_learned_events() -> None:
    learner = EdgeLearner("fraud-linear", "n1", EdgePolicy())
    sizes = []
    for eid, x, y in events(3, 1000):
        learner.observe(eid, x, y)
        if learner.cut_due(200):
            sizes.append(learner.cut().n_samples)
    assert sizes == [25, 50, 100, 200, 200, 200, 200]
    cut_off = EdgeLearner("fraud-linear", "n2", EdgePolicy())
    cut_off.adopt(a_global(1), 1, NOW)  # the schedule does not depend on what was adopted
    assert not cut_off.cut_due(200)
    for eid, x, y in events(3, 25):
        cut_off.observe(eid, x, y)
    assert cut_off.cut_due(200)


def test_a_barely_moving_node_holds_its_increments_then_sends_them_all_at_once() -> None:
    import re

    learner = EdgeLearner("fraud-linear", "n1", EdgePolicy(min_move=1e9, max_hold=2))
    sent, outcomes, gaps, last = [], "", [], 0
    for i, (eid, x, y) in enumerate(events(4, 3000), start=1):
        learner.observe(eid, x, y)
        if learner.cut_due(200):
            gaps.append(i - last)
            last = i
            increment = learner.cut()
            outcomes += "H" if increment is None else "S"
            if increment is not None:
                sent.append(increment.n_samples)
    # the first one goes (no baseline yet); then at most max_hold held in a row
    assert re.fullmatch(r"S(HHS)+H{0,2}", outcomes), outcomes
    assert sum(sent) + learner.learned_since_cut == 3000  # held events travel later, all of them
    assert min(gaps) >= 25  # a held increment is looked at again only after more events
    eager = EdgeLearner("fraud-linear", "n2", EdgePolicy())
    for eid, x, y in events(4, 3000):
        eager.observe(eid, x, y)
        if eager.cut_due(200):
            eager.cut()
    assert eager.counts["held"] == 0 and eager.sequence > learner.sequence


def test_a_fast_moving_node_sends_early_once_per_global_and_a_still_one_on_schedule() -> None:
    """``max_move``: once the weights moved more than that share of the baseline's norm, the
    increment is due at the next check (every ``every // 8`` learned events) -- but at most
    once per adopted global, so a node never queues increments faster than rounds take them
    (a queue of stale full models drags FedAvg back); every event is still sent once."""
    moving = EdgeLearner("fraud-linear", "n1", EdgePolicy(max_move=1e-9))
    stuck = EdgeLearner("fraud-linear", "n3", EdgePolicy(max_move=1e-9))  # no new globals
    still = EdgeLearner("fraud-linear", "n2", EdgePolicy(max_move=1e9))
    glob = a_global(1)
    sizes: dict[str, list[int]] = {"n1": [], "n2": [], "n3": []}
    for eid, x, y in events(5, 1000):
        for learner in (moving, stuck, still):
            learner.observe(eid, x, y)
            if learner.cut_due(200):
                sizes[learner.node_id].append(learner.cut().n_samples)
                if learner is moving:  # a round closed: the next global comes back
                    moving.adopt(glob, moving.global_version + 1, NOW)
    schedule = [25, 50, 100, 200, 200, 200, 200]
    assert sizes["n2"] == schedule and sizes["n3"] == schedule  # still / nothing adopted
    assert set(sizes["n1"]) == {25}  # moved and adopted: every check sends
    assert sum(sizes["n1"]) + moving.learned_since_cut == 1000
    with pytest.raises(ModelError, match="max_move"):
        EdgePolicy(max_move=-0.1)


def test_counts_only_models_are_never_held() -> None:
    learner = EdgeLearner("iot-hst", "n1", EdgePolicy(min_move=0.9))
    rng = np.random.default_rng(0)
    for i in range(400):
        learner.observe(f"r{i}", {"s0": float(rng.normal())}, None)
    assert learner.cut() is not None and learner.counts["held"] == 0


def test_a_label_skewed_site_trusts_the_global_shifted_to_its_own_base_rate() -> None:
    """The fleet's model ranks this site's events right but at the fleet's base rate
    (labels here come at its log-odds + 2.5): the shifted global learns the offset,
    outweighs the global, and the mix loses far less than the global; a restart keeps it."""
    learner = EdgeLearner(
        "fraud-linear", "skewed", EdgePolicy(personal_pull=0.0, shift_global=True)
    )
    fleet = trained("fleet", seed=9, n=3000)
    rng = np.random.default_rng(11)
    for eid, x, _ in events(5, 20):
        learner.observe(eid, x, bool(rng.random() < 0.5))
    learner.adopt(fleet.state().replica, 1, NOW)
    glob_loss = mix_loss = 0.0
    for eid, x, _ in events(12, 1500):
        g = SPEC.score_one(learner._global_model, x)
        z = np.log(max(g, 1e-9) / max(1 - g, 1e-9))
        y = bool(rng.random() < 1 / (1 + np.exp(-(z + 2.5))))
        p = learner.score(x, NOW, True, event_id=eid).score
        glob_loss -= np.log(max(g if y else 1 - g, 1e-4))
        mix_loss -= np.log(max(p if y else 1 - p, 1e-4))
        learner.observe(eid, x, y)
    weights = learner.mixer.weights({n: 0.5 for n in (*EXPERTS, SHIFTED)})
    assert weights["shifted"] > weights["global"]
    assert learner.offset.offset == pytest.approx(2.5, abs=0.6)
    assert mix_loss < 0.8 * glob_loss
    again = EdgeLearner("fraud-linear", "skewed", EdgePolicy(shift_global=True))
    again.restore(learner.state())
    assert again.offset.state() == learner.offset.state()
    assert again.mixer.state() == learner.mixer.state()


def test_the_shifted_global_sleeps_while_the_sites_labels_distrust_the_global() -> None:
    """A global that ranks the site's events backwards (a poisoned one) must not reach the
    mix through its shifted copy -- calibrated to the site's base rate, it loses less log
    loss than the raw global and would otherwise keep weight: the copy is awake only while
    the mixer weighs the raw global at least as much as the personal model, and wakes
    again once a good global has earned that back."""
    learner = trained("gated", seed=3, n=400, personal_pull=0.0, shift_global=True)
    flipped = EdgeLearner("fraud-linear", "liar", EdgePolicy())
    for eid, x, y in events(9, 3000):
        flipped.observe(eid, x, not y)
    bad = flipped.state().replica.with_provenance(node_id="global", sequence=0, base_version=1)
    learner.adopt(bad, 1, NOW)
    awake, curvature = [], []
    for eid, x, y in events(13, 300):
        scored = learner.score(x, NOW, True, event_id=eid)
        awake.append(SHIFTED in dict(scored.weights))
        learner.observe(eid, x, y)
        curvature.append(learner.offset.curvature)
    assert awake[0] and not any(awake[40:])  # asleep within a few dozen labels, and stays so
    assert curvature[-1] > curvature[40]  # its offset kept learning while it slept
    learner.adopt(a_global(2, n=3000), 2, NOW)
    for eid, x, y in events(14, 600):
        scored = learner.score(x, NOW, True, event_id=eid)
        learner.observe(eid, x, y)
    assert SHIFTED in dict(scored.weights)  # the good global earned the fleet's trust back


# -- privacy accounting and budget (issue #25 item 4) ---------------------------------
def test_each_noisy_increment_is_one_release_and_reports_its_epsilon() -> None:
    learner = trained(n=0, dp_clip=0.5, dp_noise=2.0, dp_delta=1e-6)
    assert learner.dp_epsilon == 0.0 and learner.privacy_metrics()["dp_releases"] == 0
    for round_ in range(1, 4):
        for eid, x, y in events(round_, 60):
            learner.observe(f"{round_}-{eid}", x, y)
        assert learner.cut() is not None
        metrics = learner.privacy_metrics()
        assert metrics["dp_releases"] == round_
        assert metrics["dp_epsilon"] == pytest.approx(epsilon_for(2.0, 1e-6, round_))
        assert (metrics["dp_delta"], metrics["dp_noise"]) == (1e-6, 2.0)
    assert trained(n=10).privacy_metrics() == {} and trained(n=10).dp_epsilon is None


def test_the_budget_allows_exactly_the_releases_the_accountant_allows_then_none() -> None:
    sigma, budget = 3.0, 4.0
    allowed = releases_within(budget, sigma, 1e-5)
    assert allowed == 5  # epsilon_for(3, 1e-5, 5) = 3.85 <= 4 < 4.25 = epsilon_for(.., 6)
    learner = trained(n=0, dp_clip=1.0, dp_noise=sigma, dp_epsilon_budget=budget)
    sent = 0
    for round_ in range(12):
        for eid, x, y in events(round_, 60):
            learner.observe(f"{round_}-{eid}", x, y)
        assert learner.cut_due(50) == (not learner.dp_spent)
        sent += learner.cut() is not None
    assert sent == allowed and learner.dp_releases == allowed and learner.dp_spent
    assert learner.dp_epsilon == pytest.approx(epsilon_for(sigma, 1e-5, allowed))
    assert learner.dp_epsilon <= budget < epsilon_for(sigma, 1e-5, allowed + 1)
    before = learner.counts["learned"]
    for eid, x, y in events(99, 30):  # it goes on learning and scoring
        learner.observe(f"late-{eid}", x, y)
    assert learner.counts["learned"] == before + 30
    assert learner.score(X, NOW, linked=True).source == "local"
    assert learner.cut(hold=False) is None


def test_the_release_count_survives_a_restart() -> None:
    policy = {"dp_clip": 1.0, "dp_noise": 3.0, "dp_epsilon_budget": 4.0}
    learner = trained(n=100, **policy)
    learner.cut()
    for eid, x, y in events(5, 60):
        learner.observe(f"b-{eid}", x, y)
    learner.cut()
    restored = EdgeLearner("fraud-linear", "n1", EdgePolicy(**policy))
    restored.restore(learner.state())
    assert restored.dp_releases == 2 and restored.dp_epsilon == learner.dp_epsilon
    legacy = learner.state()
    legacy.mixer = {k: v for k, v in legacy.mixer.items() if k != "dp_releases"}
    restored.restore(legacy)  # saved before the accountant: every summary sent counts
    assert restored.dp_releases == legacy.sequence == 2


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"dp_clip": 1.0, "dp_noise": 1.0, "dp_delta": 0.0}, "delta"),
        ({"dp_clip": 1.0, "dp_noise": 1.0, "dp_delta": 1.0}, "delta"),
        ({"dp_clip": 1.0, "dp_noise": 1.0, "dp_epsilon_budget": 0.0}, "budget"),
        ({"dp_clip": 1.0, "dp_epsilon_budget": 1.0}, "needs noise"),
    ],
)
def test_bad_privacy_settings_are_refused(policy: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        EdgePolicy(**policy)
