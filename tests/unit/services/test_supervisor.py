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
