"""docker-compose.yml's structure, checked in milliseconds: the services, images,
healthchecks, ACL users and ``service_healthy`` ordering users rely on.

tests/compose/ starts the file for real (``make test-compose``); these checks pin the
fixes that run found, so a change that undoes one fails here before any container
starts."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from prism.stack.redis_acl import ROLE_USERS, acl_rules

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_kafka_is_official_kraft_image_with_healthcheck() -> None:
    kafka = _compose()["services"]["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert kafka["healthcheck"]["test"]


def test_kafka_keeps_its_log_dirs_on_the_volume() -> None:
    """The image writes to /tmp/kafka-logs unless KAFKA_LOG_DIRS says otherwise: a
    recreated container would then start with no topics under old checkpoints."""
    kafka = _compose()["services"]["kafka"]
    (mount,) = [v for v in kafka["volumes"] if v.startswith("kafka-data:")]
    assert kafka["environment"]["KAFKA_LOG_DIRS"] == mount.split(":")[1]


def _redis_args() -> list[str]:
    """The argv compose gives redis-server: its command string split into words."""
    command = _compose()["services"]["redis"]["command"]
    assert isinstance(command, str), "one string: each ACL rule must be its own argument"
    return shlex.split(command)


def test_redis_has_password_persistence_and_query_user() -> None:
    redis = _compose()["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = " ".join(_redis_args())
    assert "--requirepass" in command
    assert "--appendonly yes" in command
    assert "prism-query on" in command and "+@read" in command and "-@all" in command
    assert "--appendfsync always" in command
    assert redis["healthcheck"]["test"]


def test_redis_users_are_the_least_privilege_users_of_the_local_stack() -> None:
    """The compose ACL users carry exactly the rules `prism up` gives its own redis-server,
    and every service that writes or reads Redis connects as its own role's user."""
    services = _compose()["services"]
    args = _redis_args()
    starts = [i for i, arg in enumerate(args) if arg == "--user"]
    declared = {}
    for start in starts:
        words = args[start + 1 :]
        words = words[: next((i for i, w in enumerate(words) if w.startswith("--")), None)]
        name, on, password, *rules = words
        assert on == "on" and password.startswith(">${PRISM_REDIS_"), words
        declared[name] = " ".join(rules)
    assert declared == acl_rules("prism")
    # compose's word splitting ends the command at an unquoted '>' (shell redirection)
    raw = services["redis"]["command"]
    assert raw.count('on ">${PRISM_REDIS_') == len(starts) == raw.count(">")
    for service, role in [("central-fraud", "central"), ("central-iot", "central"),
                          ("merger", "merger"), ("edge", "edge"),
                          ("shadow", "shadow")]:  # fmt: skip
        url = _defaults(services[service]["environment"]["PRISM_REDIS_URL"])
        assert url == f"redis://{ROLE_USERS[role]}:{ROLE_USERS[role]}-password@redis:6379/0"


def test_every_dependency_waits_for_health_not_sleep() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dep, condition in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert condition["condition"] in {"service_healthy", "service_completed_successfully"}
        command = " ".join(map(str, service.get("command") or []))
        assert "sleep" not in command, f"{name} uses a sleep loop"


def test_services_built_from_the_one_dockerfile() -> None:
    services = _compose()["services"]
    built = [s for s in services.values() if "build" in s]
    assert built, "no Prism service is built"
    assert (ROOT / "Dockerfile").is_file()
    assert all(s["build"] == "." for s in built)


def test_every_prism_service_runs_from_the_image_with_health_and_metrics() -> None:
    services = _compose()["services"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    (health,) = [line for line in dockerfile.splitlines() if "urlopen" in line]
    assert "HEALTHCHECK" in dockerfile and "METRICS_PORT" in health and "/metrics" in health
    for name in ("central-fraud", "central-iot", "merger", "edge"):
        service = services[name]
        assert service["image"] == "prism:latest", name
        command = " ".join(service["command"])
        port = service["environment"]["METRICS_PORT"]
        assert f"--metrics-port {port}" in command, name
        assert "healthcheck" not in service, f"{name}: the image's HEALTHCHECK probes it"
        assert service["environment"]["PRISM_METRICS_ADDR"] == "0.0.0.0", name
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_image_builds_in_two_stages_with_a_state_dir_for_its_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = dockerfile.split("\nFROM ")[1:]
    assert len(stages) == 2 and stages[0].startswith("python:3.11-slim AS build"), stages
    runtime = stages[1]
    assert runtime.startswith("python:3.11-slim\n")
    assert "pip install" not in runtime and "COPY --from=build" in runtime
    assert "mkdir /state /keys && chown prism:prism /state /keys" in runtime
    assert runtime.index("/state") < runtime.index("USER prism")
    env = _compose()["x-prism-env"]
    assert env["PRISM_STATE_DIR"] == "/state"


def test_an_edge_that_finished_its_log_stays_down() -> None:
    """`unless-stopped` would restart a replica that exited 0 forever."""
    services = _compose()["services"]
    assert services["edge"]["restart"] == "on-failure"
    assert "&& exec prism edge run" in " ".join(services["edge"]["command"])


def test_edges_scale_with_their_own_node_id_and_local_volume() -> None:
    edge = _compose()["services"]["edge"]
    command = " ".join(edge["command"])
    assert "--node edge-$$(hostname)" in command  # unique per replica of --scale edge=K
    assert "/state" in edge["volumes"]  # an anonymous volume: one per replica
    assert "prism edge run" in command and "--source /state/local.avro" in command


def test_replay_and_prometheus_are_opt_in_profiles_scraping_every_service() -> None:
    services = _compose()["services"]
    assert services["replay"]["profiles"] == ["replay"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = str(scrape["scrape_configs"])
    for service in ("central-fraud:9101", "central-iot:9103", "merger:9102", "'edge'"):
        assert service in targets, service
    shadow = services["shadow"]  # hybrid mode's job: opt in, found by DNS when it runs
    assert shadow["profiles"] == ["hybrid"] and "'shadow'" in targets
    assert shadow["command"][-1] == shadow["environment"]["METRICS_PORT"] == "9105"
    assert "--mode $${EDGE_MODE:-private}" in " ".join(services["edge"]["command"])


#: the services that sign (and verify), and a node id each signs for
SIGNERS = {"central-fraud": "prism-central-fraud/p0", "central-iot": "prism-central-iot/p2",
           "edge": "edge-3f2a9c0d1e2b", "merger": "global:fraud-linear"}  # fmt: skip


def _keys_script() -> str:
    return " ".join(_compose()["services"]["keys"]["command"])


def test_every_signing_service_waits_for_the_keys_and_reads_them_read_only() -> None:
    compose = _compose()
    services = compose["services"]
    keys = services["keys"]
    assert keys["image"] == "prism:latest" and keys["restart"] == "no"
    assert keys["volumes"] == ["keys:/keys"] and "keys" in compose["volumes"]
    for name in SIGNERS:
        service = services[name]
        assert service["depends_on"]["keys"]["condition"] == "service_completed_successfully"
        assert "keys:/keys:ro" in service["volumes"], name
        env = service["environment"]
        assert env["PRISM_TRUST_FILE"] == "/keys/trust.json", name
        assert env["PRISM_REQUIRE_SIGNED"] == "true", name
        assert env["PRISM_SIGNING_KEY_FILE"] == f"/keys/{env['PRISM_SIGNING_KEY_ID']}.pem", name
    text = (ROOT / "docker-compose.yml").read_text()
    assert "PRISM_SIGNING_KEY:" not in text and "PRISM_TRUSTED_KEYS" not in text  # no HMAC


def test_the_keys_service_makes_keys_once_with_the_trust_file_moved_in_last() -> None:
    """A restart keeps every identity; a run cut short leaves no trust file, so the next
    run makes them all again instead of trusting half of them."""
    script = _keys_script()
    assert script.startswith("if test -f /keys/trust.json; then") and "exit 0; fi;" in script
    assert "set -e;" in script and "cd /keys/new;" in script
    assert script.index("mv ./*.pem /keys/") < script.index("mv trust.json /keys/trust.json")
    assert script.count("--trust-file trust.json") == script.count("prism keys generate") == 4


def test_the_keys_service_key_of_each_service_signs_for_its_own_nodes_only(
    tmp_path: Path, monkeypatch
) -> None:
    """The keys service's own `prism keys generate` lines, run here."""
    from models.serialization import global_model_record
    from models.specs import get_spec
    from prism.cli import main
    from schemas.identity import KeySigner, KeyVerifier, load_private_key, load_trust_file
    from schemas.signing import SignatureError

    runs = [shlex.split(part) for part in _keys_script().split(";")]
    runs = [argv for argv in runs if argv[:3] == ["prism", "keys", "generate"]]
    monkeypatch.chdir(tmp_path)
    for argv in runs:
        assert main([a.replace("$$expiry", "2999-01-01") for a in argv[1:]]) == 0
    trust = load_trust_file(tmp_path / "trust.json")
    services = _compose()["services"]

    def signer(name: str) -> KeySigner:
        env = services[name]["environment"]
        key = load_private_key(tmp_path / Path(env["PRISM_SIGNING_KEY_FILE"]).name)
        return KeySigner(env["PRISM_SIGNING_KEY_ID"], key)

    spec = get_spec("fraud-linear")
    whole = global_model_record(spec.summarize(spec.new_model()), version=1, strategy="fedavg",
                                created_at_ms=0)  # fmt: skip
    record = {"tier": "edge", "sequence": 1, "base_version": 0, "created_at": 0,
              "state": {"model_name": "m", "model_kind": "k", "features": [], "n_samples": 0,
                        "tensors": []}}  # fmt: skip

    def signed(name: str, node: str) -> dict:
        if node.startswith("global:"):
            return signer(name).sign(dict(whole, model_name=node[7:]), "GlobalModel")
        return signer(name).sign(dict(record, node_id=node))

    def verdict(rec: dict) -> str:
        contract = "GlobalModel" if "model_name" in rec else "WeightSummary"
        try:
            KeyVerifier(trust, contract=contract, required=True).check(rec)
        except SignatureError as e:
            return e.reason_code
        return "ok"

    assert set(trust) == {services[n]["environment"]["PRISM_SIGNING_KEY_ID"] for n in SIGNERS}
    for name, node in SIGNERS.items():
        assert verdict(signed(name, node)) == "ok", name
        for other, foreign in SIGNERS.items():
            if other != name:
                assert verdict(signed(name, foreign)) == "key-not-for-node", (name, other)
    before = (tmp_path / "trust.json").read_text()
    again = main([a.replace("$$expiry", "2999-01-01") for a in runs[0][1:]])
    assert again != 0 and (tmp_path / "trust.json").read_text() == before  # never overwritten


# -- the SASL/SCRAM variant: docker compose -f docker-compose.yml -f deploy/compose.sasl.yml --
def _merged_with(overlay: str) -> dict:
    """The base and ``deploy/<overlay>`` merged as compose does: mappings by key, lists
    replaced."""

    def merge(base: object, over: object) -> object:
        if isinstance(base, dict) and isinstance(over, dict):
            return {**base, **{k: merge(base.get(k), v) for k, v in over.items()}}
        return over

    override = yaml.safe_load((ROOT / "deploy" / overlay).read_text())
    return merge(_compose(), override)  # type: ignore[return-value]


def _merged_with_sasl() -> dict:
    return _merged_with("compose.sasl.yml")


def _defaults(text: str) -> str:  # compose's ${VAR:-default} with nothing set
    import re

    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def _image_property(env_name: str) -> str:
    """The apache/kafka image's env -> property rule: _ is '.', __ is '_', ___ is '-'."""
    import re

    key = re.sub(r"(?<=[^_])_(?=[^_])", ".", env_name.removeprefix("KAFKA_"))
    return key.replace("___", "-").replace("__", "_").lower()


def test_sasl_variant_logs_every_kafka_client_service_in_with_scram() -> None:
    from runtime.kafka_security import KafkaAuth
    from runtime.settings import Settings

    base, merged = _compose()["services"], _merged_with_sasl()["services"]
    clients = [name for name, s in base.items()
               if "PRISM_KAFKA_BOOTSTRAP" in (s.get("environment") or {})]  # fmt: skip
    assert {"topics", "central-fraud", "central-iot", "merger", "edge", "replay"} <= set(clients)
    for name in clients:
        env = merged[name]["environment"]
        assert env["PRISM_KAFKA_BOOTSTRAP"] == "kafka:9092", name  # the base's, kept
        assert "${" in env["PRISM_KAFKA_SASL_PASSWORD"], f"{name}: the secret must be a variable"
        kafka = {k: _defaults(str(v)) for k, v in env.items() if k.startswith("PRISM_KAFKA_")}
        settings = Settings(**{k.removeprefix("PRISM_").lower(): v for k, v in kafka.items()})
        auth = KafkaAuth.from_settings(settings)
        assert auth.describe() == "SASL_PLAINTEXT/SCRAM-SHA-512 user=prism", name


def test_sasl_variant_serves_clients_only_on_scram_listeners() -> None:
    kafka = _merged_with_sasl()["services"]["kafka"]
    env = {k: str(v) for k, v in kafka["environment"].items()}
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    inter = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert set(listeners) == set(protocols)
    assert listeners[inter].startswith("localhost:")  # PLAINTEXT only inside the container
    for name in set(listeners) - {inter, "CONTROLLER"}:
        assert protocols[name] == "SASL_PLAINTEXT", name
        key = f"listener.name.{name.lower()}.scram-sha-512.sasl.jaas.config"
        jaas = [v for k, v in env.items() if _image_property(k) == key]
        assert jaas and "ScramLoginModule required" in jaas[0], name
        assert "=" not in jaas[0], f"{name}: the image drops env values containing '='"
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert "kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]  # what the services dial
    health = " ".join(kafka["healthcheck"]["test"])
    assert f"--bootstrap-server {listeners[inter]}" in health  # no login needed to probe


def test_sasl_variant_creates_the_scram_user_when_formatting_before_the_first_start() -> None:
    services = _merged_with_sasl()["services"]
    kafka, fmt = services["kafka"], services["kafka-format"]
    assert kafka["depends_on"]["kafka-format"]["condition"] == "service_completed_successfully"
    assert fmt["image"] == kafka["image"] and fmt["restart"] == "no"
    assert fmt["volumes"] == kafka["volumes"] == ["kafka-data:/var/lib/kafka/data"]
    # the same cluster id, or the image's own format call fails on the existing storage
    assert fmt["environment"]["CLUSTER_ID"] == kafka["environment"]["CLUSTER_ID"]
    command = " ".join(fmt["command"])
    assert "kafka-storage.sh format --ignore-formatted" in command
    # the SCRAM user lands where the broker keeps its metadata log
    assert f"log.dirs={kafka['environment']['KAFKA_LOG_DIRS']} " in command
    voters = kafka["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert f"controller.quorum.voters={voters}" in command
    assert ('--add-scram "SCRAM-SHA-512=[name=$$PRISM_KAFKA_SASL_USERNAME,'
            'password=$$PRISM_KAFKA_SASL_PASSWORD]"') in command  # fmt: skip
    for name in ("central-fraud", "merger", "edge"):  # the user the services log in as
        for var in ("PRISM_KAFKA_SASL_USERNAME", "PRISM_KAFKA_SASL_PASSWORD"):
            assert fmt["environment"][var] == services[name]["environment"][var], (name, var)


# -- three brokers: docker compose -f docker-compose.yml -f deploy/compose.brokers3.yml --
BROKERS3 = "compose.brokers3.yml"
NODES = ("kafka", "kafka-2", "kafka-3")


def _nodes() -> dict[str, dict]:
    services = _merged_with(BROKERS3)["services"]
    return {name: services[name] for name in NODES}


def test_brokers3_is_one_kraft_cluster_of_three_voters_on_the_same_image() -> None:
    base = _compose()["services"]["kafka"]
    nodes = _nodes()
    envs = {name: {k: str(v) for k, v in n["environment"].items()} for name, n in nodes.items()}
    ids = {name: env["KAFKA_NODE_ID"] for name, env in envs.items()}
    assert sorted(ids.values()) == ["1", "2", "3"]
    voters = {f"{ids[name]}@{nodes[name]['hostname']}:9093" for name in NODES}
    for name, env in envs.items():
        assert nodes[name]["image"] == base["image"], name  # the same jars everywhere
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", name
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters, name
        assert env["CLUSTER_ID"] == envs["kafka"]["CLUSTER_ID"], name  # formatted as one
        listeners = dict(x.split("://") for x in env["KAFKA_LISTENERS"].split(","))
        assert listeners["CONTROLLER"] == ":9093", name
        advertised = dict(x.split("://") for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
        assert (
            advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]] == f"{nodes[name]['hostname']}:9092"
        )
        assert nodes[name]["hostname"] == name
        health = " ".join(nodes[name]["healthcheck"]["test"])
        assert f"--bootstrap-server {name}:9092" in health, name  # each node probes itself


def test_brokers3_keeps_three_copies_and_needs_two_in_sync_everywhere() -> None:
    for name, node in _nodes().items():
        env = {k: str(v) for k, v in node["environment"].items()}
        for key in ("OFFSETS_TOPIC", "TRANSACTION_STATE_LOG", "SHARE_COORDINATOR_STATE_TOPIC"):
            assert env[f"KAFKA_{key}_REPLICATION_FACTOR"] == "3", (name, key)
        for key in ("TRANSACTION_STATE_LOG", "SHARE_COORDINATOR_STATE_TOPIC"):
            assert env[f"KAFKA_{key}_MIN_ISR"] == "2", (name, key)
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3", name
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2", name
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", name


def test_brokers3_nodes_keep_their_own_data_and_host_port() -> None:
    nodes, volumes = _nodes(), _merged_with(BROKERS3)["volumes"]
    data = {name: node["volumes"][0].split(":") for name, node in nodes.items()}
    assert len({volume for volume, _dir in data.values()}) == 3
    for name, (volume, directory) in data.items():
        assert volume in volumes and directory == str(nodes[name]["environment"]["KAFKA_LOG_DIRS"])
    for name, node in nodes.items():  # what a host client is told is what is published
        env = node["environment"]
        listeners = dict(x.split("://") for x in env["KAFKA_LISTENERS"].split(","))
        advertised = dict(x.split("://") for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
        (port,) = node["ports"]
        _ip, host_port, container_port = port.split(":")
        assert advertised["EXTERNAL"] == f"127.0.0.1:{host_port}", name
        assert listeners["EXTERNAL"] == f":{container_port}", name
    host_ports = sorted(p.split(":")[1] for n in nodes.values() for p in n["ports"])
    assert host_ports == ["9092", "9093", "9094"]


def test_brokers3_services_know_every_broker_and_create_topics_with_three_copies() -> None:
    from runtime.settings import Settings

    base, merged = _compose()["services"], _merged_with(BROKERS3)["services"]
    clients = [name for name, s in base.items()
               if "PRISM_KAFKA_BOOTSTRAP" in (s.get("environment") or {})]  # fmt: skip
    assert {"topics", "central-fraud", "central-iot", "merger", "edge", "replay"} <= set(clients)
    for name in clients:
        env = merged[name]["environment"]
        assert set(env["PRISM_KAFKA_BOOTSTRAP"].split(",")) == {f"{n}:9092" for n in NODES}, name
        assert Settings(replication_factor=env["PRISM_REPLICATION_FACTOR"]).replication_factor == 3
        assert "PRISM_REDIS_URL" in env, f"{name}: the base environment must be kept"
    waits = merged["topics"]["depends_on"]
    assert all(waits[n]["condition"] == "service_healthy" for n in NODES)
