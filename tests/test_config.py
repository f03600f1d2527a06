"""Model presets and their JSON form; the service config (TOML or JSON files, typed errors, --print-config,
the CPU thread count in a real serve process)."""

import dataclasses
import json
import os
import re
import sys
from pathlib import Path

import pytest

from streamstyle.model.config import CONFIG_VERSION, PRESETS, ModelConfig, preset
from streamstyle.model.errors import ConfigError
from streamstyle.model.info import count_parameters
from streamstyle.service.config import ConfigFieldError, ServiceConfig, available_cpus
from streamstyle.tools.cli import main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_presets_validate_and_round_trip_through_json():
    for name in PRESETS:
        cfg = preset(name)
        assert cfg.name == name
        assert ModelConfig.from_json(cfg.to_json()) == cfg


def test_default_preset_is_in_the_shipping_range_and_large_is_sana_class():
    default = sum(count_parameters(preset("default")).values())
    large = sum(count_parameters(preset("large")).values())
    assert 10e6 <= default <= 30e6
    assert 450e6 <= large <= 750e6


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ConfigError, match="tiny, default, large"):
        preset("huge")


@pytest.mark.parametrize("kwargs, words", [
    ({"width": 100, "heads": 3}, "multiple of heads"),
    ({"patch": 10, "latent_stride": 4}, "multiple of latent_stride"),
    ({"cond_channels": ("color", "sheen")}, "unknown channel 'sheen'"),
    ({"guide_channels": ("motion",)}, "cannot use 'motion'"),
    ({"state_decay": 1.0}, "state_decay"),
    ({"depth": 0}, "depth must be a positive integer"),
])
def test_inconsistent_configs_are_rejected(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        ModelConfig(**kwargs).validate()


def test_config_json_rejects_unknown_fields_and_versions():
    text = preset("tiny").to_json()
    with pytest.raises(ConfigError, match="unknown fields: colour"):
        ModelConfig.from_json(text.replace('"width"', '"colour": 1, "width"'))
    with pytest.raises(ConfigError, match="version"):
        ModelConfig.from_json(text.replace(f'"config_version": {CONFIG_VERSION}', '"config_version": 99'))


# --- the service's config: TOML (JSON still read), typed errors naming the field, --print-config ---

TOML = """\
# a service for one engine on this machine
bind = "ipc:///tmp/streamstyle-test/one.sock"
heartbeat_ms = 250
reap_after_ms = 4000
deadline_ms = 80          # an integer in a float setting
evict_idle_after_s = 30.5
cuda_graphs = false
cpu_threads = 3
"""


def test_a_toml_file_sets_every_field_it_names_and_flags_override_it(tmp_path):
    path = tmp_path / "service.toml"
    path.write_text(TOML)
    cfg = ServiceConfig.load(path)
    assert (cfg.bind, cfg.heartbeat_ms, cfg.reap_after_ms, cfg.cuda_graphs, cfg.cpu_threads) == \
        ("ipc:///tmp/streamstyle-test/one.sock", 250, 4000, False, 3)
    assert cfg.deadline_ms == 80.0 and isinstance(cfg.deadline_ms, float)
    assert cfg.evict_idle_after_s == 30.5
    assert cfg.max_sessions == ServiceConfig().max_sessions  # what the file leaves out keeps its default
    flagged = ServiceConfig.load(path, cpu_threads=1, device=None, deadline_ms=12.5)
    assert (flagged.cpu_threads, flagged.deadline_ms, flagged.device) == (1, 12.5, "cpu")


def test_json_files_are_still_read(tmp_path):
    as_json = {"heartbeat_ms": 250, "reap_after_ms": 4000, "cuda_graphs": False, "cpu_threads": 3}
    for name in ("service.json", "service.conf"):  # by suffix, or by its opening brace
        (tmp_path / name).write_text(json.dumps(as_json))
        cfg = ServiceConfig.load(tmp_path / name)
        assert (cfg.heartbeat_ms, cfg.reap_after_ms, cfg.cuda_graphs, cfg.cpu_threads) == (250, 4000, False, 3)


@pytest.mark.parametrize("line, field, words", [
    ("heartbeat_ms = \"500\"", "heartbeat_ms", "must be an integer, got '500' \\(str\\)"),
    ("max_sessions = 2.5", "max_sessions", "must be an integer, got 2.5"),
    ("cpu_threads = true", "cpu_threads", "must be an integer, got True \\(bool\\)"),
    ("deadline_ms = true", "deadline_ms", "must be a number, got True"),
    ("cuda_graphs = 1", "cuda_graphs", "must be true or false, got 1"),
    ("weights = 5", "weights", "must be a string or unset, got 5"),
    ("evict_idle_after_s = \"never\"", "evict_idle_after_s", "must be a number or unset"),
    ("device = [\"cuda\"]", "device", "must be a string, got \\['cuda'\\]"),
    ("heartbeet_ms = 500", "heartbeet_ms", "unknown setting \\(did you mean 'heartbeat_ms'\\?\\)"),
    ("[service]\nbind = \"ipc:///x\"", "service", "unknown setting"),
    ("heartbeat_ms = 5", "heartbeat_ms", "must be >= 10, got 5"),
    ("reap_after_ms = 600", "reap_after_ms", "at least twice heartbeat_ms \\(500\\), got 600"),
    ("cpu_threads = -2", "cpu_threads", "must be >= 0"),
    ("deadline_ms = nan", "deadline_ms", "finite number >= 0"),
    ("cache_pages = 0", "cache_pages", "must be >= 1"),
    ("dtype = \"int4\"", "dtype", "must be auto, fp32, bf16, fp16 or fp8, got 'int4'"),
    ("bind = \"http://127.0.0.1:80\"", "bind", "must be ipc://, tcp:// or inproc://"),
    ("bind = \"tcp://0.0.0.0:5599\"", "bind", "needs CURVE keys"),
])
def test_a_bad_setting_raises_a_config_error_naming_the_field_and_the_file(tmp_path, line, field, words):
    path = tmp_path / "service.toml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigFieldError) as info:
        ServiceConfig.load(path)
    err = info.value
    assert isinstance(err, ConfigError) and err.code == "bad_config"
    assert (err.field, err.source) == (field, str(path))
    assert re.search(words, err.message), err.message
    assert err.message.startswith(f"{path}: {field}: ")


def test_a_bad_flag_is_named_as_coming_from_the_command_line(tmp_path):
    path = tmp_path / "service.toml"
    path.write_text("heartbeat_ms = 250\n")
    with pytest.raises(ConfigFieldError) as info:
        ServiceConfig.load(path, cpu_threads=-1)
    assert (info.value.field, info.value.source) == ("cpu_threads", "command line")
    # A value that is bad only beside another one is blamed on the setting checked: here the
    # default reap_after_ms, below twice the file's heartbeat.
    with pytest.raises(ConfigFieldError) as info:
        ServiceConfig.load(_write(tmp_path / "b.toml", "heartbeat_ms = 6000\n"))
    assert (info.value.field, info.value.source) == ("reap_after_ms", "defaults")
    with pytest.raises(ConfigFieldError) as info:
        ServiceConfig(heartbeat_ms="fast").validate()  # built in code: no source to name
    assert (info.value.field, info.value.source) == ("heartbeat_ms", None)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_unreadable_and_malformed_files_are_config_errors_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*missing.toml"):
        ServiceConfig.load(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        ServiceConfig.load(_write(tmp_path / "bad.toml", "heartbeat_ms = = 3\n"))
    with pytest.raises(ConfigError, match=r"bad\.json is not valid JSON"):
        ServiceConfig.load(_write(tmp_path / "bad.json", "{\"heartbeat_ms\": }"))
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        ServiceConfig.load(_write(tmp_path / "list.json", "[1, 2]"))


def test_to_toml_loads_back_to_the_same_config_and_never_prints_the_secret_key(tmp_path):
    cfg = ServiceConfig(bind="tcp://10.0.0.7:5599", device="cuda", workers=2, gpus="0,3", weights="/models/a \"quoted\" \\ path\x7f",
                        preset="tiny", seed=9, heartbeat_ms=100, reap_after_ms=900, max_sessions=3,
                        deadline_ms=12.5, cache_pages=64, cache_page_elems=4096, evict_idle_after_s=1e20,
                        dtype="bf16", cuda_graphs=False, gc_between_frames=False, curve_secret_key="S" * 40,
                        curve_public_key="P" * 40, cpu_threads=5, metrics_port=9100, osc_port=9000,
                        preview_port=8080, studio_host="10.0.0.7", presets="/studio/looks.toml",
                        recordings_dir="/studio/takes").validate()
    assert all(getattr(cfg, f.name) != f.default for f in dataclasses.fields(cfg))  # every field exercised
    text = cfg.to_toml()
    assert "S" * 40 not in text and "# curve_secret_key = (set; not shown)" in text
    back = ServiceConfig.load(_write(tmp_path / "printed.toml", text), curve_secret_key="S" * 40)
    assert back == cfg
    defaults = ServiceConfig().to_toml()
    assert ServiceConfig.load(_write(tmp_path / "defaults.toml", defaults)) == ServiceConfig()
    assert f"cpu_threads = 0  # auto: {available_cpus()}" in defaults


def test_serve_print_config_prints_the_effective_config_as_toml_and_exits_0(tmp_path, capsys):
    path = _write(tmp_path / "service.toml", TOML)
    assert main(["serve", "--config", str(path), "--cpu-threads", "2", "--deadline-ms", "40",
                 "--print-config"]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert printed["cpu_threads"] == 2 and printed["deadline_ms"] == 40.0  # the flags win
    assert printed["heartbeat_ms"] == 250 and printed["cuda_graphs"] is False  # the file's
    assert printed["max_sessions"] == 16  # the defaults
    assert set(printed) <= {f.name for f in dataclasses.fields(ServiceConfig)}


def test_serve_refuses_a_bad_config_with_exit_2_and_the_fields_name(tmp_path, capsys):
    path = _write(tmp_path / "service.toml", "max_sessions = \"lots\"\n")
    assert main(["serve", "--config", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert f"streamstyle: error [bad_config]: {path}: max_sessions: must be an integer" in err


def test_the_docs_list_every_service_setting():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    section = doc.split("## Service configuration", 1)[1].split("\n## ", 1)[0]
    table = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert table == [f.name for f in dataclasses.fields(ServiceConfig)]


def test_available_cpus_is_the_affinity_at_most():
    n = available_cpus()
    assert 1 <= n <= len(os.sched_getaffinity(0))


def test_serve_sets_torch_threads_from_the_config_not_from_omp_num_threads(tmp_path):
    from streamstyle.interop.client import Client
    from streamstyle.tools.launch import child_service

    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSTYLE_")}
    env["OMP_NUM_THREADS"] = "7"  # what the service used to take; no longer consulted
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")]))
    for flags, want in ((["--cpu-threads", "1"], 1), ([], available_cpus())):
        log = tmp_path / f"serve{len(flags)}.log"
        with child_service(["--preset", "tiny", "--no-prompts", *flags], env=env, log_path=log) as address:
            with Client(address, timeout_s=30) as client:
                stats = client.stats()
        assert stats["service"]["cpu_threads"] == want  # torch's count, read in the serving process
        text = log.read_text()
        assert f"tiny model, {want} CPU thread" in text and f"CPU threads: {want} " in text
