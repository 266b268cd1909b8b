"""The `prism up` supervisor: restarts what crashes, leaves what finished, writes its state."""

from __future__ import annotations

from prism.services.supervisor import Service, Supervisor, read_status


def test_a_crashing_service_is_restarted_and_a_finished_one_is_done(tmp_path):
    crashing = Service("crasher", ["edge", "run", "--node", "x", "--source", "f.avro",
                                   "--summary-every", "never"])  # exit 2: bad flag  # fmt: skip
    finishing = Service("finisher", ["--help"])  # exit 0
    supervisor = Supervisor(tmp_path, [crashing, finishing], max_restarts=2)
    supervisor.max_backoff_s = 0.05
    assert supervisor.run() == 0
    rows = {r["name"]: r for r in read_status(tmp_path)}
    assert rows["crasher"]["restarts"] == 2 and rows["crasher"]["exit_code"] == 2
    assert rows["crasher"]["state"] == "crashed"
    assert rows["finisher"]["state"] == "done" and rows["finisher"]["restarts"] == 0
    log = (tmp_path / "logs" / "crasher.log").read_text()
    assert log.count("--summary-every") == 3  # the first start and two restarts


def test_each_service_gets_its_own_redis_user_and_no_other_password(monkeypatch) -> None:
    from prism.services.supervisor import service_env

    monkeypatch.setenv("PRISM_REDIS_URL", "redis://:admin@h:1/0")
    for role in ("CENTRAL", "MERGER", "EDGE"):
        monkeypatch.setenv(f"PRISM_REDIS_URL_{role}", f"redis://prism-{role.lower()}:pw@h:1/0")
    central = service_env(Service("c", ["central", "run"], redis_role="central"))
    assert central["PRISM_REDIS_URL"] == "redis://prism-central:pw@h:1/0"
    assert not [k for k in central if k.startswith("PRISM_REDIS_URL_")]
    assert service_env(Service("e", ["edge"], redis_role="edge"))["PRISM_REDIS_URL"].startswith(
        "redis://prism-edge:"
    )
    plain = service_env(Service("x", ["replay"]))  # no role: the URL it was given
    assert plain["PRISM_REDIS_URL"] == "redis://:admin@h:1/0"
    monkeypatch.delenv("PRISM_REDIS_URL_MERGER")  # a Redis the user gave: its URL for all
    assert service_env(Service("m", ["merger"], redis_role="merger"))["PRISM_REDIS_URL"] == (
        "redis://:admin@h:1/0"
    )
