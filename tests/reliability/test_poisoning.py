"""Poisoning (#10.7): 20 % of the sites send scaled, sign-flipped or random updates.

In-process, no Kafka: ``prism compare``'s engine runs the services' code (an
EdgeLearner per site, the merge job's Merger and strategies); the attackers
are chosen by the seed (:mod:`models.poisoning`). Data: River's bundled
Phishing exported as a 5-site log (1 attacker), small and deterministic.

What is asserted, on the final prequential ROC AUC of ``federated`` and
``hybrid``:

- FedMedian (the robust strategy, see bench/poisoning.py for why) stays
  within 2 % of its own clean run and of FedAvg's clean run, for every kind;
- FedAvg loses ``federated`` at least 5 % (a clear margin, 2.5x the
  tolerance) under ``signflip`` and ``random``, while the ``hybrid``'s
  mixer moves its weight to the site's personal model, which no global
  overwrites: it stays within 0.02 of ``local`` (never merged, never
  poisoned; measured 0.000-0.010 below it: the mixer's weight of "global"
  carries over to each new version, so a worse one is trusted as much as
  the one before until its own labels come back). ``scaled`` x10 is *not* asserted to hurt
  FedAvg: an honest update made 10x longer mostly makes a linear model's
  weights longer along the direction the fleet learns anyway, and ROC AUC
  ignores the scale of a linear score -- measured here it costs FedAvg about
  1 % (bench/poisoning.py reports it, and larger factors). So the
  ``scaled`` case of the robust test guards FedMedian itself (it fails if the
  median lets the attacker through and that hurts); it does not tell FedMedian
  from FedAvg, which the ``signflip`` and ``random`` cases do.

The colluding attackers (ALIE, IPM: :mod:`models.collusion`) shape their
update from the honest updates of their round, which the engine hands them
(omniscient, as in the papers); at 20 % (1 of 5 sites) every robust strategy
(FedMedian, trimmed mean 0.2, Krum) keeps them within 2 % of its own clean
run, whether the colluders send exact copies or each adds its own noise
(``jitter`` 0.1 honest stds): a defence that needs identical vectors to
notice collusion would not hold against real colluders. At 40 % it is not
asserted: see the figures in docs/reliability.md for which strategies fail
there.

Rounds close on size only (half the sites), as in the bench: robust
aggregation outvotes attackers within a round, which needs rounds of more
than one update.
"""

from __future__ import annotations

import pytest

from models.poisoning import BLIND, COLLUDING, Attack
from prism.cli import main
from prism.compare.engine import SimConfig, simulate
from prism.compare.report import build_report
from prism.compare.stream import Stream, load_stream

ROBUST = "fedmedian"
ROBUST_ALL = (ROBUST, "trimmed:0.2", "krum")
ARCHS = ("federated", "hybrid")
TOLERANCE = 0.02
CLEAR_MARGIN = 0.05


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> Stream:
    path = tmp_path_factory.mktemp("poisoning") / "phishing.avro"
    flags = ["--sites", "5", "--seed", "1", "--labels", "inline", "--out", str(path)]
    assert main(["dataset", "export", "phishing", *flags]) == 0
    return load_stream(path)


def auc(
    stream: Stream,
    strategy: str,
    kind: str | None,
    archs: tuple[str, ...] = ARCHS,
    scale: float | None = 10.0,
    fraction: float = 0.2,
    jitter: float = 0.0,
) -> dict[str, float]:
    config = SimConfig(
        spec_name="fraud-linear",
        architectures=archs,
        strategy=strategy,
        summary_every=50,
        round_timeout_ms=10**15,
        poison=None if kind is None else Attack(fraction, kind, scale, jitter),
        seed=0,
    )
    report = build_report(stream, simulate(stream, config), config)
    if kind is not None:
        assert len(report["poison"]["sites"]) == round(5 * fraction)
        arch = archs[0]  # federated or hybrid: both have sites that merge
        assert report["architectures"][arch]["poisoned_summaries"] > 0
    return {name: a["metric"] for name, a in report["architectures"].items()}


@pytest.fixture(scope="module")
def clean(stream: Stream) -> dict[str, dict[str, float]]:
    runs = {s: auc(stream, s, None) for s in ("fedavg", ROBUST)}
    for arch in ARCHS:  # a model that learned something, so a drop can show
        assert runs["fedavg"][arch] > 0.85
    return runs


@pytest.mark.parametrize("kind", BLIND)
def test_robust_strategy_stays_within_2pct_of_the_clean_runs(stream, clean, kind):
    poisoned = auc(stream, ROBUST, kind)
    for arch in ARCHS:
        for reference in (clean[ROBUST][arch], clean["fedavg"][arch]):
            assert poisoned[arch] >= (1 - TOLERANCE) * reference, (arch, poisoned, clean)


@pytest.mark.parametrize("kind", ["signflip", "random"])
def test_fedavg_degrades_federated_by_a_clear_margin(stream, clean, kind):
    poisoned = auc(stream, "fedavg", kind, ("federated",))
    assert poisoned["federated"] <= (1 - CLEAR_MARGIN) * clean["fedavg"]["federated"], poisoned


@pytest.mark.parametrize("kind", ["signflip", "random"])
def test_hybrid_under_fedavg_poisoning_keeps_its_personal_models(stream, kind):
    poisoned = auc(stream, "fedavg", kind, ("hybrid", "local"))
    assert poisoned["hybrid"] >= poisoned["local"] - 0.02, poisoned


@pytest.mark.parametrize("kind", COLLUDING)
def test_robust_strategy_contains_colluding_attackers_at_20pct(stream, clean, kind):
    poisoned = auc(stream, ROBUST, kind, scale=None)  # each kind's default strength
    for arch in ARCHS:
        assert poisoned[arch] >= (1 - TOLERANCE) * clean[ROBUST][arch], (arch, poisoned, clean)


@pytest.fixture(scope="module")
def clean_federated(stream: Stream) -> dict[str, float]:
    return {s: auc(stream, s, None, ("federated",))["federated"] for s in ROBUST_ALL}


@pytest.mark.parametrize("jitter", [0.0, 0.1])
@pytest.mark.parametrize("kind", COLLUDING)
@pytest.mark.parametrize("strategy", ROBUST_ALL)
def test_every_robust_strategy_contains_colluders_at_20pct_copies_or_jittered(
    stream, clean_federated, strategy, kind, jitter
):
    poisoned = auc(stream, strategy, kind, ("federated",), scale=None, jitter=jitter)
    assert poisoned["federated"] >= (1 - TOLERANCE) * clean_federated[strategy], (
        strategy,
        poisoned,
        clean_federated,
    )


def test_a_strong_jittered_ipm_at_20pct_breaks_fedavg_and_no_robust_strategy(
    stream, clean, clean_federated
):
    """The containment above must be able to fail: with epsilon 4 the one jittered
    colluder of a round outweighs the honest mean, and FedAvg loses far more than the
    clear margin (measured -67 %); the robust strategies, which see the same noisy
    vectors, stay within 2 % (measured within 0.1 %)."""
    hit = auc(stream, "fedavg", "ipm", ("federated",), scale=4.0, jitter=0.1)
    assert hit["federated"] <= (1 - CLEAR_MARGIN) * clean["fedavg"]["federated"], hit
    for strategy in ROBUST_ALL:
        got = auc(stream, strategy, "ipm", ("federated",), scale=4.0, jitter=0.1)
        assert got["federated"] >= (1 - TOLERANCE) * clean_federated[strategy], (strategy, got)


def test_at_40pct_ipm_breaks_krum_the_attack_is_live(stream):
    """What fails, kept honest: 2 of 5 sites sending -0.5 x the honest mean take Krum's
    pick often enough to cost it more than 2 % (measured -4.1 %)."""
    clean_krum = auc(stream, "krum", None, ("federated",))
    poisoned = auc(stream, "krum", "ipm", ("federated",), scale=None, fraction=0.4)
    assert poisoned["federated"] < (1 - TOLERANCE) * clean_krum["federated"], poisoned
