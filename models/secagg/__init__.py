"""Secure aggregation (SecAgg / SecAgg+) for FedAvg and exact sums.

Each node adds pairwise masks agreed with its neighbours and a self mask to
a fixed-point encoding of its update; the masks cancel in the sum, so the
merger learns the sum of a round's updates and nothing about any one of
them. Threshold (Shamir) shares of every node's mask secrets let the
survivors of a round unmask their sum when some nodes drop out; below the
threshold the round is abandoned and every increment is offered again.

References: Bonawitz et al., "Practical Secure Aggregation for
Privacy-Preserving Machine Learning", CCS 2017; Bell et al., "Secure
Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020
(SecAgg+). The modules split at the protocol's seams: ``fixedpoint``
(floats <-> integers mod 2^64), ``keys`` (X25519 + HKDF), ``prg`` (ChaCha20
masks), ``shamir`` (t-of-n sharing), ``graph`` (SecAgg+ neighbours),
``messages`` / ``node`` / ``server`` (the round's messages and both sides),
``round`` (a whole round in process, with dropouts), ``compat`` (what is
refused), ``aggregate`` (summaries -> sums -> the FedAvg global). Over
Kafka the messages travel as signed Avro records (``runtime/secagg.py``,
``streams/merger/secure.py``, ``edge_agents/secagg.py``).
"""
